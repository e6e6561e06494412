"""HTTP/1.1 over one established trio stream: the server loop and an upstream client.

h11 does the parsing and the keep-alive bookkeeping; this module adds the I/O, the
limits and the proxy's error answers. Both sides are buffered: a request reaches the
handler with its whole body, and a response is written in one `send_all` with a
`content-length` (never chunked), which keeps the loop a simple sequence of exchanges.

Pipelined requests need nothing special: the loop does not read the next request before
the current response is written, and h11 keeps the bytes already received for it.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import h11
import trio

from .http import (
    CLOSE_TIMEOUT,
    DEFAULT_LIMITS,
    DEFAULT_SERVE_OPTIONS,
    READ_SIZE,
    TRANSPORT_ERRORS,
    Handler,
    HttpLimits,
    HttpRequest,
    HttpResponse,
    ServeOptions,
    clean_headers,
    local_reply,
    reason_phrase,
    wire_response,
)

log = logging.getLogger("mesh.proxy.http1")

#: After an error answer, how long the input is drained before closing (seconds).
#: Closing a TCP socket with unread input sends RST, which can destroy the answer in
#: flight; reading until the client closes (or this runs out) lets it arrive.
LINGER_TIMEOUT = 1.0
#: How much input is drained at most while lingering.
LINGER_MAX_BYTES = 16 * 1024 * 1024

#: Methods whose requests carry a `content-length` even when the body is empty.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

_KEEP, _CLOSE, _LINGER = "keep", "close", "linger"


def _decode(headers) -> list[tuple[str, str]]:
    return [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in headers]


def _encode(headers) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


async def serve_http1(
    stream: trio.abc.Stream, handler: Handler, *, initial: bytes = b"", options: ServeOptions = DEFAULT_SERVE_OPTIONS
) -> None:
    """Serve HTTP/1.x requests on `stream` until either side ends the connection.

    `initial` holds bytes already read from the stream (by the sniffer). Never raises
    for a broken stream or a bad client: it returns, and it always closes `stream`
    before returning.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=options.limits.max_header_bytes)
    ending = _CLOSE
    try:
        if initial:
            conn.receive_data(initial)
        while True:
            ending = await _exchange(conn, stream, handler, options)
            if ending != _KEEP:
                break
    except TRANSPORT_ERRORS:
        ending = _CLOSE
    except Exception:
        # A bug here must end this connection only, never the listener serving it.
        log.exception("HTTP/1 connection failed")
        ending = _CLOSE
    finally:
        try:
            if ending == _LINGER:
                await _linger(stream)
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await stream.aclose()


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream, idle_timeout: float):
    """h11's next event, reading as needed; None if the client stays silent too long."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        with trio.move_on_after(idle_timeout):
            conn.receive_data(await stream.receive_some(READ_SIZE))  # type: ignore[arg-type]  # h11 says bytes; its docs take bytes-like
            continue
        return None


async def _exchange(conn: h11.Connection, stream: trio.abc.Stream, handler: Handler, options: ServeOptions) -> str:
    """Read one request, answer it; say whether the connection goes on."""
    limits, idle_timeout, server = options.limits, options.idle_timeout, options.server

    async def refuse(status: int) -> str:
        await _send(conn, stream, local_reply(status, server=server), head=False, close=True)
        return _LINGER

    try:
        head_event = await _next_event(conn, stream, idle_timeout)
    except h11.RemoteProtocolError as exc:
        return await refuse(431 if exc.error_status_hint == 431 else 400)
    if not isinstance(head_event, h11.Request):
        return _CLOSE  # EOF, idle, or PAUSED after a protocol switch
    fields = head_event.headers
    if len(fields) > limits.max_headers:
        return await refuse(431)
    if sum(len(n) + len(v) for n, v in fields) > limits.max_header_bytes:
        return await refuse(431)
    declared = [v for n, v in fields if n == b"content-length"]
    if declared and int(declared[0]) > limits.max_body:
        # Refused before reading (and before any 100 Continue): the client need not send it.
        return await refuse(413)

    body = bytearray()
    while True:
        if conn.they_are_waiting_for_100_continue:
            await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        try:
            event = await _next_event(conn, stream, idle_timeout)
        except h11.RemoteProtocolError:
            return await refuse(400)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > limits.max_body:
                return await refuse(413)
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            return _CLOSE  # the client went away (or idled out) mid-request

    request = _to_request(head_event, bytes(body), options.scheme)
    crashed = False
    try:
        response = await handler(request)
        if not isinstance(response, HttpResponse) or not 200 <= response.status <= 999:
            raise TypeError(f"handler returned {response!r}, not a final HttpResponse")
    except Exception:
        log.exception("handler failed for %s %s", request.method, request.target)
        response = local_reply(500, server=server)
        crashed = True
    closing = response.close  # a draining proxy ends each connection after its next response
    if not await _send(conn, stream, response, head=request.method == "HEAD", close=crashed or closing):
        return _CLOSE
    if crashed:
        return _LINGER
    if closing:
        return _CLOSE
    if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
        conn.start_next_cycle()
        return _KEEP
    return _CLOSE


def _to_request(event: h11.Request, body: bytes, scheme: str) -> HttpRequest:
    """h11's request head as an HttpRequest: Host becomes the authority, and an
    absolute-form target (a request to a forward proxy) is split into its parts."""
    headers = _decode(event.headers)
    target = event.target.decode("latin-1")
    authority = next((v for n, v in headers if n == "host"), "")
    if "://" in target and not target.startswith("/"):
        url = urlsplit(target)
        scheme = url.scheme or scheme
        authority = url.netloc or authority
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return HttpRequest(
        method=event.method.decode("ascii"),
        target=target,
        authority=authority,
        scheme=scheme,
        headers=[h for h in clean_headers(headers) if h[0] != "host"],
        body=body,
        version=event.http_version.decode("ascii"),
    )


async def _send(
    conn: h11.Connection, stream: trio.abc.Stream, response: HttpResponse, *, head: bool, close: bool
) -> bool:
    """Write `response` in one piece; False if it could not be (h11 refused it)."""
    headers, body = wire_response(response, head=head)
    if close:
        headers.append(("connection", "close"))
    try:
        data = conn.send(
            h11.Response(
                status_code=response.status,
                headers=_encode(headers),
                reason=reason_phrase(response.status).encode("ascii"),
            )
        )
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
    except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
        # A response h11 will not write (bad header bytes) or a state that allows none.
        log.error("cannot send response %s: %s", response.status, exc)
        return False
    await stream.send_all(data)
    return True


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then read and discard until the client closes (bounded in time and bytes)."""
    with trio.move_on_after(LINGER_TIMEOUT):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            drained = 0
            while drained < LINGER_MAX_BYTES:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    break
                drained += len(data)
        except (*TRANSPORT_ERRORS, trio.BusyResourceError):
            pass


