"""The proxy's HTTP/1.1 codec: the server loop and the upstream client, over memory streams.

The client side is a real h11 client (or raw bytes where h11 would refuse to send them),
so every test goes through the wire format.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial

import h11
import pytest
import trio
import trio.testing

from mesh.proxy.http import HttpLimits, HttpRequest, HttpResponse, ServeOptions, local_reply
from mesh.proxy.http1 import BEFORE_HEADERS, Http1Client, UpstreamError, serve_http1
from tests.conftest import read_all

KiB = 1024
MiB = 1024 * KiB


async def echo(req: HttpRequest) -> HttpResponse:
    """Answers with what it saw, so tests can check the request mapping (the HTTP/2 tests too)."""
    return HttpResponse(
        200,
        [
            ("x-method", req.method),
            ("x-target", req.target),
            ("x-authority", req.authority),
            ("x-scheme", req.scheme),
            ("x-version", req.version),
            ("x-cookie", req.header("cookie") or ""),
            ("x-headers", ",".join(n for n, _ in req.headers)),
            ("content-length", "999"),  # wrong on purpose: the codec writes the real one
        ],
        req.body or b"hello",
    )


@asynccontextmanager
async def serving(serve, handler=echo, **options):
    """`serve` (serve_http1 or serve_http2) on one end of a memory stream pair, with
    `ServeOptions(**options)`; yields the client end."""
    client, srv = trio.testing.memory_stream_pair()
    done = trio.Event()

    async def run() -> None:
        await serve(srv, handler, options=ServeOptions(**options))
        done.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            yield client
            await client.aclose()
            await done.wait()


def server(handler=echo, **options):
    """A serve_http1 on one end of a memory stream pair; yields the client end."""
    return serving(serve_http1, handler, **options)


class Client:
    """A real h11 client on a stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def send(self, *events) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                await self.stream.send_all(data)

    async def event(self):
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(await self.stream.receive_some(65536))

    async def response(self) -> tuple[h11.Response, bytes]:
        head = await self.event()
        while isinstance(head, h11.InformationalResponse):
            head = await self.event()
        assert isinstance(head, h11.Response), head
        body = b""
        while True:
            event = await self.event()
            if isinstance(event, h11.EndOfMessage):
                return head, body
            assert isinstance(event, h11.Data), event
            body += event.data

    async def get(self, target: str = "/", method: str = "GET", headers=(), body: bytes = b""):
        hdrs = [("host", "svc.demo:8080"), *headers]
        if body:
            hdrs.append(("content-length", str(len(body))))
        await self.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())
        head, data = await self.response()
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return head, data


def hdr(head: h11.Response, name: str) -> str | None:
    for n, v in head.headers:
        if n == name.encode():
            return v.decode()
    return None


