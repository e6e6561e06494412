"""The API socket: accepts connections, reads one request each, hands it to the dispatcher.

A handler either returns a result (sent as one `ok` line) or, for streaming ops, is given a `send`
coroutine and writes as many lines as it likes until it returns or the client goes away.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from typing import Any, Awaitable, Callable

import trio

from lab.client.protocol import LineDecoder, ProtocolError, encode, error, ok

log = logging.getLogger("labd.api")

Send = Callable[[dict], Awaitable[None]]
Handler = Callable[[dict, "Reply"], Awaitable[Any]]  # serve hands every handler a Reply

STREAMING = "__streaming__"  # a handler returns this when it has already answered through `send`


class Reply:
    """What a handler answers through: `await send(message)` writes one line; `client_gone` is set
    when the client hangs up, so streaming handlers (watch, logs -f) stop without waiting to fail
    on a write."""

    def __init__(self, stream: trio.SocketStream):
        self._stream = stream
        self.client_gone = trio.Event()

    async def __call__(self, message: dict) -> None:
        await self._stream.send_all(encode(message))


#: What a caller that is not root may ask: the mesh root certificate, which is public (a sidecar's
#: agent, running as Istio's proxy user, reads it here where pilot-agent reads a mounted ConfigMap).
UNPRIVILEGED_REQUESTS = (
    {"op": "ping"},
    {"op": "get", "kind": "ConfigMap", "namespace": "istio-system", "name": "istio-ca-root-cert"},
)


def peer_uid(stream: trio.SocketStream) -> int | None:
    """The connecting process's uid (SO_PEERCRED), or None if the kernel does not say."""
    try:
        creds = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    return struct.unpack("3i", creds)[1]


def allowed_unprivileged(request: dict) -> bool:
    return any(
        all(request.get(k) == v for k, v in allowed.items()) and set(request) <= set(allowed)
        for allowed in UNPRIVILEGED_REQUESTS
    )


async def _serve_connection(stream: trio.SocketStream, handler: Handler, owner_uid: int = 0) -> None:
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

            send = Reply(stream)
            uid = peer_uid(stream)
            if uid not in (0, owner_uid) and not allowed_unprivileged(request):
                await send(
                    error(
                        f"forbidden: the lab API serves uid {uid} only the mesh root "
                        "certificate (get ConfigMap istio-system/istio-ca-root-cert)"
                    )
                )
                return

            async def watch_client() -> None:
                # A client sends one request and then only reads: EOF from it means it is gone.
                try:
                    while await stream.receive_some(4096):
                        pass
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                send.client_gone.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_client)
                try:
                    result = await handler(request, send)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    result = None  # the client went away mid-stream
                except Exception as e:  # a handler bug must not take the socket down
                    log.exception("handler for %s failed", request.get("op"))
                    result = error(f"internal error in labd: {type(e).__name__}: {e}")
                if result is not None and result is not STREAMING:
                    await send(result)
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass  # the client went away
        except* ProtocolError as eg:
            try:
                await stream.send_all(encode(error(str(eg.exceptions[0]))))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


PROXY_GID = 1337


async def serve(
    socket_path: str, handler: Handler, task_status=trio.TASK_STATUS_IGNORED, *, owner_uid: int = 0
) -> None:
    """OWNER_UID is served everything besides root: labd's is root; a test's in-process API
    (lab/testing.py) runs as whoever runs the tests, who may not be root."""
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(socket_path)
    # Root, and group 1337: Istio's proxy group, in which sidecars run; a caller that is not root
    # gets only the mesh root certificate (UNPRIVILEGED_REQUESTS, checked with SO_PEERCRED).
    if owner_uid == 0:
        os.chown(socket_path, 0, PROXY_GID)
    os.chmod(socket_path, 0o660)
    sock.listen(128)
    listener = trio.SocketListener(sock)

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, handler, owner_uid)

    async with listener:
        task_status.started()
        await trio.serve_listeners(handle, [listener])


__all__ = ["serve", "STREAMING", "ok", "error"]
