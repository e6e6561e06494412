"""The API socket: accepts connections, reads one request each, hands it to the dispatcher.

A handler either returns a result (sent as one `ok` line) or, for streaming ops, is given a `send`
coroutine and writes as many lines as it likes until it returns or the client goes away.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Awaitable, Callable

import trio

from lab.api.protocol import LineDecoder, ProtocolError, encode, error, ok

log = logging.getLogger("labd.api")

Send = Callable[[dict], Awaitable[None]]
Handler = Callable[[dict, Send], Awaitable[Any]]

STREAMING = "__streaming__"  # a handler returns this when it has already answered through `send`


async def _serve_connection(stream: trio.SocketStream, handler: Handler) -> None:
    dec = LineDecoder()
    request = None
    async with stream:
        try:
            while request is None:
                data = await stream.receive_some(65536)
                if not data:
                    return
                for msg in dec.feed(data):
                    request = msg
                    break

            async def send(message: dict) -> None:
                await stream.send_all(encode(message))

            try:
                result = await handler(request, send)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the client went away mid-stream
            except Exception as e:  # a handler bug must not take the socket down
                log.exception("handler for %s failed", request.get("op"))
                await send(error(f"internal error in labd: {type(e).__name__}: {e}"))
                return
            if result is not STREAMING:
                await send(result)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass  # the client went away
        except* ProtocolError as eg:
            try:
                await stream.send_all(encode(error(str(eg.exceptions[0]))))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


async def serve(socket_path: str, handler: Handler, task_status=trio.TASK_STATUS_IGNORED) -> None:
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(socket_path)
    os.chmod(socket_path, 0o600)
    sock.listen(128)
    listener = trio.SocketListener(sock)

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, handler)

    async with listener:
        task_status.started()
        await trio.serve_listeners(handle, [listener])


__all__ = ["serve", "STREAMING", "ok", "error"]
