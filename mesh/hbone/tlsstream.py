"""TLS over a trio stream, read in bulk: the transport under HBONE.

trio's `SSLStream` returns one TLS record (at most 16 KiB) per `receive_some`, so an
HBONE reader pays trio's and h2's per-call costs every 16 KiB, which caps one tunnel near
300 MB/s. `TlsStream` reads up to `read_size` bytes from the socket and decrypts every
complete record in them in one call, so a 1 MiB read yields up to 1 MiB of plaintext.

It speaks ordinary TLS (any peer works, trio's `SSLStream` included) through
`ssl.SSLObject` and two memory BIOs. The contexts come from the caller (ztunnel's are TLS
1.3 only, ALPN "h2", client certificates required; docs/ambient-facts.md §1.2). Like
`SSLStream` it handshakes on first use (or `do_handshake()`), allows one `receive_some`
and one `send_all` at a time concurrently, is not half-closeable (TLS has no half close),
and sends close_notify on `aclose`. A peer's close_notify reads as EOF; a TCP EOF
without it, or any TLS error, raises `trio.BrokenResourceError`.

Over a `trio.SocketStream` it also offers `send_nowait`: encrypt and write to the
(non-blocking) socket synchronously, for a sender that wants to skip a task switch when
the socket has room (the HBONE connection's small frames). What the socket does not take
stays queued and goes out first with the next `send_all`.
"""

from __future__ import annotations

import mmap
import os
import ssl
from typing import Any

import trio
from trio.lowlevel import checkpoint

from .splice import checked_max_bytes, receive_into_from_socket

#: Bytes read from the transport at a time; every whole record in them is decrypted at once.
READ_SIZE = 1024 * 1024
#: How long `aclose` waits to get its close_notify out.
CLOSE_GRACE = 1.0


