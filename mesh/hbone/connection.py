"""The trio shell around one h2 connection, shared by the HBONE client and server.

`Connection.run` owns the transport: a reader task feeds received bytes to h2 and turns
h2's events into stream state; a writer task sends whatever h2 has queued (DATA, window
updates, SETTINGS/PING acks). Two tasks, so that a peer which stops reading can never
stop us from reading (and acknowledging) what it sends. Streams never await the
transport: they call h2 synchronously and then `_flush`.

`_flush` is the fast path of a request/response exchange. When the writer is idle and the
transport has a synchronous `send_nowait` (`TlsStream` over a socket), the output h2 just
produced is encrypted and written right there, by the task that produced it, if the
socket takes it all; only what the socket cannot take now goes to the writer (which
sends it before anything newer, so the byte order is h2's). That saves a task switch per
frame, which is most of the cost of a small request. Otherwise the writer is woken.

Send-side backpressure: h2 only takes DATA within the peer's windows, and a stream's
`send_all` also waits while more than `max_send_buffer` bytes are queued but not yet
taken by the writer, so memory stays bounded and streams interleave.

A connection ends on the peer's EOF or GOAWAY, a transport error, an h2 protocol error
(h2 queues our GOAWAY, which is flushed for up to `CLOSE_GRACE` seconds), a missed
keepalive PONG, or `aclose()`. `run` then returns normally (the reason is in `error`):
one bad peer must not raise through a listener.

A connection and its streams meet at two small interfaces, so that each owns its own state
(h2 and the send buffer here, a stream's received data and half-closes in the stream):

- `StreamOwner`, the connection side of a stream: all an `HboneStream` may ask of its
  connection. How much it may send now (`sendable`, `wait_send_capacity`), sending
  (`send_data`, `end_stream`, `respond`), returning flow-control window (`acknowledge`,
  `consumed`), closing (`close_stream`), and whether the connection is going (`closing`,
  `error`). All but `wait_send_capacity` are synchronous: h2 and the stream never disagree
  across a task switch.
- the stream side, `HboneStream`'s "called by the connection" methods: what the reader saw
  for it (`data_received`, `end_received`, `reset_received`, `response_received`), that the
  connection is closing (`connection_closing`), and whether h2 is done with it (`finished`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Protocol, Self

import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from trio.lowlevel import ParkingLot

from .headers import Header, decode_headers, response_headers, response_status
from .settings import Http2Settings, new_h2_connection, start_connection
from .stream import HboneStream, error_code_name

log = logging.getLogger("mesh.hbone")

#: Bytes asked of the transport per read: large reads keep per-call overhead low.
READ_SIZE = 1024 * 1024
#: How long a closing connection may spend flushing its last frames (GOAWAY, RST).
CLOSE_GRACE = 1.0

_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class ConnectionLost(trio.BrokenResourceError):
    """Why an HBONE connection ended, when it was not our own `aclose()`."""


class StreamOwner(Protocol):
    """The connection side of a stream: everything an `HboneStream` may ask of its connection.

    A protocol, not `Connection` itself: a stream depends on this short list only (the module
    docstring says how the two sides split the work), and a type checker holds it to that.
    """

    @property
    def closing(self) -> bool:
        """The connection is ending: nothing more can be sent or will arrive."""

    @property
    def error(self) -> BaseException | None:
        """Why the connection ended, for the exception a stream raises."""

    def sendable(self, stream: HboneStream) -> int:
        """How many bytes `stream` may hand to `send_data` now (0: wait for capacity)."""

    async def wait_send_capacity(self) -> None:
        """Sleep until a window opens, the send buffer drains, or the connection closes."""

    def send_data(self, stream: HboneStream, chunk: bytes | bytearray | memoryview) -> None:
        """Send DATA of at most `sendable(stream)` bytes."""

    def end_stream(self, stream: HboneStream) -> None:
        """Send END_STREAM (the stream has marked its EOF as sent)."""

    def respond(self, stream: HboneStream, status: int, headers: tuple[Header, ...], *, end_stream: bool) -> None:
        """Send the server's response headers, ending the stream with them if `end_stream`."""

    def acknowledge(self, stream: HboneStream, size: int) -> None:
        """Return `size` received bytes to the windows, from inside the reader (it flushes)."""

    def consumed(self, stream: HboneStream, size: int) -> None:
        """The app took `size` received bytes: return them to the windows now."""

    def close_stream(self, stream: HboneStream, unread: int, error_code: int) -> None:
        """Forget `stream`: reset it with `error_code` unless it ended both ways, give back `unread`."""


