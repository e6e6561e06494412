"""overhead: N pods in ambient against N pods with sidecars: memory and idle CPU per pod and in
total, from the pods' cgroups (the `top` op, as `lab top pod`), the ztunnels' share included."""

from __future__ import annotations

import time

from scenarios import manifests as m
from scenarios.framework import MESH_NAMESPACE, Run, Scenario

ARTICLE = "the article"
ISTIO = "Istio's ambient docs (resource overhead)"
APP_IMAGE = "registry.k8s.io/pause"
MIB = 1024 * 1024


def summarize(pods: list[dict], proxy: str = "istio-proxy") -> dict:
    """Per-pod averages and totals of `top` entries: memory (bytes) and CPU (millicores), split into
    the proxy container and the rest. Keys: pods, memory, cpu, proxy_memory, proxy_cpu,
    app_memory, app_cpu (totals), and the same with `_per_pod`."""
    tot = {"memory": 0.0, "cpu": 0.0, "proxy_memory": 0.0, "proxy_cpu": 0.0}
    for p in pods:
        tot["memory"] += p.get("memory", 0)
        tot["cpu"] += p.get("cpu", 0)
        for c in p.get("containers") or []:
            if c.get("name") == proxy:
                tot["proxy_memory"] += c.get("memory", 0)
                tot["proxy_cpu"] += c.get("cpu", 0)
    tot["app_memory"] = tot["memory"] - tot["proxy_memory"]
    tot["app_cpu"] = tot["cpu"] - tot["proxy_cpu"]
    n = len(pods)
    out: dict = {"pods": n}
    for k, v in tot.items():
        out[k] = round(v, 3)
        out[f"{k}_per_pod"] = round(v / n, 3) if n else 0.0
    return out


def share(before: float, after: float, pods: int) -> float:
    """The growth from BEFORE to AFTER spread over PODS (never below 0)."""
    return max(after - before, 0.0) / pods if pods else 0.0


def mib(nbytes: float) -> float:
    return round(nbytes / MIB, 2)


