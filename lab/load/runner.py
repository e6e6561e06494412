"""Host side of a load run: start the generator in a client pod, collect its report.

The generator is started with the exec API's prefix (`LabClient.call("exec", ...)`: the pod's
network namespace, then the container's uid/gid), exactly as `lab exec` runs a command, so the
pod's capture (ztunnel's or a sidecar's) applies to it. The networks it may reach are the lab's
pod and service CIDRs, taken from the lab's topology (`status` names its file); a URL whose host
is an address outside them is refused here, before anything starts, and the generator checks
every address a name resolves to in the pod.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from lab import topology
from lab.load.generator import Config, Refused, parse_header, parse_url
from lab.load.stats import LoadReport


class LoadError(Exception):
    """The run was refused or the generator failed; the message says why."""


def lab_networks(client) -> list[str]:
    """The lab's pod CIDR and service CIDR, as text (from its topology file via `status`)."""
    status = client.call("status")
    node_cidrs = [ipaddress.ip_network(n["podCIDR"]) for n in status.get("nodes", []) if n.get("podCIDR")]
    try:
        topo = topology.load_file(status["topology"])
        pod_cidr, service_cidr = topo.pod_cidr, topo.service_cidr
    except (topology.TopologyError, KeyError, TypeError):
        topo = None
    # (the lab gives nodes IPv4 ranges; one of another version is not within the pod CIDR)
    if topo is None or not all(isinstance(c, ipaddress.IPv4Network) and c.subnet_of(pod_cidr) for c in node_cidrs):
        # the file is gone or changed since the lab started: the nodes' own pod ranges, and the
        # default service range
        default = topology.load("nodes: [worker1]")
        return [str(c) for c in node_cidrs] + [str(default.service_cidr)]
    return [str(pod_cidr), str(service_cidr)]


def _headers(headers: Iterable[str] | Mapping[str, str] | None) -> list[str]:
    if not headers:
        return []
    if isinstance(headers, Mapping):
        return [f"{k}: {v}" for k, v in headers.items()]
    return list(headers)


@dataclass
class LoadRun:
    """A run in progress: `wait()` for its report, `cancel()` to stop it early."""

    namespace: str
    pod: str
    url: str
    process: subprocess.Popen
    duration: float
    timeout: float
    argv: list[str] = field(default_factory=list)
    report: LoadReport | None = None

    def done(self) -> bool:
        return self.process.poll() is not None

    def wait(self, timeout: float | None = None) -> LoadReport:
        """The report, once the generator is done (raises LoadError if it refused or failed)."""
        if self.report is not None:
            return self.report
        limit = timeout if timeout is not None else self.duration + self.timeout + 30.0
        try:
            out, err = self.process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            self.cancel()
            raise LoadError(
                f"the load generator in pod {self.namespace}/{self.pod} did not finish within {limit:.0f}s"
            ) from None
        if self.process.returncode != 0:
            lines = [line for line in err.splitlines() if line.strip()]
            msg = lines[-1] if lines else f"exit status {self.process.returncode}"
            raise LoadError(
                msg
                if msg.startswith("error")
                else f"error: the load generator in pod {self.namespace}/{self.pod} failed: {msg}"
            )
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise LoadError(f"error: the load generator in pod {self.namespace}/{self.pod} printed no report")
        self.report = LoadReport.from_json(lines[-1])
        return self.report

    def cancel(self) -> None:
        """Stops the generator (no report)."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            pass

    def __enter__(self) -> "LoadRun":
        return self

    def __exit__(self, *exc) -> None:
        if self.report is None:
            self.cancel()


def start(
    client,
    namespace: str,
    pod: str,
    url: str,
    *,
    qps: float,
    duration: float,
    connections: int = 4,
    timeout: float = 2.0,
    headers: Iterable[str] | Mapping[str, str] | None = None,
    method: str = "GET",
    container: str | None = None,
    networks: list[str] | None = None,
) -> LoadRun:
    """Starts the generator in POD (NAMESPACE) against URL; returns at once.

    QPS requests per second (0: as fast as the connections go) for DURATION seconds over
    CONNECTIONS keep-alive connections, each request given TIMEOUT seconds. HEADERS are
    'Name: value' strings or a mapping. Raises LoadError when the run is refused."""
    header_lines = _headers(headers)
    method = method.upper()
    try:
        for h in header_lines:
            parse_header(h)
        Config(
            url=url,
            qps=qps,
            duration=duration,
            allow=["0.0.0.0/32"],
            connections=connections,
            timeout=timeout,
            method=method,
        ).check()
        target = parse_url(url)
    except Refused as e:
        raise LoadError(f"error: {e}") from None
    nets = networks if networks is not None else lab_networks(client)
    try:
        literal = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None and not any(
        literal.version == n.version and literal in n for n in map(ipaddress.ip_network, nets)
    ):
        raise LoadError(
            f"error: {target.host} is outside the lab (allowed: {', '.join(nets)}); "
            f"load goes only to the lab's own addresses"
        )
    exec_target = client.call("exec", namespace=namespace, pod=pod, container=container)
    prefix = exec_target.get("argv", ["ip", "netns", "exec", exec_target["netns"]])
    argv = [
        *prefix,
        sys.executable,
        "-m",
        "lab.load.generator",
        "--url",
        url,
        "--qps",
        repr(float(qps)),
        "--duration",
        repr(float(duration)),
        "--connections",
        str(connections),
        "--timeout",
        repr(float(timeout)),
        "-X",
        method,
    ]
    for n in nets:
        argv += ["--allow", n]
    for h in header_lines:
        argv += ["-H", h]
    proc = subprocess.Popen(
        argv,
        env=exec_target["env"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    return LoadRun(namespace, pod, url, proc, float(duration), float(timeout), argv)


def run(client, namespace: str, pod: str, url: str, **options: Any) -> LoadReport:
    """`start(...)` (OPTIONS are its keywords) and `wait()`: the report of a whole run."""
    return start(client, namespace, pod, url, **options).wait()


__all__ = ["LoadError", "LoadRun", "lab_networks", "run", "start"]
