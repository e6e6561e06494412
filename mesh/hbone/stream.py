"""One HBONE tunnel: an HTTP/2 CONNECT stream seen as a trio byte stream.

`HboneStream` is what the client gets from `open_stream` and what a server handler is
given, so either side can be spliced to an app socket. The mapping onto HTTP/2:

- `send_all` → DATA frames (within the peer's flow-control windows);
- `send_eof` → END_STREAM (TCP's FIN);
- `receive_some` returning b"" ← the peer's END_STREAM;
- `aclose` before both sides ended → RST_STREAM(CANCEL) (TCP's RST on close with the
  peer still talking); a received RST_STREAM makes sends raise `StreamReset`, and
  reads too unless its code is NO_ERROR or CANCEL, which read as EOF (as ztunnel does).

Received data is handed out as the frames arrived, and is acknowledged to the peer's
flow control only once the app took it, so a slow reader slows its sender and nothing else.

`deliver_to(socket_stream)` is the proxy's fast path for the tunnel-to-app direction: while
it runs, the connection's reader writes each DATA frame straight into the app's socket as it
arrives, instead of waking a copying task per frame. Only what the socket cannot take at
once is queued for the delivering task, which sends it and then returns to direct mode.

A stream uses its connection only through `connection.StreamOwner`, and the connection
uses a stream only through its public methods (the reader's under "called by the
connection"): each side owns its own state (see `connection`'s docstring).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Sized
from typing import TYPE_CHECKING, cast

import trio
from h2.errors import ErrorCodes
from trio.lowlevel import ParkingLot, cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from .headers import CONNECTED, Header, status_text
from .splice import checked_max_bytes, send_to_socket

if TYPE_CHECKING:
    from .connection import StreamOwner


class HboneError(Exception):
    """The peer answered the CONNECT with a non-200 status (ztunnel `Error::HttpStatus`).

    Only this stream failed: its connection stays usable for other streams.
    """

    def __init__(self, status: int, headers: Iterable[Header] = ()) -> None:
        super().__init__(f"http status: {status_text(status)}")
        self.status = status
        self.headers = tuple(headers)


def error_code_name(error_code: int | None) -> str:
    """An HTTP/2 error code as RST_STREAM and GOAWAY messages name it: "CANCEL", or the number."""
    if error_code is not None:
        try:
            return ErrorCodes(error_code).name
        except ValueError:
            pass
    return str(error_code)


class StreamReset(trio.BrokenResourceError):
    """The stream was reset (RST_STREAM) by the peer or by our own h2 on a stream error."""

    def __init__(self, error_code: int, *, remote: bool) -> None:
        super().__init__(f"stream reset by {'peer' if remote else 'us'}: {error_code_name(error_code)}")
        self.error_code = error_code
        self.remote = remote


# A reset with these codes means "the peer is done", which a reader sees as EOF.
_QUIET_RESETS = frozenset({ErrorCodes.NO_ERROR, ErrorCodes.CANCEL})


def _no_count(size: int) -> None:
    """`_sink_count` while nothing is delivered directly."""


class HboneStream(trio.abc.HalfCloseableStream):
    """A CONNECT stream on an HBONE connection; created by the connection, not by users."""

    def __init__(self, conn: StreamOwner, stream_id: int, *, server_side: bool) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._server_side = server_side
        #: The response status: awaited by the client, set by `respond` on the server.
        self.status: int | None = None
        self.response_headers: tuple[Header, ...] = ()
        self._chunks: deque[bytes | memoryview] = deque()
        self._offset = 0  # bytes of _chunks[0] already handed out
        self._received_eof = False
        self._sent_eof = False
        self._reset_code: int | None = None
        self._reset_remote = False
        self._closed = False
        self._receiving = False
        self._sending = False
        self._readable = ParkingLot()  # data, EOF, reset, response or connection loss
        # Direct delivery (`deliver_to`): the app socket the reader writes into, who is told
        # the bytes, and the write error that stopped it.
        self._sink: trio.SocketStream | None = None
        self._sink_count: Callable[[int], None] = _no_count
        self._sink_error: OSError | None = None

    def __repr__(self) -> str:
        return f"<HboneStream {self.stream_id} status={self.status}>"

    # --- trio.abc.HalfCloseableStream ------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = checked_max_bytes(max_bytes)
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await checkpoint_if_cancelled()
            parked = False
            while not self._chunks and not self._at_end():
                parked = True
                await self._readable.park()
            data = self._take(max_bytes)
            if isinstance(data, memoryview):  # a view of what the connection received
                data = data.tobytes()
            if not parked:
                await cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    async def deliver_to(self, sink: trio.SocketStream, count: Callable[[int], None]) -> None:
        """Copy everything this stream receives into `sink` until EOF, then half-close `sink`.

        The tunnel-to-app half of a splice, without a task switch per chunk: while this task
        is parked, the connection's reader writes arriving data into `sink` itself (`_on_data`)
        and returns the flow-control window at once. `count(n)` is told every byte delivered.
        Ends like `receive_some` would (a reset or a lost connection raises), and a failed
        write to `sink` raises `trio.BrokenResourceError`, as its `send_all` would. Only for a
        sink nobody else sends on.
        """
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            await checkpoint_if_cancelled()
            while True:
                while self._chunks:  # arrived before delivery began, or the socket was full
                    data = self._take(None)
                    await send_to_socket(sink, data)
                    count(len(data))
                if self._sink_error is not None:
                    exc = self._sink_error
                    raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
                if self._at_end():
                    break
                self._sink, self._sink_count = sink, count
                try:
                    await self._readable.park()
                finally:
                    self._sink, self._sink_count = None, _no_count
            await sink.send_eof()
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await checkpoint_if_cancelled()
            total = len(data)
            sent = 0
            parked = False
            while True:
                self._check_sendable()
                sent = self._hand_over(data, sent)
                if sent >= total:
                    break
                parked = True
                await self._conn.wait_send_capacity()
            if not parked:
                await cancel_shielded_checkpoint()
        finally:
            self._sending = False

    def send_within_window(self, data: bytes | bytearray | memoryview) -> int:
        """Hand h2 as much of `data` as the flow-control windows and send buffer allow now,
        without yielding; returns how much it took (`send_all` the rest). For a copier whose
        every chunk already passed a checkpoint (splice's receive), so one more is not needed."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._check_sendable()
        return self._hand_over(data, 0)

    def _hand_over(self, data: bytes | bytearray | memoryview, sent: int) -> int:
        """Give h2 `data[sent:]` in window-sized pieces while there is room; the new `sent`."""
        total = len(data)
        while sent < total:
            room = self._conn.sendable(self)
            if not room:
                break
            # A whole chunk goes to h2 as is; only a window smaller than it costs a slice copy.
            chunk = data if sent == 0 and room >= total else memoryview(data)[sent : sent + room]
            self._conn.send_data(self, chunk)
            sent += len(chunk)
        return sent

    async def wait_send_all_might_not_block(self) -> None:
        await checkpoint_if_cancelled()
        self._check_sendable()
        if self._conn.sendable(self):
            await cancel_shielded_checkpoint()
            return
        while not self._conn.sendable(self):
            await self._conn.wait_send_capacity()
            self._check_sendable()

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await checkpoint()
        if self._sent_eof and not self._closed:
            return
        self._check_sendable()
        self._sent_eof = True
        self._conn.end_stream(self)

    async def aclose(self) -> None:
        self.close()
        await checkpoint()

    # --- server side -----------------------------------------------------------------

    async def respond(self, status: int, headers: Iterable[Header] = ()) -> None:
        """Answer the CONNECT. 200 opens the tunnel; any other status ends the stream."""
        self.respond_nowait(status, headers)
        await checkpoint()

    def respond_nowait(self, status: int, headers: Iterable[Header] = ()) -> None:
        """`respond` without the checkpoint, for code that must not be cancelled midway."""
        if not self._server_side:
            raise RuntimeError("only the server side responds")
        if self.status is not None:
            raise RuntimeError(f"already responded {self.status}")
        if self._closed or self._reset_code is not None or self._conn.closing:
            return  # nobody left to tell
        self.status = int(status)
        self.response_headers = tuple(headers)
        end = self.status != CONNECTED  # any other answer ends the stream
        if end:
            self._sent_eof = True
        self._conn.respond(self, self.status, self.response_headers, end_stream=end)

    # --- synchronous teardown --------------------------------------------------------

    def close(self) -> None:
        """Close now: a stream that has not ended both ways is reset with CANCEL."""
        self.reset(ErrorCodes.CANCEL)

    def reset(self, error_code: int = ErrorCodes.CANCEL) -> None:
        """Close now, resetting the stream with `error_code` unless it already ended both ways."""
        if self._closed:
            return
        self._closed = True
        unread = sum(map(len, self._chunks)) - self._offset
        self._chunks.clear()
        self._offset = 0
        self._conn.close_stream(self, unread, error_code)
        self._readable.unpark_all()

    # --- called by the connection (its reader task); not for users ---------------------

    def data_received(self, data: bytes | memoryview) -> None:
        """DATA arrived: write it into the `deliver_to` socket, or queue it for a reader."""
        if self._closed:
            self._conn.consumed(self, len(data))
            return
        sink = self._sink
        if sink is not None and not self._chunks:
            # Direct delivery: write it now, in the reader's task; queue only what is left.
            try:
                sent = os.write(sink.socket.fileno(), data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._sink_error = exc
                self._sink = None
                self._readable.unpark_all()
                # Nobody will take it: give the connection's window back, as a closed stream does.
                self._conn.acknowledge(self, len(data))
                return
            if sent:
                self._conn.acknowledge(self, sent)
                self._sink_count(sent)
                if sent == len(data):
                    return
                data = data[sent:]
        if isinstance(data, memoryview) and len(data) * 2 < len(cast(Sized, data.obj)):  # obj: bytes(array)
            # A view of a bigger read: queued, it would keep that whole read alive for a few
            # bytes. Only data written at once stays a view.
            data = data.tobytes()
        self._chunks.append(data)
        self._readable.unpark_all()

    def end_received(self) -> None:
        """The peer sent END_STREAM."""
        self._received_eof = True
        self._readable.unpark_all()

    def reset_received(self, error_code: int, *, remote: bool) -> None:
        """The stream was reset, by the peer (`remote`) or by our h2 on a stream error."""
        if self._reset_code is None:
            self._reset_code = error_code
            self._reset_remote = remote
        self._readable.unpark_all()

    def response_received(self, status: int, headers: tuple[Header, ...]) -> None:
        """The client's CONNECT was answered."""
        self.status = status
        self.response_headers = headers
        self._readable.unpark_all()

    def connection_closing(self) -> None:
        """The connection is going: wake whoever waits, to see `closing` and raise."""
        self._readable.unpark_all()

    @property
    def finished(self) -> bool:
        """Ended both ways or reset: h2 has closed the stream."""
        return self._reset_code is not None or (self._sent_eof and self._received_eof)

    # --- client side -----------------------------------------------------------------

    async def wait_response(self) -> int:
        """The CONNECT's response status, once it came (`open_stream` waits here)."""
        while self.status is None:
            if self._reset_code is not None:
                raise StreamReset(self._reset_code, remote=self._reset_remote)
            if self._conn.closing:
                raise trio.BrokenResourceError("HBONE connection lost") from self._conn.error
            await self._readable.park()
        return self.status

    # --- helpers ---------------------------------------------------------------------

    def _at_end(self) -> bool:
        """Nothing more will arrive: True at EOF (or a quiet reset), raises if the stream
        broke, False while data may still come. Called with no data queued."""
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._received_eof:
            return True
        if self._reset_code is not None:
            if self._reset_remote and self._reset_code in _QUIET_RESETS:
                return True
            raise StreamReset(self._reset_code, remote=self._reset_remote)
        if self._conn.closing:
            raise trio.BrokenResourceError("HBONE connection lost") from self._conn.error
        return False

    def _take(self, max_bytes: int | None) -> bytes | memoryview:
        if not self._chunks:
            return b""
        head = self._chunks[0]
        start = self._offset
        if max_bytes is None or max_bytes >= len(head) - start:
            self._chunks.popleft()
            self._offset = 0
            data = head[start:] if start else head
        else:
            data = head[start : start + max_bytes]
            self._offset = start + max_bytes
        self._conn.consumed(self, len(data))
        return data

    def _check_sendable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._sent_eof:
            raise trio.ClosedResourceError("send_eof() was called")
        if self._reset_code is not None:
            raise StreamReset(self._reset_code, remote=self._reset_remote)
        if self._conn.closing:
            raise trio.BrokenResourceError("HBONE connection lost") from self._conn.error
        if self.status != CONNECTED:
            raise RuntimeError("the tunnel is not open: respond(200) first")
