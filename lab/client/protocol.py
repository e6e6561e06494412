"""The lab API's wire format: one JSON object per line over a Unix stream socket.

Request:   {"op": "get", "kind": "Pod", "namespace": "default", ...}
Response:  {"ok": true, "result": ...}  or  {"ok": false, "error": "one-line message"}
Watch:     after {"op": "watch", ...} the server sends event lines until the client hangs up:
           {"type": "ADDED"|"MODIFIED"|"DELETED", "object": {...}} and, once the initial
           list has been sent, {"type": "SYNCED", "resourceVersion": "N"}.

Sans-IO: `LineDecoder` is fed bytes and yields decoded messages; `encode` makes a line.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

MAX_LINE = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a JSON-lines message."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class LineDecoder:
    """Accumulates bytes and yields one dict per complete line."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray) -> Iterator[dict[str, Any]]:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:
                    raise ProtocolError("message too long")
                return
            line = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError as e:
                raise ProtocolError(f"bad JSON: {e}") from None
            if not isinstance(msg, dict):
                raise ProtocolError("message is not a JSON object")
            yield msg


def ok(result: Any = None) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}