class Overhead(Scenario):
    name = "overhead"
    summary = "N pods in ambient vs N with sidecars: memory and idle CPU per pod and in total (cgroups)"
    claims = [
        ("ambient: per-pod overhead near zero (no proxy in the pod; the node's ztunnel serves them all)", ARTICLE),
        ("sidecars: every pod pays for its own proxy, so the total grows with the pods", ARTICLE),
        ("at idle, N sidecar proxies burn more CPU than the node ztunnels serving N ambient pods", ISTIO),
    ]
    pods = 10
    interval = 3.0  # seconds between the two CPU samples

    def run(self, ctx: Run) -> None:
        ctx.say("ztunnels before: memory and CPU")
        before = self._top(ctx, self.interval / 2)
        zt_before = summarize(self._select(before, MESH_NAMESPACE, "ztunnel-"))
        amb = ctx.namespace("ambient")
        side = ctx.namespace("sidecar", ambient=False, labels={"istio-injection": "enabled"})
        app = [{"name": "app", "image": APP_IMAGE}]
        ctx.say(f"{self.pods} pods in {amb} (ambient) and {self.pods} in {side} (sidecars)")
        ctx.apply(m._dump(m.deployment(amb, "app", app, replicas=self.pods)))
        ctx.apply(m._dump(m.deployment(side, "app", app, replicas=self.pods)))
        t = time.monotonic()
        ctx.wait_ready(amb, "app=app", self.pods, enrolled=True, timeout=90)
        ctx.wait_ready(side, "app=app", self.pods, timeout=90)
        ready_s = round(time.monotonic() - t, 1)
        time.sleep(1.0)  # the start-up work is over
        ctx.say(f"sampling the cgroups over {self.interval:g}s")
        after = self._top(ctx, self.interval)
        a = summarize(self._select(after, amb))
        s = summarize(self._select(after, side))
        zt_after = summarize(self._select(after, MESH_NAMESPACE, "ztunnel-"))
        zt_mem_share = share(zt_before["memory"], zt_after["memory"], self.pods)
        zt_cpu_share = share(zt_before["cpu"], zt_after["cpu"], self.pods)

        ctx.figure("pods", self.pods)
        ctx.figure("ready_after_s", ready_s)
        ctx.figure("ambient", a)
        ctx.figure("sidecar", s)
        ctx.figure("ztunnels_before", zt_before)
        ctx.figure("ztunnels_after", zt_after)
        ctx.figure("ztunnel_share_per_ambient_pod", {"memory": round(zt_mem_share, 1), "cpu": round(zt_cpu_share, 3)})
        amb_pod = a["memory_per_pod"] + zt_mem_share
        side_pod = s["memory_per_pod"]
        ctx.figure(
            "memory_per_pod_mib",
            {
                "ambient (app)": mib(a["memory_per_pod"]),
                "ambient (app + ztunnel share)": mib(amb_pod),
                "sidecar (app + proxy)": mib(side_pod),
            },
        )
        overhead_amb = zt_mem_share
        overhead_side = s["proxy_memory_per_pod"]
        ctx.figure("overhead_per_pod_mib", {"ambient": mib(overhead_amb), "sidecar": mib(overhead_side)})
        ctx.figure(
            "overhead_total_mib",
            {
                "ambient (ztunnel growth)": mib(zt_after["memory"] - zt_before["memory"]),
                "ambient (all ztunnels)": mib(zt_after["memory"]),
                "sidecar (all proxies)": mib(s["proxy_memory"]),
            },
        )
        ctx.figure(
            "idle_cpu_m",
            {
                "ambient pods": a["cpu"],
                "ztunnels (all)": zt_after["cpu"],
                "sidecar pods": s["cpu"],
                "sidecar proxies": s["proxy_cpu"],
            },
        )
        ctx.bars("memory per pod (MiB)", ctx.result.figures["memory_per_pod_mib"])
        ctx.bars("proxy memory, total (MiB)", ctx.result.figures["overhead_total_mib"])

        n = self.pods
        ctx.verdict(
            self.claims[0],
            f"ambient pod {mib(a['memory_per_pod']):.1f} MiB (the app only); the ztunnels grew "
            f"{mib(zt_after['memory'] - zt_before['memory']):.1f} MiB for {n} pods = {mib(overhead_amb):.2f} MiB "
            f"per pod; a sidecar pod {mib(side_pod):.1f} MiB, of which its proxy {mib(overhead_side):.1f} MiB",
            overhead_amb < 0.1 * overhead_side,
            f"{mib(overhead_amb):.2f} vs {mib(overhead_side):.1f} MiB per pod",
        )
        ctx.verdict(
            self.claims[1],
            f"{n} sidecar proxies: {mib(s['proxy_memory']):.0f} MiB in total; all "
            f"{zt_after['pods']} ztunnels (one per node, whatever the pods): {mib(zt_after['memory']):.0f} MiB",
            s["proxy_memory"] > zt_after["memory"] - zt_before["memory"] and s["proxy_memory"] > 0,
            f"{mib(s['proxy_memory']):.0f} vs {mib(zt_after['memory'] - zt_before['memory']):.1f} MiB added",
        )
        ctx.verdict(
            self.claims[2],
            f"over {self.interval:g}s at idle: {n} sidecar proxies {s['proxy_cpu']:.1f}m in total "
            f"({s['proxy_cpu_per_pod']:.2f}m each); the {zt_after['pods']} ztunnels {zt_after['cpu']:.1f}m "
            f"(before the pods: {zt_before['cpu']:.1f}m); the ambient pods {a['cpu']:.1f}m",
            s["proxy_cpu"] > zt_after["cpu"] - zt_before["cpu"],
            f"{s['proxy_cpu']:.1f}m vs {max(zt_after['cpu'] - zt_before['cpu'], 0):.1f}m added",
        )
        ctx.note(
            f"memory is the kubelet's working set (cgroup usage minus inactive file cache) of each container, "
            f"CPU the cgroup's usage over {self.interval:g}s, both as `lab top pod --containers` shows them; "
            f"the app is {APP_IMAGE} (it does nothing), so what differs is the data plane. The ztunnels' share "
            f"is their growth from before the pods existed, spread over the {n} ambient pods; the sidecar "
            f"pods' {n} proxies started in {ready_s:g}s with the ambient pods."
        )
        ctx.note(
            "the lab's proxies are Python processes: absolute sizes differ from Envoy's and ztunnel's, the "
            "shape (one proxy per pod against one per node) does not."
        )

    @staticmethod
    def _top(ctx: Run, interval: float) -> list[dict]:
        return ctx.client.call("top", namespace=None, interval=interval)["pods"]

    @staticmethod
    def _select(pods: list[dict], namespace: str, prefix: str = "") -> list[dict]:
        return [p for p in pods if p.get("namespace") == namespace and p.get("name", "").startswith(prefix)]
