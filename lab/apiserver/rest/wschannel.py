"""The exec/attach WebSocket channel protocol (`v5.channel.k8s.io`, `v4.channel.k8s.io`), sans-IO.

Why: kubectl >= 1.30 and the Python clients run `exec` over a WebSocket whose binary messages start
with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 status, 4 resize); v5 adds the close signal
`[255, 0]` that half-closes stdin, without which a piped `kubectl exec -i` never ends. This module
turns bytes into events and back; the REST layer owns the socket and the process.

    hs = accept(request_headers)                  # -> 101 headers, or HandshakeRefused
    conn = ChannelConnection(hs.subprotocol)
    send(conn.ready())                            # the empty "connected" message Kubernetes sends
    for event in conn.receive_data(chunk): ...    # StdinData, StdinClosed, Resize, Closed
    send(conn.data_to_send())                     # pongs and close replies wsproto owes the peer
    send(conn.stdout(b"hi") + conn.status(7) + conn.close())

Shapes follow Kubernetes: constants in apimachinery `pkg/util/remotecommand/constants.go`, the
status messages in kubelet's `pkg/cri/streaming/remotecommand/exec.go` (a `metav1.Status` as Go's
JSON writes it, TypeMeta omitted), the empty first message in apiserver's
`pkg/util/proxy/websocket.go`, the close signal as client-go's `tools/remotecommand/websocket.go`
sends it (exactly `[255, channel]`). The server prefers v5 whatever the client's order (kubectl
offers only v5; kr8s only v4). The base64 text protocols (`v4.base64.channel.k8s.io`) are not
offered: none of the clients the lab supports uses them. One frame per output call: the caller
chunks large output.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Iterable, Union

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import generate_accept_token

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
PROTOCOLS = (V5, V4)  # in the server's order of preference

STDIN, STDOUT, STDERR, STATUS, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255  # v5: [255, channel] closes that channel's direction (stdin)

NORMAL_CLOSURE = 1000
MESSAGE_TOO_BIG = 1009
MAX_MESSAGE = 16 * 1024 * 1024  # a reassembled client message larger than this ends the connection

HeaderValue = Union[bytes, str]
Headers = list[tuple[bytes, bytes]]


# -- handshake --------------------------------------------------------------------------------------


class HandshakeRefused(Exception):
    """The request cannot become an exec channel: answer `status` with `message` (and `headers`)."""

    def __init__(self, status: int, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass(frozen=True)
class Handshake:
    """An accepted upgrade: the chosen subprotocol and the headers of the `101 Switching Protocols`."""

    subprotocol: str
    headers: Headers


def _text(value: HeaderValue) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else value


def _tokens(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def accept(headers: Iterable[tuple[HeaderValue, HeaderValue]], method: HeaderValue = "GET") -> Handshake:
    """Check a WebSocket upgrade (RFC 6455 4.2.1) and pick the channel subprotocol (v5, else v4).

    `headers` as h11 gives them (name, value pairs; repeated names allowed). Raises
    HandshakeRefused: 400 not a WebSocket upgrade (SPDY named as such), 405 not GET,
    426 wrong `Sec-WebSocket-Version`, 400 no common subprotocol.
    """
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        merged.setdefault(_text(name).strip().lower(), []).append(_text(value))

    def tokens(name: str) -> list[str]:
        return [token for value in merged.get(name, []) for token in _tokens(value)]

    upgrade = [token.lower() for token in tokens("upgrade")]
    if "websocket" not in upgrade:
        if any(token.startswith("spdy/") for token in upgrade):
            raise HandshakeRefused(
                400,
                "SPDY exec/attach is not supported by this server: use a client that speaks "
                "WebSocket (kubectl >= 1.30, v5.channel.k8s.io or v4.channel.k8s.io)",
            )
        raise HandshakeRefused(400, "expected a WebSocket upgrade (Upgrade: websocket) for exec/attach")
    if "upgrade" not in [token.lower() for token in tokens("connection")]:
        raise HandshakeRefused(400, "WebSocket upgrade without 'Connection: Upgrade'")
    if _text(method).upper() != "GET":
        raise HandshakeRefused(405, f"WebSocket upgrade must be a GET, not {_text(method)}")
    version = tokens("sec-websocket-version")
    if version != ["13"]:
        raise HandshakeRefused(
            426,
            f"unsupported Sec-WebSocket-Version {', '.join(version) or '(none)'}; this server speaks 13",
            [(b"Sec-WebSocket-Version", b"13")],
        )
    keys = merged.get("sec-websocket-key", [])
    key = keys[0].strip() if len(keys) == 1 else ""
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        raise HandshakeRefused(400, "missing or invalid Sec-WebSocket-Key (must be 16 bytes, base64)")
    offered = tokens("sec-websocket-protocol")
    chosen = next((protocol for protocol in PROTOCOLS if protocol in offered), None)
    if chosen is None:
        raise HandshakeRefused(
            400, f"requested protocol(s) are not supported: [{' '.join(offered)}]; supports [{' '.join(PROTOCOLS)}]"
        )
    return Handshake(
        chosen,
        [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", generate_accept_token(key.encode("ascii"))),
            (b"Sec-WebSocket-Protocol", chosen.encode("ascii")),
        ],
    )


# -- events -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StdinData:
    """Bytes for the process's stdin (channel 0)."""

    data: bytes


