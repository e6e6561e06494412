"""The DNS server's trio shell against labd's API in process (lab.testing.InProcessLabApi),
queried over UDP and TCP."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing
from dnslib import QTYPE, RCODE, DNSRecord

from lab.client.backoff import Backoff
from lab.dns.server import TcpFramer, frame, serve
from lab.testing import InProcessLabApi
from tests.conftest import eventually

HOST = "127.0.0.1"


def service(name: str, ip: str, ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
    }


def demo_api(api: InProcessLabApi) -> InProcessLabApi:
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    api.apply(service("httpbin", "10.96.0.20", "demo"))
    return api


@pytest.fixture
async def api(lab_api: InProcessLabApi) -> InProcessLabApi:
    return demo_api(lab_api)


@pytest.fixture
async def dns_port(nursery: trio.Nursery, api: InProcessLabApi) -> int:
    return await nursery.start(serve, api.path, HOST, 0)


async def query_udp(port: int, wire: bytes, timeout: float = 1.0) -> DNSRecord | None:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect((HOST, port))
        await sock.send(wire)
        with trio.move_on_after(timeout):
            return DNSRecord.parse(await sock.recv(65535))
    return None


async def receive_framed(stream: trio.SocketStream, framer: TcpFramer) -> list[DNSRecord]:
    with trio.fail_after(1):
        while not (messages := framer.feed(await stream.receive_some(65536))):
            pass
    return [DNSRecord.parse(m) for m in messages]


async def ask_udp(port: int, name: str, qtype: str = "A") -> DNSRecord:
    reply = await query_udp(port, DNSRecord.question(name, qtype).pack())
    assert reply is not None
    return reply


def addresses(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A)


# ---- sans-IO helpers ---------------------------------------------------------------------


def test_tcp_framer_handles_split_and_joined_messages() -> None:
    framer = TcpFramer()
    data = frame(b"abc") + frame(b"") + frame(b"xyz")
    assert framer.feed(data[:1]) == []
    assert framer.feed(data[1:6]) == [b"abc"]
    assert framer.feed(data[6:]) == [b"", b"xyz"]


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    backoff = Backoff(0.01, 0.05)
    assert [backoff.next() for _ in range(5)] == [0.01, 0.02, 0.04, 0.05, 0.05]
    backoff.reset()
    assert backoff.next() == 0.01


# ---- the server --------------------------------------------------------------------------


async def test_answers_over_udp_and_tcp(api: InProcessLabApi, dns_port: int) -> None:
    assert api.requests[0]["kinds"] == ["Service", "Endpoints", "Pod"]
    assert addresses(await ask_udp(dns_port, "httpbin.demo.svc.cluster.local")) == ["10.96.0.20"]
    stream = await trio.open_tcp_stream(HOST, dns_port)
    async with stream:
        first = DNSRecord.question("httpbin.demo.svc.cluster.local")
        second = DNSRecord.question("nope.demo.svc.cluster.local")
        await stream.send_all(frame(first.pack()) + frame(second.pack()))  # pipelined
        framer = TcpFramer()
        replies = await receive_framed(stream, framer)
        if len(replies) < 2:
            replies += await receive_framed(stream, framer)
    assert [r.header.id for r in replies] == [first.header.id, second.header.id]
    assert addresses(replies[0]) == ["10.96.0.20"]
    assert replies[1].header.rcode == RCODE.NXDOMAIN


async def test_changes_after_sync_show_up(api: InProcessLabApi, dns_port: int) -> None:
    name = "web.demo.svc.cluster.local"
    assert (await ask_udp(dns_port, name)).header.rcode == RCODE.NXDOMAIN
    api.apply(service("web", "10.96.0.30", "demo"))

    async def resolves() -> bool:
        return addresses(await ask_udp(dns_port, name)) == ["10.96.0.30"]

    await eventually(resolves)

    api.delete("Service", "demo", "web")

    async def gone() -> bool:
        return (await ask_udp(dns_port, name)).header.rcode == RCODE.NXDOMAIN

    await eventually(gone)


async def test_listens_only_after_the_first_sync(nursery: trio.Nursery, api: InProcessLabApi) -> None:
    with socket.socket() as probe:  # a port that is free now
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    with api.watchers_away():
        nursery.start_soon(serve, api.path, HOST, port)
        await eventually(lambda: bool(api.requests))
        with pytest.raises(OSError):
            await trio.open_tcp_stream(HOST, port)

    async def accepts() -> bool:
        try:
            stream = await trio.open_tcp_stream(HOST, port)
        except OSError:
            return False
        await stream.aclose()
        return True

    await eventually(accepts)
    assert addresses(await ask_udp(port, "httpbin.demo.svc.cluster.local")) == ["10.96.0.20"]


async def test_reconnects_and_rebuilds_from_the_fresh_list(api: InProcessLabApi, dns_port: int) -> None:
    with api.watchers_away():  # changed while the server is not listening...
        api.delete("Service", "demo", "httpbin")
        api.apply(service("late", "10.96.0.40", "demo"))

    async def rebuilt() -> bool:
        old = await ask_udp(dns_port, "httpbin.demo.svc.cluster.local")
        new = await ask_udp(dns_port, "late.demo.svc.cluster.local")
        return old.header.rcode == RCODE.NXDOMAIN and addresses(new) == ["10.96.0.40"]

    await eventually(rebuilt)
    assert api.ops() == ["watch", "watch"]


async def test_waits_for_the_api_to_come_up(nursery: trio.Nursery, socket_dir: str) -> None:
    api = demo_api(InProcessLabApi(socket_dir))
    dns = trio.Event()

    async def start_dns() -> None:
        await nursery.start(serve, api.path, HOST, 0)
        dns.set()

    nursery.start_soon(start_dns)
    await trio.testing.wait_all_tasks_blocked()
    assert not dns.is_set()  # retrying: nothing listens on the socket yet
    await nursery.start(api.serve)
    with trio.fail_after(2):
        await dns.wait()
    assert api.ops() == ["watch"]


async def test_malformed_queries_do_not_hurt(dns_port: int) -> None:
    good = DNSRecord.question("httpbin.demo.svc.cluster.local")
    garbage = good.pack()[:12] + b"\xc0\xff\x00"
    assert await query_udp(dns_port, b"\x01\x02\x03", timeout=0.05) is None  # too short: dropped
    formerr = await query_udp(dns_port, garbage)
    assert formerr is not None and formerr.header.rcode == RCODE.FORMERR
    assert formerr.header.id == good.header.id
    stream = await trio.open_tcp_stream(HOST, dns_port)
    async with stream:
        await stream.send_all(frame(garbage))
        framer = TcpFramer()
        [reply] = await receive_framed(stream, framer)
        assert reply.header.rcode == RCODE.FORMERR
        await stream.send_all(frame(good.pack()))
        [reply] = await receive_framed(stream, framer)
        assert addresses(reply) == ["10.96.0.20"]
    assert addresses(await ask_udp(dns_port, "httpbin.demo.svc.cluster.local")) == ["10.96.0.20"]
