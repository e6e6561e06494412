"""Buffered HTTP messages shared by the codecs and the proxy engine.

Bodies are small in the lab, so a message is a complete value (headers and the whole
body) rather than a stream of frames: filters and routing can then be plain functions of
a request. The codecs own framing: they drop hop-by-hop headers on the way in and write
`content-length` from the body on the way out, so a filter that rewrites a body never has
to fix up framing headers.

Header names are lower-case `str`, values `str` decoded as latin-1 (HTTP field values are
bytes; latin-1 round-trips every byte), and the order of headers is kept.

The codecs' common ground lives here too: how they serve a downstream connection
(`ServeOptions`) and the I/O constants they share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Self

import trio

KiB = 1024
MiB = 1024 * KiB

#: Connection-specific headers: they describe one hop, so they never cross the proxy
#: (and HTTP/2 forbids them outright).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"})

#: Total size of a request's headers (names + values) before the codec answers 431.
MAX_HEADER_BYTES = 60 * KiB
#: Number of request headers before the codec answers 431.
MAX_HEADERS = 100
#: Largest request body buffered before the codec answers 413.
MAX_BODY = 8 * MiB

#: The `server` header of local replies, as the mesh's proxies send it.
DEFAULT_SERVER = "istio-envoy"


@dataclass(frozen=True)
class HttpLimits:
    """What one request may cost the proxy before it is refused (431 or 413)."""

    max_header_bytes: int = MAX_HEADER_BYTES
    max_headers: int = MAX_HEADERS
    max_body: int = MAX_BODY


DEFAULT_LIMITS = HttpLimits()

#: Bytes asked of a stream per read.
READ_SIZE = 64 * 1024
#: A downstream connection with no request for this long is closed (seconds).
DEFAULT_IDLE_TIMEOUT = 300.0
#: How long closing a stream, or writing a connection's last frames, may take (seconds).
CLOSE_TIMEOUT = 1.0
#: What a broken or closed stream raises: the connection just ends.
TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass(frozen=True)
class ServeOptions:
    """How a codec serves one downstream connection, whichever HTTP version it speaks."""

    limits: HttpLimits = DEFAULT_LIMITS
    #: A connection without requests for this long is closed (seconds).
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: What the downstream hop used ("https" behind TLS termination).
    scheme: str = "http"
    #: The `server` header of the proxy's own answers; None sends none.
    server: str | None = DEFAULT_SERVER


DEFAULT_SERVE_OPTIONS = ServeOptions()


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    values = [v for n, v in headers if n == name]
    if not values:
        return None
    # Repeated fields fold with "," except cookies, whose crumbs fold with "; ".
    return ("; " if name == "cookie" else ",").join(values)


def _edit(
    headers: list[tuple[str, str]],
    set: Iterable[tuple[str, str]],
    add: Iterable[tuple[str, str]],
    remove: Iterable[str],
) -> list[tuple[str, str]]:
    set = [(n.lower(), v) for n, v in set]
    add = [(n.lower(), v) for n, v in add]
    dropped = {n.lower() for n in remove} | {n for n, _ in set}
    return [(n, v) for n, v in headers if n not in dropped] + set + add


class _HeaderAccess:
    """`header` and `with_headers`, the same for requests and responses (dataclasses both)."""

    headers: list[tuple[str, str]]
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # what `replace` needs

    def header(self, name: str) -> str | None:
        """All values of `name` joined with "," (cookies with "; "); None if absent."""
        return _get(self.headers, name)

    def with_headers(
        self, set: Iterable[tuple[str, str]] = (), *, add: Iterable[tuple[str, str]] = (), remove: Iterable[str] = ()
    ) -> Self:
        """A copy with `remove` and the names in `set` dropped, then `set` and `add` appended."""
        return dataclasses.replace(self, headers=_edit(self.headers, set, add, remove))


@dataclass
class HttpRequest(_HeaderAccess):
    """One complete request, whatever protocol version carried it."""

    method: str
    #: The request target as sent: path and query (`*` for `OPTIONS *`, host:port for CONNECT).
    target: str
    #: `:authority`, or the Host header for HTTP/1.
    authority: str
    scheme: str = "http"
    #: Lower-case names, in order, without hop-by-hop headers, `host` or pseudo-headers.
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: "1.0", "1.1" or "2": the version of the downstream hop.
    version: str = "1.1"

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        """The query string without "?" ("" if none)."""
        return self.target.partition("?")[2]


@dataclass
class HttpResponse(_HeaderAccess):
    """One complete response."""

    status: int
    #: Lower-case names, in order. `content-length` is rewritten by the codec from `body`.
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: End the connection after this response (HTTP/1.1 `connection: close`): a draining proxy sets
    #: it so clients reconnect elsewhere. Hop-by-hop headers in `headers` are never honoured.
    close: bool = False


#: What the engine gives a codec: one request in, one response out.
Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


#: Phrases that changed name since the older RFCs Python's `HTTPStatus` follows.
_PHRASES = {413: "Payload Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable"}


def reason_phrase(status: int) -> str:
    """The standard reason phrase of `status` ("" if unknown)."""
    if status in _PHRASES:
        return _PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def local_reply(
    status: int,
    body: str | bytes | None = None,
    headers: Iterable[tuple[str, str]] = (),
    *,
    server: str | None = DEFAULT_SERVER,
) -> HttpResponse:
    """A response generated by the proxy itself rather than an upstream.

    Plain text, with `content-length`, and a `server` header unless `server` is None
    (a proxy in front of an app may prefer to stay invisible). `body` defaults to the
    reason phrase, e.g. "Payload Too Large" for 413.
    """
    if body is None:
        body = reason_phrase(status)
    data = body.encode() if isinstance(body, str) else bytes(body)
    out: list[tuple[str, str]] = []
    if data:
        out += [("content-length", str(len(data))), ("content-type", "text/plain")]
    if server is not None:
        out.append(("server", server))
    return HttpResponse(status, _edit(out, headers, (), ()), data)


def clean_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Lower-case names, without hop-by-hop and pseudo-headers: what may cross the proxy."""
    out = []
    for name, value in headers:
        name = name.lower()
        if name in HOP_BY_HOP or name.startswith(":"):
            continue
        out.append((name, value))
    return out


def wire_response(resp: HttpResponse, *, head: bool) -> tuple[list[tuple[str, str]], bytes]:
    """The headers and body a codec puts on the wire for `resp`.

    Framing is the codec's: `content-length` is always `len(body)`, except that 1xx, 204
    and 304 carry neither length nor body, and the answer to a HEAD carries no body but
    keeps an upstream's length if the body is empty (the upstream answered the HEAD).
    """
    headers = [h for h in clean_headers(resp.headers) if h[0] != "content-length"]
    if resp.status < 200 or resp.status in (204, 304):
        return headers, b""
    length = str(len(resp.body))
    if head:
        given = resp.header("content-length")
        if not resp.body and given is not None and given.isdigit():
            length = given
        return headers + [("content-length", length)], b""
    return headers + [("content-length", length)], resp.body
