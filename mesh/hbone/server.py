"""The HBONE server: accept CONNECT streams and hand each to a handler (ztunnel `h2/server.rs`).

`serve_hbone(stream, handler)` serves one accepted connection (15008, after the mTLS
handshake) until it ends. Malformed requests (not CONNECT, bad :authority) are answered
400 here; every valid one runs ``handler(request, respond, stream)`` in its own task.
The handler decides as ztunnel's inbound does: `await respond(401)` when policy denies,
`await respond(503)` when the upstream connect fails, or `await respond(200)` once it
succeeded, and then splices `stream` to the upstream socket.

When the handler returns, its stream is closed (reset if it has not ended both ways).
A handler that raises is logged; its client sees 503 if no response was sent yet, or a
reset otherwise. When the connection ends, handlers still running are cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Self

import h2.events
import trio
from h2.errors import ErrorCodes

from .connection import Connection
from .headers import BAD_REQUEST, UPSTREAM_FAILED, BadRequest, ConnectRequest, parse_connect_request
from .settings import SERVER_SETTINGS, Http2Settings
from .stream import HboneStream

log = logging.getLogger("mesh.hbone")

Respond = Callable[..., Awaitable[None]]
Handler = Callable[[ConnectRequest, Respond, HboneStream], Awaitable[None]]


class HboneServerConnection(Connection):
    """The server end of an HBONE connection; made by `serve_hbone`."""

    def __init__(self, transport: trio.abc.Stream, handler: Handler, settings: Http2Settings) -> None:
        super().__init__(transport, settings, client_side=False)
        self._handler = handler
        self._handlers: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[Self] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the connection with its handlers in a nursery of their own."""
        async with trio.open_nursery() as handlers:
            self._handlers = handlers
            await super().run(task_status=task_status)
            handlers.cancel_scope.cancel()  # their streams are gone

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream = HboneStream(self, event.stream_id, server_side=True)
        self._register(stream)
        try:
            request = parse_connect_request(event.headers)
        except BadRequest as exc:
            log.debug("HBONE stream %d: %s", event.stream_id, exc)
            stream.respond_nowait(BAD_REQUEST)
            stream.close()
            return
        assert self._handlers is not None  # run() opened it before the reader started
        self._handlers.start_soon(self._serve_stream, request, stream)

    async def _serve_stream(self, request: ConnectRequest, stream: HboneStream) -> None:
        try:
            await self._handler(request, stream.respond, stream)
        except Exception:
            log.exception("HBONE handler failed for %s", request.authority)
            if stream.status is not None:
                stream.reset(ErrorCodes.INTERNAL_ERROR)
        finally:
            if stream.status is None:  # the handler never answered
                stream.respond_nowait(UPSTREAM_FAILED)
            stream.close()


async def serve_hbone(
    transport: trio.abc.Stream,
    handler: Handler,
    *,
    settings: Http2Settings = SERVER_SETTINGS,
    task_status: trio.TaskStatus[HboneServerConnection] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HBONE on one accepted connection until it ends; never raises for peer faults.

    `nursery.start(serve_hbone, ...)` returns the `HboneServerConnection` (its settings,
    stream count, and `aclose()` for draining).
    """
    await HboneServerConnection(transport, handler, settings).run(task_status=task_status)
