"""The agent's end of ZDS: accept the node's ztunnel and give the agent one request/ack channel.

Istio's agent serves one ztunnel at a time; a new connection (a restarted or upgraded ztunnel)
replaces the old one, which is closed. This module only manages connections: what to send, and the
snapshot every new connection gets, is the agent's business (`mesh.cni.agent`), so that one task
decides the order of all messages.

Each connection has a reader task that turns the ztunnel's datagrams into acks for the single
outstanding request. An ack with no request outstanding, a malformed datagram, a missing ack
(ACK_TIMEOUT) or EOF ends the connection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import trio

from mesh.zds import Ack, WorkloadRequest, ZdsClosed, ZdsError, ZdsSocket, open_zds_listener

log = logging.getLogger("mesh.cni")

HELLO_TIMEOUT = 5.0
ACK_TIMEOUT = 5.0


class ZtunnelLink:
    """One connected ztunnel. `request` sends a message and waits for its ack."""

    def __init__(self, conn: ZdsSocket, version: str):
        self.version = version
        self.closed = trio.Event()
        self._conn = conn
        self._scope = trio.CancelScope()
        self._acks_in, self._acks = trio.open_memory_channel[Ack](1)
        self._outstanding = False
        self._lock = trio.Lock()
        self.reason = ""

    async def request(self, message: WorkloadRequest, fds: Sequence[int] = ()) -> Ack:
        """The ztunnel's answer to MESSAGE; ZdsClosed if the connection ends before it comes."""
        async with self._lock:
            if self.closed.is_set():
                raise ZdsClosed(f"ztunnel connection closed: {self.reason}")
            self._outstanding = True
            try:
                try:
                    await self._conn.send(message, fds)
                except (OSError, trio.ClosedResourceError) as e:
                    self.close(f"send failed: {e}")
                    raise ZdsClosed(f"ztunnel connection closed: {self.reason}") from None
                with trio.move_on_after(ACK_TIMEOUT):
                    try:
                        return await self._acks.receive()
                    except trio.EndOfChannel:
                        raise ZdsClosed(f"ztunnel connection closed: {self.reason}") from None
                self.close(f"no ack within {ACK_TIMEOUT:g}s")
                raise ZdsClosed(f"ztunnel connection closed: {self.reason}")
            finally:
                self._outstanding = False

    def close(self, reason: str) -> None:
        """End the connection (its reader stops, a waiting request gets ZdsClosed)."""
        if not self.reason:
            self.reason = reason
        self._scope.cancel()

    async def run(self) -> None:
        """Read acks until the connection ends (or the agent stops); then close it."""
        try:
            with self._scope:
                while True:
                    ack = await self._conn.receive_response()
                    if not self._outstanding:
                        raise ZdsError("ack without a request")
                    await self._acks_in.send(ack)
        except ZdsClosed as e:
            self.close(str(e))
        except ZdsError as e:
            self.close(f"protocol error: {e}")
        except OSError as e:
            self.close(f"socket error: {e}")
        finally:
            self.reason = self.reason or "agent stopping"
            self.closed.set()
            self._acks_in.close()
            self._conn.close()


class ZtunnelServer:
    """Listens at PATH; `current` is the newest ztunnel that said hello (or None).

    `on_change` is called whenever `current` changes, so the agent can (re)send its snapshot."""

    def __init__(self, path: str, on_change: Callable[[], None]):
        self.path = path
        self.current: ZtunnelLink | None = None
        self._on_change = on_change

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept ztunnels until cancelled; the socket file is removed on the way out."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        async with await open_zds_listener(self.path) as listener, trio.open_nursery() as nursery:
            log.info("serving ZDS on %s", self.path)
            task_status.started()
            while True:
                conn = await listener.accept()
                nursery.start_soon(self._handle, conn)

    async def _handle(self, conn: ZdsSocket) -> None:
        link: ZtunnelLink | None = None
        try:
            with trio.move_on_after(HELLO_TIMEOUT):
                try:
                    hello = await conn.receive_hello()
                except (ZdsError, OSError) as e:
                    log.warning("ztunnel connection dropped before hello: %s", e)
                    return
                link = ZtunnelLink(conn, hello.version)
            if link is None:
                log.warning("ztunnel connection dropped: no hello within %gs", HELLO_TIMEOUT)
                return
            previous, self.current = self.current, link
            if previous is not None:
                previous.close("replaced by a new ztunnel connection")
            self._on_change()
            try:
                await link.run()
            finally:
                if self.current is link:
                    self.current = None
                    self._on_change()
                log.info("ztunnel disconnected: %s", link.reason)
        finally:
            conn.close()
