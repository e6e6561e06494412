"""The echo app: its pure answer, and its HTTP and TCP servers over real sockets."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import h11
import pytest
import trio
import trio.testing

from lab.apps.echo import (
    AppInfo,
    EchoRequest,
    canonical_header,
    echo,
    parse_codes,
    parse_duration,
    pick_code,
    serve_http,
    serve_tcp_echo,
)
from tests.conftest import read_all

HOST = "127.0.0.1"
INFO = AppInfo(service_version="v2", hostname="echo-7d9f-abcde", namespace="demo")


def fields(body: bytes) -> list[tuple[str, str]]:
    return [tuple(line.split("=", 1)) for line in body.decode().splitlines()]  # type: ignore[misc]


def request(target: str = "/", headers: list[tuple[str, str]] | None = None) -> EchoRequest:
    return EchoRequest(
        "GET", target, "HTTP/1.1", headers if headers is not None else [("Host", "echo:8080")], "10.244.0.7", 8080
    )


# ---- the pure core -----------------------------------------------------------------------


def test_body_fields_in_order() -> None:
    headers = [("Host", "echo.demo:8080"), ("user-agent", "curl/8"), ("X-B", "2"), ("x-a", "1"), ("X-B", "3")]
    response = echo(request("/path?x=1", headers), INFO, random.Random(0))
    assert response.status == 200 and response.delay == 0
    assert ("Content-Type", "text/plain") in response.headers
    assert fields(response.body) == [
        ("ServiceVersion", "v2"),
        ("ServicePort", "8080"),
        ("Host", "echo.demo:8080"),
        ("URL", "/path?x=1"),
        ("Method", "GET"),
        ("Proto", "HTTP/1.1"),
        ("IP", "10.244.0.7"),
        ("RequestHeader", "User-Agent:curl/8"),
        ("RequestHeader", "X-A:1"),
        ("RequestHeader", "X-B:2"),
        ("RequestHeader", "X-B:3"),
        ("Hostname", "echo-7d9f-abcde"),
        ("Namespace", "demo"),
        ("StatusCode", "200"),
    ]


def test_codes_delay_and_response_headers() -> None:
    response = echo(request("/?codes=418&delay=1.5s&headers=X-Test:yes,Foo:bar"), INFO, random.Random(0))
    assert response.status == 418 and response.delay == 1.5
    assert ("X-Test", "yes") in response.headers and ("Foo", "bar") in response.headers
    assert fields(response.body)[-1] == ("StatusCode", "418")


def test_bad_parameters_are_reported_with_400() -> None:
    response = echo(request("/?codes=abc&delay=soon&headers=novalue"), INFO, random.Random(0))
    lines = response.body.decode().splitlines()
    assert response.status == 400 and response.delay == 0
    assert lines[0].startswith("error delaying response error:")
    assert lines[1].startswith("response headers error:")
    assert lines[2].startswith("codes error:")
    assert lines[-1] == "StatusCode=400"


def test_weighted_codes() -> None:
    assert parse_codes("503:1,200:3") == [(503, 1), (200, 3)]
    assert parse_codes("204") == [(204, 1)]
    for bad in ("99", "600", "200:x", "200:-1", "", "2_00", " 200"):
        with pytest.raises(ValueError):
            parse_codes(bad)
    rng = random.Random(7)
    picks = [pick_code([(503, 1), (200, 3)], rng) for _ in range(400)]
    assert 50 < picks.count(503) < 150 and set(picks) == {200, 503}
    assert pick_code([(500, 0), (201, 0)], rng) == 201


def test_go_durations() -> None:
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("1m30s") == 90
    assert parse_duration("1.5h") == 5400
    assert parse_duration("250us") == pytest.approx(0.00025)
    assert parse_duration("0") == 0
    assert parse_duration("-2s") == -2
    for bad in ("", "10", "1x", "ms", "1s garbage"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_canonical_header_names() -> None:
    assert canonical_header("x-forwarded-client-cert") == "X-Forwarded-Client-Cert"
    assert canonical_header("USER-AGENT") == "User-Agent"


def test_app_info_from_environment(tmp_path: Path) -> None:
    namespace_file = tmp_path / "namespace"
    assert AppInfo.from_environ({}, str(namespace_file)) == AppInfo("v1", "", "")
    namespace_file.write_text("from-file\n")
    assert AppInfo.from_environ({"HOSTNAME": "h"}, str(namespace_file)) == AppInfo("v1", "h", "from-file")
    env = {"SERVICE_VERSION": "v3", "HOSTNAME": "h", "POD_NAMESPACE": "from-env"}
    assert AppInfo.from_environ(env, str(namespace_file)) == AppInfo("v3", "h", "from-env")


# ---- the servers -------------------------------------------------------------------------


class HttpClient:
    """A minimal h11 client over one TCP connection (so keep-alive is observable)."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def get(
        self, target: str, headers: list[tuple[str, str]] | None = None, method: str = "GET"
    ) -> tuple[h11.Response, bytes]:
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("Host", "echo.test"), *(headers or [])]
        await self.stream.send_all(
            self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
            + self.conn.send(h11.EndOfMessage())
        )
        response, body = None, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return response, body


