"""Named network namespaces without forking.

`ip netns add NAME` makes a network namespace and keeps it alive by bind-mounting its nsfs file onto
`/run/netns/NAME`. This module does the same with a few syscalls (ctypes on libc, since Python 3.11
has no `os.setns`/`os.unshare`), so a lab can make hundreds of namespaces without exec'ing `ip` or
letting pyroute2 fork a helper per namespace.

Threads: `setns(2)` and `unshare(CLONE_NEWNET)` change the namespace of the *calling thread* only.
labd calls these functions from trio worker threads, which are reused, so every function that
switches switches back in a `finally`, and the switched sections are kept short (a few syscalls or a
few netlink messages). Anything created while switched in (sockets, netlink sockets, child
processes) stays bound to that namespace after the thread switches back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyroute2 import IPRoute

NETNS_RUN_DIR = "/run/netns"
MAX_NAME_LEN = 200

# <sched.h> and <sys/mount.h>
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2

_THREAD_NETNS = "/proc/thread-self/ns/net"
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_LIBC.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_LIBC.unshare.argtypes = [ctypes.c_int]


class NetnsError(OSError):
    """A namespace operation failed; the message names the namespace."""


def path(name: str) -> str:
    """The nsfs bind mount that keeps namespace NAME alive."""
    check_name(name)
    return os.path.join(NETNS_RUN_DIR, name)


def check_name(name: str) -> None:
    """Refuse names that are not a single file name under /run/netns (or too long to be useful)."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ValueError(f"invalid netns name {name!r}")
    if "/" in name or "\0" in name or len(name) > MAX_NAME_LEN:
        raise ValueError(f"invalid netns name {name!r}: no '/', at most {MAX_NAME_LEN} chars")


def exists(name: str) -> bool:
    """True if NAME is a live named namespace (its file is an nsfs mount, not a stale file)."""
    try:
        return os.stat(path(name)).st_dev != os.stat(NETNS_RUN_DIR).st_dev
    except FileNotFoundError:
        return False


def create(name: str) -> None:
    """Create the named namespace NAME, as `ip netns add NAME` does.

    Raises FileExistsError if the name is taken (like `ip netns add`), so two callers never share
    a namespace by accident."""
    target = path(name)
    _ensure_shared_run_dir()
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
    os.close(fd)
    try:
        with _restoring_thread_netns():
            _check(_LIBC.unshare(CLONE_NEWNET), f"unshare(CLONE_NEWNET) for {name}")
            _mount(_THREAD_NETNS, target, MS_BIND, f"bind-mount netns onto {target}")
    except BaseException:
        _remove_file(target)
        raise


