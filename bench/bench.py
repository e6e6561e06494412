"""`make bench`: measures the lab and prints one table.

Each figure is measured here, in one run, on this machine: lab up/down times, pods made per second
and memory per pod, and request round trips through a Service VIP against the pod IP in the same run
(the ratio is the figure to compare across machines; absolute times drift with load).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab.cli import launcher  # noqa: E402
from lab.testing import DEFAULT_TOPOLOGY, REPO, TestLab, eventually, unique_lab_name  # noqa: E402
from tests.conftest import deployment, pause_container  # noqa: E402

BENCH_TOPOLOGY = os.path.join(REPO, "bench", "two-workers.yaml")
MESH_TOPOLOGY = os.path.join(REPO, "bench", "two-workers-ambient.yaml")
ROWS: list[tuple[str, str, str]] = []


def row(what: str, value: str, note: str = "") -> None:
    ROWS.append((what, value, note))
    print(f"  {what}: {value} {note}", file=sys.stderr, flush=True)


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable")


def bench_up_down(runs: int) -> None:
    for label, topology in (
        ("lab only: 3 nodes + DNS", BENCH_TOPOLOGY),
        ("default: 4 nodes + DNS + ambient mesh", DEFAULT_TOPOLOGY),
    ):
        ups, downs = [], []
        for _ in range(runs):
            name = unique_lab_name("b")
            t0 = time.monotonic()
            launcher.up(topology, name)
            ups.append(time.monotonic() - t0)
            t0 = time.monotonic()
            launcher.down(name)
            downs.append(time.monotonic() - t0)
        row(
            f"lab up ({label}), to ready",
            f"{statistics.median(ups):.2f} s",
            f"median of {runs}; min {min(ups):.2f} max {max(ups):.2f}; target <= 3 s",
        )
        row(
            f"lab down ({label})",
            f"{statistics.median(downs):.2f} s",
            f"median of {runs}; min {min(downs):.2f} max {max(downs):.2f}; target <= 2 s",
        )


def bench_pods(counts: list[int]) -> None:
    for n in counts:
        t = TestLab(unique_lab_name("p"), BENCH_TOPOLOGY).up()
        try:
            mem0 = mem_available_kib()
            t0 = time.monotonic()
            t.apply(deployment("many", "default", pause_container(), replicas=n))
            eventually(
                lambda: t.get("Deployment", "many")["status"].get("readyReplicas", 0) == n, timeout=300, interval=0.05
            )
            took = time.monotonic() - t0
            mem = (mem0 - mem_available_kib()) / n
            row(
                f"{n} pods on 2 nodes: apply to all Ready",
                f"{took:.2f} s",
                f"{took / n * 1000:.1f} ms/pod; {mem / 1024:.2f} MiB/pod (MemAvailable drop)"
                + ("; target <= 10 s" if n == 200 else ""),
            )
            t0 = time.monotonic()
            t.client.call("delete", kind="Deployment", name="many", namespace="default")
            eventually(lambda: not t.pods("default", "app=many"), timeout=120)
            row(f"{n} pods: delete to all gone", f"{time.monotonic() - t0:.2f} s")
        finally:
            t.down()


RTT_APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers: [{name: echo, image: ambient-lab/echo, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: default}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers: [{name: curl, image: curlimages/curl, command: [/bin/sleep, infinity]}]
"""


def _curl_times(t: TestLab, client: str, url: str, n: int) -> list[float]:
    # One curl process, N transfers, each on a new connection: per-transfer time_total.
    args = ["curl", "-s", "-H", "Connection: close", "-w", "%{time_total}\\n"]
    r = t.exec(client, "default", args + ["-o", "/dev/null", url] * n, timeout=120, check=True)
    return [float(x) * 1e6 for x in r.stdout.split()]


def bench_vip_rtt(n: int) -> None:
    t = TestLab(unique_lab_name("r"), BENCH_TOPOLOGY).up()
    try:
        t.apply(RTT_APP)
        server = t.wait_ready("default", "app=echo")[0]
        client = t.wait_ready("default", "app=client")[0]["metadata"]["name"]
        vip = t.get("Service", "echo")["spec"]["clusterIP"]
        direct_url, vip_url = f"http://{server['status']['podIP']}:8080/", f"http://{vip}:80/"
        _curl_times(t, client, direct_url, 20)  # warm-up
        direct, via = [], []
        for _ in range(5):  # interleave so drift hits both alike
            direct += _curl_times(t, client, direct_url, n // 5)
            via += _curl_times(t, client, vip_url, n // 5)

        def q(xs, p):
            return sorted(xs)[int(p * (len(xs) - 1))]

        for label, xs in (("pod IP", direct), ("Service VIP (kube-proxy DNAT)", via)):
            row(
                f"curl request round trip, {label}",
                f"p50 {q(xs, 0.5):.0f} us",
                f"p99 {q(xs, 0.99):.0f} us; {len(xs)} requests, new connection each, "
                "client and server on different nodes",
            )
        row("VIP / pod IP, p50 ratio", f"{q(via, 0.5) / q(direct, 0.5):.2f}x")
    finally:
        t.down()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer runs")
    p.add_argument("--only", choices=("lab", "mesh", "l7", "checks", "kubeapi"), help="run one part")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("make bench needs root (network namespaces)")
    print(f"ambient-lab benchmarks on {os.cpu_count()} CPUs ({time.strftime('%Y-%m-%d %H:%M')})", file=sys.stderr)
    if args.only in (None, "lab"):
        bench_up_down(2 if args.quick else 5)
        bench_pods([50] if args.quick else [50, 200])
        bench_vip_rtt(100 if args.quick else 500)
    if args.only in (None, "mesh"):
        from bench import mesh

        mesh.run(MESH_TOPOLOGY, row, requests=500 if args.quick else 2000)
    if args.only in (None, "l7"):
        from bench import l7

        l7.run(MESH_TOPOLOGY, row, requests=500 if args.quick else 2000)
    if args.only in (None, "kubeapi"):
        from bench import kubeapi  # kubectl and the Kubernetes endpoint against `lab`

        kubeapi.run(row, runs=5 if args.quick else 20, rounds=1 if args.quick else 3)
    if args.only in (None, "checks"):
        from bench import checks  # the timing bounds the tests no longer assert

        checks.run(row)
        checks.run_in_lab(row)
    width = max(len(r[0]) for r in ROWS)
    vwidth = max(len(r[1]) for r in ROWS)
    print(f"\n{'measure'.ljust(width)}   {'value'.ljust(vwidth)}   notes")
    print(f"{'-' * width}   {'-' * vwidth}   -----")
    for what, value, note in ROWS:
        print(f"{what.ljust(width)}   {value.ljust(vwidth)}   {note}")


if __name__ == "__main__":
    main()
