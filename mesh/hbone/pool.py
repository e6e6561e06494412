"""The outbound HBONE connection pool (ztunnel `src/proxy/pool.rs`).

Connections are keyed like ztunnel's `WorkloadKey`: source identity, source IP (the
source is spoofed, so it is part of the connection), the identities the destination may
present, and the destination ip:port. A key gets 1..n connections: a connection takes new
streams until it carries min(100, the peer's SETTINGS_MAX_CONCURRENT_STREAMS), then the
next stream opens another connection. Connections that died are dropped; one that
carried no stream for `idle_timeout` (ztunnel: 5 minutes) is closed.

The pool knows nothing of TLS or network namespaces: it calls `connect(key)`, which
returns an established stream (mTLS, identities verified), and runs every connection in
the nursery it was given. Callers racing to open the first connection of a key wait for
one connect rather than each opening their own.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from .client import HboneConnection
from .headers import Header
from .settings import CLIENT_SETTINGS, Http2Settings
from .stream import HboneStream

#: ztunnel's POOL_UNUSED_RELEASE_TIMEOUT.
IDLE_TIMEOUT = 300.0
#: ztunnel's outbound connect timeout (CONNECTION_TIMEOUT), here for TCP and TLS together.
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class WorkloadKey:
    """Which connections may carry a stream: same source, same expected peer, same target."""

    src_id: str  # our SPIFFE identity
    src: str  # our (possibly spoofed) source IP
    dst_ids: tuple[str, ...]  # identities the server certificate may carry
    dst: str  # "ip:port", usually <pod IP>:15008

    def __post_init__(self) -> None:
        object.__setattr__(self, "dst_ids", tuple(sorted(set(self.dst_ids))))

    def __str__(self) -> str:
        return f"{self.src}({self.src_id})->{self.dst}[{','.join(self.dst_ids)}]"


Connect = Callable[[WorkloadKey], Awaitable[trio.abc.Stream]]


class HbonePool:
    """HBONE connections per `WorkloadKey`, living in `nursery`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        connect: Connect,
        *,
        settings: Http2Settings = CLIENT_SETTINGS,
        idle_timeout: float = IDLE_TIMEOUT,
        connect_timeout: float | None = CONNECT_TIMEOUT,
    ) -> None:
        self._nursery = nursery
        self._connect = connect
        self._settings = settings
        self._idle_timeout = idle_timeout
        self._connect_timeout = math.inf if connect_timeout is None else connect_timeout
        self._conns: dict[WorkloadKey, list[HboneConnection]] = {}
        self._locks: dict[WorkloadKey, trio.Lock] = {}
        self._closed = False

    def connections(self, key: WorkloadKey) -> list[HboneConnection]:
        """The live connections of `key` (for `ztunnel-config connections`-like views)."""
        return [c for c in self._conns.get(key, ()) if c.is_usable]

    async def open_stream(self, key: WorkloadKey, authority: str, headers: Iterable[Header] = ()) -> HboneStream:
        """CONNECT to `authority` over a pooled connection to `key.dst`.

        Raises what `HboneConnection.open_stream` raises (`HboneError` for a refusal),
        and the connect function's errors when a new connection was needed.
        """
        while True:
            conn = self._find(key) or await self._checkout_new(key)
            if conn.has_capacity:
                return await conn.open_stream(authority, headers)
            if not conn.is_usable:
                raise trio.BrokenResourceError(f"HBONE connection to {key.dst} died at once") from conn.error
            # Racing tasks filled it between its creation and our turn: look again.

    async def aclose(self) -> None:
        """Close every connection (GOAWAY); their tasks then leave the nursery."""
        self._closed = True
        async with trio.open_nursery() as nursery:
            for conns in list(self._conns.values()):
                for conn in list(conns):
                    nursery.start_soon(conn.aclose)

    def _find(self, key: WorkloadKey) -> HboneConnection | None:
        for conn in self._conns.get(key, ()):
            if conn.has_capacity:
                return conn
        return None

    async def _checkout_new(self, key: WorkloadKey) -> HboneConnection:
        if self._closed:
            raise trio.ClosedResourceError("the HBONE pool is closed")
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            # Whoever held the lock before us may have opened a connection with room.
            conn = self._find(key)
            if conn is None:
                conn = await self._nursery.start(self._drive, key)
            return conn

    async def _drive(self, key: WorkloadKey, *, task_status: trio.TaskStatus[HboneConnection]) -> None:
        """Connect, then run the connection and its idle reaper until it ends."""
        with trio.fail_after(self._connect_timeout):
            transport = await self._connect(key)
        conn = HboneConnection(transport, settings=self._settings)
        self._conns.setdefault(key, []).append(conn)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(conn.run)
                task_status.started(conn)
                await self._close_when_idle(conn)
        finally:
            self._forget(key, conn)

    async def _close_when_idle(self, conn: HboneConnection) -> None:
        # Not woken per stream: it sleeps until the earliest moment the connection could have
        # been idle for `idle_timeout` (or until it ends), then looks again.
        while not conn.closing:
            now = trio.current_time()
            deadline = (now if conn.active_streams else conn.idle_since) + self._idle_timeout
            if deadline <= now:
                await conn.aclose()
                continue
            with trio.move_on_at(deadline):
                await conn.wait_closed()

    def _forget(self, key: WorkloadKey, conn: HboneConnection) -> None:
        conns = self._conns.get(key, [])
        if conn in conns:
            conns.remove(conn)
        if not conns:
            self._conns.pop(key, None)
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                del self._locks[key]


@asynccontextmanager
async def open_hbone_pool(connect: Connect, **kwargs: Any) -> AsyncIterator[HbonePool]:
    """An `HbonePool` with its own nursery, closed on exit; `kwargs` are `HbonePool`'s."""
    async with trio.open_nursery() as nursery:
        pool = HbonePool(nursery, connect, **kwargs)
        try:
            yield pool
        finally:
            with trio.CancelScope(shield=True):
                await pool.aclose()
