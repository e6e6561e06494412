"""The echo app: shows a test what reached a workload, in the spirit of Istio's test echo server.

`python -m lab.apps.echo --port 8080 [--port 9090 ...] [--tcp-port 9000 ...]`

HTTP/1.1 (h11, keep-alive): every request gets a text/plain body of `Key=Value` lines:
ServiceVersion, ServicePort, Host, URL, Method, Proto, IP (the TCP peer, so a proxy in the path
shows), one `RequestHeader=Name:value` per header, Hostname, Namespace, StatusCode. As in
Istio's echo (Go), header names are canonicalized (`X-Forwarded-For`) and sorted, and Host is
reported as `Host=` rather than as a request header. Query parameters steer the answer:
`codes=503` or `codes=503:1,200:3` (status, weighted), `delay=100ms` (a Go duration), and
`headers=Name:value,...` (extra response headers). A parameter that cannot be used is reported
in the body's first lines; a bad `codes` also makes the status 400 (as Istio's echo does).
One line per request goes to stdout: `<ip> <method> <url> <status>`.

A `--tcp-port` is a plain TCP echo: it writes back the bytes it reads, nothing else.
"""

from __future__ import annotations

import argparse
import http
import os
import random
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from urllib.parse import parse_qsl

import h11
import trio

from lab.client.contract import ENV_POD_NAMESPACE
from lab.client.process import open_nursery_until_signalled, run_main

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
MAX_RECEIVE = 65536
NO_BODY_STATUSES = (204, 304)  # HTTP forbids a body there; like Go's server we drop it
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP header name
_FIELD_VALUE = re.compile(r"[\x20-\x7e]*")  # what we accept as a header value from ?headers=


# ---- the sans-IO core --------------------------------------------------------------------


@dataclass(frozen=True)
class AppInfo:
    """Who this workload is, as the environment of its container says."""

    service_version: str = "v1"
    hostname: str = ""
    namespace: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ, namespace_file: str = SA_NAMESPACE_FILE) -> AppInfo:
        namespace = environ.get("POD_NAMESPACE") or environ.get(ENV_POD_NAMESPACE, "")
        if not namespace:
            try:
                with open(namespace_file, encoding="utf-8") as f:
                    namespace = f.read().strip()
            except OSError:
                namespace = ""
        return cls(environ.get("SERVICE_VERSION") or "v1", environ.get("HOSTNAME", ""), namespace)


@dataclass(frozen=True)
class EchoRequest:
    method: str
    target: str
    http_version: str
    headers: list[tuple[str, str]]  # in arrival order, names as received
    peer_ip: str
    local_port: int


@dataclass(frozen=True)
class EchoResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    delay: float  # seconds to wait before answering


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds from a Go duration string (`100ms`, `1.5s`, `1m30s`); ValueError if it is none."""
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


def parse_codes(text: str) -> list[tuple[int, int]]:
    """`code[:weight][,code[:weight]]*` as (status, weight) pairs; ValueError if malformed."""
    codes = []
    for item in text.split(","):
        code_text, _, weight_text = item.partition(":")
        weight_text = weight_text or "1"
        if not (code_text.isdigit() and weight_text.isdigit() and 200 <= int(code_text) < 600):
            raise ValueError(f"invalid code {item!r} (want code[:weight], a status 200-599)")
        codes.append((int(code_text), int(weight_text)))
    return codes


def pick_code(codes: list[tuple[int, int]], rng: random.Random) -> int:
    total = sum(weight for _, weight in codes)
    if total == 0:
        return codes[-1][0]
    slot = rng.randrange(total)
    for code, weight in codes:
        if slot < weight:
            return code
        slot -= weight
    return codes[-1][0]


def canonical_header(name: str) -> str:
    """Go's canonical MIME header key: `x-request-id` -> `X-Request-Id`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def echo(request: EchoRequest, info: AppInfo, rng: random.Random) -> EchoResponse:
    """What the echo answers to one request (pure: the shell does the waiting and the I/O)."""
    problems: list[str] = []
    # The first value of a repeated parameter wins, as with Go's FormValue.
    query = dict(reversed(parse_qsl(request.target.partition("?")[2], keep_blank_values=True)))
    delay = 0.0
    if query.get("delay"):
        try:
            delay = max(0.0, parse_duration(query["delay"]))
        except ValueError as e:
            problems.append(f"error delaying response error: {e}")
    extra_headers = []
    for item in filter(None, query.get("headers", "").split(",")):
        name, sep, value = item.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            problems.append(f"response headers error: invalid {item!r} (want name:value)")
        else:
            extra_headers.append((name, value.strip()))
    status = 200
    if query.get("codes"):
        try:
            status = pick_code(parse_codes(query["codes"]), rng)
        except ValueError as e:
            problems.append(f"codes error: {e}")
            status = 400

    grouped: dict[str, list[str]] = {}
    host = ""
    for name, value in request.headers:
        if name.lower() == "host":
            host = host or value
        else:
            grouped.setdefault(canonical_header(name), []).append(value)
    lines = [
        *problems,
        f"ServiceVersion={info.service_version}",
        f"ServicePort={request.local_port}",
        f"Host={host}",
        f"URL={request.target}",
        f"Method={request.method}",
        f"Proto={request.http_version}",
        f"IP={request.peer_ip}",
        *(f"RequestHeader={name}:{value}" for name in sorted(grouped) for value in grouped[name]),
        f"Hostname={info.hostname}",
        f"Namespace={info.namespace}",
        f"StatusCode={status}",
    ]
    body = ("\n".join(lines) + "\n").encode("utf-8", "replace")
    return EchoResponse(status, [("Content-Type", "text/plain"), *extra_headers], body, delay)


