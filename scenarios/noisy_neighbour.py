"""noisy-neighbour: a bulk flow and a latency-sensitive client share one node's ztunnel; with the
ztunnel held to 100m of CPU the bulk flow starves the latency client, with more CPU it does not."""

from __future__ import annotations

import json
import time

from scenarios import manifests as m
from scenarios import meshops
from scenarios.framework import Run, Scenario

ARTICLE = "the article"
ISTIO = "Istio's ambient docs (ztunnel resources); Kubernetes' resource management"
IPERF_IMAGE = "networkstatic/iperf3"
IPERF_PORT = 5201
PHASES = ("alone, ztunnel 100m", "beside bulk, ztunnel 100m", "beside bulk, ztunnel 2 CPU")


def ratio(a: float | None, b: float | None) -> float | None:
    """A / B, None when either is missing or B is 0."""
    if a is None or b is None or b <= 0:
        return None
    return a / b


def starved(alone_p99: float, noisy_p99: float, factor: float = 2.0) -> bool:
    """The latency client's p99 beside the bulk flow is at least FACTOR times its p99 alone."""
    r = ratio(noisy_p99, alone_p99)
    return r is not None and r >= factor


def improved(limited_p99: float, generous_p99: float, factor: float = 1.5) -> bool:
    """With more CPU for the ztunnel the p99 beside the bulk flow is at least FACTOR times lower."""
    r = ratio(limited_p99, generous_p99)
    return r is not None and r >= factor


def iperf_rate(text: str) -> float | None:
    """Received bits per second from `iperf3 -J` output; None if it has none."""
    try:
        doc = json.loads(text)
    except (ValueError, TypeError):
        return None
    end = doc.get("end") or {}
    for key in ("sum_received", "sum", "sum_sent"):
        bps = (end.get(key) or {}).get("bits_per_second")
        if bps:
            return float(bps)
    return None


def iperf_server(ns: str, node: str) -> str:
    dep = m.deployment(
        ns,
        "iperf",
        [
            {
                "name": "iperf3",
                "image": IPERF_IMAGE,
                "args": ["-s", "-p", str(IPERF_PORT)],
                "ports": [{"containerPort": IPERF_PORT}],
            }
        ],
        node=node,
    )
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "iperf", "namespace": ns},
        "spec": {
            "selector": {"app": "iperf"},
            "ports": [{"name": "tcp", "port": IPERF_PORT, "targetPort": IPERF_PORT}],
        },
    }
    return m._dump(dep, svc)


