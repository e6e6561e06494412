"""The Kubernetes endpoint's transport: HTTPS on 127.0.0.1, HTTP/1.1 (h11) on trio.

kubectl and the Kubernetes clients need TCP and TLS (see certs.py); this module carries bytes and
nothing of Kubernetes: it reads a request (keep-alive, bodies up to MAX_BODY), takes the client
certificate's identity, asks the app, and writes a whole response, a chunked stream (watch,
`logs -f`; cancelled when the client hangs up) or hands the connection over (WebSocket upgrade).
Every connection is a task of the server's nursery: when the server stops, they all stop.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, Callable, cast
from urllib.parse import parse_qs, unquote, urlsplit

import h11
import trio

from lab.apiserver.rest import certs, messages, status
from lab.apiserver.rest.messages import App, Request, Response, Streaming, Upgrade

log = logging.getLogger("labd.rest")

MAX_BODY = 8 * 1024 * 1024  # kube-apiserver refuses bodies past 3 MiB for etcd; leave room
MAX_HEAD = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 120.0  # a keep-alive connection with no request for this long is closed
READ_TIMEOUT = 60.0  # a request must arrive whole within this


class _Closed(Exception):
    """The client went away or broke the protocol: drop the connection."""


class _Conn:
    """One client connection: h11's state machine over the TLS stream."""

    def __init__(self, stream: trio.SSLStream[Any]):
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    async def send(self, *events: Any) -> None:
        data = b"".join(self.h11.send(e) or b"" for e in events)
        await self.stream.send_all(data)

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise _Closed from e
            self.h11.receive_data(bytes(data))


def _headers(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def parse_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """A request target's decoded path and query (`keep_blank_values`: `?watch=` is present)."""
    parts = urlsplit(target)
    return unquote(parts.path) or "/", parse_qs(parts.query, keep_blank_values=True)


class RestServer:
    """`await nursery.start(server.serve)` listens (port 0: a free one) and reports the port."""

    def __init__(self, app: App, ssl_context: ssl.SSLContext, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self.ssl_context = ssl_context
        self.host = host
        self.port = port

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_ssl_over_tcp_listeners(
            self.port, self.ssl_context, host=self.host, https_compatible=True
        )
        transport = cast(trio.SocketListener, listeners[0].transport_listener)
        self.port = transport.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    async def _connection(self, stream: trio.SSLStream[Any]) -> None:
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await stream.do_handshake()
            identity = certs.peer_identity(stream.getpeercert())
            await self._requests(_Conn(stream), identity)
        except (
            trio.TooSlowError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            _Closed,
            h11.ProtocolError,
            ssl.SSLError,
            OSError,
        ):
            pass
        except Exception:  # a bug answering one client must not take the endpoint down
            log.exception("REST connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _requests(self, conn: _Conn, identity: tuple[str, tuple[str, ...]] | None) -> None:
        while True:
            with trio.move_on_after(IDLE_TIMEOUT) as idle:
                try:
                    event = await conn.next_event()
                except h11.RemoteProtocolError as e:
                    await self._refuse(conn, e)
                    return
            if idle.cancelled_caught or not isinstance(event, h11.Request):
                return  # idle, closed, or nothing sensible
            request = await self._read_request(conn, event, identity)
            if request is None:
                return
            result = await self._call_app(request)
            if isinstance(result, Upgrade):
                if conn.h11.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
                    await self._write(conn, status.response(status.bad_request("Upgrade request required")))
                else:
                    leftover, _ = conn.h11.trailing_data
                    await result.handler(conn.stream, bytes(leftover), request.headers)
                    return
            elif isinstance(result, Streaming):
                await self._stream(conn, result)
            else:
                await self._write(conn, result)
            if conn.h11.our_state is not h11.DONE or conn.h11.their_state is not h11.DONE:
                return
            conn.h11.start_next_cycle()

    async def _refuse(self, conn: _Conn, error: h11.RemoteProtocolError) -> None:
        if conn.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            resp = status.response(status.bad_request(f"malformed HTTP request: {error}"))
            await self._write(conn, resp, close=True)

    async def _read_request(
        self, conn: _Conn, event: h11.Request, identity: tuple[str, tuple[str, ...]] | None
    ) -> Request | None:
        headers = _headers(list(event.headers))
        path, query = parse_target(event.target.decode("latin-1"))
        body = bytearray()
        if conn.h11.they_are_waiting_for_100_continue:
            await conn.send(h11.InformationalResponse(status_code=100, headers=[]))
        with trio.move_on_after(READ_TIMEOUT) as slow:
            while True:
                try:
                    ev = await conn.next_event()
                except h11.RemoteProtocolError as e:
                    await self._refuse(conn, e)
                    return None
                if isinstance(ev, h11.Data):
                    body += ev.data
                    if len(body) > MAX_BODY:
                        await self._write(
                            conn,
                            status.response(
                                status.StatusError(
                                    413, "RequestEntityTooLarge", f"request body is larger than {MAX_BODY} bytes"
                                )
                            ),
                            close=True,
                        )
                        return None
                elif isinstance(ev, h11.EndOfMessage):
                    break
                else:
                    return None  # the client went away mid-request
        if slow.cancelled_caught:
            return None
        user, groups = identity if identity else (None, ())
        return Request(event.method.decode("latin-1"), path, query, headers, bytes(body), user, groups)

    async def _call_app(self, request: Request) -> messages.Result:
        try:
            return await self.app(request)
        except status.StatusError as e:
            return status.response(e)
        except Exception as e:
            log.exception("REST %s %s failed", request.method, request.path)
            return status.response(
                status.StatusError(500, "InternalError", f"Internal error occurred: {type(e).__name__}: {e}")
            )

    @staticmethod
    def _head(result: Response | Streaming, extra: list[tuple[str, str]], close: bool = False) -> h11.Response:
        headers = [
            ("Content-Type", result.content_type),
            ("Cache-Control", "no-cache, private"),
            *result.headers,
            *extra,
        ]
        if close:
            headers.append(("Connection", "close"))
        return h11.Response(status_code=result.status, headers=headers)

    async def _write(self, conn: _Conn, resp: Response, close: bool = False) -> None:
        head = self._head(resp, [("Content-Length", str(len(resp.body)))], close)
        await conn.send(head, h11.Data(data=resp.body), h11.EndOfMessage())

    async def _stream(self, conn: _Conn, resp: Streaming) -> None:
        """Chunks as the body writes them; a reader notices the client hanging up (a watch with
        nothing to say would otherwise hold its task until the next event)."""
        await conn.send(self._head(resp, []))
        client_gone = trio.Event()

        async def write(data: bytes) -> None:
            if data:
                await conn.send(h11.Data(data=data))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_client, conn, client_gone, nursery.cancel_scope.cancel)
            await resp.body(write, client_gone)
            nursery.cancel_scope.cancel()
        if client_gone.is_set():
            raise _Closed
        await conn.send(h11.EndOfMessage())


async def _watch_client(conn: _Conn, gone: trio.Event, cancel: Callable[[], None]) -> None:
    """While a stream is written: what the client sends is kept for h11 (a pipelined request),
    and its EOF ends the stream."""
    try:
        while data := await conn.stream.receive_some(65536):
            conn.h11.receive_data(bytes(data))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    gone.set()
    cancel()