def parse_responses(wire: bytes, requests: list[h11.Request]) -> list[tuple[h11.Response, bytes]]:
    """Read back-to-back responses with an h11 client that believes it sent `requests`."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(wire)
    out = []
    for req in requests:
        conn.send(req)
        conn.send(h11.EndOfMessage())
        head, body = None, b""
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise AssertionError(event)
        out.append((head, body))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
    return out


# ---- server ------------------------------------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    seen = []

    async def handler(req: HttpRequest) -> HttpResponse:
        seen.append(req)
        return await echo(req)

    async with server(handler) as stream:
        client = Client(stream)
        for i in range(3):
            head, body = await client.get(f"/n/{i}?q=1", headers=[("X-Req", str(i)), ("Connection", "keep-alive")])
            assert head.status_code == 200 and body == b"hello"
            assert hdr(head, "content-length") == "5"
            assert hdr(head, "connection") is None
    assert [r.target for r in seen] == ["/n/0?q=1", "/n/1?q=1", "/n/2?q=1"]
    assert seen[0].path == "/n/0" and seen[0].query == "q=1"
    assert seen[0].authority == "svc.demo:8080" and seen[0].version == "1.1"
    # Host became the authority; Connection is hop-by-hop.
    assert seen[0].headers == [("x-req", "0")]


async def test_pipelined_requests_are_answered_in_order() -> None:
    reqs = [h11.Request(method="GET", target=f"/p{i}", headers=[("host", "a")]) for i in range(3)]
    wire = b"".join(
        f"GET /p{i} HTTP/1.1\r\nHost: a\r\n{'Connection: close' if i == 2 else 'X: y'}\r\n\r\n".encode()
        for i in range(3)
    )
    async with server() as stream:
        await stream.send_all(wire)
        out = await read_all(stream)
    answers = parse_responses(out, reqs)
    assert [hdr(h, "x-target") for h, _ in answers] == ["/p0", "/p1", "/p2"]
    assert hdr(answers[2][0], "connection") == "close"


async def test_chunked_request_body_is_buffered() -> None:
    async with server() as stream:
        client = Client(stream)
        await client.send(
            h11.Request(method="POST", target="/up", headers=[("host", "a"), ("transfer-encoding", "chunked")]),
            h11.Data(data=b"abc"),
            h11.Data(data=b"defg"),
            h11.EndOfMessage(),
        )
        head, body = await client.response()
    assert head.status_code == 200 and body == b"abcdefg"
    assert hdr(head, "x-headers") == ""  # transfer-encoding did not reach the handler
    assert hdr(head, "content-length") == "7"


async def test_content_length_request_body() -> None:
    async with server() as stream:
        head, body = await Client(stream).get("/up", "PUT", body=b"x" * 5000)
    assert head.status_code == 200 and body == b"x" * 5000
    assert hdr(head, "x-headers") == "content-length"


async def test_head_response_has_length_but_no_body() -> None:
    async with server() as stream:
        client = Client(stream)
        head, body = await client.get("/", "HEAD")
        assert head.status_code == 200 and body == b""
        assert hdr(head, "content-length") == "5"
        head, body = await client.get("/")  # the connection is still in sync
        assert body == b"hello"


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    async with server() as stream:
        client = Client(stream)
        await client.send(
            h11.Request(
                method="POST", target="/", headers=[("host", "a"), ("content-length", "4"), ("expect", "100-continue")]
            )
        )
        event = await client.event()
        assert isinstance(event, h11.InformationalResponse) and event.status_code == 100
        await client.send(h11.Data(data=b"body"), h11.EndOfMessage())
        head, body = await client.response()
    assert head.status_code == 200 and body == b"body"


async def test_connection_close_is_honoured() -> None:
    async with server() as stream:
        client = Client(stream)
        head, body = await client.get("/", headers=[("connection", "close")])
        assert hdr(head, "connection") == "close"
        assert isinstance(await client.event(), h11.ConnectionClosed)


async def test_malformed_request_gets_400_and_close() -> None:
    async with server() as stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: a\r\nthis is no header\r\n\r\n")
        out = await read_all(stream)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in out and b"server: istio-envoy" in out


async def test_missing_host_on_http11_is_400() -> None:
    async with server() as stream:
        await stream.send_all(b"GET / HTTP/1.1\r\n\r\n")
        out = await read_all(stream)
    assert out.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("split", [False, True])
async def test_70k_header_gets_431(split: bool) -> None:
    async with server() as stream:
        big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * (70 * KiB) + b"\r\n\r\n"
        if split:  # arrives in pieces: h11's incomplete-event limit catches it
            for i in range(0, len(big), 8 * KiB):
                await stream.send_all(big[i : i + 8 * KiB])
                await trio.testing.wait_all_tasks_blocked()
        else:  # arrives whole: the codec's own size check catches it
            await stream.send_all(big)
        out = await read_all(stream)
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_too_many_headers_get_431() -> None:
    async with server() as stream:
        await Client(stream).send(
            h11.Request(method="GET", target="/", headers=[("host", "a")] + [(f"x-{i}", "v") for i in range(101)]),
            h11.EndOfMessage(),
        )
        out = await read_all(stream)
    assert out.startswith(b"HTTP/1.1 431 ")


async def test_9mib_body_gets_413() -> None:
    async with server() as stream:
        client = Client(stream)
        await client.send(
            h11.Request(method="POST", target="/", headers=[("host", "a"), ("content-length", str(9 * MiB))]),
            h11.Data(data=b"z" * (9 * MiB)),
        )
        head, body = await client.response()
        assert isinstance(await client.event(), h11.ConnectionClosed)
    assert head.status_code == 413 and body == b"Payload Too Large"
    assert hdr(head, "connection") == "close" and hdr(head, "content-type") == "text/plain"


async def test_chunked_body_over_the_limit_gets_413() -> None:
    async with server(limits=HttpLimits(max_body=10 * KiB)) as stream:
        client = Client(stream)
        await client.send(
            h11.Request(method="POST", target="/", headers=[("host", "a"), ("transfer-encoding", "chunked")])
        )
        for _ in range(4):
            await client.send(h11.Data(data=b"z" * (4 * KiB)))
        head, body = await client.response()
    assert head.status_code == 413 and body == b"Payload Too Large"


async def test_client_half_close_after_request_still_gets_the_answer() -> None:
    async with server() as stream:
        await stream.send_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
        await stream.send_eof()
        out = await read_all(stream)
    ((head, body),) = parse_responses(out, [h11.Request(method="POST", target="/x", headers=[("host", "a")])])
    assert head.status_code == 200 and body == b"hi"


async def test_handler_crash_gets_500_and_close(caplog) -> None:
    async def handler(req: HttpRequest) -> HttpResponse:
        raise RuntimeError("boom")

    async with server(handler) as stream:
        client = Client(stream)
        head, body = await client.get("/")
        assert isinstance(await client.event(), h11.ConnectionClosed)
    assert head.status_code == 500 and body == b"Internal Server Error"
    assert "handler failed" in caplog.text


async def test_absolute_form_target_is_split() -> None:
    seen = []

    async def handler(req: HttpRequest) -> HttpResponse:
        seen.append(req)
        return local_reply(204, server=None)

    async with server(handler) as stream:
        head, body = await Client(stream).get("http://other.demo:9090/a/b?c=d")
    assert head.status_code == 204 and hdr(head, "content-length") is None and hdr(head, "server") is None
    assert (seen[0].authority, seen[0].target, seen[0].scheme) == ("other.demo:9090", "/a/b?c=d", "http")


async def test_idle_connection_is_closed() -> None:
    async with server(idle_timeout=0.01) as stream:
        assert await read_all(stream) == b""


async def test_initial_bytes_are_parsed_first() -> None:
    client, srv = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(serve_http1, srv, echo, initial=b"GET /first HT"))
            await client.send_all(b"TP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            out = await read_all(client)
    assert out.startswith(b"HTTP/1.1 200 ") and b"x-target: /first" in out


# ---- client ------------------------------------------------------------------------------


async def test_client_reuses_the_connection() -> None:
    seen = []

    async def handler(req: HttpRequest) -> HttpResponse:
        seen.append(req)
        return HttpResponse(201, [("x-n", str(len(seen)))], b"ok")

    async with server(handler) as stream:
        client = Http1Client(stream)
        assert client.reusable
        for i in range(2):
            resp = await client.request(
                HttpRequest("POST", f"/r{i}", "svc.demo", headers=[("x-a", "1"), ("connection", "x")], body=b"abc")
            )
            assert resp.status == 201 and resp.body == b"ok" and resp.header("x-n") == str(i + 1)
            assert resp.header("content-length") == "2"
            assert client.reusable
        resp = await client.request(HttpRequest("HEAD", "/h", "svc.demo"))
        assert resp.body == b"" and resp.header("content-length") == "2"
    assert [r.authority for r in seen] == ["svc.demo"] * 3
    assert seen[0].headers == [("x-a", "1"), ("content-length", "3")] and seen[0].body == b"abc"
    assert seen[2].headers == []  # no body, no content-length


async def get_from_upstream(
    answer: bytes, *, then_close: bool = False
) -> tuple[Http1Client, HttpResponse | UpstreamError]:
    """One GET through an `Http1Client` to an upstream that reads the request, sends `answer`
    and, if `then_close`, closes: the client, and the response or the `UpstreamError` raised."""
    up, down = trio.testing.memory_stream_pair()
    client = Http1Client(up)

    async def upstream() -> None:
        await down.receive_some(65536)  # the request
        if answer:
            await down.send_all(answer)
        if then_close:
            await down.aclose()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upstream)
            try:
                return client, await client.request(HttpRequest("GET", "/", "a"))
            except UpstreamError as exc:
                return client, exc


async def test_client_is_not_reusable_after_connection_close() -> None:
    client, resp = await get_from_upstream(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye")
    assert isinstance(resp, HttpResponse)
    assert resp.body == b"bye" and resp.headers == [("content-length", "3")]
    assert not client.reusable
    with pytest.raises(UpstreamError):
        await client.request(HttpRequest("GET", "/", "a"))


async def test_handler_cannot_set_hop_by_hop_headers() -> None:
    async def handler(req: HttpRequest) -> HttpResponse:
        return HttpResponse(200, [("connection", "close"), ("transfer-encoding", "chunked"), ("x", "1")], b"ok")

    async with server(handler) as stream:
        client = Client(stream)
        head, body = await client.get("/")
        assert [(n, v) for n, v in head.headers] == [(b"x", b"1"), (b"content-length", b"2")]
        head, body = await client.get("/")  # still alive
        assert body == b"ok"


async def test_client_raises_upstream_error_on_early_close() -> None:
    client, error = await get_from_upstream(b"", then_close=True)
    assert isinstance(error, UpstreamError)
    assert error.reason == BEFORE_HEADERS + "connection termination"
    assert error.reason == (
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    )
    assert error.reset_reason == "connection termination"
    assert error.status == 503 and not error.response_started
    assert not client.reusable


async def test_client_raises_upstream_error_on_truncated_body() -> None:
    _, error = await get_from_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", then_close=True)
    assert isinstance(error, UpstreamError)
    assert error.response_started and "connection termination" in error.reason


async def test_client_protocol_error() -> None:
    _, error = await get_from_upstream(b"SSH-2.0-OpenSSH\r\n\r\n")
    assert isinstance(error, UpstreamError)
    assert error.reason.endswith("reset reason: protocol error")


async def test_unsendable_response_closes_quietly(caplog) -> None:
    async def handler(req: HttpRequest) -> HttpResponse:
        return HttpResponse(200, [("x-name", "\u2603")], b"")

    async with server(handler) as stream:
        await Client(stream).send(h11.Request(method="GET", target="/", headers=[("host", "a")]), h11.EndOfMessage())
        assert await read_all(stream) == b""
    assert "cannot send response" in caplog.text


async def test_413_reaches_a_client_still_sending_over_a_real_socket() -> None:
    a, b = trio.socket.socketpair()
    client, srv = trio.SocketStream(a), trio.SocketStream(b)
    body = b"z" * (9 * MiB)

    async def send() -> None:
        try:  # the server may stop reading once it has answered
            await client.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            await client.send_all(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        except trio.BrokenResourceError:
            pass
        sent.set()

    sent = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_http1, srv, echo)
            nursery.start_soon(send)
            out = await read_all(client)  # the answer arrives while the body is still going out
            await sent.wait()  # the server drained it rather than resetting the connection
            await client.aclose()
    assert out.startswith(b"HTTP/1.1 413 Payload Too Large\r\n") and out.endswith(b"Payload Too Large")