def remove(name: str) -> None:
    """Delete the named namespace NAME (detach its mount, unlink its file). A missing name is fine.

    The kernel frees the namespace, and the veths in it, once nothing else holds it (no process
    inside, no open fd)."""
    target = path(name)
    if _LIBC.umount2(target.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (stale file)
            raise NetnsError(err, f"umount {target}: {os.strerror(err)}")
    _remove_file(target)


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with the current thread inside namespace NAME, then switch back.

    Keep the body short and synchronous: the thread is a shared worker thread."""
    try:
        fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(errno.ENOENT, f"network namespace {name} does not exist") from None
    try:
        with _restoring_thread_netns():
            _check(_LIBC.setns(fd, CLONE_NEWNET), f"setns into {name}")
            yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def entered_fd(fd: int) -> Iterator[None]:
    """Like `entered`, for a namespace known by an open fd (e.g. one received over ZDS)."""
    with _restoring_thread_netns():
        _check(_LIBC.setns(fd, CLONE_NEWNET), f"setns into netns fd {fd}")
        yield


@contextlib.contextmanager
def iproute(name: str) -> Iterator[IPRoute]:
    """A pyroute2 IPRoute whose netlink socket lives in namespace NAME, for a short body that runs
    switched in (pyroute2's own `IPRoute(netns=...)` forks a helper per use); closed after it."""
    from pyroute2 import IPRoute  # here: the clients that make no namespaces need no pyroute2

    with entered(name):
        ipr = IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()


def socket_in_fd(
    fd: int, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A socket that lives in the namespace behind FD."""
    with entered_fd(fd):
        return socket.socket(family, type, proto)


def socket_in(name: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace NAME (a socket keeps the netns it was created in)."""
    with entered(name):
        return socket.socket(family, type, proto)


def run(
    name: str | None, argv: Sequence[str], input: str = "", timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ARGV to its end in namespace NAME (None: this thread's own), INPUT on its stdin; its
    stderr is captured, its stdout dropped. (`nft -f -` in a node or pod is what this is for.)

    The child is spawned while this thread is switched into NAME, so it starts there (a child gets
    its creator's namespaces) without `ip netns exec`'s extra mount namespace; the thread switches
    back as soon as the child exists, and INPUT is fed afterwards. Raises OSError, or
    subprocess.TimeoutExpired once the child is killed."""
    with entered(name) if name is not None else contextlib.nullcontext():
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    with proc:
        try:
            _, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return subprocess.CompletedProcess(list(argv), proc.returncode, None, stderr)


def set_sysctl(name: str, key: str, value: str | int) -> None:
    """Write a `net.*` sysctl of namespace NAME, e.g. set_sysctl(ns, "net.ipv4.ip_forward", 1).

    /proc/sys/net resolves to the namespace of the thread that opens it, so the write happens while
    switched in. Only `net.` keys are per-namespace: others would change the whole machine, so they
    are refused."""
    sysctl_path = _sysctl_path(key)
    with entered(name), open(sysctl_path, "w") as f:
        f.write(f"{value}\n")


def get_sysctl(name: str, key: str) -> str:
    """Read a `net.*` sysctl of namespace NAME (stripped)."""
    sysctl_path = _sysctl_path(key)
    with entered(name), open(sysctl_path) as f:
        return f.read().strip()


def _sysctl_path(key: str) -> str:
    """`net.ipv4.ip_forward` or `net/ipv4/ip_forward` -> /proc/sys/net/ipv4/ip_forward.

    With slashes, a component may contain dots (an interface such as `eth0.100`)."""
    parts = key.split("/") if "/" in key else key.split(".")
    if parts[0] != "net" or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"sysctl {key!r}: only per-namespace net.* keys can be set")
    return os.path.join("/proc/sys", *parts)


@contextlib.contextmanager
def _restoring_thread_netns() -> Iterator[None]:
    """Save the current thread's netns and always return to it, whatever the body did."""
    saved = os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield
    finally:
        try:
            _check(_LIBC.setns(saved, CLONE_NEWNET), "setns back to the thread's namespace")
        finally:
            os.close(saved)


def _ensure_shared_run_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so netns mounts made here show up
    in every mount namespace (and `ip netns exec`'s private ones see them)."""
    os.makedirs(NETNS_RUN_DIR, mode=0o755, exist_ok=True)
    run_dir = NETNS_RUN_DIR.encode()
    if _LIBC.mount(b"none", run_dir, None, MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:  # EINVAL: not a mount point yet
        _check(-1, f"make {NETNS_RUN_DIR} shared")
    _mount(NETNS_RUN_DIR, NETNS_RUN_DIR, MS_BIND | MS_REC, f"bind {NETNS_RUN_DIR} onto itself")
    _check(_LIBC.mount(b"none", run_dir, None, MS_SHARED | MS_REC, None), f"make {NETNS_RUN_DIR} shared")


def _mount(source: str, target: str, flags: int, what: str) -> None:
    _check(_LIBC.mount(source.encode(), target.encode(), b"none", flags, None), what)


def _remove_file(target: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, f"{what}: {os.strerror(err)}")