@pytest.fixture
async def http_port(nursery: trio.Nursery) -> int:
    return await nursery.start(partial(serve_http, HOST, 0, info=INFO))


async def test_http_echo_over_a_socket(http_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    async with await trio.open_tcp_stream(HOST, http_port) as stream:
        response, body = await HttpClient(stream).get("/hello?x=1", [("X-Trace", "abc")])
    assert (response.status_code, response.reason) == (200, b"OK")
    assert dict(response.headers)[b"content-type"] == b"text/plain"
    got = dict(fields(body))
    assert got["ServicePort"] == str(http_port) and got["IP"] == HOST and got["Host"] == "echo.test"
    assert got["URL"] == "/hello?x=1" and got["Method"] == "GET" and got["Proto"] == "HTTP/1.1"
    assert got["Hostname"] == "echo-7d9f-abcde" and got["Namespace"] == "demo" and got["ServiceVersion"] == "v2"
    assert ("RequestHeader", "X-Trace:abc") in fields(body)
    assert f"{HOST} GET /hello?x=1 200" in capsys.readouterr().out


async def test_keep_alive_status_and_head(http_port: int) -> None:
    async with await trio.open_tcp_stream(HOST, http_port) as stream:
        client = HttpClient(stream)
        first, _ = await client.get("/one")
        second, body = await client.get("/two?codes=503")
        head, head_body = await client.get("/three", method="HEAD")
        empty, empty_body = await client.get("/four?codes=204")
    assert (first.status_code, second.status_code, head.status_code) == (200, 503, 200)
    assert (empty.status_code, empty_body) == (204, b"")
    assert dict(fields(body))["URL"] == "/two?codes=503" and dict(fields(body))["StatusCode"] == "503"
    assert head_body == b"" and int(dict(head.headers)[b"content-length"]) > 0


async def test_delay(autojump_clock: trio.testing.MockClock, http_port: int) -> None:
    """The answer waits for the delay asked, on trio's clock (which jumps: no real waiting)."""
    async with await trio.open_tcp_stream(HOST, http_port) as stream:
        start = trio.current_time()
        response, _ = await HttpClient(stream).get("/?delay=100ms")
        assert response.status_code == 200 and trio.current_time() - start >= 0.1


async def test_garbage_gets_400_and_the_server_lives_on(http_port: int) -> None:
    async with await trio.open_tcp_stream(HOST, http_port) as stream:
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        reply = await read_all(stream)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    async with await trio.open_tcp_stream(HOST, http_port) as stream:
        response, _ = await HttpClient(stream).get("/")
        assert response.status_code == 200


async def test_tcp_echo(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve_tcp_echo, HOST, 0)
    payload = b"hello\n" + bytes(range(256)) * 512
    async with await trio.open_tcp_stream(HOST, port) as stream:
        async with trio.open_nursery() as inner:

            async def send() -> None:
                await stream.send_all(payload)
                await stream.send_eof()

            inner.start_soon(send)
            received = await read_all(stream)
    assert received == payload
