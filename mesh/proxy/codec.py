"""Protocol detection: is a new connection HTTP at all, and which HTTP version?

The proxy does not know what a client will speak. Two questions are answered from the
first bytes, without consuming them (the caller hands them on as `initial`):

- `sniff`/`looks_like_http`: HTTP or something else? Anything else goes through as raw
  TCP. Server-first protocols (MySQL, SMTP...) send nothing until the server speaks, so
  silence for `timeout` seconds also means "not HTTP";
- `serve_http`: HTTP/2 with prior knowledge (the 24-byte preface) or HTTP/1.x?
"""

from __future__ import annotations

import trio

from .http import CLOSE_TIMEOUT, DEFAULT_SERVE_OPTIONS, READ_SIZE, TRANSPORT_ERRORS, Handler, ServeOptions
from .http1 import serve_http1
from .http2 import serve_http2

#: What every HTTP/2 prior-knowledge client sends first.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: Request methods recognised in an HTTP/1.x request line: the standard ones and WebDAV's.
HTTP_METHODS = frozenset(
    {
        b"GET",
        b"HEAD",
        b"POST",
        b"PUT",
        b"DELETE",
        b"CONNECT",
        b"OPTIONS",
        b"TRACE",
        b"PATCH",
        b"PROPFIND",
        b"PROPPATCH",
        b"MKCOL",
        b"COPY",
        b"MOVE",
        b"LOCK",
        b"UNLOCK",
        b"REPORT",
        b"MKACTIVITY",
        b"CHECKOUT",
        b"MERGE",
        b"SEARCH",
        b"PURGE",
    }
)
_LONGEST_METHOD = max(len(m) for m in HTTP_METHODS)

#: Bytes `sniff` reads at most before deciding: enough for the preface or a request line start.
DEFAULT_SNIFF_BYTES = 64
#: How long `sniff` waits for a client that sends nothing (seconds). Long enough for a
#: slow client's first packet on a loaded machine, short enough that a server-first
#: protocol sees its greeting without a noticeable delay.
DEFAULT_SNIFF_TIMEOUT = 1.0


def looks_like_http(prefix: bytes) -> bool | None:
    """Classify the first bytes of a connection: True (HTTP/1.x request or h2 preface),
    False (clearly something else), None (too few bytes to tell).

    HTTP/1.x is a known method, one space, then the start of a request target: "/" or
    "*" (origin and asterisk forms) or a letter/digit (absolute and authority forms).
    """
    if not prefix:
        return None
    if prefix.startswith(H2_PREFACE):
        return True
    if H2_PREFACE.startswith(prefix):
        return None  # "P", "PR", "PRI * HTTP/2" ... may still turn out to be the preface
    method, space, rest = prefix.partition(b" ")
    if not space:
        if len(prefix) <= _LONGEST_METHOD and any(m.startswith(prefix) for m in HTTP_METHODS):
            return None
        return False
    if method not in HTTP_METHODS:
        return False
    if not rest:
        return None
    first = rest[:1]
    return first in (b"/", b"*") or first.isalnum()


async def sniff(
    stream: trio.abc.ReceiveStream, max_bytes: int = DEFAULT_SNIFF_BYTES, timeout: float = DEFAULT_SNIFF_TIMEOUT
) -> tuple[bytes, bool]:
    """Read the first bytes of `stream` until `looks_like_http` decides.

    Returns everything read (the caller must replay it: `initial=` of the servers, or
    the first write of a TCP passthrough) and whether it is HTTP. Undecided after
    `max_bytes`, after EOF or after `timeout` seconds without a decision means not
    HTTP. A broken stream is "not HTTP" with what was read so far.
    """
    prefix = b""
    with trio.move_on_after(timeout):
        try:
            while len(prefix) < max_bytes:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    break
                prefix += data
                verdict = looks_like_http(prefix)
                if verdict is not None:
                    return prefix, verdict
        except TRANSPORT_ERRORS:
            pass
    return prefix, bool(looks_like_http(prefix))


async def serve_http(
    stream: trio.abc.Stream, handler: Handler, *, initial: bytes = b"", options: ServeOptions = DEFAULT_SERVE_OPTIONS
) -> None:
    """Serve HTTP on `stream`: HTTP/2 if it starts with the preface, else HTTP/1.x.

    `initial` holds bytes already read (from `sniff`). Reads more only while the bytes
    so far are a proper prefix of the preface. Returns when the connection ends and
    always closes `stream`; never raises for anything the client does.
    """
    prefix = initial
    try:
        while len(prefix) < len(H2_PREFACE) and H2_PREFACE.startswith(prefix):
            with trio.move_on_after(options.idle_timeout) as idle:
                data = await stream.receive_some(READ_SIZE)
            if idle.cancelled_caught or not data:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await stream.aclose()
                return
            prefix += data
    except TRANSPORT_ERRORS:
        with trio.move_on_after(CLOSE_TIMEOUT):
            await stream.aclose()
        return
    serve = serve_http2 if prefix.startswith(H2_PREFACE) else serve_http1
    await serve(stream, handler, initial=prefix, options=options)
