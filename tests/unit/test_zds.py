"""ZDS: the message codec, and real SOCK_SEQPACKET sockets passing a real fd."""

import fcntl
import json
import os
import socket

import pytest
import trio

from mesh import zds
from mesh.zds.messages import check_fds

INFO = zds.WorkloadInfo(name="httpbin-7d4f9", namespace="ns1", service_account="httpbin")
UID = "4b2ad4c5-0a7a-4d4c-9c8e-6a1b6f2f1c11"

# --- codec -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, decode, wire",
    [
        (zds.ZdsHello(), zds.decode_hello, {"version": "V1"}),
        (
            zds.AddWorkload(UID, INFO),
            zds.decode_request,
            {
                "add": {
                    "uid": UID,
                    "workload_info": {"name": "httpbin-7d4f9", "namespace": "ns1", "service_account": "httpbin"},
                }
            },
        ),
        (zds.AddWorkload(UID), zds.decode_request, {"add": {"uid": UID}}),
        (zds.KeepWorkload(UID), zds.decode_request, {"keep": {"uid": UID}}),
        (zds.DelWorkload(UID), zds.decode_request, {"del": {"uid": UID}}),
        (zds.SnapshotSent(), zds.decode_request, {"snapshot_sent": {}}),
        (zds.Ack(), zds.decode_response, {"ack": {"error": ""}}),
        (zds.Ack("no such netns"), zds.decode_response, {"ack": {"error": "no such netns"}}),
    ],
)
def test_every_message_round_trips_in_proto_json_shape(message, decode, wire):
    data = zds.encode(message)
    assert json.loads(data) == wire
    assert decode(data) == message


def test_ack_tells_ack_from_nack():
    assert zds.Ack().ok and not zds.Ack("boom").ok


def test_unknown_fields_are_ignored():
    assert zds.decode_request(b'{"del": {"uid": "u", "future": 1}, "trace": "x"}') == zds.DelWorkload("u")


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
    with pytest.raises(zds.ZdsError):
        zds.decode_request(data)


def test_malformed_response_and_hello_are_refused():
    with pytest.raises(zds.ZdsError):
        zds.decode_response(b'{"add": {"uid": "u"}}')
    with pytest.raises(zds.ZdsError):
        zds.decode_hello(b'{"version": 1}')


def test_only_add_carries_one_fd():
    check_fds(zds.AddWorkload(UID), 1)
    check_fds(zds.DelWorkload(UID), 0)
    with pytest.raises(zds.ZdsError):
        check_fds(zds.AddWorkload(UID), 0)
    with pytest.raises(zds.ZdsError):
        check_fds(zds.DelWorkload(UID), 1)
    with pytest.raises(TypeError):
        zds.encode("add")


# --- transport -------------------------------------------------------------------------


def seqpacket_pair() -> tuple[zds.ZdsSocket, zds.ZdsSocket]:
    agent, ztunnel = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return zds.ZdsSocket(agent), zds.ZdsSocket(ztunnel)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_add_passes_a_real_fd(tmp_path):
    netns_stand_in = tmp_path / "netns"
    netns_stand_in.write_bytes(b"pretend this is /proc/1234/ns/net")
    agent, ztunnel = seqpacket_pair()
    async with agent, ztunnel:
        with open(netns_stand_in, "rb") as original:
            await agent.send(zds.AddWorkload(UID, INFO), [original.fileno()])
            request, fd = await ztunnel.receive_request()
            original_inode = os.fstat(original.fileno()).st_ino
        try:
            assert request == zds.AddWorkload(UID, INFO)
            assert os.fstat(fd).st_ino == original_inode  # the same open file, now ours
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # MSG_CMSG_CLOEXEC
            assert os.pread(fd, 100, 0) == b"pretend this is /proc/1234/ns/net"
        finally:
            os.close(fd)


async def test_one_message_per_datagram_and_eof():
    agent, ztunnel = seqpacket_pair()
    async with ztunnel:
        async with agent:
            await agent.send(zds.DelWorkload("a"))
            await agent.send(zds.SnapshotSent())
        assert await ztunnel.receive_request() == (zds.DelWorkload("a"), None)
        assert await ztunnel.receive_request() == (zds.SnapshotSent(), None)
        with pytest.raises(zds.ZdsClosed):
            await ztunnel.receive_request()


async def test_wrong_fd_counts_are_refused_without_leaking(tmp_path):
    agent, ztunnel = seqpacket_pair()
    before = open_fds()
    async with agent, ztunnel:
        with pytest.raises(zds.ZdsError):
            await agent.send(zds.AddWorkload(UID))  # refused before sending
        with open(tmp_path / "f", "wb") as f:
            await agent.send_raw(zds.encode(zds.DelWorkload(UID)), [f.fileno()])  # a misbehaving agent
            await agent.send_raw(zds.encode(zds.AddWorkload(UID)))
            await agent.send_raw(b"garbage", [f.fileno(), f.fileno()])
        for _ in range(3):
            with pytest.raises(zds.ZdsError):
                await ztunnel.receive_request()
        assert open_fds() == before  # every fd that came along was closed


async def test_the_whole_conversation_over_a_listening_socket(tmp_path):
    path = str(tmp_path / "ztunnel.sock")
    (tmp_path / "netns").write_bytes(b"ns")
    applied = []

    async def cni_agent(listener, pods):
        async with await listener.accept() as conn:
            assert await conn.receive_hello() == zds.ZdsHello("V1")
            for uid, info in pods:
                with open(tmp_path / "netns", "rb") as netns:
                    await conn.send(zds.AddWorkload(uid, info), [netns.fileno()])
                assert (await conn.receive_response()).ok
            await conn.send(zds.SnapshotSent())
            assert (await conn.receive_response()).ok
            await conn.send(zds.DelWorkload(pods[0][0]))
            assert await conn.receive_response() == zds.Ack("unknown pod")

    async def ztunnel():
        async with await zds.connect_zds(path) as conn:
            await conn.send(zds.ZdsHello())
            while True:
                try:
                    request, fd = await conn.receive_request()
                except zds.ZdsClosed:
                    return
                if fd is not None:
                    os.close(fd)
                applied.append(request)
                await conn.send(zds.Ack("unknown pod" if isinstance(request, zds.DelWorkload) else ""))

    pods = [("uid-1", INFO), ("uid-2", zds.WorkloadInfo("sleep-1", "ns1", "sleep"))]
    async with await zds.open_zds_listener(path) as listener, trio.open_nursery() as nursery:
        nursery.start_soon(ztunnel)
        await cni_agent(listener, pods)
    assert applied == [
        zds.AddWorkload("uid-1", INFO),
        zds.AddWorkload("uid-2", pods[1][1]),
        zds.SnapshotSent(),
        zds.DelWorkload("uid-1"),
    ]
    assert not os.path.exists(path)


async def test_listener_replaces_a_stale_socket_file(tmp_path):
    path = str(tmp_path / "ztunnel.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stale.bind(path)
    stale.close()
    async with await zds.open_zds_listener(path):
        async with await zds.connect_zds(path):
            pass
