"""Sockets inside a pod's network namespace (ztunnel `src/socket.rs`, `src/inpod/netns.rs`).

ztunnel serves every enrolled pod from the node's netns: each socket it needs in a pod is created
while the thread is switched into the pod's netns (`lab.client.netns.socket_in_fd`) and keeps that
netns for life, so trio can use it from the main thread like any other socket. Every such socket is
marked 0x539 (SO_MARK): the pod's redirection rules let marked packets through untouched, which is
how ztunnel's own connections escape its own capture (docs/ambient-facts.md §3.3).

`parse_sockaddr_in` (the SO_ORIGINAL_DST answer) is pure; the rest are thin socket helpers.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable

import trio

from lab.client.netns import socket_in_fd

SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>
IP_TRANSPARENT = 19
IP_FREEBIND = 15
#: TCP keepalive on proxied sockets (ztunnel's KEEPALIVE_*: 180 s idle, 180 s apart, 9 probes).
KEEPALIVE = (180, 180, 9)
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)

Address = tuple[str, int]


def parse_sockaddr_in(raw: bytes) -> Address:
    """A `struct sockaddr_in` (as SO_ORIGINAL_DST returns it) → (ip, port).

    Layout: sin_family (host order, 2 bytes), sin_port (network order), sin_addr (4 bytes), then
    zero padding up to 16 bytes.
    """
    if len(raw) < 8:
        raise ValueError(f"sockaddr_in too short: {len(raw)} bytes")
    family = struct.unpack_from("=H", raw)[0]
    if family != socket.AF_INET:
        raise ValueError(f"not an AF_INET address (family {family})")
    port = struct.unpack_from("!H", raw, 2)[0]
    return str(ipaddress.IPv4Address(raw[4:8])), port


def original_dst(sock: trio.socket.SocketType) -> Address:
    """Where a redirected connection was going (ztunnel `orig_dst_addr_or_default`): the
    SO_ORIGINAL_DST conntrack recorded before the REDIRECT, else the local address."""
    try:
        return parse_sockaddr_in(sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
    except (OSError, ValueError):
        host, port = sock.getsockname()[:2]
        return host, port


def format_addr(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def set_keepalive(sock: socket.socket | trio.socket.SocketType) -> None:
    idle, interval, count = KEEPALIVE
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)


def proxy_stream(stream: trio.SocketStream) -> trio.SocketStream:
    """Tune a socket ztunnel proxies through (app side or HBONE side) for throughput.

    trio's `SocketStream` turns Nagle off (TCP_NODELAY, which ztunnel wants too) and caps the
    kernel's unsent queue at 16 KiB (TCP_NOTSENT_LOWAT), so a 1 MiB write goes out 16 KiB per
    wakeup. A proxy gains nothing from that cap: give the socket back the system default.
    """
    try:
        stream.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 0)  # 0: the sysctl's value
    except OSError:
        pass
    return stream


def abort(stream: trio.SocketStream) -> None:
    """Close with a reset (SO_LINGER 0), as a refused connection looks to the app (curl exit 56)."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    stream.socket.close()


async def close_now(stream: trio.abc.AsyncResource) -> None:
    """`trio.aclose_forcefully(stream)` without its cancelled scope and checkpoint when the
    stream can be closed synchronously: a socket, or one with a `close()` (an HBONE stream).
    Closing those never blocks; anything else goes through `aclose_forcefully`."""
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
        return
    close = getattr(stream, "close", None)
    if close is not None:
        close()
    else:
        await trio.aclose_forcefully(stream)


class InpodNetns:
    """A pod's network namespace, held by the fd the CNI agent sent, and the sockets made in it.

    Two fds name the same netns when (st_dev, st_ino) match; ztunnel compares netns that way to
    tell a re-sent pod from a new one with the same uid.
    """

    def __init__(self, fd: int, *, mark: int) -> None:
        self.fd = fd
        self.mark = mark
        st = os.fstat(fd)
        self.id = (st.st_dev, st.st_ino)

    def dup(self) -> InpodNetns:
        """Another handle on the same netns (its own fd, closed independently)."""
        return InpodNetns(os.dup(self.fd), mark=self.mark)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def socket(self) -> socket.socket:
        """A marked TCP socket in the pod (blocking stdlib socket, not yet bound)."""
        sock = socket_in_fd(self.fd, socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
        except BaseException:
            sock.close()
            raise
        return sock

    def listener(self, port: int, backlog: int = 128) -> trio.SocketListener:
        """0.0.0.0:`port` in the pod, SO_REUSEPORT (an old and a new ztunnel may both listen
        during an upgrade, docs/ambient-facts.md §6.2) and, best effort, IP_TRANSPARENT as ztunnel sets it."""
        sock = self.socket()
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            except OSError:
                pass
            sock.bind(("0.0.0.0", port))
            sock.listen(backlog)
            return trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        except BaseException:
            sock.close()
            raise

    async def connect(self, dst: Address, *, source_ip: str | None = None, timeout: float = 10.0) -> trio.SocketStream:
        """A TCP connection from inside the pod (ztunnel `freebind_connect`).

        With `source_ip` the connection carries that source address although it is not the pod's
        (IP_TRANSPARENT + IP_FREEBIND): inbound traffic reaches the app from the original client.
        The pod's connmark rules route the app's replies back to this socket. A source equal to
        the destination IP is dialled without spoofing, as ztunnel does.
        """
        sock = self.socket()
        try:
            if source_ip is not None and source_ip != dst[0]:
                sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                sock.bind((source_ip, 0))
            set_keepalive(sock)
            tsock = trio.socket.from_stdlib_socket(sock)
        except BaseException:
            sock.close()
            raise
        try:
            with trio.fail_after(timeout):
                await tsock.connect(dst)
        except BaseException:
            tsock.close()
            raise
        return proxy_stream(trio.SocketStream(tsock))


def guarded(
    handle: Callable[[trio.SocketStream], Awaitable[None]], what: str, logger: logging.Logger
) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A listener's per-connection handler: tunes the accepted socket for proxying, and turns a bug
    in HANDLE into a reset of that one connection (logged), never into the listener's death."""

    async def serve(stream: trio.SocketStream) -> None:
        try:
            await handle(proxy_stream(stream))
        except Exception:
            logger.exception("%s connection failed unexpectedly", what)
            abort(stream)

    return serve


async def serve_guarded(
    listener: trio.SocketListener,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    what: str,
    logger: logging.Logger,
    *,
    task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve LISTENER until cancelled: each connection in its own task, through `guarded`."""
    async with trio.open_nursery() as nursery:
        task_status.started()
        await trio.serve_listeners(guarded(handle, what, logger), [listener], handler_nursery=nursery)
