"""The L7 benchmarks (part of `make bench`): the waypoint and sidecar paths against ambient L4 and
the direct path, in the same run, between the same two nodes; what the proxies cost in CPU; and
the article's resource claim, memory of N pods in ambient against N pods with sidecars.

Four namespaces hold the same echo server (worker1) and client (worker2): one outside the mesh,
one ambient, one ambient with a waypoint for the namespace (the article's Gateway), one with
sidecar injection. Clients are sockets made in the client pod's network namespace, so the pod's
redirection (ztunnel's or istio-init's) captures them as it captures the app's own. Load is 8
keep-alive connections from threads of this process, each sending requests with a 1 KB body
(Istio's published figures use 1 KB payloads).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable

from bench.mesh import q, read_response, request_rtts, rss_mib
from lab.client import netns
from lab.client.contract import NETNS_ANNOTATION
from lab.testing import TestLab, eventually, unique_lab_name
from tests.conftest import curl_client, deployment, echo_app, pause_container

NAMESPACES = {
    "direct": "wpb-direct",
    "ambient L4": "wpb-l4",
    "sidecar -> sidecar": "wpb-sidecar",
    "ambient + waypoint": "wpb-l7",
}
LABELS = {
    "direct": None,
    "ambient L4": {"istio.io/dataplane-mode": "ambient"},
    "sidecar -> sidecar": {"istio-injection": "enabled"},
    "ambient + waypoint": {"istio.io/dataplane-mode": "ambient"},
}
WAYPOINT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {{name: waypoint, namespace: {ns}}}
spec:
  gatewayClassName: istio
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
"""
BODY = b"x" * 1024
POST = (
    b"POST /load HTTP/1.1\r\nHost: echo\r\nUser-Agent: bench\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 1024\r\n\r\n" + BODY
)