# ---- the trio shell ----------------------------------------------------------------------


async def _next_event(conn: h11.Connection, stream: trio.SocketStream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        if conn.they_are_waiting_for_100_continue:
            await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        conn.receive_data(await stream.receive_some(MAX_RECEIVE))


async def _answer(
    conn: h11.Connection,
    stream: trio.SocketStream,
    request: h11.Request,
    peer_ip: str,
    local_port: int,
    info: AppInfo,
    rng: random.Random,
) -> None:
    while not isinstance(await _next_event(conn, stream), h11.EndOfMessage):
        pass  # the body is not echoed; read it so the connection can be reused
    decoded = EchoRequest(
        method=request.method.decode("ascii", "replace"),
        target=request.target.decode("ascii", "replace"),
        http_version="HTTP/" + request.http_version.decode("ascii"),
        headers=[(n.decode("ascii", "replace"), v.decode("latin-1")) for n, v in request.headers.raw_items()],
        peer_ip=peer_ip,
        local_port=local_port,
    )
    response = echo(decoded, info, rng)
    if response.delay:
        await trio.sleep(response.delay)
    headers = list(response.headers)
    if response.status not in NO_BODY_STATUSES:
        headers.append(("Content-Length", str(len(response.body))))
    data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status)))
    if decoded.method != "HEAD" and response.status not in NO_BODY_STATUSES:
        data += conn.send(h11.Data(data=response.body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)
    print(f"{peer_ip} {decoded.method} {decoded.target} {response.status}", flush=True)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def _http_connection(stream: trio.SocketStream, info: AppInfo, rng: random.Random) -> None:
    """Serves one keep-alive connection; a broken or misbehaving peer only ends its own."""
    conn = h11.Connection(h11.SERVER)
    async with stream:
        try:
            peer_ip, local_port = stream.socket.getpeername()[0], stream.socket.getsockname()[1]
            while True:
                event = await _next_event(conn, stream)
                if not isinstance(event, h11.Request):
                    return  # ConnectionClosed
                await _answer(conn, stream, event, peer_ip, local_port, info, rng)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # Connection: close, HTTP/1.0
                conn.start_next_cycle()
        except h11.RemoteProtocolError as e:
            await _refuse(conn, stream, e)
        except h11.LocalProtocolError as e:  # a bug of ours: end this connection, not the server
            print(f"echo: cannot answer: {e}", file=sys.stderr, flush=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return


async def _refuse(conn: h11.Connection, stream: trio.SocketStream, error: h11.RemoteProtocolError) -> None:
    """Answers what h11 could not parse (400, 431, ...) unless a response has already begun."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = f"bad request: {error}\n".encode()
    headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("Connection", "close")]
    data = conn.send(
        h11.Response(status_code=error.error_status_hint, headers=headers, reason=_reason(error.error_status_hint))
    )
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def _tcp_echo_connection(stream: trio.SocketStream) -> None:
    async with stream:
        total = 0
        try:
            peer_ip, local_port = stream.socket.getpeername()[0], stream.socket.getsockname()[1]
            while data := await stream.receive_some(MAX_RECEIVE):
                total += len(data)
                await stream.send_all(data)
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        print(f"{peer_ip} TCP :{local_port} {total} bytes", flush=True)


async def _serve(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    host: str,
    port: int,
    what: str,
    task_status: trio.TaskStatus[int],
) -> None:
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        print(f"echo: listening {what} on {host}:{bound}", file=sys.stderr, flush=True)
        task_status.started(bound)


async def serve_http(
    host: str,
    port: int,
    *,
    info: AppInfo | None = None,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves the HTTP echo until cancelled; reports the bound port (useful with port 0)."""
    handler = partial(_http_connection, info=info or AppInfo.from_environ(), rng=rng or random.Random())
    await _serve(handler, host, port, "HTTP/1.1", task_status)


async def serve_tcp_echo(host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serves the raw TCP echo until cancelled; reports the bound port."""
    await _serve(_tcp_echo_connection, host, port, "TCP echo", task_status)


async def _run(host: str, http_ports: list[int], tcp_ports: list[int]) -> None:
    info = AppInfo.from_environ()
    async with open_nursery_until_signalled() as nursery:
        for port in http_ports:
            await nursery.start(partial(serve_http, host, port, info=info))
        for port in tcp_ports:
            await nursery.start(partial(serve_tcp_echo, host, port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.apps.echo", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, action="append", default=[], help="HTTP port (repeatable)")
    parser.add_argument("--tcp-port", type=int, action="append", default=[], help="TCP echo port (repeatable)")
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args(argv)
    http_ports = args.port or ([] if args.tcp_port else [8080])
    return run_main(
        _run,
        args.host,
        http_ports,
        args.tcp_port,  # OSError: a port that cannot be bound
        on_os_error=lambda e: print(f"echo: {e}", file=sys.stderr, flush=True),
    )


if __name__ == "__main__":
    sys.exit(main())
