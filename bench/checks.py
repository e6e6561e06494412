"""How fast, for what the tests check works (part of `make bench`): the timing bounds the tests used
to assert are each measured here, the bound in the row's note as its target. A test asserts what
happens; a machine's speed is a figure, not a pass or a failure.

Without a lab: the load generator's pace and its timeouts' wall time, 200 pods' network set-up,
and how soon the API's clients (DNS, istiod) exit on SIGTERM. With a lab (the default topology,
with the mesh): a denied connection's reset, the generator's ceiling, and the scenarios' wall time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import trio

from lab import load as labload
from lab.client import netns
from lab.client.contract import ENV_API_SOCKET
from lab.load import generator
from lab.runtime import network
from lab.testing import DEFAULT_TOPOLOGY, InProcessLabApi, TestLab, eventually, unique_lab_name
from tests.conftest import curl_client, deployment, echo_container

Row = Callable[[str, str, str], None]
LOCAL = ["127.0.0.0/8"]


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the generator's connections expect
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802 - the handler's API
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # one segment

    def log_message(self, *args) -> None:
        pass


def load_generator(row: Row) -> None:
    """tests/integration/test_load_generator.py: fixed rate, and a server that never answers."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = time.monotonic()
        r = generator.run(
            generator.Config(
                url=f"http://127.0.0.1:{server.server_port}/", qps=100, duration=1.0, connections=4, allow=LOCAL
            )
        )
        row(
            "load generator: 100 requests at 100/s",
            f"{time.monotonic() - t0:.2f} s",
            f"{r.successes}/{r.requests} ok; target 0.95-2 s (open loop: the schedule sets the pace)",
        )
    finally:
        server.shutdown()
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        t0 = time.monotonic()
        r = generator.run(
            generator.Config(
                url=f"http://127.0.0.1:{silent.getsockname()[1]}/",
                qps=10,
                duration=0.5,
                timeout=0.2,
                connections=5,
                allow=LOCAL,
            )
        )
        row(
            "load generator: 5 requests to a silent server, 0.2 s timeout",
            f"{time.monotonic() - t0:.2f} s",
            f"errors {r.errors}; target < 2 s",
        )


def pod_network(row: Row, count: int = 200) -> None:
    """tests/integration/test_network.py: netns + veth + addresses + routes per pod, one node."""
    prefix = f"al-b{os.getpid()}-"
    made: list[str] = []
    try:
        node = prefix + "node"
        netns.create(node)
        made.append(node)
        start = time.perf_counter()
        for k in range(count):
            pod = f"{prefix}pod-{k}"
            netns.create(pod)
            made.append(pod)
            network.add_pod(
                node, pod, f"vbench{k:04x}", f"10.244.{k // 200}.{10 + k % 200}", "10.244.0.1", owner=f"bench/{pod}"
            )
        setup = (time.perf_counter() - start) / count * 1000
        start = time.perf_counter()
        for pod in made[1:]:
            netns.remove(pod)
        teardown = (time.perf_counter() - start) / count * 1000
        del made[1:]
        row(
            f"pod network, {count} pods on a node: set up",
            f"{setup:.2f} ms/pod",
            "netns + veth + addresses + routes; target < 20 ms/pod",
        )
        row(f"pod network, {count} pods: torn down", f"{teardown:.3f} ms/pod", "netns.remove")
    finally:
        for name in reversed(made):
            netns.remove(name)


SERVING = {"lab.dns.server": b"serving DNS on", "mesh.istiod": b"serving CA and config on"}


async def _sigterm_exit(module: str) -> float:
    with tempfile.TemporaryDirectory(prefix="b") as d:
        api = InProcessLabApi(d, namespaces=("default", "istio-system"))
        async with trio.open_nursery() as nursery:
            await nursery.start(api.serve)
            env = {**os.environ, ENV_API_SOCKET: api.path}
            argv = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0"]
            process = await trio.lowlevel.open_process(argv, env=env, stderr=subprocess.PIPE)
            try:
                log = b""
                with trio.fail_after(10):
                    while SERVING[module] not in log:
                        log += await process.stderr.receive_some(4096)
                start = trio.current_time()
                process.send_signal(signal.SIGTERM)
                await process.wait()
                return trio.current_time() - start
            finally:
                if process.returncode is None:
                    process.kill()
                nursery.cancel_scope.cancel()


