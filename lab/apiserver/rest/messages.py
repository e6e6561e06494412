"""What the REST endpoint's transport and its handlers pass each other: no I/O here.

A handler gets a `Request` and answers with one of three things: a `Response` (a whole body),
a `Streaming` one (chunked: watch, `logs -f`; the body is a coroutine that writes until it is done
or the client goes away) or an `Upgrade` (the connection is handed over, for WebSocket exec).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import trio

Write = Callable[[bytes], Awaitable[None]]
Headers = list[tuple[str, str]]

JSON = "application/json"


@dataclass
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes = b""
    user: str | None = None  # the client certificate's CN
    groups: tuple[str, ...] = ()  # its O entries

    def param(self, name: str, default: str | None = None) -> str | None:
        """A query parameter's first value (Go's url.Values.Get)."""
        values = self.query.get(name)
        return values[0] if values else default

    def params(self) -> dict[str, str]:
        """Every query parameter with its first value."""
        return {k: v[0] for k, v in self.query.items() if v}

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: Headers = field(default_factory=list)


@dataclass
class Streaming:
    """A chunked response: BODY(write, client_gone) writes chunks; it is cancelled when the
    client hangs up (client_gone is set first), and its return ends the response."""

    status: int
    body: Callable[[Write, trio.Event], Awaitable[None]]
    content_type: str = JSON
    headers: Headers = field(default_factory=list)


@dataclass
class Upgrade:
    """The connection is handed to HANDLER(stream, leftover, request headers): it writes the 101
    itself and owns the stream until it returns; LEFTOVER is what the client sent after the request."""

    handler: Callable[[trio.abc.Stream, bytes, Mapping[str, str]], Awaitable[None]]


Result = Response | Streaming | Upgrade
App = Callable[[Request], Awaitable[Result]]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(status: int, obj: Any, headers: Headers | None = None, content_type: str = JSON) -> Response:
    return Response(status, dumps(obj), content_type, list(headers or []))
