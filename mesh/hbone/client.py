"""The HBONE client: CONNECT streams over one HTTP/2 connection (ztunnel `h2/client.rs`).

The caller brings an established stream (mTLS in production, with the identity checks
done by whoever built it) and runs the connection in its own nursery::

    conn = HboneConnection(tls_stream)
    await nursery.start(conn.run)
    tunnel = await conn.open_stream("10.244.1.7:8080", hbone_headers(source="10.244.0.5:40312"))

or, for one-off use, `async with open_hbone_connection(tls_stream) as conn: ...`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio

from .connection import Connection
from .headers import CONNECTED, Header, connect_request
from .settings import CLIENT_SETTINGS, Http2Settings
from .stream import HboneError, HboneStream


class HboneConnection(Connection):
    """The client end of an HBONE connection."""

    def __init__(self, transport: trio.abc.Stream, *, settings: Http2Settings = CLIENT_SETTINGS) -> None:
        super().__init__(transport, settings, client_side=True)

    @property
    def max_streams(self) -> int:
        """Streams this connection may carry at once: min(our cap, the peer's limit)."""
        return min(self._settings.max_concurrent_streams, self._h2.remote_settings.max_concurrent_streams)

    @property
    def is_usable(self) -> bool:
        """Running and neither closing nor told to go away."""
        return self._started and not self.closing

    @property
    def has_capacity(self) -> bool:
        return self.is_usable and self.active_streams < self.max_streams

    async def open_stream(self, authority: str, headers: Iterable[Header] = ()) -> HboneStream:
        """CONNECT to `authority` ("ip:port") and wait for the response.

        Returns the open tunnel on 200. Any other status raises `HboneError` and leaves
        the connection usable. A reset stream raises `StreamReset`, a dead connection
        `trio.BrokenResourceError`, and a full one `trio.BusyResourceError`.
        """
        block = connect_request(authority, headers)
        if not self.is_usable:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("HBONE connection is not open") from self.error
        if self.active_streams >= self.max_streams:
            await trio.lowlevel.checkpoint()
            raise trio.BusyResourceError(f"HBONE connection already carries {self.active_streams} streams")
        stream_id = self._h2.get_next_available_stream_id()
        self._h2.send_headers(stream_id, block)
        stream = HboneStream(self, stream_id, server_side=False)
        self._register(stream)
        self._flush()
        try:
            status = await stream.wait_response()
        except BaseException:
            stream.close()
            raise
        if status != CONNECTED:
            stream.close()
            raise HboneError(status, stream.response_headers)
        return stream


@asynccontextmanager
async def open_hbone_connection(
    transport: trio.abc.Stream, *, settings: Http2Settings = CLIENT_SETTINGS
) -> AsyncIterator[HboneConnection]:
    """An `HboneConnection` running in its own nursery, closed (GOAWAY) on exit."""
    conn = HboneConnection(transport, settings=settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        try:
            yield conn
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()
