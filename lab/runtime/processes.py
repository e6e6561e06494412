"""Container processes: start one inside a pod's namespaces, stop it, find its host pid.

A container is `ip netns exec <netns> <argv>`: iproute2 enters the network namespace and a fresh
mount namespace in which the pod's `/etc/netns/<netns>/{resolv.conf,hosts}` are bound over /etc,
then execs the command (same pid). Each container leads its own process group so a stop reaches
its children (gunicorn workers, shells) too.
"""

from __future__ import annotations

import os
import signal
import subprocess

import trio

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def container_command(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


async def start(netns: str, argv: list[str], env: dict[str, str], log_path: str, cwd: str = "/") -> trio.Process:
    with open(log_path, "ab", buffering=0) as log:
        return await trio.lowlevel.open_process(
            container_command(netns, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def signal_group(proc: trio.Process, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def stop(proc: trio.Process, grace: float) -> int:
    """SIGTERM to the container's process group, SIGKILL after `grace` seconds."""
    if proc.returncode is None:
        signal_group(proc, signal.SIGTERM)
        with trio.move_on_after(grace):
            await proc.wait()
        if proc.returncode is None:
            signal_group(proc, signal.SIGKILL)
            await proc.wait()
    # Children that left the group or outlived the leader.
    signal_group(proc, signal.SIGKILL)
    assert proc.returncode is not None  # waited for above
    return proc.returncode


def own_host_pid() -> int:
    """Our pid as the host sees it (/proc is the host's procfs, so /proc/self resolves there)."""
    return int(os.readlink("/proc/self"))


def host_pid_of_child(ns_pid: int, host_parent: int) -> int | None:
    """The host pid of our child whose pid in our PID namespace is ns_pid."""
    try:
        tasks = os.listdir(f"/proc/{host_parent}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{host_parent}/task/{tid}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            if int(line.split()[-1]) == ns_pid:
                                return int(child)
                            break
            except OSError:
                continue
    return None
