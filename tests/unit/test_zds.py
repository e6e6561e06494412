"""ZDS: the message codec, and real SOCK_SEQPACKET sockets passing a real fd."""

import fcntl
import json
import os
import socket

import pytest
import trio

from mesh.zds import (
    Ack,
    AddWorkload,
    DelWorkload,
    KeepWorkload,
    SnapshotSent,
    WorkloadInfo,
    ZdsClosed,
    ZdsError,
    ZdsHello,
    ZdsSocket,
    connect_zds,
    decode_hello,
    decode_request,
    decode_response,
    encode,
    open_zds_listener,
)
from mesh.zds.messages import check_fds

INFO = WorkloadInfo(name="httpbin-7d4f9", namespace="ns1", service_account="httpbin")
UID = "4b2ad4c5-0a7a-4d4c-9c8e-6a1b6f2f1c11"

# --- codec -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, decode, wire",
    [
        (ZdsHello(), decode_hello, {"version": "V1"}),
        (
            AddWorkload(UID, INFO),
            decode_request,
            {
                "add": {
                    "uid": UID,
                    "workload_info": {"name": "httpbin-7d4f9", "namespace": "ns1", "service_account": "httpbin"},
                }
            },
        ),
        (AddWorkload(UID), decode_request, {"add": {"uid": UID}}),
        (KeepWorkload(UID), decode_request, {"keep": {"uid": UID}}),
        (DelWorkload(UID), decode_request, {"del": {"uid": UID}}),
        (SnapshotSent(), decode_request, {"snapshot_sent": {}}),
        (Ack(), decode_response, {"ack": {"error": ""}}),
        (Ack("no such netns"), decode_response, {"ack": {"error": "no such netns"}}),
    ],
)
def test_every_message_round_trips_in_proto_json_shape(message, decode, wire):
    data = encode(message)
    assert json.loads(data) == wire
    assert decode(data) == message


def test_ack_tells_ack_from_nack():
    assert Ack().ok and not Ack("boom").ok


def test_unknown_fields_are_ignored():
    assert decode_request(b'{"del": {"uid": "u", "future": 1}, "trace": "x"}') == DelWorkload("u")


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"\xff",
        b"[]",
        b"{}",
        b'{"add": {"uid": "u"}, "del": {"uid": "u"}}',
        b'{"add": "u"}',
        b'{"add": {"uid": 7}}',
        b'{"del": {"uid": ""}}',
        b'{"add": {"uid": "u", "workload_info": {"name": 1}}}',
        b'{"ack": {}}',
    ],
)
def test_malformed_requests_are_refused(data):
    with pytest.raises(ZdsError):
        decode_request(data)


def test_malformed_response_and_hello_are_refused():
    with pytest.raises(ZdsError):
        decode_response(b'{"add": {"uid": "u"}}')
    with pytest.raises(ZdsError):
        decode_hello(b'{"version": 1}')


def test_only_add_carries_one_fd():
    check_fds(AddWorkload(UID), 1)
    check_fds(DelWorkload(UID), 0)
    with pytest.raises(ZdsError):
        check_fds(AddWorkload(UID), 0)
    with pytest.raises(ZdsError):
        check_fds(DelWorkload(UID), 1)
    with pytest.raises(TypeError):
        encode("add")


# --- transport -------------------------------------------------------------------------


def seqpacket_pair() -> tuple[ZdsSocket, ZdsSocket]:
    agent, ztunnel = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return ZdsSocket(agent), ZdsSocket(ztunnel)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_add_passes_a_real_fd(tmp_path):
    netns_stand_in = tmp_path / "netns"
    netns_stand_in.write_bytes(b"pretend this is /proc/1234/ns/net")
    agent, ztunnel = seqpacket_pair()
    async with agent, ztunnel:
        with open(netns_stand_in, "rb") as original:
            await agent.send(AddWorkload(UID, INFO), [original.fileno()])
            request, fd = await ztunnel.receive_request()
            original_inode = os.fstat(original.fileno()).st_ino
        try:
            assert request == AddWorkload(UID, INFO)
            assert os.fstat(fd).st_ino == original_inode  # the same open file, now ours
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # MSG_CMSG_CLOEXEC
            assert os.pread(fd, 100, 0) == b"pretend this is /proc/1234/ns/net"
        finally:
            os.close(fd)


async def test_one_message_per_datagram_and_eof():
    agent, ztunnel = seqpacket_pair()
    async with ztunnel:
        async with agent:
            await agent.send(DelWorkload("a"))
            await agent.send(SnapshotSent())
        assert await ztunnel.receive_request() == (DelWorkload("a"), None)
        assert await ztunnel.receive_request() == (SnapshotSent(), None)
        with pytest.raises(ZdsClosed):
            await ztunnel.receive_request()


async def test_wrong_fd_counts_are_refused_without_leaking(tmp_path):
    agent, ztunnel = seqpacket_pair()
    before = open_fds()
    async with agent, ztunnel:
        with pytest.raises(ZdsError):
            await agent.send(AddWorkload(UID))  # refused before sending
        with open(tmp_path / "f", "wb") as f:
            await agent.send_raw(encode(DelWorkload(UID)), [f.fileno()])  # a misbehaving agent
            await agent.send_raw(encode(AddWorkload(UID)))
            await agent.send_raw(b"garbage", [f.fileno(), f.fileno()])
        for _ in range(3):
            with pytest.raises(ZdsError):
                await ztunnel.receive_request()
        assert open_fds() == before  # every fd that came along was closed


async def test_the_whole_conversation_over_a_listening_socket(tmp_path):
    path = str(tmp_path / "ztunnel.sock")
    (tmp_path / "netns").write_bytes(b"ns")
    applied = []

    async def cni_agent(listener, pods):
        async with await listener.accept() as conn:
            assert await conn.receive_hello() == ZdsHello("V1")
            for uid, info in pods:
                with open(tmp_path / "netns", "rb") as netns:
                    await conn.send(AddWorkload(uid, info), [netns.fileno()])
                assert (await conn.receive_response()).ok
            await conn.send(SnapshotSent())
            assert (await conn.receive_response()).ok
            await conn.send(DelWorkload(pods[0][0]))
            assert await conn.receive_response() == Ack("unknown pod")

    async def ztunnel():
        async with await connect_zds(path) as conn:
            await conn.send(ZdsHello())
            while True:
                try:
                    request, fd = await conn.receive_request()
                except ZdsClosed:
                    return
                if fd is not None:
                    os.close(fd)
                applied.append(request)
                await conn.send(Ack("unknown pod" if isinstance(request, DelWorkload) else ""))

    pods = [("uid-1", INFO), ("uid-2", WorkloadInfo("sleep-1", "ns1", "sleep"))]
    async with await open_zds_listener(path) as listener, trio.open_nursery() as nursery:
        nursery.start_soon(ztunnel)
        await cni_agent(listener, pods)
    assert applied == [
        AddWorkload("uid-1", INFO),
        AddWorkload("uid-2", pods[1][1]),
        SnapshotSent(),
        DelWorkload("uid-1"),
    ]
    assert not os.path.exists(path)


async def test_listener_replaces_a_stale_socket_file(tmp_path):
    path = str(tmp_path / "ztunnel.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(path)
    stale.close()
    async with await open_zds_listener(path):
        async with await connect_zds(path):
            pass
