"""h2, tuned for tunnels: the same protocol engine, without its per-byte copies and per-frame reprs.

h2 is written for web traffic, where frames are small and copies are cheap. A tunnel moves
megabytes through 1 MiB DATA frames, and there four things cost more than all of HTTP/2's logic:

- h2's frame buffer copies every received byte four times (append to a bytearray, slice the
  body, `tobytes()` it, and shift the rest of the buffer down). `TunnelFrameBuffer` keeps what
  arrived as a queue of views and hands a DATA frame its payload as a view of the received
  bytes: no copy at all when a frame lies within one read, one join when it spans reads.
- Sending, h2 joins each frame's header to its body, appends that to a bytearray, and copies
  the bytearray out again. `HboneH2Connection` queues a DATA frame's header and body as they
  are (a body in a mutable buffer is copied first: its owner may reuse it) and joins everything
  once in `data_to_send`.
- h2 builds `repr(frame)` for every received frame even with logging off, and a DATA frame's
  repr hex-dumps its whole payload: `QuietDataFrame` names its size instead.
- HPACK's Huffman coding is pure Python: `PlainEncoder` writes header values as plain
  literals (a CONNECT's values are mostly new every time; any decoder reads both forms,
  RFC 7541 §5.2).

Everything else (stream states, flow control, SETTINGS, errors) is h2's own. The overrides use
h2 internals (`_frame_dispatch_table`, `_prepare_for_sending`, `_data_to_send`); if an h2
release drops them, `HboneH2Connection` falls back to plain h2: correct, only slower.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.frame_buffer
import hpack
from h2.exceptions import FrameDataMissingError, ProtocolError
from hyperframe.exceptions import InvalidDataError, InvalidFrameError, InvalidPaddingError
from hyperframe.frame import DataFrame, Frame

if TYPE_CHECKING:
    from typing_extensions import Buffer

_HEADER = struct.Struct("!HBBBL")  # a frame header: length (24 bits as 16+8), type, flags, stream id
_END_STREAM = 0x1
_EMPTY = memoryview(b"")


class QuietDataFrame(DataFrame):
    """A DATA frame whose repr names its size, and whose payload is a view of what was received."""

    def __repr__(self) -> str:
        return f"DataFrame(stream_id={self.stream_id}, flags={self.flags!r}, len={len(self.data)})"

    def parse_body(self, data: memoryview) -> None:
        # hyperframe's DataFrame.parse_body, less its `.tobytes()` copy of the payload.
        start = self.parse_padding_data(data)
        # hyperframe types `data` as bytes; a view serves h2 the same (it only slices and measures it).
        self.data = data[start : len(data) - self.pad_length]  # type: ignore[assignment]
        self.body_len = len(data)
        if self.pad_length and self.pad_length >= self.body_len:
            raise InvalidPaddingError("Padding is too long.")


class TunnelFrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, holding received data as views instead of copying it into a bytearray.

    A caller must not change a buffer after passing it to `add_data` (bytes and the bytearrays
    nobody keeps, as `TlsStream` hands out, are safe): DATA payloads are views of it. Whoever
    keeps a payload for long should copy a small one (`HboneStream` does), or it keeps the whole
    read alive.
    """

    def __init__(self, server: bool = False) -> None:
        super().__init__(server=server)
        self._chunks: deque[memoryview] = deque()  # unparsed input, oldest first
        self._size = 0

    def add_data(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        if self._preamble_len:  # a server first checks the client's connection preface
            n = min(self._preamble_len, len(view))
            if self._preamble[:n] != view[:n]:
                raise ProtocolError("Invalid HTTP/2 preamble.")
            view = view[n:]
            self._preamble_len -= n
            self._preamble = self._preamble[n:]
        if len(view):
            self._chunks.append(view)
            self._size += len(view)

    def _take(self, n: int) -> memoryview:
        """The next `n` buffered bytes as one view: a slice when they lie in one chunk, else one join."""
        if not n:
            return _EMPTY
        head = self._chunks[0]
        self._size -= n
        if len(head) >= n:
            if len(head) == n:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[n:]
            return head[:n]
        parts = []
        while n:
            head = self._chunks[0]
            if len(head) <= n:
                parts.append(head)
                self._chunks.popleft()
                n -= len(head)
            else:
                parts.append(head[:n])
                self._chunks[0] = head[n:]
                n = 0
        return memoryview(b"".join(parts))

    def _peek_header(self) -> memoryview:
        head = self._chunks[0]
        if len(head) >= 9:
            return head[:9]
        header = bytearray()
        for chunk in self._chunks:  # a header split over reads: join just its 9 bytes
            header += chunk[: 9 - len(header)]
            if len(header) == 9:
                break
        return memoryview(bytes(header))

    def __next__(self) -> Frame:
        while True:
            if self._size < 9:
                raise StopIteration
            try:
                frame, length = Frame.parse_frame_header(self._peek_header())
            except (InvalidDataError, InvalidFrameError) as err:  # pragma: no cover - as h2
                raise ProtocolError(f"Received frame with invalid header: {err!s}") from err
            if self._size < 9 + length:
                raise StopIteration
            self._validate_frame_length(length)
            self._take(9)
            if frame.__class__ is DataFrame:
                frame.__class__ = QuietDataFrame
            try:
                frame.parse_body(self._take(length))
            except InvalidDataError as err:
                raise ProtocolError("Received frame with non-compliant data") from err
            except InvalidFrameError as err:
                raise FrameDataMissingError("Frame data missing or invalid") from err
            complete = self._update_header_buffer(frame)
            if complete is not None:
                return complete


class PlainEncoder(hpack.Encoder):
    """HPACK with indexing as usual, but string literals never Huffman-coded."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:  # headers: whatever hpack takes
        return super().encode(headers, huffman=False)


class HboneH2Connection(h2.connection.H2Connection):
    """An `H2Connection` with the tunnel-sized receive and send paths described above."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self.encoder = PlainEncoder()
        dispatch = getattr(self, "_frame_dispatch_table", None)
        self._tuned = False
        if (
            isinstance(dispatch, dict)
            and DataFrame in dispatch
            and isinstance(getattr(self, "_data_to_send", None), bytearray)
        ):
            self._tuned = True
            dispatch[QuietDataFrame] = dispatch[DataFrame]
            self.incoming_buffer = TunnelFrameBuffer(server=not config.client_side)
        #: Serialized frames (DATA as header + body), in send order.
        self._outgoing: list[bytes | memoryview] = []

    def _prepare_for_sending(self, frames: list[Frame]) -> None:
        if not self._tuned:
            super()._prepare_for_sending(frames)
            return
        out = self._outgoing
        if self._data_to_send:  # written by h2 directly (the preface): it goes first
            out.append(bytes(self._data_to_send))
            self._data_to_send = bytearray()
        limit = self.max_outbound_frame_size
        for frame in frames:
            if frame.__class__ is DataFrame and "PADDED" not in frame.flags:
                body: bytes | bytearray | memoryview = frame.data
                if not (body.__class__ is bytes or (isinstance(body, memoryview) and body.obj.__class__ is bytes)):
                    body = bytes(body)  # the caller may reuse a mutable buffer once send_all returned
                frame.body_len = len(body)
                flags = _END_STREAM if "END_STREAM" in frame.flags else 0
                out.append(_HEADER.pack(len(body) >> 8, len(body) & 0xFF, 0, flags, frame.stream_id))
                if body:
                    out.append(body)
            else:
                out.append(frame.serialize())
            assert frame.body_len <= limit

    def data_to_send(self, amount: int | None = None) -> bytes:
        if self._outgoing:
            if self._data_to_send:  # cannot happen after the preface; kept in order all the same
                self._outgoing.insert(0, bytes(self._data_to_send))
                self._data_to_send = bytearray()
            data = b"".join(self._outgoing) if len(self._outgoing) > 1 else bytes(self._outgoing[0])
            self._outgoing.clear()
            if amount is not None and amount < len(data):
                self._data_to_send = bytearray(data[amount:])
                return data[:amount]
            return data
        return super().data_to_send(amount)

    def clear_outbound_data_buffer(self) -> None:
        self._outgoing.clear()
        super().clear_outbound_data_buffer()
