"""Bidirectional copy between two trio streams, as ztunnel's `copy_bidirectional`.

Each direction copies until its source reports EOF, then half-closes its destination
(`send_eof`: a TCP FIN, or END_STREAM on an HBONE stream) and stops; `splice` returns
when both directions ended. If either direction fails, the other is cancelled and the
first error is raised as itself, not wrapped in an ExceptionGroup. The byte counts are
kept in a `SpliceStats` the caller can pass in, so an access log has them even when the
splice failed: `bytes_sent` went from `downstream` to `upstream`, `bytes_recv` back.

Sockets are read by `receive_from_socket`, which waits for readability before reading (trio's
own receive tries first, which costs a failed read or a scheduler trip per call).
A stream that can write into a socket itself (`HboneStream.deliver_to`) does so for the
direction that ends at a socket: its data then reaches the app without a task switch.
Otherwise a chunk for a socket is first written synchronously (`send_to_socket`): trio's
`SocketStream.send_all` passes through the scheduler even when the socket took everything,
and for a small request that trip costs more than the write. Each direction still yields
once per chunk, in its receive, so a busy splice does not starve other tasks.

These socket helpers, and `checked_max_bytes`, also serve the HBONE and TLS streams' own I/O.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, SupportsIndex, TypeVar

import trio
from trio.lowlevel import checkpoint_if_cancelled, wait_readable

#: Bytes asked per read: big enough that per-call costs vanish at GB/s.
CHUNK = 256 * 1024

Bytes = bytes | bytearray | memoryview
_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")


class WindowedStream(Protocol):
    """A stream that can take data synchronously while its flow-control windows allow
    (`HboneStream`), which `send_to_stream` uses before falling back to `send_all`."""

    def send_within_window(self, data: Bytes) -> int: ...

    async def send_all(self, data: Bytes) -> None: ...


@dataclass
class SpliceStats:
    bytes_sent: int = 0  # downstream → upstream
    bytes_recv: int = 0  # upstream → downstream


async def splice(
    downstream: trio.abc.HalfCloseableStream,
    upstream: trio.abc.HalfCloseableStream,
    stats: SpliceStats | None = None,
    *,
    chunk: int = CHUNK,
) -> SpliceStats:
    """Copy both ways until both sides sent EOF; neither stream is closed here."""
    stats = stats if stats is not None else SpliceStats()
    failure: list[BaseException] = []

    def count_sent(n: int) -> None:
        stats.bytes_sent += n

    def count_recv(n: int) -> None:
        stats.bytes_recv += n

    async def copy(src: trio.abc.HalfCloseableStream, dst: trio.abc.HalfCloseableStream, sent: bool) -> None:
        to_socket = isinstance(dst, trio.SocketStream)
        send_all: Callable[[Bytes], Awaitable[None]]
        if isinstance(dst, trio.SocketStream):
            send_all = functools.partial(send_to_socket, dst)
        elif hasattr(dst, "send_within_window"):
            send_all = functools.partial(send_to_stream, dst)
        else:
            send_all = dst.send_all
        receive: Callable[[int], Awaitable[bytes | bytearray]]
        if isinstance(src, trio.SocketStream):
            receive = functools.partial(receive_from_socket, src)
        else:
            receive = src.receive_some
        deliver_to = getattr(src, "deliver_to", None) if to_socket else None
        try:
            if deliver_to is not None:  # an HBONE stream writes into the socket itself
                await deliver_to(dst, count_sent if sent else count_recv)
                return
            while data := await receive(chunk):
                await send_all(data)
                if sent:
                    stats.bytes_sent += len(data)
                else:
                    stats.bytes_recv += len(data)
            await dst.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            failure.append(exc)
            nursery.cancel_scope.cancel()

    # The response direction runs in the caller's task (the nursery's body): one task spawn
    # fewer per connection. A failure on either side cancels the nursery, body included.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(copy, downstream, upstream, True)
        await copy(upstream, downstream, False)
    if failure:
        raise failure[0]
    return stats


def checked_max_bytes(max_bytes: SupportsIndex) -> int:
    """`receive_some`'s `max_bytes` as trio's streams check it: an integer, at least 1."""
    size = operator.index(max_bytes)
    if size < 1:
        raise ValueError("max_bytes must be >= 1")
    return size


async def receive_from_socket(stream: trio.SocketStream, max_bytes: int) -> bytes:
    """`stream.receive_some(max_bytes)`, waiting for readability first.

    trio's socket receive tries the read first: data that is already there still costs a full
    trip through the scheduler (its cancel-shielded checkpoint), and data that is not costs a
    failed read, an exception and the wait. A proxy reads a socket right after draining it, so
    the data is usually not there yet: waiting first saves the failed read, and is never worse
    (the wait is the checkpoint). Errors are trio's stream errors, as `receive_some` raises them.
    Only for a stream nobody else receives on.
    """
    return await _wait_and_read(stream, os.read, max_bytes)


async def receive_into_from_socket(stream: trio.SocketStream, buffer: memoryview) -> int:
    """`receive_from_socket` into a caller's buffer: how many bytes were read (0 at EOF).

    For a reader that copies what it read anyway (TLS into its engine): no buffer is allocated
    per read, which for large reads of small messages costs more than the read itself."""
    return await _wait_and_read(stream, _readv_one, buffer)


def _readv_one(fd: int, buffer: memoryview) -> int:
    return os.readv(fd, (buffer,))


async def _wait_and_read(stream: trio.SocketStream, read: Callable[[int, _Arg], _Result], arg: _Arg) -> _Result:
    sock = stream.socket
    while True:
        if sock.fileno() == -1:
            await checkpoint_if_cancelled()
            raise trio.ClosedResourceError("this socket was already closed")
        try:
            await wait_readable(sock)
            return read(sock.fileno(), arg)
        except BlockingIOError:
            continue  # woken without data (another reader of the same socket is a bug)
        except trio.ClosedResourceError:
            raise trio.ClosedResourceError("this socket was already closed") from None
        except OSError as exc:
            if sock.fileno() == -1:
                raise trio.ClosedResourceError("this socket was already closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


async def send_to_stream(stream: WindowedStream, data: Bytes) -> None:
    """`stream.send_all(data)` for an HBONE stream, handing over synchronously what its windows
    allow (`send_within_window`): no extra trip through the scheduler when they have room."""
    taken = stream.send_within_window(data)
    if taken < len(data):
        await stream.send_all(memoryview(data)[taken:])


async def send_to_socket(stream: trio.SocketStream, data: bytes | bytearray | memoryview) -> None:
    """`stream.send_all(data)`, trying a synchronous write first: no yield when the socket
    takes it all (cancellation is still checked). Only for a stream nobody else sends on."""
    await checkpoint_if_cancelled()
    sock = stream.socket
    if data and not sock.did_shutdown_SHUT_WR:
        try:
            sent = os.write(sock.fileno(), data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # let send_all raise it the way trio reports stream errors
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    await stream.send_all(data)