def sigterm_exits(row: Row) -> None:
    """tests/integration/test_programs.py and the ztunnel process test: exit promptly on SIGTERM."""
    for module in SERVING:
        row(f"{module}: SIGTERM to exit", f"{trio.run(_sigterm_exit, module) * 1000:.0f} ms", "target < 2 s")


def run(row: Row) -> None:
    load_generator(row)
    pod_network(row)
    sigterm_exits(row)


def run_in_lab(row: Row) -> None:
    """tests/e2e: test_ambient_l4 (a denial is a reset, at once), test_lab_load (the generator's
    ceiling) and test_scenarios_more (cert-expiry under a minute, every scenario under 3)."""
    import scenarios

    t = TestLab(unique_lab_name("c"), DEFAULT_TOPOLOGY).up()
    try:
        ns = "bench-checks"
        t.create_namespace(ns, {"istio.io/dataplane-mode": "ambient"})
        t.apply([deployment("echo", ns, echo_container()), curl_client(ns)])
        echo_ip = t.wait_ready(ns, "app=echo")[0]["status"]["podIP"]
        client = t.wait_ready(ns, "app=client")[0]["metadata"]["name"]
        eventually(lambda: t.all_enrolled(ns), timeout=30)
        report = labload.run(t.client, ns, client, f"http://{echo_ip}:8080/", qps=0, duration=3, connections=8)
        row(
            "load generator ceiling, 8 connections, ambient echo",
            f"{report.actual_qps:.0f} req/s",
            f"p99 {report.latency_ms.p99:.2f} ms; errors {report.errors}; target > 200 req/s",
        )
        t.apply(
            f'{{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": '
            f'{{"name": "deny-client", "namespace": "{ns}"}}, "spec": {{"action": "DENY", "rules": '
            f'[{{"from": [{{"source": {{"principals": ["cluster.local/ns/{ns}/sa/default"]}}}}]}}]}}}}'
        )
        curl = ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", f"http://{echo_ip}:8080/"]
        eventually(lambda: t.exec(client, ns, curl).returncode in (7, 52, 56), timeout=30, interval=0.3)
        t0 = time.monotonic()
        code = t.exec(client, ns, curl).returncode
        row(
            "ambient L4 DENY: the client's call ends",
            f"{(time.monotonic() - t0) * 1000:.0f} ms",
            f"curl exit {code} (a reset); includes `lab exec`; target < 2 s",
        )
        t.delete_namespace(ns)
        walls = {}
        for name in scenarios.names():
            result = scenarios.run(t.client, name)
            walls[name] = result.wall_s
            row(f"scenario {name}", f"{walls[name]:.1f} s", "target < 60 s" if name == "cert-expiry" else "")
            scenario_figures(name, result.figures, row)
        row("every scenario, in order", f"{sum(walls.values()):.0f} s", "target < 180 s")
    finally:
        t.down()


def scenario_figures(name: str, figures: dict, row: Row) -> None:
    """The latency comparisons the scenario tests no longer assert (tests/e2e/test_scenarios*.py)."""
    lat = figures.get("latency_ms", {})
    if name == "hops":
        row(
            "hops: p50 by path",
            ", ".join(f"{p} {v['p50']:.2f} ms" for p, v in lat.items()),
            "target: direct < ambient L4 < ambient + waypoint",
        )
    elif name == "noisy-neighbour":
        alone, noisy, fed = (
            lat[p] for p in ("alone, ztunnel 100m", "beside bulk, ztunnel 100m", "beside bulk, ztunnel 2 CPU")
        )
        row(
            "noisy neighbour: p99 alone / beside bulk / ztunnel at 2 CPU",
            f"{alone['p99']:.1f} / {noisy['p99']:.1f} / {fed['p99']:.1f} ms",
            f"bulk {(noisy['bulk_bps'] or 0) / 1e6:.0f} -> {(fed['bulk_bps'] or 0) / 1e6:.0f} Mbit/s; "
            "target: beside bulk >= 2x alone, 2 CPU < beside bulk / 1.5",
        )
    elif name == "ztunnel-down":
        row("ztunnel down: calls recover after the new ztunnel", f"{figures['recovery_s']} s", "target <= 10 s")
    elif name == "cert-expiry":
        row(
            "cert expiry: calls recover after istiod is back",
            f"{figures['recovery_after_istiod_ready_s']} s",
            "target <= 30 s",
        )
