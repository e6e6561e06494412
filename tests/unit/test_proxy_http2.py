"""The proxy's h2c server, driven by a real h2 client connection over memory streams."""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import trio
import trio.testing
from h2.errors import ErrorCodes

from mesh.proxy.http import HttpLimits, HttpRequest, HttpResponse
from mesh.proxy.http2 import serve_http2

from .test_proxy_http1 import echo, serving

KiB = 1024
MiB = 1024 * KiB


@dataclass
class Answer:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False
    reset: ErrorCodes | None = None

    @property
    def status(self) -> int:
        return int(self.headers[":status"])


class Client:
    """A real h2 client connection; it acknowledges DATA as it reads, as a browser would."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.answers: dict[int, Answer] = {}
        self.terminated = False

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def start(
        self, path: str = "/", method: str = "GET", body: bytes = b"", extra=(), authority="svc.demo", end: bool = True
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", "http")]
        if authority is not None:
            headers.insert(1, (":authority", authority))
        self.conn.send_headers(sid, headers + list(extra), end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self.answers[sid] = Answer()
        await self.flush()
        return sid

    async def pump(self) -> None:
        data = await self.stream.receive_some(1024 * 1024)
        if not data:
            self.terminated = True
            return
        for event in self.conn.receive_data(data):
            answer = self.answers.get(getattr(event, "stream_id", 0))
            if isinstance(event, h2.events.ResponseReceived):
                answer.headers = {n.decode(): v.decode() for n, v in event.headers}
            elif isinstance(event, h2.events.DataReceived):
                answer.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                answer.ended = True
            elif isinstance(event, h2.events.StreamReset):
                answer.reset = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = True
        await self.flush()

    async def wait(self, *sids: int) -> list[Answer]:
        while not all(self.answers[s].ended or self.answers[s].reset is not None for s in sids):
            assert not self.terminated
            await self.pump()
        return [self.answers[s] for s in sids]

    async def request(self, *args, **kwargs) -> Answer:
        (answer,) = await self.wait(await self.start(*args, **kwargs))
        return answer


@asynccontextmanager
async def server(handler=echo, **options):
    """A serve_http2 with a `Client` on the other end of its stream."""
    async with serving(serve_http2, handler, **options) as client_stream:
        client = Client(client_stream)
        await client.flush()
        yield client


async def test_request_mapping() -> None:
    async with server() as client:
        a = await client.request(
            "/p?q=1", "POST", b"data", extra=[("cookie", "a=1"), ("cookie", "b=2"), ("te", "trailers"), ("x-y", "z")]
        )
        b = await client.request("/h", authority=None, extra=[("host", "fallback.demo")])
    assert a.status == 200 and a.body == b"data" and a.headers["content-length"] == "4"
    assert a.headers["x-target"] == "/p?q=1" and a.headers["x-authority"] == "svc.demo"
    assert a.headers["x-method"] == "POST" and a.headers["x-version"] == "2" and a.headers["x-scheme"] == "http"
    assert a.headers["x-cookie"] == "a=1; b=2"
    assert a.headers["x-headers"] == "x-y,cookie"  # te is hop-by-hop; cookie crumbs are merged
    assert b.headers["x-authority"] == "fallback.demo" and b.headers["x-headers"] == ""


async def test_two_concurrent_streams() -> None:
    second_arrived = trio.Event()

    async def handler(req: HttpRequest) -> HttpResponse:
        if req.path == "/first":
            await second_arrived.wait()  # only returns if /second is handled meanwhile
        else:
            second_arrived.set()
        return HttpResponse(200, [], req.path.encode())

    async with server(handler) as client:
        s1 = await client.start("/first")
        s3 = await client.start("/second")
        a, b = await client.wait(s1, s3)
    assert (a.body, b.body) == (b"/first", b"/second")


async def test_one_mib_response_respects_flow_control() -> None:
    big = bytes(range(256)) * (4 * KiB)

    async def handler(req: HttpRequest) -> HttpResponse:
        return HttpResponse(200, [], big)

    async with server(handler) as client:
        answer = await client.request("/big")
        assert answer.body == big and answer.headers["content-length"] == str(MiB)
        # The client's windows (65535 bytes) were far smaller: WINDOW_UPDATEs drove the rest.
        assert client.conn.local_settings.initial_window_size == 65535
        assert (await client.request("/again")).body == big


async def test_head_response_has_no_body() -> None:
    async with server() as client:
        answer = await client.request("/", "HEAD")
    assert answer.body == b"" and answer.headers["content-length"] == "5"


async def test_rst_stream_cancels_only_that_request() -> None:
    cancelled = trio.Event()
    started = trio.Event()

    async def handler(req: HttpRequest) -> HttpResponse:
        if req.path == "/slow":
            try:
                started.set()
                await trio.sleep_forever()
            finally:
                cancelled.set()
        return HttpResponse(200, [], b"fast")

    async with server(handler) as client:
        slow = await client.start("/slow")
        other = await client.start("/slow")
        await started.wait()
        client.conn.reset_stream(slow, ErrorCodes.CANCEL)
        await client.flush()
        await cancelled.wait()
        assert (await client.request("/fast")).body == b"fast"
        assert not client.answers[other].ended  # the other slow request still runs


async def test_huge_header_gets_431_on_its_stream_only() -> None:
    async with server() as client:
        big = await client.request("/", extra=[("x-big", "a" * (70 * KiB))])
        assert big.status == 431 and big.body == b"Request Header Fields Too Large"
        ok = await client.request("/")
        assert ok.status == 200 and ok.body == b"hello"


async def test_too_many_headers_get_431() -> None:
    async with server() as client:
        answer = await client.request("/", extra=[(f"x-{i}", "v") for i in range(101)])
    assert answer.status == 431


async def test_body_over_the_limit_gets_413_and_reset() -> None:
    async with server(limits=HttpLimits(max_body=10 * KiB)) as client:
        sid = await client.start("/", "POST", extra=[("content-type", "x")], end=False)
        client.conn.send_data(sid, b"z" * (12 * KiB))
        await client.flush()
        (answer,) = await client.wait(sid)
        while answer.reset is None:
            await client.pump()
        assert answer.status == 413 and answer.body == b"Payload Too Large"
        assert answer.reset == ErrorCodes.NO_ERROR
        assert (await client.request("/")).status == 200


async def test_handler_crash_gets_500_and_the_connection_goes_on(caplog) -> None:
    async def handler(req: HttpRequest) -> HttpResponse:
        if req.path == "/bad":
            raise ValueError("boom")
        return HttpResponse(200, [], b"ok")

    async with server(handler) as client:
        bad = await client.request("/bad")
        good = await client.request("/good")
    assert bad.status == 500 and good.body == b"ok"
    assert "handler failed" in caplog.text


async def test_goaway_ends_the_connection_cleanly() -> None:
    cancelled = trio.Event()

    async def handler(req: HttpRequest) -> HttpResponse:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    client_stream, srv = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_http2, srv, handler)
            client = Client(client_stream)
            await client.start("/")
            await trio.testing.wait_all_tasks_blocked()
            client.conn.close_connection()
            await client.flush()
            while await client_stream.receive_some(65536):  # until the server closes its side
                pass
            await cancelled.wait()


async def test_idle_connection_gets_goaway() -> None:
    async with server(idle_timeout=0.01) as client:
        while not client.terminated:
            await client.pump()


async def test_garbage_instead_of_preface_ends_quietly() -> None:
    client_stream, srv = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_http2, srv, echo)
            await client_stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" + b"x" * 100)
            out = b""
            while chunk := await client_stream.receive_some(65536):
                out += chunk
    assert out  # SETTINGS and GOAWAY


async def test_initial_bytes_hold_the_preface() -> None:
    client_stream, srv = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            client = Client(client_stream)
            preface = client.conn.data_to_send()
            nursery.start_soon(lambda: serve_http2(srv, echo, initial=preface[:10]))
            await client_stream.send_all(preface[10:])
            answer = await client.request("/x")
            assert answer.headers["x-target"] == "/x"
            await client_stream.aclose()


async def test_unsendable_response_resets_only_its_stream(caplog) -> None:
    async def handler(req: HttpRequest) -> HttpResponse:
        if req.path == "/bad":
            return HttpResponse(200, [("x-name", "\u2603")], b"")
        return HttpResponse(200, [], b"ok")

    async with server(handler) as client:
        bad = await client.request("/bad")
        assert bad.reset == ErrorCodes.INTERNAL_ERROR
        assert (await client.request("/good")).body == b"ok"
