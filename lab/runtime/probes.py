"""Readiness probes: when a running container counts as Ready (and its pod joins Endpoints).

Apart from the containers' lifecycle because a probe only watches: it never starts or stops a
process, it sets `ready` and publishes. TCP and HTTP probes dial the pod's IP from a socket made
in the pod's netns (the node's kubelet would dial from the node); exec probes run as `lab exec` does.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import trio

from lab.client import netns
from lab.runtime.podspec import exec_argv, run_as, seconds

if TYPE_CHECKING:
    from lab.runtime.containers import ContainerState
    from lab.runtime.podworker import PodWorker


async def probe_readiness(w: PodWorker, spec: dict, st: ContainerState) -> None:
    """Readiness: the probe if one is given, else every declared TCP port accepts connections."""
    probe = spec.get("readinessProbe") or {}
    targets: list[tuple[str, int | None, str | None]] = []  # (kind, port or None if unknown, http path)
    if "tcpSocket" in probe:
        targets.append(("tcp", _port(spec, probe["tcpSocket"].get("port")), None))
    elif "httpGet" in probe:
        targets.append(("http", _port(spec, probe["httpGet"].get("port")), probe["httpGet"].get("path", "/")))
    elif "exec" in probe:
        targets.append(("exec", 0, None))
    else:
        targets = [
            ("tcp", p["containerPort"], None) for p in spec.get("ports", []) or [] if p.get("protocol", "TCP") == "TCP"
        ]
    await trio.sleep(seconds(probe.get("initialDelaySeconds"), 0.0))
    period = seconds(probe.get("periodSeconds"), 2.0) or 2.0
    failure_threshold = int(seconds(probe.get("failureThreshold"), 3)) or 1
    while st.running_since is None:
        await trio.sleep(0.02)
    failures = 0
    while True:
        ok = True
        for kind, port, path in targets:
            ok = ok and port is not None and await _check(w, spec, kind, port, path, probe)
        failures = 0 if ok else failures + 1
        # Not yet ready: probe every 50 ms so pods become Ready fast (a lab's loops are short).
        # Ready: drop out only after failureThreshold failures in a row, one period apart.
        if ok and not st.ready or st.ready and failures >= failure_threshold:
            st.ready = ok
            w.publish()
        await trio.sleep(period if st.ready else 0.05)


def _port(spec: dict, port) -> int | None:
    """A probe's port: a number or the name of a container port (None if there is no such)."""
    if isinstance(port, int):
        return port
    for p in spec.get("ports", []) or []:
        if p.get("name") == port:
            return p["containerPort"]
    return int(port) if isinstance(port, str) and port.isdigit() else None


async def _check(w: PodWorker, spec: dict, kind: str, port: int, path: str | None, probe: dict) -> bool:
    assert w.sandbox is not None
    if kind == "exec":  # in the container as `lab exec` runs it: its env and uid
        command = list((probe.get("exec") or {}).get("command") or ["false"])
        try:
            cmd = exec_argv(w.sandbox.netns, run_as(w.pod["spec"], spec, w.gid), command)
        except ValueError:
            return False
        env = w.k.container_env(w.pod, spec, w.sandbox.ip)
        try:
            with trio.fail_after(seconds(probe.get("timeoutSeconds"), 1.0) or 1.0):
                res = await trio.run_process(
                    cmd, check=False, capture_stdout=True, capture_stderr=True, env=env, cwd="/"
                )
        except (trio.TooSlowError, OSError):
            return False
        return res.returncode == 0
    try:
        raw = netns.socket_in(w.sandbox.netns, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return False
    sock = trio.socket.from_stdlib_socket(raw)
    try:
        with trio.move_on_after(seconds(probe.get("timeoutSeconds"), 1.0) or 1.0):
            await sock.connect((w.sandbox.ip, port))
            if kind == "tcp":
                return True
            await sock.send(
                f"GET {path} HTTP/1.1\r\nHost: {w.sandbox.ip}:{port}\r\n"
                f"User-Agent: lab-probe\r\nConnection: close\r\n\r\n".encode()
            )
            head = await sock.recv(64)
            parts = head.split(b" ", 2)
            return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
        return False  # timed out
    except OSError:
        return False
    finally:
        sock.close()