@dataclass(frozen=True)
class StdinClosed:
    """The client has no more stdin (v5 `[255, 0]`): close the process's stdin, keep reading its output."""


@dataclass(frozen=True)
class Resize:
    """A terminal size (channel 4, `{"Width": W, "Height": H}`), for a TTY."""

    width: int
    height: int


@dataclass(frozen=True)
class Closed:
    """The connection is over (the client's close frame, a protocol error, or EOF: code 1006)."""

    code: int
    reason: str = ""


Event = Union[StdinData, StdinClosed, Resize, Closed]


# -- the connection ---------------------------------------------------------------------------------


@dataclass
class ChannelConnection:
    """The server side of one exec/attach channel connection, after the 101.

    Methods that produce output return the bytes to write; they return b"" once the connection is
    closing (the peer cannot read them any more), so a process racing a disconnect needs no checks.
    """

    subprotocol: str = V5
    max_message: int = MAX_MESSAGE
    _ws: Connection = field(init=False, repr=False)
    _pending: bytearray = field(init=False, repr=False, default_factory=bytearray)
    _partial: bytearray = field(init=False, repr=False, default_factory=bytearray)
    _stdin_open: bool = field(init=False, default=True)
    _done: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.subprotocol not in PROTOCOLS:
            raise ValueError(f"unsupported channel subprotocol {self.subprotocol!r}; expected one of {PROTOCOLS}")
        self._ws = Connection(ConnectionType.SERVER)

    @property
    def open(self) -> bool:
        """True while output can still be sent."""
        return self._ws.state is ConnectionState.OPEN

    @property
    def stdin_open(self) -> bool:
        return self._stdin_open and not self._done

    # input

    def receive_data(self, data: bytes | None) -> list[Event]:
        """Feed bytes read from the client (b"" or None: the transport hit EOF) -> events."""
        if self._done:
            return []
        self._ws.receive_data(data or None)
        events: list[Event] = []
        for event in self._ws.events():
            if isinstance(event, Ping):
                if self.open:
                    self._pending += self._ws.send(event.response())
            elif isinstance(event, BytesMessage):
                self._partial += event.data
                if len(self._partial) > self.max_message:
                    self._partial.clear()
                    reason = f"message larger than {self.max_message} bytes"
                    self._pending += self._ws.send(CloseConnection(MESSAGE_TOO_BIG, reason))
                    self._done = True
                    events.append(Closed(MESSAGE_TOO_BIG, reason))
                    break
                if event.message_finished:
                    message = bytes(self._partial)
                    self._partial.clear()
                    events.extend(self._message(message))
            elif isinstance(event, TextMessage):
                continue  # only the base64 protocols use text frames, and they are not offered
            elif isinstance(event, CloseConnection):
                if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                    # echo the peer's close (or report wsproto's parse failure with its code)
                    code = event.code if event.code not in (1005, 1006) else NORMAL_CLOSURE
                    self._pending += self._ws.send(CloseConnection(code, event.reason))
                self._done = True
                events.append(Closed(int(event.code), event.reason or ""))
                break
        return events

    def _message(self, message: bytes) -> list[Event]:
        if not message:
            return []
        channel, payload = message[0], message[1:]
        if channel == STDIN:
            return [StdinData(payload)] if payload and self._stdin_open else []
        if channel == RESIZE:
            size = _resize(payload)
            return [size] if size else []
        if channel == CLOSE_SIGNAL and self.subprotocol == V5 and payload == bytes([STDIN]):
            if self._stdin_open:
                self._stdin_open = False
                return [StdinClosed()]
        return []  # unknown channels and output channels are ignored, as Kubernetes does

    def data_to_send(self) -> bytes:
        """Bytes wsproto owes the peer after `receive_data` (pongs, the close reply); then empty."""
        out = bytes(self._pending)
        self._pending.clear()
        return out

    # output

    def ready(self, stdout: bool = True, stderr: bool = True) -> bytes:
        """The empty message Kubernetes sends on the lowest writable channel once the upgrade is done."""
        return self._send(STDOUT if stdout else STDERR if stderr else STATUS, b"")

    def stdout(self, data: bytes) -> bytes:
        return self._send(STDOUT, data) if data else b""

    def stderr(self, data: bytes) -> bytes:
        return self._send(STDERR, data) if data else b""

    def status(self, exit_code: int) -> bytes:
        """The final status (channel 3): Success for 0, else NonZeroExitCode with the code as its cause.

        A negative code (killed by signal N, as Python reports it) becomes 128 + N, as shells and
        container runtimes report it; clients parse the cause as 0-255.
        """
        return self._send(STATUS, status_payload(exit_code))

    def failure(self, message: str) -> bytes:
        """An InternalError status (channel 3): the command could not run; kubectl prints `message`."""
        return self._send(
            STATUS,
            _json(
                {
                    "metadata": {},
                    "status": "Failure",
                    "message": f"Internal error occurred: {message}",
                    "reason": "InternalError",
                    "details": {"causes": [{"message": message}]},
                    "code": 500,
                }
            ),
        )

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> bytes:
        """The close frame (1000 by default); b"" if already closing."""
        if self._ws.state not in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            return b""
        return self._ws.send(CloseConnection(code, reason or None))

    def _send(self, channel: int, data: bytes) -> bytes:
        if not self.open:
            return b""
        return self._ws.send(BytesMessage(bytes([channel]) + data))


def status_payload(exit_code: int) -> bytes:
    """The channel-3 JSON for an exit code (a `metav1.Status` as Go's JSON writes it)."""
    if exit_code < 0:
        exit_code = 128 - exit_code
    if not 0 <= exit_code <= 255:
        raise ValueError(f"exit code {exit_code} out of range 0-255")
    if exit_code == 0:
        return _json({"metadata": {}, "status": "Success"})
    return _json(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {exit_code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
        }
    )


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _resize(payload: bytes) -> Resize | None:
    """`{"Width": W, "Height": H}` (Go's TerminalSize, uint16s); anything else is ignored."""
    try:
        size = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(size, dict):
        return None
    size = {str(key).lower(): value for key, value in size.items()}  # Go's JSON matches keys case-blind
    width, height = size.get("width", 0), size.get("height", 0)
    if not all(type(n) is int and 0 <= n <= 0xFFFF for n in (width, height)):
        return None
    return Resize(width, height)
