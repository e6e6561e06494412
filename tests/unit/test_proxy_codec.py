"""Protocol sniffing: HTTP or not, and HTTP/1 versus h2c, as the proxy decides on accept."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h11
import pytest
import trio
import trio.testing

from mesh.proxy.codec import H2_PREFACE, looks_like_http, serve_http, sniff
from mesh.proxy.http import HttpRequest, HttpResponse

#: The start of a real TLS 1.2/1.3 ClientHello record.
CLIENT_HELLO = bytes.fromhex("160301020001000200fc0303") + bytes(range(32))


async def answer(req: HttpRequest) -> HttpResponse:
    return HttpResponse(200, [("x-version", req.version)], req.target.encode())


@pytest.mark.parametrize(
    "prefix, verdict",
    [
        (b"", None),
        (b"G", None),
        (b"GET", None),
        (b"GET ", None),
        (b"GET /", True),
        (b"GET /index.html HTTP/1.1\r\n", True),
        (b"POST /api", True),
        (b"OPTIONS * HTTP/1.1", True),
        (b"CONNECT svc.demo:443 HTTP/1.1", True),
        (b"GET http://svc.demo/ HTTP/1.1", True),
        (b"PROPFIND /dav", True),
        (b"P", None),  # POST, PUT, PATCH ... or the h2 preface
        (b"PRI * HTTP/2.0\r\n", None),
        (H2_PREFACE, True),
        (H2_PREFACE + b"\x00\x00\x12\x04", True),
        (b"PRI * HTTP/1.1\r\n", False),
        (b"get / HTTP/1.1", False),  # methods are case-sensitive
        (b"GET  /", False),
        (b"GET \x00", False),
        (b"HELLO", False),
        (b"GETX /", False),
        (CLIENT_HELLO[:1], False),
        (CLIENT_HELLO, False),
        (b"\x00\x00\x00\x0a\x0a5.7.0", False),  # a MySQL greeting, if a client sent one
        (b"SSH-2.0-OpenSSH_9.6\r\n", False),
    ],
)
def test_looks_like_http(prefix: bytes, verdict: bool | None) -> None:
    assert looks_like_http(prefix) is verdict


async def _sniff_pieces(pieces: list[bytes], timeout: float = 1.0, close: bool = False) -> tuple[bytes, bool]:
    client, server = trio.testing.memory_stream_pair()
    result = []

    async def run() -> None:
        result.append(await sniff(server, timeout=timeout))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            for piece in pieces:
                await trio.testing.wait_all_tasks_blocked()
                await client.send_all(piece)
            if close:
                await client.send_eof()
    return result[0]


async def test_sniff_http1() -> None:
    wire = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    assert await _sniff_pieces([wire]) == (wire, True)


async def test_sniff_h2_preface_split_over_reads() -> None:
    pieces = [H2_PREFACE[:3], H2_PREFACE[3:11], H2_PREFACE[11:]]
    assert await _sniff_pieces(pieces) == (H2_PREFACE, True)


async def test_sniff_tls_client_hello_is_not_http() -> None:
    assert await _sniff_pieces([CLIENT_HELLO]) == (CLIENT_HELLO, False)


async def test_sniff_silence_is_not_http_after_the_timeout() -> None:
    assert await _sniff_pieces([], timeout=0.02) == (b"", False)


async def test_sniff_undecided_then_silent_is_not_http() -> None:
    assert await _sniff_pieces([b"GE"], timeout=0.02) == (b"GE", False)


async def test_sniff_eof_is_not_http() -> None:
    assert await _sniff_pieces([b"PO"], close=True) == (b"PO", False)


async def test_sniff_gives_up_after_max_bytes() -> None:
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(H2_PREFACE[:16])  # still undecided, but more than we agreed to read
    assert await sniff(server, max_bytes=10) == (H2_PREFACE[:16], False)


async def test_serve_http_picks_http1_after_sniff() -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                prefix, is_http = await sniff(server)
                assert is_http
                await serve_http(server, answer, initial=prefix)

            nursery.start_soon(run)
            conn = h11.Connection(h11.CLIENT)
            await client.send_all(conn.send(h11.Request(method="GET", target="/one", headers=[("host", "a")])))
            await client.send_all(conn.send(h11.EndOfMessage()))
            events = []
            while not events or not isinstance(events[-1], h11.EndOfMessage):
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await client.receive_some(65536))
                else:
                    events.append(event)
            await client.aclose()
    assert events[0].status_code == 200 and events[1].data == b"/one"
    assert (b"x-version", b"1.1") in list(events[0].headers)


async def test_serve_http_picks_h2_when_the_preface_arrives_in_pieces() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.send_headers(
        1, [(":method", "GET"), (":authority", "a"), (":path", "/two"), (":scheme", "http")], end_stream=True
    )
    wire = conn.data_to_send()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_http, server, answer)
            for piece in (wire[:5], wire[5:20], wire[20:]):
                await client.send_all(piece)
                await trio.testing.wait_all_tasks_blocked()
            body, headers, ended = b"", {}, False
            while not ended:
                for event in conn.receive_data(await client.receive_some(65536)):
                    if isinstance(event, h2.events.ResponseReceived):
                        headers = dict(event.headers)
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = True
                await client.send_all(conn.data_to_send())
            await client.aclose()
    assert headers[b":status"] == b"200" and headers[b"x-version"] == b"2" and body == b"/two"


async def test_serve_http_client_gone_before_deciding() -> None:
    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_http, server, answer)
            await client.send_all(b"PRI * HT")
            await client.aclose()
