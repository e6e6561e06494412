"""ZDS over a Unix SOCK_SEQPACKET socket, with file descriptors as SCM_RIGHTS (trio shell).

The CNI agent listens (`open_zds_listener`, ztunnel's default path is
/var/run/ztunnel/ztunnel.sock) and ztunnel connects (`connect_zds`). SEQPACKET keeps
message boundaries, so the framing is simply one message per datagram (JSON, see
`messages`). The conversation (docs/ambient-facts.md §3.4; `proto/zds.proto`)::

    ztunnel                                   CNI agent
      ── ZdsHello{version: V1} ──────────────▶
      ◀── add{uid, workload_info} + netns fd ─  one per known pod …
      ── ack{error: ""} ─────────────────────▶  … each acked before the next
      ◀── snapshot_sent ───────────────────────
      ── ack ────────────────────────────────▶  ztunnel drops pods the snapshot missed
      ◀── add / del (as pods come and go) ─────  each acked

Received fds are opened with close-on-exec (MSG_CMSG_CLOEXEC) and belong to the caller;
on any error they are closed here, so nothing leaks.
"""

from __future__ import annotations

import array
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import trio

from .messages import (
    Ack,
    Message,
    WorkloadRequest,
    ZdsError,
    ZdsHello,
    check_fds,
    decode_hello,
    decode_request,
    decode_response,
    encode,
)

#: Largest datagram accepted; ZDS messages are a few hundred bytes.
MAX_MESSAGE = 64 * 1024
#: fds a datagram may carry before it is refused (ZDS sends at most one).
MAX_FDS = 4

DEFAULT_PATH = "/var/run/ztunnel/ztunnel.sock"

M = TypeVar("M", ZdsHello, WorkloadRequest, Ack)


class ZdsClosed(ConnectionError):
    """The peer closed the ZDS socket."""


class ZdsSocket:
    """One ZDS connection: a connected SOCK_SEQPACKET socket, either side."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        if sock.type != socket.SOCK_SEQPACKET:
            raise ValueError("ZDS needs a SOCK_SEQPACKET socket")
        self._sock = sock

    async def __aenter__(self) -> ZdsSocket:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    # --- datagrams -------------------------------------------------------------------

    async def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        """Send one message, with `fds` duplicated into the peer (we keep ours)."""
        check_fds(message, len(fds))
        await self.send_raw(encode(message), fds)

    async def send_raw(self, payload: bytes, fds: Sequence[int] = ()) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            sent = await self._sock.sendmsg([payload], ancillary)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ZdsClosed("ZDS peer went away") from exc
        if sent != len(payload):  # cannot happen on SEQPACKET, but never send half a message
            raise ZdsError(f"sent {sent} of {len(payload)} bytes")

    async def receive_raw(self) -> tuple[bytes, list[int]]:
        """One datagram and the fds that came with it; `ZdsClosed` at EOF."""
        try:
            payload, ancillary, flags, _ = await self._sock.recvmsg(
                MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize), socket.MSG_CMSG_CLOEXEC
            )
        except ConnectionResetError as exc:
            raise ZdsClosed("ZDS peer went away") from exc
        fds = _fds_from(ancillary)
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            _close_all(fds)
            raise ZdsError("truncated ZDS datagram (message or file descriptors)")
        if not payload:
            _close_all(fds)
            raise ZdsClosed("ZDS peer closed the connection")
        return payload, fds

    # --- typed receives --------------------------------------------------------------

    async def receive_hello(self) -> ZdsHello:
        payload, fds = await self.receive_raw()
        return _decoded(decode_hello, payload, fds)

    async def receive_request(self) -> tuple[WorkloadRequest, int | None]:
        """The next request, with the netns fd an AddWorkload carries (the caller owns it)."""
        payload, fds = await self.receive_raw()
        request = _decoded(decode_request, payload, fds)
        return request, (fds[0] if fds else None)

    async def receive_response(self) -> Ack:
        payload, fds = await self.receive_raw()
        return _decoded(decode_response, payload, fds)


def _decoded(decode: Callable[[bytes], M], payload: bytes, fds: list[int]) -> M:
    try:
        message = decode(payload)
        check_fds(message, len(fds))
    except ZdsError:
        _close_all(fds)
        raise
    return message


def _fds_from(ancillary: Iterable[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


# --- both ends -----------------------------------------------------------------------


async def connect_zds(path: str = DEFAULT_PATH) -> ZdsSocket:
    """ztunnel's side: connect to the CNI agent."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        await sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return ZdsSocket(sock)


class ZdsListener:
    """The CNI agent's side: a listening SOCK_SEQPACKET socket at `path`."""

    def __init__(self, sock: trio.socket.SocketType, path: str) -> None:
        self._sock = sock
        self.path = path

    async def accept(self) -> ZdsSocket:
        conn, _ = await self._sock.accept()
        return ZdsSocket(conn)

    async def aclose(self) -> None:
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> ZdsListener:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def open_zds_listener(path: str = DEFAULT_PATH, *, backlog: int = 16) -> ZdsListener:
    """Listen at `path`, replacing a stale socket file left by a previous agent."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        await sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    await trio.lowlevel.checkpoint()
    return ZdsListener(sock, path)
