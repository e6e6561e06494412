"""HTTP/2 cleartext (h2c, prior knowledge) server over one established trio stream.

Three kinds of tasks share one h2 connection object (safe: h2 calls are synchronous and
trio switches tasks only at awaits):

- the reader feeds received bytes to h2 and turns events into per-stream state; it never
  writes, so a client that stops reading cannot stop us from reading what it sends;
- the writer sends whatever h2 has queued, in order, whenever someone wakes it;
- one task per request runs the handler and sends the response, DATA only within the
  flow-control window h2 reports, parking until a WINDOW_UPDATE opens it.

Request bodies are acknowledged (windows reopened) as they arrive: they are bounded by
`max_body`, so buffering them costs at most that. A RST_STREAM from the client cancels
that request's task only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from .http import (
    CLOSE_TIMEOUT,
    DEFAULT_SERVE_OPTIONS,
    READ_SIZE,
    TRANSPORT_ERRORS,
    Handler,
    HttpRequest,
    HttpResponse,
    ServeOptions,
    clean_headers,
    local_reply,
    wire_response,
)

log = logging.getLogger("mesh.proxy.http2")

#: Streams a client may open at once.
MAX_CONCURRENT_STREAMS = 100
#: Header lists up to this many times `max_header_bytes` are decoded and answered 431 on
#: their stream; beyond, h2 treats the header block as an attack and ends the connection.
HARD_HEADER_FACTOR = 4


@dataclass
class _Stream:
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    #: Answered by the codec (431/413): later DATA is dropped, no handler runs.
    refused: bool = False
    #: The client's side is complete (END_STREAM seen).
    ended: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


async def serve_http2(
    stream: trio.abc.Stream, handler: Handler, *, initial: bytes = b"", options: ServeOptions = DEFAULT_SERVE_OPTIONS
) -> None:
    """Serve h2c on `stream`, whose client starts with the connection preface.

    `initial` holds bytes already read (the sniffed preface). Returns when the client
    closes or sends GOAWAY, on a protocol error (after our GOAWAY), on a broken stream
    or after `options.idle_timeout` without requests; requests still running are cancelled.
    Always closes `stream`; never raises for anything the client does.
    """
    try:
        await _H2Server(stream, handler, options).run(initial)
    except Exception:
        # A bug here must end this connection only, never the listener serving it.
        log.exception("HTTP/2 connection failed")


class _H2Server:
    def __init__(self, stream: trio.abc.Stream, handler: Handler, options: ServeOptions) -> None:
        self.stream = stream
        self.handler = handler
        self.limits = limits = options.limits
        self.idle_timeout = options.idle_timeout
        self.scheme = options.scheme
        self.server = options.server
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        hard = HARD_HEADER_FACTOR * limits.max_header_bytes
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: hard,
            },
        )
        self.h2.decoder.max_header_list_size = hard
        self.streams: dict[int, _Stream] = {}
        self.active = 0  # request tasks still running
        self.nursery: trio.Nursery | None = None
        self.output = trio.Event()  # wakes the writer
        self.window = trio.lowlevel.ParkingLot()  # senders waiting for flow-control window
        self.done = trio.Event()  # the connection is over: flush and close
        self.closing = False
        self.writer_done = trio.Event()

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, initial: bytes) -> None:
        try:
            self.h2.initiate_connection()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if initial:
                    self._receive(initial)
                nursery.start_soon(self._writer)
                if not self.done.is_set():
                    nursery.start_soon(self._reader)
                await self.done.wait()
                self.closing = True
                self._wake()
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await self.writer_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self.stream.aclose()

    def _wake(self) -> None:
        self.output.set()

    async def _writer(self) -> None:
        try:
            while True:
                await self.output.wait()
                self.output = trio.Event()
                data = self.h2.data_to_send()
                if data:
                    await self.stream.send_all(data)
                if self.closing and not self.output.is_set():
                    break
        except TRANSPORT_ERRORS:
            self.done.set()
        finally:
            self.writer_done.set()

    async def _reader(self) -> None:
        try:
            while not self.done.is_set():
                with trio.move_on_after(self.idle_timeout) as idle:
                    data = await self.stream.receive_some(READ_SIZE)
                if idle.cancelled_caught:
                    if self.active == 0 and not self.streams:
                        self.h2.close_connection()
                        self._wake()
                        self.done.set()
                    continue
                if not data:
                    self.done.set()
                    return
                self._receive(data)
        except TRANSPORT_ERRORS:
            self.done.set()

    # -- events ----------------------------------------------------------------------

    def _receive(self, data: bytes | bytearray) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the right error code: flush it and close.
            log.debug("h2 protocol error from client: %s", exc)
            self._wake()
            self.done.set()
            return
        for event in events:
            self._on_event(event)
        self._wake()

    def _on_event(self, event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event.stream_id, event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self._ack(event.stream_id, event.flow_controlled_length)
            st = self.streams.get(event.stream_id)
            if st is None or st.refused:
                return
            st.body += event.data
            if len(st.body) > self.limits.max_body:
                self._refuse(event.stream_id, st, 413)
        elif isinstance(event, h2.events.StreamEnded):
            st = self.streams.get(event.stream_id)
            if st is None:
                return
            st.ended = True
            if not st.refused:
                self._start(event.stream_id, self._run_request(event.stream_id, st), st)
        elif isinstance(event, h2.events.StreamReset):
            st = self.streams.pop(event.stream_id, None)
            if st is not None:
                st.scope.cancel()
            self.window.unpark_all()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window.unpark_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 allows no more frames after a GOAWAY from the peer: nothing can be answered.
            self.done.set()
        # Trailers, pings, priority and settings acks need nothing from us.

    def _ack(self, stream_id: int, length: int) -> None:
        if not length:
            return
        try:
            self.h2.acknowledge_received_data(length, stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass

    def _on_request(self, stream_id: int, raw) -> None:
        st = self.streams[stream_id] = _Stream()
        st.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw]
        size = sum(len(n) + len(v) for n, v in raw)
        if len(raw) > self.limits.max_headers or size > self.limits.max_header_bytes:
            self._refuse(stream_id, st, 431)

    def _refuse(self, stream_id: int, st: _Stream, status: int) -> None:
        """Answer on the stream itself without a handler; the body is not awaited."""
        st.refused = True
        st.body = bytearray()
        self._start(stream_id, self._respond(stream_id, st, local_reply(status, server=self.server), head=False), st)

    def _start(self, stream_id: int, coro, st: _Stream) -> None:
        assert self.nursery is not None
        self.active += 1
        self.nursery.start_soon(self._guard, stream_id, st, coro)

    async def _guard(self, stream_id: int, st: _Stream, coro) -> None:
        try:
            with st.scope:
                await coro
        except Exception:
            log.exception("HTTP/2 stream %d failed", stream_id)
            try:
                self.h2.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
                self._wake()
            except h2.exceptions.ProtocolError:
                pass
        finally:
            self.active -= 1
            if self.streams.get(stream_id) is st:
                del self.streams[stream_id]

    # -- per-request tasks -------------------------------------------------------------

    def _request(self, st: _Stream) -> HttpRequest:
        pseudo = {n: v for n, v in st.headers if n.startswith(":")}
        regular = [(n, v) for n, v in st.headers if not n.startswith(":")]
        authority = pseudo.get(":authority") or next((v for n, v in regular if n == "host"), "")
        cookies = [v for n, v in regular if n == "cookie"]
        headers = [h for h in clean_headers(regular) if h[0] not in ("host", "cookie")]
        if cookies:
            # HTTP/2 may split cookies into crumbs; an HTTP/1 upstream expects one header.
            headers.append(("cookie", "; ".join(cookies)))
        return HttpRequest(
            method=pseudo.get(":method", ""),
            target=pseudo.get(":path", ""),
            authority=authority,
            scheme=pseudo.get(":scheme", self.scheme),
            headers=headers,
            body=bytes(st.body),
            version="2",
        )

    async def _run_request(self, stream_id: int, st: _Stream) -> None:
        request = self._request(st)
        st.body = bytearray()
        try:
            response = await self.handler(request)
            if not isinstance(response, HttpResponse) or not 200 <= response.status <= 999:
                raise TypeError(f"handler returned {response!r}, not a final HttpResponse")
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.target)
            response = local_reply(500, server=self.server)
        await self._respond(stream_id, st, response, head=request.method == "HEAD")

    async def _respond(self, stream_id: int, st: _Stream, response: HttpResponse, *, head: bool) -> None:
        headers, body = wire_response(response, head=head)
        try:
            fields = [(b":status", str(response.status).encode())] + [
                (n.encode("latin-1"), v.encode("latin-1")) for n, v in headers
            ]
            self.h2.send_headers(stream_id, fields, end_stream=not body)
            self._wake()
            view = memoryview(body)
            while view:
                window = self.h2.local_flow_control_window(stream_id)
                if window <= 0:
                    await self.window.park()
                    continue
                n = min(window, self.h2.max_outbound_frame_size, len(view))
                chunk, view = view[:n], view[n:]
                self.h2.send_data(stream_id, bytes(chunk), end_stream=not view)
                self._wake()
            if not st.ended:
                # Answered before the request was complete: tell the client to stop sending.
                self.h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)
                self._wake()
        except h2.exceptions.StreamClosedError as exc:
            log.debug("stream %d closed while answering: %s", stream_id, exc)
        except (h2.exceptions.ProtocolError, UnicodeEncodeError) as exc:
            # A response h2 will not send (bad header bytes), or a connection already closed.
            log.error("stream %d: cannot send response %s: %s", stream_id, response.status, exc)
            try:
                self.h2.reset_stream(stream_id, ErrorCodes.INTERNAL_ERROR)
                self._wake()
            except h2.exceptions.ProtocolError:
                pass