def load(client_netns: str, ip: str, seconds: float, connections: int = 8, port: int = 8080) -> tuple[int, int]:
    """(requests answered 200, other outcomes) from CONNECTIONS keep-alive connections for SECONDS."""
    counts = [[0, 0] for _ in range(connections)]
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        sock = netns.socket_in(client_netns)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((ip, port))
        buf = bytearray()
        try:
            while time.monotonic() < deadline:
                sock.sendall(POST)
                counts[i][0 if read_response(sock, buf) == 200 else 1] += 1
        except OSError:
            counts[i][1] += 1
        finally:
            sock.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(topology: str, row: Callable[[str, str, str], None], requests: int = 2000, seconds: float = 5.0) -> None:
    t = TestLab(unique_lab_name("w"), topology).up()
    try:
        paths = {}
        for label, ns in NAMESPACES.items():
            t.create_namespace(ns, LABELS[label])
            t.apply([*echo_app(ns, node="worker1"), curl_client(ns, node="worker2")])
        t.apply(WAYPOINT.format(ns=NAMESPACES["ambient + waypoint"]))
        for label, ns in NAMESPACES.items():
            server = t.wait_ready(ns, "app=echo")[0]
            client = t.wait_ready(ns, "app=client")[0]
            paths[label] = (client["metadata"]["annotations"][NETNS_ANNOTATION], server["status"]["podIP"])
        waypoint = t.wait_ready(NAMESPACES["ambient + waypoint"], "gateway.networking.k8s.io/gateway-name=waypoint")[0]
        eventually(
            lambda: (
                t.all_enrolled(NAMESPACES["ambient L4"], "app=echo")
                and t.all_enrolled(NAMESPACES["ambient + waypoint"], "app=echo")
            ),
            timeout=60,
        )
        for label, (where, ip) in paths.items():  # warm up: certificates, pools, the waypoint's config
            eventually(lambda: request_rtts(where, ip, 50), timeout=30)

        rtts = {label: [] for label in paths}
        for _ in range(5):  # interleaved, so machine drift hits every path alike
            for label, (where, ip) in paths.items():
                rtts[label] += request_rtts(where, ip, requests // 5)
        d, l4 = rtts["direct"], rtts["ambient L4"]
        for label, xs in rtts.items():
            note = f"p99 {q(xs, 0.99):.0f} us; {len(xs)} requests, keep-alive, client on worker2, server on worker1"
            if label != "direct":
                note += f"; added p50 {q(xs, 0.5) - q(d, 0.5):.0f} us over direct ({q(xs, 0.5) / q(d, 0.5):.2f}x)"
            if label in ("ambient + waypoint", "sidecar -> sidecar"):
                note += f"; added p50 {(q(xs, 0.5) - q(l4, 0.5)) / 1000:.2f} ms over L4"
            if label == "ambient + waypoint":
                note += f" (target <= 1.5 ms); waypoint pod on {waypoint['spec']['nodeName']}"
            row(f"request round trip, {label}", f"p50 {q(xs, 0.5):.0f} us", note)

        zts = {
            p["spec"]["nodeName"]: p["status"]["containerStatuses"][0]["pid"]
            for p in t.pods("istio-system", "app=ztunnel")
            if p["spec"]["nodeName"] in ("worker1", "worker2")
        }
        wp_pid = waypoint["status"]["containerStatuses"][0]["pid"]
        sidecars = {}
        for app in ("client", "echo"):
            p = t.pods(NAMESPACES["sidecar -> sidecar"], f"app={app}")[0]
            sidecars[app] = next(c["pid"] for c in p["status"]["containerStatuses"] if c["name"] == "istio-proxy")
        rates = {}
        for label, (where, ip) in paths.items():
            pids = {**zts, "waypoint": wp_pid, **{f"sidecar-{k}": v for k, v in sidecars.items()}}
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            t0 = time.monotonic()
            ok, failed = load(where, ip, seconds)
            took = time.monotonic() - t0
            used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            rates[label] = ok / took
            note = f"8 keep-alive connections, 1 KB request bodies, {seconds:.0f} s, {failed} failed"
            if label == "sidecar -> sidecar":
                sc = (used["sidecar-client"] + used["sidecar-echo"]) / ok * 1000
                note += f"; sidecars {sc:.3f} CPU-s per 1000 requests (both; Istio 1.24: ~0.20 vCPU per 1000 rps each)"
            elif label != "direct":
                zt = (used["worker1"] + used["worker2"]) / ok * 1000
                note += f"; ztunnels {zt:.3f} CPU-s per 1000 requests (both)"
            if label == "ambient + waypoint":
                note += (
                    f"; waypoint {used['waypoint'] / ok * 1000:.3f} CPU-s per 1000 requests "
                    f"(Istio 1.24 publishes ~0.25 vCPU per 1000 rps for a waypoint, ~0.06 for a ztunnel); "
                    f"{rates[label] / rates['direct'] * 100:.0f}% of direct (target >= 1000/s)"
                )
            row(f"requests/s, {label}", f"{rates[label]:.0f}/s", note)
        row(
            "waypoint RSS after the load",
            f"{rss_mib(wp_pid):.1f} MiB",
            "(target <= 80 MB; Istio 1.24 publishes ~60 MB for a waypoint at 1000 rps)",
        )
        row(
            "sidecar RSS after the load (client / server)",
            f"{rss_mib(sidecars['client']):.1f} / {rss_mib(sidecars['echo']):.1f} MiB",
            "(target <= 60 MB each; Istio 1.24 publishes ~60 MB for a sidecar at 1000 rps)",
        )
        overhead(t, row)
    finally:
        t.down()


def overhead(t: TestLab, row: Callable[[str, str, str], None], n: int = 20) -> None:
    """The article's claim: the mesh's memory for N pods, ambient (the node's ztunnel grows) against
    sidecars (one istio-proxy per pod)."""
    zt = next(p for p in t.pods("istio-system", "app=ztunnel") if p["spec"]["nodeName"] == "worker1")
    zt_pid = zt["status"]["containerStatuses"][0]["pid"]
    idle = rss_mib(zt_pid)
    t.create_namespace("ovh-ambient", {"istio.io/dataplane-mode": "ambient"})
    t.apply(deployment("many", "ovh-ambient", pause_container(), replicas=n, node="worker1"))
    eventually(lambda: len(t.enrolled("ovh-ambient", "app=many")) == n, timeout=300, interval=0.2)
    time.sleep(2)  # certificates fetched
    ambient_total = rss_mib(zt_pid) - idle
    t.create_namespace("ovh-sidecar", {"istio-injection": "enabled"})
    t.apply(deployment("many", "ovh-sidecar", pause_container(), replicas=n, node="worker1"))
    pods = t.wait_ready("ovh-sidecar", "app=many", count=n, timeout=300)
    proxies = [
        rss_mib(next(c["pid"] for c in p["status"]["containerStatuses"] if c["name"] == "istio-proxy")) for p in pods
    ]
    row(
        f"mesh memory for {n} pods, ambient",
        f"{ambient_total:.1f} MiB",
        f"{ambient_total / n * 1024:.0f} KiB per pod: the growth of the node's ztunnel ({idle:.1f} MiB before)",
    )
    row(
        f"mesh memory for {n} pods, sidecars",
        f"{sum(proxies):.0f} MiB",
        f"{sum(proxies) / n:.1f} MiB per pod (one istio-proxy each; min {min(proxies):.1f}, max {max(proxies):.1f}); "
        f"{sum(proxies) / max(ambient_total, 0.1):.0f}x ambient's",
    )
