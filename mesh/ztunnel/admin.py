"""ztunnel's HTTP endpoints in the node netns (ztunnel `src/admin.rs`, `src/metrics/server.rs`,
`src/readiness/server.rs`): admin on 127.0.0.1:15000 (`/config_dump`), metrics on
0.0.0.0:15020 (`/metrics`, `/stats/prometheus`), readiness on 0.0.0.0:15021 (`/healthz/ready`).

A tiny HTTP/1.1 server on h11: GET only, one request per connection, the answer computed by a route
function. `Readiness` is ztunnel's readiness gate: ready once every named task reported done.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import h11
import trio

log = logging.getLogger("mesh.ztunnel.admin")

MAX_REQUEST = 64 * 1024
REQUEST_TIMEOUT = 10.0

Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Response]


def json_response(value, status: int = 200) -> Response:
    return status, "application/json", (json.dumps(value, indent=2, sort_keys=False) + "\n").encode()


def text_response(text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Response:
    return status, content_type, text.encode()


class Readiness:
    """Not ready until every blocker named at creation was marked done (ztunnel `readiness::Ready`)."""

    def __init__(self, blockers: Iterable[str]) -> None:
        self.pending = set(blockers)

    def done(self, name: str) -> None:
        if name in self.pending:
            self.pending.discard(name)
            log.info("readiness: %s done%s", name, "; ready" if not self.pending else "")

    @property
    def ready(self) -> bool:
        return not self.pending

    def route(self) -> Response:
        if self.ready:
            return text_response("ready\n")
        return text_response(f"not ready, pending: {', '.join(sorted(self.pending))}\n", 503)


async def serve_http(
    address: tuple[str, int], routes: dict[str, Route], *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve `routes` ({path: route}) on `address` until cancelled; `started` gives the bound port."""
    listeners = await trio.open_tcp_listeners(address[1], host=address[0])
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        task_status.started(port)

        async def handle(stream: trio.SocketStream) -> None:  # TCP listeners hand out SocketStreams
            await _handle(stream, routes)

        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def _handle(stream: trio.SocketStream, routes: dict[str, Route]) -> None:
    async with stream:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                request = await _read_request(stream, conn)
                if request is None:
                    return
                path = request.target.decode("latin-1").split("?", 1)[0]
                route = routes.get(path)
                if request.method not in (b"GET", b"HEAD"):
                    status, ctype, body = text_response("method not allowed\n", 405)
                elif route is None:
                    status, ctype, body = text_response(
                        f"no such endpoint {path}; try: {', '.join(sorted(routes))}\n", 404
                    )
                else:
                    try:
                        status, ctype, body = route()
                    except Exception as exc:
                        log.exception("admin route %s failed", path)
                        status, ctype, body = text_response(f"internal error: {exc}\n", 500)
                headers = [("content-type", ctype), ("content-length", str(len(body))), ("connection", "close")]
                out = conn.send(h11.Response(status_code=status, headers=headers))
                if request.method != b"HEAD":
                    out += conn.send(h11.Data(data=body))
                out += conn.send(h11.EndOfMessage())
                await stream.send_all(out)
        except (h11.ProtocolError, trio.BrokenResourceError, OSError):
            pass


async def _read_request(stream: trio.SocketStream, conn: h11.Connection) -> h11.Request | None:
    event = await next_event(stream, conn)
    return event if isinstance(event, h11.Request) else None


async def next_event(stream: trio.abc.ReceiveStream, conn: h11.Connection) -> Any:
    """`conn`'s next h11 event, reading from `stream` for as long as h11 needs more data (an
    empty read tells h11 the peer closed). Shared with istiod's small HTTP client (`jwks`)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await stream.receive_some(65536))  # type: ignore[arg-type]  # h11 says bytes; its docs (and code) take any bytes-like
