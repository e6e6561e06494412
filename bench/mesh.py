"""The mesh's benchmarks (part of `make bench`): the ambient L4 path against the direct path, measured
in the same run between the same two nodes, and ztunnel's memory.

Clients are sockets made inside the client pod's network namespace, so the pod's in-pod redirection
captures them exactly as it captures the app's own connections.

Two reference relay pairs (`bench.relay`: trio, and plain threads) sit in the ztunnels' places on
the direct path and are measured in the same rounds: they show what two extra userspace hops cost
on this machine before any TLS, HTTP/2 or policy, which is the floor the ambient figures stand on.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Callable

from lab.client import netns
from lab.client.contract import NETNS_ANNOTATION
from lab.testing import TestLab, eventually, unique_lab_name
from tests.conftest import curl_client, deployment, echo_container, pause_container

NS_DIRECT, NS_AMBIENT = "bench-direct", "bench-ambient"
IPERF = {"name": "iperf", "image": "networkstatic/iperf3", "args": ["-s"], "ports": [{"containerPort": 5201}]}
REQUEST = b"GET / HTTP/1.1\r\nHost: echo\r\nUser-Agent: bench\r\n\r\n"


def read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one HTTP/1.1 response (content-length framed) off a keep-alive socket; its status."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    need = len(head) + 4 + length
    while len(buf) < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    del buf[:need]
    return int(head.split(b" ", 2)[1])


def request_rtts(client_netns: str, ip: str, n: int, port: int = 8080) -> list[float]:
    """Round trips of N requests on one keep-alive connection, in microseconds."""
    sock = netns.socket_in(client_netns)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect((ip, port))
    buf = bytearray()
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            sock.sendall(REQUEST)
            read_response(sock, buf)
            out.append((time.perf_counter() - t0) * 1e6)
    finally:
        sock.close()
    return out


def connections_per_second(
    t: TestLab, client_pod: str, ns: str, ip: str, n: int = 2000, parallel: int = 8, port: int = 8080
) -> float:
    """curl in the client pod opening N new connections (one request each, `Connection: close`),
    PARALLEL at a time: how many new app connections per second the path carries."""
    args = [
        "curl",
        "-s",
        "-H",
        "Connection: close",
        "--parallel",
        "--parallel-max",
        str(parallel),
        "-w",
        "%{http_code}\\n",
    ]
    t0 = time.monotonic()
    r = t.exec(client_pod, ns, args + ["-o", "/dev/null", f"http://{ip}:{port}/"] * n, timeout=300)
    took = time.monotonic() - t0
    ok = r.stdout.split().count("200")
    if ok != n:
        raise RuntimeError(f"{n - ok} of {n} connections failed on the {ns} path")
    return n / took


def iperf3_gbits(t: TestLab, client_pod: str, ns: str, ip: str, seconds: int = 4) -> float:
    r = t.exec(client_pod, ns, ["iperf3", "-c", ip, "-t", str(seconds), "-J"], timeout=seconds + 30, check=True)
    return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def q(xs: list[float], p: float) -> float:
    return sorted(xs)[int(p * (len(xs) - 1))]


RELAYS = {"trio": 9001, "threads": 9003}  # the client-side relay's port; the server side listens on +1


@contextlib.contextmanager
def reference_relays(client_netns: str, server_netns: str, server_ip: str) -> Iterator[None]:
    """Both reference relay pairs, running until the block ends (killed by their own PIDs)."""
    procs: list[subprocess.Popen] = []
    relay = [sys.executable, "-m", "bench.relay", "--mode"]
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        for mode, port in RELAYS.items():
            for where, listen, dest in (
                (server_netns, f"{server_ip}:{port + 1}", "127.0.0.1:8080"),
                (client_netns, f"127.0.0.1:{port}", f"{server_ip}:{port + 1}"),
            ):
                procs.append(subprocess.Popen(["ip", "netns", "exec", where, *relay, mode, listen, dest], cwd=cwd))
        for port in RELAYS.values():
            eventually(lambda: request_rtts(client_netns, "127.0.0.1", 5, port), timeout=20)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run(topology: str, row: Callable[[str, str, str], None], requests: int = 2000) -> None:
    t = TestLab(unique_lab_name("m"), topology).up()
    try:
        t.create_namespace(NS_DIRECT)
        t.create_namespace(NS_AMBIENT, {"istio.io/dataplane-mode": "ambient"})
        paths = {}
        for ns in (NS_DIRECT, NS_AMBIENT):
            t.apply([deployment("echo", ns, echo_container(), IPERF, node="worker1"), curl_client(ns, node="worker2")])
            server = t.wait_ready(ns, "app=echo")[0]
            client = t.wait_ready(ns, "app=client")[0]
            paths[ns] = (
                client["metadata"]["name"],
                client["metadata"]["annotations"][NETNS_ANNOTATION],
                server["status"]["podIP"],
            )
            if ns == NS_DIRECT:
                server_netns = server["metadata"]["annotations"][NETNS_ANNOTATION]
        eventually(lambda: t.all_enrolled(NS_AMBIENT), timeout=30)
        for ns in (NS_DIRECT, NS_AMBIENT):  # warm up (and the ambient path's certificates and pool)
            eventually(lambda: request_rtts(paths[ns][1], paths[ns][2], 50), timeout=20)
        direct_pod, client_netns, server_ip = paths[NS_DIRECT]
        with reference_relays(client_netns, server_netns, server_ip):
            targets = {
                NS_DIRECT: (client_netns, server_ip, 8080),
                NS_AMBIENT: (paths[NS_AMBIENT][1], paths[NS_AMBIENT][2], 8080),
            }
            targets.update({mode: (client_netns, "127.0.0.1", port) for mode, port in RELAYS.items()})
            rtts = {name: [] for name in targets}
            for _ in range(5):  # interleaved, so machine drift hits every path alike
                for name, (where, ip, port) in targets.items():
                    rtts[name] += request_rtts(where, ip, requests // 5, port)
            cps = {ns: connections_per_second(t, pod, ns, ip) for ns, (pod, _, ip) in paths.items()}
            cps.update(
                {
                    mode: connections_per_second(t, direct_pod, NS_DIRECT, "127.0.0.1", port=port)
                    for mode, port in RELAYS.items()
                }
            )
        d = rtts[NS_DIRECT]

        def added(name: str) -> str:
            a = rtts[name]
            return (
                f"p99 {q(a, 0.99):.0f} us; added p50 {q(a, 0.5) - q(d, 0.5):.0f} us; ratio {q(a, 0.5) / q(d, 0.5):.2f}x"
            )

        row(
            "request round trip, direct (keep-alive, echo app)",
            f"p50 {q(d, 0.5):.0f} us",
            f"p99 {q(d, 0.99):.0f} us; {len(d)} requests, client on worker2, server on worker1",
        )
        row(
            "request round trip, ambient L4 (2 ztunnels, HBONE mTLS)",
            f"p50 {q(rtts[NS_AMBIENT], 0.5):.0f} us",
            added(NS_AMBIENT) + " (target: added <= 300 us)",
        )
        row(
            "request round trip, reference: bare trio relay pair",
            f"p50 {q(rtts['trio'], 0.5):.0f} us",
            added("trio") + " (no TLS, no HTTP/2: the floor of a trio proxy pair)",
        )
        row(
            "request round trip, reference: bare threads relay pair",
            f"p50 {q(rtts['threads'], 0.5):.0f} us",
            added("threads") + " (no TLS, no HTTP/2, no event loop)",
        )

        runs = {ns: [] for ns in paths}
        for _ in range(3):  # interleaved rounds; the medians are reported
            for ns, (pod, _, ip) in paths.items():
                runs[ns].append(iperf3_gbits(t, pod, ns, ip, seconds=3))
        gb = {ns: statistics.median(v) for ns, v in runs.items()}
        ratios = sorted(a / d * 100 for a, d in zip(runs[NS_AMBIENT], runs[NS_DIRECT]))
        row("single-stream throughput, direct (iperf3)", f"{gb[NS_DIRECT]:.2f} Gbit/s", "median of 3 rounds of 3 s")
        row(
            "single-stream throughput, ambient L4 (iperf3 through HBONE)",
            f"{gb[NS_AMBIENT]:.2f} Gbit/s",
            f"{gb[NS_AMBIENT] / gb[NS_DIRECT] * 100:.0f}% of direct (rounds: "
            f"{', '.join(f'{r:.0f}%' for r in ratios)}; target >= 25%)",
        )

        row(
            "new app connections/s, direct",
            f"{cps[NS_DIRECT]:.0f}/s",
            "curl, 2000 connections, 8 at a time, one request each",
        )
        row(
            "new app connections/s, ambient (warm HBONE pool)",
            f"{cps[NS_AMBIENT]:.0f}/s",
            f"{cps[NS_AMBIENT] / cps[NS_DIRECT] * 100:.0f}% of direct (target >= 1000/s)",
        )
        for mode in RELAYS:
            row(
                f"new app connections/s, reference: bare {mode} relay pair",
                f"{cps[mode]:.0f}/s",
                f"{cps[mode] / cps[NS_DIRECT] * 100:.0f}% of direct",
            )

        zt = [p for p in t.pods("istio-system", "app=ztunnel") if p["spec"]["nodeName"] == "worker1"][0]
        pid = zt["status"]["containerStatuses"][0]["pid"]
        idle = rss_mib(pid)
        t.apply(deployment("many", NS_AMBIENT, pause_container(), replicas=100, node="worker1"))
        t0 = time.monotonic()
        eventually(lambda: len(t.enrolled(NS_AMBIENT, "app=many")) == 100, timeout=300, interval=0.2)
        enrolled_in = time.monotonic() - t0
        time.sleep(2)  # let certificate fetches settle
        loaded = rss_mib(pid)
        row("ztunnel RSS, idle (1 pod enrolled on its node)", f"{idle:.1f} MiB", "")
        row(
            "ztunnel RSS, 100 more pods enrolled on its node",
            f"{loaded:.1f} MiB",
            f"{(loaded - idle) / 100 * 1024:.0f} KiB/pod; 100 pods created+enrolled in {enrolled_in:.1f} s "
            "(target <= 80 MB)",
        )
    finally:
        t.down()