#: Envoy-style reset reasons, as they appear in a 503's body.
BEFORE_HEADERS = "upstream connect error or disconnect/reset before headers. reset reason: "
AFTER_HEADERS = "upstream reset after response started. reset reason: "


class UpstreamError(Exception):
    """The upstream failed to produce a complete response; the engine answers `status`.

    `reason` reads like the proxy's 503 body, e.g. "upstream connect error or
    disconnect/reset before headers. reset reason: connection termination".
    `reset_reason` is only its tail ("connection termination", "protocol error").
    `response_started` says whether response headers had arrived (the request may
    then have had effects upstream, so it is not safe to retry blindly).
    """

    def __init__(self, reason: str, *, response_started: bool = False, status: int = 503) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reset_reason = reason.rpartition("reset reason: ")[2]
        self.response_started = response_started
        self.status = status


class Http1Client:
    """One HTTP/1.1 connection to an upstream, used for one request at a time.

    The connection stays open between requests while both sides allow keep-alive
    (`reusable`); as soon as it cannot be reused it is closed, so a pool only has to
    drop clients that are not `reusable`.
    """

    def __init__(self, stream: trio.abc.Stream, *, limits: HttpLimits = DEFAULT_LIMITS) -> None:
        self._stream = stream
        self._limits = limits
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_header_bytes)
        self._busy = False
        self._broken = False

    @property
    def stream(self) -> trio.abc.Stream:
        return self._stream

    @property
    def reusable(self) -> bool:
        """True when another request may be sent on this connection now."""
        return (
            not self._busy
            and not self._broken
            and self._conn.our_state is h11.IDLE
            and self._conn.their_state is h11.IDLE
        )

    async def aclose(self) -> None:
        self._broken = True
        with trio.move_on_after(CLOSE_TIMEOUT):
            await self._stream.aclose()

    async def request(self, req: HttpRequest) -> HttpResponse:
        """Send `req` (Host from its authority, body with a content-length), return the response.

        Raises `UpstreamError` if the upstream closes, resets or breaks the protocol
        before the response is complete, or if this connection is not reusable.
        """
        if not self.reusable:
            raise UpstreamError(BEFORE_HEADERS + "connection termination")
        self._busy = True
        done = False
        try:
            response = await self._exchange(req)
            done = True
            return response
        finally:
            self._busy = False
            if done and self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
                self._conn.start_next_cycle()
            else:
                # Cancelled, failed, or one side wants the connection closed.
                await self.aclose()

    async def _exchange(self, req: HttpRequest) -> HttpResponse:
        conn = self._conn
        headers = [("host", req.authority)] + [
            (n, v) for n, v in clean_headers(req.headers) if n not in ("host", "content-length")
        ]
        if req.body or req.method in _BODY_METHODS or req.header("content-length") is not None:
            headers.append(("content-length", str(len(req.body))))
        try:
            data = conn.send(h11.Request(method=req.method, target=req.target or "/", headers=_encode(headers)))
            if req.body:
                data += conn.send(h11.Data(data=req.body))
            data += conn.send(h11.EndOfMessage())
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            raise UpstreamError(f"invalid request: {exc}", status=400) from exc
        try:
            await self._stream.send_all(data)
        except TRANSPORT_ERRORS as exc:
            raise UpstreamError(BEFORE_HEADERS + "connection termination") from exc

        head: h11.Response | None = None
        body = bytearray()
        eof = False
        while True:
            prefix = AFTER_HEADERS if head else BEFORE_HEADERS
            try:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    chunk = await self._stream.receive_some(READ_SIZE)
                    eof = not chunk
                    conn.receive_data(chunk)  # type: ignore[arg-type]  # h11 says bytes; its docs take bytes-like
                    continue
            except h11.RemoteProtocolError as exc:
                # h11 reports a close in the middle of a message as a protocol error.
                why = "connection termination" if eof else "protocol error"
                raise UpstreamError(prefix + why, response_started=head is not None) from exc
            except TRANSPORT_ERRORS as exc:
                raise UpstreamError(prefix + "connection termination", response_started=head is not None) from exc
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._limits.max_body:
                    raise UpstreamError("upstream response too large", response_started=True, status=500)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed before the end of the response
                raise UpstreamError(prefix + "connection termination", response_started=head is not None)
        assert head is not None
        return HttpResponse(status=head.status_code, headers=clean_headers(_decode(head.headers)), body=bytes(body))
