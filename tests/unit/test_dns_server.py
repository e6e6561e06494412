"""The DNS server's trio shell against an in-process fake lab API, queried over UDP and TCP."""
from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
from dnslib import QTYPE, RCODE, DNSRecord

from lab.client.protocol import LineDecoder, encode
from lab.client.backoff import Backoff
from lab.dns.server import TcpFramer, frame, serve

HOST = "127.0.0.1"


def service(name: str, ip: str, ns: str = "default") -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}


class FakeLabAPI:
    """labd's `watch` op: lists the stored objects, sends SYNCED, then forwards live events."""

    def __init__(self, path: str):
        self.path = path
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.sync_gate = trio.Event()
        self.sync_gate.set()
        self.requests: list[dict[str, Any]] = []
        self._live: list[trio.MemorySendChannel[dict[str, Any]]] = []
        self._connections: set[trio.CancelScope] = set()

    def store(self, obj: dict[str, Any]) -> None:
        """Changes the objects without telling current watchers (as if missed while away)."""
        self.objects[obj["kind"], obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]] = obj

    def emit(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            self.objects.pop((obj["kind"], obj["metadata"].get("namespace", "default"), obj["metadata"]["name"]))
        else:
            self.store(obj)
        for channel in self._live:
            channel.send_nowait({"type": event_type, "object": obj})

    def drop_watchers(self) -> None:
        for scope in self._connections:
            scope.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(self.path)
        sock.listen()
        await trio.serve_listeners(self._watch, [trio.SocketListener(sock)], task_status=task_status)

    async def _watch(self, stream: trio.SocketStream) -> None:
        send, receive = trio.open_memory_channel[dict[str, Any]](math.inf)
        with trio.CancelScope() as scope:
            self._connections.add(scope)
            self._live.append(send)
            try:
                decoder = LineDecoder()
                requests: list[dict[str, Any]] = []
                while not requests:
                    requests = list(decoder.feed(await stream.receive_some(65536)))
                request = requests[0]
                self.requests.append(request)
                assert request["op"] == "watch"
                for obj in list(self.objects.values()):
                    if obj["kind"] in request["kinds"]:
                        await stream.send_all(encode({"type": "ADDED", "object": obj}))
                await self.sync_gate.wait()
                await stream.send_all(encode({"type": "SYNCED", "resourceVersion": "7"}))
                async for event in receive:
                    await stream.send_all(encode(event))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self._live.remove(send)
                self._connections.discard(scope)


@pytest.fixture
def socket_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="dns") as d:  # short: Unix socket paths are limited
        yield d


@pytest.fixture
async def api(nursery: trio.Nursery, socket_dir: str) -> FakeLabAPI:
    fake = FakeLabAPI(os.path.join(socket_dir, "labd.sock"))
    fake.store(service("httpbin", "10.96.0.20", "demo"))
    await nursery.start(fake.serve)
    return fake


@pytest.fixture
async def dns_port(nursery: trio.Nursery, api: FakeLabAPI) -> int:
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


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 2.0) -> None:
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.005)


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

async def test_answers_over_udp_and_tcp(api: FakeLabAPI, dns_port: int) -> None:
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


async def test_changes_after_sync_show_up(api: FakeLabAPI, dns_port: int) -> None:
    name = "web.demo.svc.cluster.local"
    assert (await ask_udp(dns_port, name)).header.rcode == RCODE.NXDOMAIN
    api.emit("ADDED", service("web", "10.96.0.30", "demo"))

    async def resolves() -> bool:
        return addresses(await ask_udp(dns_port, name)) == ["10.96.0.30"]
    await eventually(resolves)

    api.emit("DELETED", service("web", "10.96.0.30", "demo"))

    async def gone() -> bool:
        return (await ask_udp(dns_port, name)).header.rcode == RCODE.NXDOMAIN
    await eventually(gone)


async def test_listens_only_after_the_first_sync(nursery: trio.Nursery, api: FakeLabAPI) -> None:
    with socket.socket() as probe:  # a port that is free now
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    api.sync_gate = trio.Event()
    nursery.start_soon(serve, api.path, HOST, port)
    await eventually(lambda: _true_when(bool(api.requests)))
    with pytest.raises(OSError):
        await trio.open_tcp_stream(HOST, port)
    api.sync_gate.set()

    async def accepts() -> bool:
        try:
            stream = await trio.open_tcp_stream(HOST, port)
        except OSError:
            return False
        await stream.aclose()
        return True
    await eventually(accepts)
    assert addresses(await ask_udp(port, "httpbin.demo.svc.cluster.local")) == ["10.96.0.20"]


async def _true_when(value: bool) -> bool:
    return value


async def test_reconnects_and_rebuilds_from_the_fresh_list(api: FakeLabAPI, dns_port: int) -> None:
    del api.objects["Service", "demo", "httpbin"]  # deleted while the server is not listening...
    api.store(service("late", "10.96.0.40", "demo"))
    api.drop_watchers()

    async def rebuilt() -> bool:
        old = await ask_udp(dns_port, "httpbin.demo.svc.cluster.local")
        new = await ask_udp(dns_port, "late.demo.svc.cluster.local")
        return old.header.rcode == RCODE.NXDOMAIN and addresses(new) == ["10.96.0.40"]
    await eventually(rebuilt)
    assert len(api.requests) == 2


async def test_waits_for_the_api_to_come_up(nursery: trio.Nursery, socket_dir: str) -> None:
    fake = FakeLabAPI(os.path.join(socket_dir, "later.sock"))
    fake.store(service("svc", "10.96.0.50"))

    async def start_api_later() -> None:
        await trio.sleep(0.05)
        await nursery.start(fake.serve)
    nursery.start_soon(start_api_later)
    with trio.fail_after(2):
        port = await nursery.start(serve, fake.path, HOST, 0)
    assert addresses(await ask_udp(port, "svc.default.svc.cluster.local")) == ["10.96.0.50"]


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


async def test_program_exits_promptly_on_sigterm(api: FakeLabAPI) -> None:
    env = {**os.environ, "LAB_API_SOCKET": api.path}
    argv = [sys.executable, "-m", "lab.dns.server", "--host", HOST, "--port", "0"]
    process = await trio.lowlevel.open_process(argv, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    async with process.stderr:
        try:
            log = b""
            with trio.fail_after(5):
                while b"serving DNS on" not in log:
                    chunk = await process.stderr.receive_some(4096)
                    assert chunk, log
                    log += chunk
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(2):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