class Connection:
    """One HTTP/2 connection over an established trio stream (TLS in production)."""

    def __init__(self, transport: trio.abc.Stream, settings: Http2Settings, *, client_side: bool) -> None:
        self._transport = transport
        self._settings = settings
        self._h2 = new_h2_connection(settings, client_side=client_side)
        self._streams: dict[int, HboneStream] = {}
        self._queued = 0  # bytes given to h2 since its output was last taken
        self._write_wanted = ParkingLot()  # the writer waits here for output
        #: The transport's synchronous send, if it has one (see `_flush`).
        self._send_nowait: Callable[[bytes], bool] | None = getattr(transport, "send_nowait", None)
        self._writing = False  # the writer is in send_all: everything else queues behind it
        self._held = b""  # taken from h2 but refused by send_nowait: the writer sends it first
        self._backlog = False  # send_nowait kept bytes the socket could not take: the writer flushes them
        self._send_capacity = ParkingLot()  # senders wait here for window or buffer space
        self._streams_changed = ParkingLot()
        #: When the connection last became idle (no streams); set when it starts running.
        self.idle_since = 0.0
        self._pong = ParkingLot()
        self._cancel_scope = trio.CancelScope()
        self._read_scope = trio.CancelScope()
        self._keepalive_scope = trio.CancelScope()
        self._done = trio.Event()
        self._started = False
        self.closing = False
        self.closed = False
        #: Why the connection ended (None while open or after a clean local close).
        self.error: BaseException | None = None

    # --- public state ----------------------------------------------------------------

    @property
    def active_streams(self) -> int:
        """Streams not yet ended both ways, reset or closed."""
        return len(self._streams)

    @property
    def local_settings(self) -> h2.settings.Settings:
        return self._h2.local_settings

    @property
    def remote_settings(self) -> h2.settings.Settings:
        """The settings the peer sent (h2 defaults until its SETTINGS frame arrived)."""
        return self._h2.remote_settings

    async def wait_streams_changed(self) -> None:
        """Sleep until a stream opens or ends, or the connection closes."""
        if self.closed:
            await trio.lowlevel.checkpoint()
            return
        await self._streams_changed.park()

    async def wait_closed(self) -> None:
        await self._done.wait()

    # --- lifecycle -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Self] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the connection until it ends; `nursery.start(conn.run)` returns `conn`."""
        if self._started:
            raise RuntimeError("Connection.run() called twice")
        self._started = True
        self.idle_since = trio.current_time()
        start_connection(self._h2, self._settings)
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop)
                    if self._settings.keepalive_interval:
                        nursery.start_soon(self._keepalive, self._settings.keepalive_interval)
                    task_status.started(self)
                    await self._read_loop()
        finally:
            self._finish()
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._transport)
            self._done.set()

    async def aclose(self) -> None:
        """Send GOAWAY, reset what is still open, and wait until the connection is down."""
        if not self._started:
            self._started = True
            self._finish()
            await trio.aclose_forcefully(self._transport)
            self._done.set()
            return
        if not self.closing:
            try:
                self._h2.close_connection()
            except h2.exceptions.ProtocolError:
                pass
            self._begin_close(None)
        await self._done.wait()

    def _begin_close(self, error: BaseException | None) -> None:
        """Stop reading and keepalives, wake everyone, let the writer flush briefly."""
        if error is not None and self.error is None:
            self.error = error
        if self.closing:
            return
        self.closing = True
        self._read_scope.cancel()
        self._keepalive_scope.cancel()
        self._cancel_scope.deadline = min(self._cancel_scope.deadline, trio.current_time() + CLOSE_GRACE)
        self._write_wanted.unpark_all()
        self._wake_everyone()

    def _abort(self, error: BaseException) -> None:
        """The transport is unusable: stop at once."""
        self._begin_close(error)
        self._cancel_scope.cancel()

    def _finish(self) -> None:
        self.closing = self.closed = True
        self._wake_everyone()

    def _wake_everyone(self) -> None:
        for stream in list(self._streams.values()):
            stream.connection_closing()
        self._send_capacity.unpark_all()
        self._streams_changed.unpark_all()
        self._pong.unpark_all()

    # --- the two tasks ---------------------------------------------------------------

    async def _read_loop(self) -> None:
        # Each handler takes its own event type: dispatching on type(event) keeps them paired.
        dispatch: dict[type[h2.events.Event], Callable[[Any], None]] = {
            h2.events.DataReceived: self._on_data,
            h2.events.StreamEnded: self._on_stream_ended,
            h2.events.StreamReset: self._on_stream_reset,
            h2.events.WindowUpdated: self._on_window_updated,
            h2.events.RemoteSettingsChanged: self._on_settings_changed,
            h2.events.ResponseReceived: self._on_response,
            h2.events.RequestReceived: self._on_request,
            h2.events.ConnectionTerminated: self._on_goaway,
            h2.events.PingAckReceived: self._on_pong,
        }
        receive_some = self._transport.receive_some
        receive_data = self._h2.receive_data
        with self._read_scope:
            while True:
                try:
                    data = await receive_some(READ_SIZE)
                except _TRANSPORT_ERRORS as exc:
                    self._abort(exc)
                    return
                if not data:
                    self._begin_close(ConnectionLost("peer closed the connection"))
                    return
                try:
                    events = receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    # h2 has queued a GOAWAY naming the error; the writer flushes it.
                    log.debug("HBONE protocol error from peer: %s", exc)
                    self._begin_close(exc)
                    return
                for event in events:
                    handler = dispatch.get(type(event))
                    if handler is not None:
                        handler(event)
                self._flush()  # SETTINGS/PING acks, window updates, resets
                if self.closing:
                    return

    async def _write_loop(self) -> None:
        send_all = self._transport.send_all
        data_to_send = self._h2.data_to_send
        while True:
            data = data_to_send()
            if self._held:
                data, self._held = self._held + data, b""
            if data or self._backlog:
                self._backlog = False  # send_all sends the transport's leftovers first
                self._queued = 0
                self._send_capacity.unpark_all()
                self._writing = True
                try:
                    await send_all(data)
                except _TRANSPORT_ERRORS as exc:
                    self._abort(exc)
                    return
                finally:
                    self._writing = False
            elif self.closing:
                return
            else:
                await self._write_wanted.park()

    async def _keepalive(self, interval: float) -> None:
        """PING after `interval` (`keepalive_interval`) of life and then every interval; no PONG
        in `keepalive_timeout` means the peer is gone (ztunnel `do_ping_pong`)."""
        with self._keepalive_scope:
            while True:
                await trio.sleep(interval)
                self._h2.ping(os.urandom(8))
                self._flush()
                with trio.move_on_after(self._settings.keepalive_timeout):
                    await self._pong.park()
                    continue
                self._abort(ConnectionLost("HBONE ping timeout"))
                return

    # --- h2 events -------------------------------------------------------------------

    def _on_data(self, event: h2.events.DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        data = event.data
        padding = event.flow_controlled_length - len(data)
        if stream is None:  # a closed stream is released at once, so it is never found here
            # Nobody will read it: give the window back at once.
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            return
        if padding:
            self._h2.acknowledge_received_data(padding, event.stream_id)
        if data:
            stream.data_received(data)

    def _on_stream_ended(self, event: h2.events.StreamEnded) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.end_received()
            self._release_if_finished(stream)

    def _on_stream_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.reset_received(event.error_code, remote=event.remote_reset)
            self._release(stream)
            self._send_capacity.unpark_all()

    def _on_window_updated(self, event: h2.events.WindowUpdated) -> None:
        self._send_capacity.unpark_all()

    def _on_settings_changed(self, event: h2.events.RemoteSettingsChanged) -> None:
        self._send_capacity.unpark_all()  # the initial window or frame size may have grown
        self._streams_changed.unpark_all()  # max concurrent streams may have changed

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        # h2 refuses to send anything after a GOAWAY, so the connection is over for us too.
        self._begin_close(ConnectionLost(f"peer sent GOAWAY ({error_code_name(event.error_code)})"))

    def _on_pong(self, event: h2.events.PingAckReceived) -> None:
        self._pong.unpark_all()

    def _on_response(self, event: h2.events.ResponseReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            headers = decode_headers(event.headers)
            stream.response_received(response_status(headers), headers)

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        # Only a server accepts streams (h2 already refuses pushes to a client).
        self._h2.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)

    # --- stream bookkeeping (here and in the client and server subclasses) -------------

    def _register(self, stream: HboneStream) -> None:
        self._streams[stream.stream_id] = stream
        self._streams_changed.unpark_all()

    def _release(self, stream: HboneStream) -> None:
        if self._streams.pop(stream.stream_id, None) is not None:
            self._streams_changed.unpark_all()
            if not self._streams:
                self.idle_since = trio.current_time()

    def _release_if_finished(self, stream: HboneStream) -> None:
        if stream.finished:
            self._release(stream)

    def _flush(self) -> None:
        """h2 may have output: send it now if that needs no waiting, else wake the writer.

        Synchronous, so nothing can interleave: while the writer is sending, or holds bytes
        that must go first, the output stays in h2 for the writer to take in order.
        """
        if self._writing or self._held or self._backlog or self.closing or self._send_nowait is None:
            self._write_wanted.unpark_all()
            return
        data = self._h2.data_to_send()
        if not data:
            return
        self._queued = 0
        self._send_capacity.unpark_all()
        try:
            if self._send_nowait(data):
                return
            self._backlog = True
        except trio.WouldBlock:  # the transport cannot take it now (e.g. it is flushing)
            self._held = data
        self._write_wanted.unpark_all()

    # --- StreamOwner: the connection side of a stream --------------------------------

    def sendable(self, stream: HboneStream) -> int:
        """How many bytes `stream` may hand to h2 now (0: wait for window or buffer)."""
        if self.closing or self._queued >= self._settings.max_send_buffer:
            return 0
        try:
            window = self._h2.local_flow_control_window(stream.stream_id)
        except h2.exceptions.ProtocolError as exc:
            raise trio.BrokenResourceError(f"stream {stream.stream_id} is closed in h2") from exc
        # A peer that shrinks SETTINGS_INITIAL_WINDOW_SIZE can leave a window negative.
        return max(0, min(window, self._h2.max_outbound_frame_size))

    async def wait_send_capacity(self) -> None:
        await self._send_capacity.park()

    def send_data(self, stream: HboneStream, chunk: bytes | bytearray | memoryview) -> None:
        # h2's annotation says bytes | memoryview; it takes any buffer (it only slices and measures).
        self._h2.send_data(stream.stream_id, chunk)  # type: ignore[arg-type]
        self._queued += len(chunk)
        self._flush()

    def end_stream(self, stream: HboneStream) -> None:
        self._h2.end_stream(stream.stream_id)
        self._flush()
        self._release_if_finished(stream)

    def respond(self, stream: HboneStream, status: int, headers: tuple[Header, ...], *, end_stream: bool) -> None:
        self._h2.send_headers(stream.stream_id, response_headers(status, headers), end_stream=end_stream)
        self._flush()
        self._release_if_finished(stream)

    def acknowledge(self, stream: HboneStream, size: int) -> None:
        """`consumed` for the reader's own direct delivery: the read loop flushes after it."""
        if not self.closing:
            self._h2.acknowledge_received_data(size, stream.stream_id)

    def consumed(self, stream: HboneStream, size: int) -> None:
        """The app took `size` bytes: return them to the peer's windows."""
        if size and not self.closing:
            self.acknowledge(stream, size)
            self._flush()  # h2 only writes a WINDOW_UPDATE once half a window was taken

    def close_stream(self, stream: HboneStream, unread: int, error_code: int) -> None:
        if not self.closing:
            if stream.stream_id in self._streams and not stream.finished:
                try:
                    self._h2.reset_stream(stream.stream_id, error_code)
                except h2.exceptions.ProtocolError:
                    pass  # h2 already considers it closed
            if unread:
                self._h2.acknowledge_received_data(unread, stream.stream_id)
            self._flush()
        self._release(stream)
        self._send_capacity.unpark_all()