class NoisyNeighbour(Scenario):
    name = "noisy-neighbour"
    summary = "a bulk flow beside a latency-sensitive client on one node: ztunnel at 100m CPU, then at 2 CPU"
    claims = [
        ("ztunnel is shared by every ambient pod of its node: a noisy pod can starve it", ARTICLE),
        ("give ztunnel resources (CPU) and the neighbour no longer starves the others", ISTIO),
    ]
    qps = 20.0
    measure = 3.5  # seconds of latency load per phase
    lead = 1.0  # bulk flow alone before the latency load starts
    bandwidth = "1G"  # the bulk flow's offered rate: the same demand in both phases
    limited = "100m"
    generous = "2"

    def run(self, ctx: Run) -> None:
        workers = ctx.workers(at_least=2)
        client_node, server_node = workers[0], workers[1]
        meshops.patch_ztunnel(
            ctx, lambda c: meshops.set_cpu_limit(c, self.limited), f"resources.limits.cpu {self.limited}"
        )
        ns = ctx.namespace()
        ctx.say(f"servers (echo, iperf3 -s) on {server_node}; a latency client and a bulk client on {client_node}")
        ctx.apply(m.echo(ns, node=server_node))
        ctx.apply(iperf_server(ns, server_node))
        ctx.apply(m.client(ns, "latency", node=client_node))
        ctx.apply(m.client(ns, "bulk", node=client_node))
        ctx.wait_ready(ns, "app=echo", enrolled=True)
        ctx.wait_ready(ns, "app=iperf", enrolled=True)
        lat = ctx.wait_ready(ns, "app=latency", enrolled=True)[0]["metadata"]["name"]
        bulk = ctx.wait_ready(ns, "app=bulk", enrolled=True)[0]["metadata"]["name"]
        url = f"http://echo.{ns}/"
        ctx.wait_until(lambda: ctx.curl(lat, ns, url)[0] == 200, 30, "a first answer to the latency client", 0.2)

        results: dict[str, dict] = {}
        results[PHASES[0]] = self._measure(ctx, ns, lat, url, PHASES[0])
        results[PHASES[1]] = self._measure(ctx, ns, lat, url, PHASES[1], bulk=bulk)
        meshops.patch_ztunnel(
            ctx, lambda c: meshops.set_cpu_limit(c, self.generous), f"resources.limits.cpu {self.generous}"
        )
        ctx.wait_until(lambda: ctx.curl(lat, ns, url)[0] == 200, 30, "the latency client answered again", 0.2)
        results[PHASES[2]] = self._measure(ctx, ns, lat, url, PHASES[2], bulk=bulk)

        ctx.figure("nodes", {"client": client_node, "server": server_node})
        ctx.figure("latency_ms", results)
        ctx.bars("p50 latency (ms)", {p: results[p]["p50"] for p in PHASES})
        ctx.bars("p99 latency (ms)", {p: results[p]["p99"] for p in PHASES})
        alone, noisy, fed = (results[p] for p in PHASES)
        slow = ratio(noisy["p99"], alone["p99"])
        gain = ratio(noisy["p99"], fed["p99"])
        ctx.figure("p99_slowdown_beside_bulk", slow)
        ctx.figure("p99_gain_with_cpu", gain)

        def kinds(r):
            errs = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items(), key=lambda kv: -kv[1]))
            return f" (errors: {errs})" if errs else ""

        def bw(r):
            return f"{r['bulk_bps'] / 1e6:.0f} Mbit/s" if r.get("bulk_bps") else "bulk rate n/a"

        ctx.verdict(
            self.claims[0],
            f"ztunnel at {self.limited}: latency client p50/p99 {alone['p50']:.1f}/{alone['p99']:.1f} ms alone, "
            f"{noisy['p50']:.1f}/{noisy['p99']:.1f} ms beside the bulk flow ({bw(noisy)}); "
            f"{noisy['requests']} requests, {noisy['success_rate'] * 100:.0f}% ok{kinds(noisy)}",
            starved(alone["p99"], noisy["p99"]),
            f"p99 x{slow:.1f}" if slow else "n/a",
        )
        ctx.verdict(
            self.claims[1],
            f"ztunnel at {self.generous} CPU: p50/p99 {fed['p50']:.1f}/{fed['p99']:.1f} ms beside the bulk flow "
            f"({bw(fed)}), against {noisy['p99']:.1f} ms p99 at {self.limited}; "
            f"{fed['requests']} requests, {fed['success_rate'] * 100:.0f}% ok{kinds(fed)}",
            improved(noisy["p99"], fed["p99"]),
            f"p99 /{gain:.1f}" if gain else "n/a",
        )
        ctx.note(
            f"the limit is the ztunnel DaemonSet's resources.limits.cpu, enforced by the kubelet with CFS quota "
            f"({self.limited} = 10 ms of CPU per 100 ms); the template change restarts every ztunnel, and "
            f"istio-cni hands the pods to the new ones without restarting them. Both ztunnels on the path "
            f"(the client's node and the servers' node) carry both flows. The DaemonSet is put back as it was."
        )
        ctx.note(
            f"{self.qps:g} qps for {self.measure:g}s on one kept-alive connection per phase; the bulk flow is "
            f"iperf3 (TCP, {self.bandwidth}bit/s offered: more than a ztunnel at {self.limited} can carry, "
            f"a small part of one at {self.generous} CPU) from a pod on the same node to a server beside the "
            "echo server."
        )

    def _measure(self, ctx: Run, ns: str, lat: str, url: str, phase: str, bulk: str | None = None) -> dict:
        proc = None
        if bulk is not None:
            seconds = self.lead + self.measure + 1.0
            ctx.say(f"{phase}: iperf3 from {bulk} for {seconds:g}s")
            proc = meshops.exec_popen(
                ctx,
                ns,
                bulk,
                [
                    "iperf3",
                    "-c",
                    f"iperf.{ns}",
                    "-p",
                    str(IPERF_PORT),
                    "-t",
                    f"{seconds:g}",
                    "-b",
                    self.bandwidth,
                    "-J",
                    "--connect-timeout",
                    "3000",
                ],
            )
            ctx.event(f"bulk: {phase}")
            time.sleep(self.lead)
        try:
            ctx.say(f"{phase}: {self.qps:g} qps for {self.measure:g}s")
            ctx.load(phase, ns, lat, url, qps=self.qps, duration=self.measure, timeout=5.0)
            rep = ctx.collect()[phase][0]
        finally:
            out = ""
            if proc is not None:
                try:
                    out, _ = proc.communicate(timeout=self.lead + self.measure + 20)
                except Exception:  # noqa: BLE001 - a stuck iperf3 is stopped; the rate is then unknown
                    proc.kill()
                    proc.communicate(timeout=5)
        return {
            "p50": rep["latency_ms"]["p50"],
            "p99": rep["latency_ms"]["p99"],
            "max": rep["latency_ms"]["max"],
            "requests": rep["requests"],
            "success_rate": rep.get("success_rate", 0.0),
            "errors": dict(rep.get("errors") or {}),
            "bulk_bps": iperf_rate(out) if proc is not None else None,
        }