class TlsStream(trio.abc.Stream):
    """A TLS connection over `transport`, decrypting whole socket reads at a time."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        read_size: int = READ_SIZE,
    ) -> None:
        self.transport_stream = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._read_size = read_size
        self._read_buffer: memoryview | None = None  # for socket reads, made on first use
        # send_nowait writes to the socket's fd itself, and _refill reads into a buffer: only a
        # plain socket transport allows that.
        self._socket_stream = transport if isinstance(transport, trio.SocketStream) else None
        self._socket = self._socket_stream.socket if self._socket_stream is not None else None
        self._send_lock = trio.Lock()  # held while sending on the transport
        self._unsent: list[bytes | memoryview] = []  # records taken from the outgoing BIO, in order
        self._handshake_lock = trio.Lock()
        self._handshook = False
        self._receiving = False
        self._sending = False
        self._eof = False
        self._closed = False
        self._broken: BaseException | None = None

    # --- what the handshake established ----------------------------------------------

    def selected_alpn_protocol(self) -> str | None:
        return self._ssl.selected_alpn_protocol()

    def getpeercert(self, binary_form: bool = False) -> dict[str, Any] | bytes | None:
        return self._ssl.getpeercert(binary_form)

    def version(self) -> str | None:
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._ssl.cipher()

    # --- handshake ---------------------------------------------------------------------

    async def do_handshake(self) -> None:
        """Run the handshake unless it already ran; errors raise `trio.BrokenResourceError`."""
        self._check_open()
        async with self._handshake_lock:
            if self._handshook:
                await checkpoint()
                return
            while True:
                try:
                    self._ssl.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                except ssl.SSLError as exc:
                    self._take_outgoing()
                    await self._send_unsent()  # the alert tells the peer why
                    raise self._break(exc) from exc
                self._take_outgoing()
                await self._send_unsent()
                if done:
                    break
                await self._refill()
            self._handshook = True

    # --- trio.abc.Stream ---------------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if max_bytes is not None:
            max_bytes = checked_max_bytes(max_bytes)
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            self._check_open()
            if not self._handshook:
                await self.do_handshake()
            limit = max_bytes or self._read_size
            waited = False  # a refill is a checkpoint: no need for another one
            while True:
                if self._eof:
                    await checkpoint()
                    return b""
                data = self._decrypt(limit)
                if self._unsent and not self._send_lock.locked():
                    # Reading made TLS records of its own (a KeyUpdate answer, an alert) and
                    # no send_all is under way to carry them: send them here. While one is,
                    # it sends them after its data; the reader never waits behind bulk data.
                    await self._send_unsent()
                    waited = True
                if data:
                    if not waited:
                        await checkpoint()
                    return data
                if not self._eof:
                    await self._refill()
                    waited = True
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check_open()
            if not self._handshook:
                await self.do_handshake()
            if not data:
                # Nothing new, but records send_nowait could not write go out now.
                if self._unsent:
                    await self._send_unsent()
                else:
                    await checkpoint()
                return
            try:
                self._ssl.write(data)
            except ssl.SSLError as exc:
                raise self._break(exc) from exc
            self._take_outgoing()
            await self._send_unsent()
        finally:
            self._sending = False

    def send_nowait(self, data: bytes | bytearray | memoryview) -> bool:
        """Encrypt `data` and write what the socket takes now, without waiting or yielding.

        True: all of it went out. False: the socket took only part; the rest is kept and
        goes out first with the next `send_all` (`send_all(b"")` sends just that). Raises
        `trio.WouldBlock`, without taking `data`, when this cannot be done now: before the
        handshake, while a `send_all` (or a reader's flush) is sending, after a failure or
        `aclose`, or over a transport that is not a socket. Like `send_all`, only one task
        may send at a time; this one never switches tasks, so it cannot overlap another.
        """
        if (
            self._socket is None
            or self._sending
            or self._send_lock.locked()
            or not self._handshook
            or self._closed
            or self._broken is not None
        ):
            raise trio.WouldBlock
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            self._break(exc)
            raise trio.WouldBlock from exc  # send_all reports the failure
        self._take_outgoing()
        pending = self._unsent[0] if len(self._unsent) == 1 else b"".join(self._unsent)
        try:
            sent = os.write(self._socket.fileno(), pending)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # a reset or a closed socket: send_all meets it again and reports it
        if sent == len(pending):
            self._unsent.clear()
            return True
        self._unsent[:] = [memoryview(pending)[sent:]]
        return False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check_open()
            async with self._send_lock:
                await self.transport_stream.wait_send_all_might_not_block()
        finally:
            self._sending = False

    async def aclose(self) -> None:
        """Send close_notify (briefly, if nothing else is sending), then close the transport."""
        if self._closed:
            await checkpoint()
            return
        self._closed = True
        try:
            if self._handshook and self._broken is None:
                try:
                    self._ssl.unwrap()
                except (ssl.SSLWantReadError, ssl.SSLError):
                    pass  # we do not wait for the peer's close_notify
                self._take_outgoing()
                if not self._send_lock.locked():
                    with trio.move_on_after(CLOSE_GRACE):
                        await self._send_unsent()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(self.transport_stream)

    # --- helpers -----------------------------------------------------------------------

    def _decrypt(self, limit: int) -> bytes | bytearray:
        """Every plaintext byte the buffered records hold, up to `limit`; b"" if none yet.

        The records are decrypted into one buffer sized by what is buffered (plaintext is never
        longer than its records), so a 1 MiB read costs no join; it stops once nothing is left
        rather than on the engine's WantRead exception. The buffer is handed out and never
        touched again."""
        buffered = self._incoming.pending + self._ssl.pending()
        if not buffered:
            return b""
        room = min(limit, buffered)
        buf = bytearray(room)
        view = memoryview(buf)
        size = 0
        while size < room:
            try:
                # typeshed says read() returns bytes; given a buffer, it returns the count.
                n: int = self._ssl.read(room - size, view[size:])  # type: ignore[assignment]
            except ssl.SSLWantReadError:  # a record is still incomplete
                break
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                self._eof = True
                break
            except ssl.SSLError as exc:
                raise self._break(exc) from exc
            if not n:
                self._eof = True
                break
            size += n
            if not self._incoming.pending and not self._ssl.pending():
                break
        view.release()
        self._take_outgoing()
        if size < room:
            del buf[size:]
        return buf if size else b""

    async def _refill(self) -> None:
        data: bytes | bytearray | memoryview
        try:
            if self._socket_stream is not None:
                # Read into one buffer kept for the connection: the engine's BIO copies it anyway.
                # Anonymous memory: a page costs RAM only once a read reached it, so a connection
                # of small messages keeps a few KiB resident; one that carried bulk keeps up to
                # `read_size` until it closes.
                if self._read_buffer is None:
                    self._read_buffer = memoryview(mmap.mmap(-1, self._read_size))
                n = await receive_into_from_socket(self._socket_stream, self._read_buffer)
                data = self._read_buffer[:n]
            else:
                data = await self.transport_stream.receive_some(self._read_size)
        except trio.BrokenResourceError as exc:
            raise self._break(exc) from exc
        if not data:
            self._incoming.write_eof()
            raise self._break(trio.BrokenResourceError("TCP connection closed without TLS close_notify"))
        self._incoming.write(data)

    def _take_outgoing(self) -> None:
        """Move what the TLS engine wrote out of its BIO at once, so send order is take order."""
        if self._outgoing.pending:
            self._unsent.append(self._outgoing.read())

    async def _send_unsent(self) -> None:
        async with self._send_lock:
            # Records queued while we sent (by the reader) go out after ours.
            while self._unsent:
                data = self._unsent[0] if len(self._unsent) == 1 else b"".join(self._unsent)
                self._unsent.clear()
                try:
                    await self.transport_stream.send_all(data)
                except trio.BrokenResourceError as exc:
                    raise self._break(exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("TLS stream was closed")
        if self._broken is not None:
            raise trio.BrokenResourceError("TLS stream is broken") from self._broken

    def _break(self, exc: BaseException) -> trio.BrokenResourceError:
        if self._broken is None:
            self._broken = exc
        if isinstance(exc, trio.BrokenResourceError):
            return exc
        return trio.BrokenResourceError(f"TLS failed: {exc}")
