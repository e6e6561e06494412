"""sidecar-shutdown-race: requests to a sidecar pod while it is deleted. Its app finishes its work
(a preStop hook holds it a few seconds); its proxy exits at once with terminationDrainDuration 0s,
or drains (answers, then closes each connection so clients move on) for 3 s."""

from __future__ import annotations

import json
import time

from scenarios import manifests as m
from scenarios.framework import Run, Scenario, overlap_rate

ISTIO = "Istio's docs: terminationDrainDuration (ProxyConfig); Kubernetes' pod termination"
CASES = {"drain 0s": "0s", "drain 3s": "3s"}
APP_GRACE = 3  # seconds the app's preStop hook keeps it serving


def drain_config(duration: str) -> str:
    return json.dumps({"terminationDrainDuration": duration})


def server(ns: str, name: str, drain: str, service_label: str) -> dict:
    """An echo Deployment with a sidecar that drains DRAIN, its app held APP_GRACE s by preStop."""
    c = {
        "name": "echo",
        "image": m.ECHO_IMAGE,
        "args": ["--port", "8080"],
        "ports": [{"containerPort": 8080}],
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(APP_GRACE)]}}},
    }
    dep = m.deployment(ns, name, [c], labels={"svc": service_label})
    dep["spec"]["template"]["metadata"]["annotations"] = {"proxy.istio.io/config": drain_config(drain)}
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
    return dep


def failed_after(report: dict, since_s: float) -> int:
    """Failed requests of a load REPORT in its timeline seconds from SINCE_S (seconds since its
    start) on."""
    return sum(b["requests"] - b["ok"] for b in report.get("timeline", []) if b["t"] + 1 > since_s)


class SidecarShutdownRace(Scenario):
    name = "sidecar-shutdown-race"
    summary = "load on a sidecar pod while it is deleted: terminationDrainDuration 0s vs 3s"
    claims = [
        ("without a drain the proxy exits at once: requests on its connections fail", ISTIO),
        (
            "with terminationDrainDuration the proxy keeps serving and closes each connection after its next "
            "response, so clients move to another replica without errors",
            ISTIO,
        ),
    ]
    qps = 40.0
    connections = 8  # spread over both replicas by kube-proxy (all on one: 1 in 128)
    lead = 1.5
    tail = APP_GRACE + 1.5

    def run(self, ctx: Run) -> None:
        workers = ctx.workers()
        cns = ctx.namespace("client", ambient=False)
        ctx.apply(m.client(cns, "client", node=workers[0]))
        spaces = {
            case: ctx.namespace(case.replace(" ", "-").lower(), ambient=False, labels={"istio-injection": "enabled"})
            for case in CASES
        }
        for case, ns in spaces.items():
            svc = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "echo", "namespace": ns},
                "spec": {"selector": {"svc": "echo"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }
            ctx.apply(m._dump(server(ns, "first", CASES[case], "echo"), server(ns, "second", CASES[case], "echo"), svc))
        client = ctx.wait_ready(cns, "app=client")[0]["metadata"]["name"]
        for case, ns in spaces.items():
            ctx.wait_ready(ns, "app=first")
            ctx.wait_ready(ns, "app=second")
            ctx.wait_until(
                lambda: ctx.curl(client, cns, f"http://echo.{ns}/")[0] == 200, 30, f"a first answer from {ns}", 0.2
            )
        duration = self.lead + self.tail
        ctx.say(f"load: {self.qps:g} qps over {self.connections} kept-alive connections for {duration:g}s per case")
        for case, ns in spaces.items():
            ctx.load(
                case,
                cns,
                client,
                f"http://echo.{ns}/",
                qps=self.qps,
                duration=duration,
                connections=self.connections,
                timeout=2.0,
            )
        time.sleep(self.lead)
        t_del = ctx.event("first replica deleted")
        for case, ns in spaces.items():
            ctx.scale("Deployment", "first", ns, 0)
        reports = ctx.collect()
        out = {}
        for case in CASES:
            rep = reports[case][0]
            since = t_del - (rep["started"] - ctx.t0)
            rate, n = overlap_rate(ctx.result.timelines[case], t_del, t_del + self.tail)
            out[case] = {
                "requests": rep["requests"],
                "failed": rep["requests"] - rep["succeeded"],
                "failed_after_delete": failed_after(rep, since),
                "errors": dict(rep.get("errors") or {}),
                "success_rate_around_delete": rate,
                "requests_around_delete": n,
            }
        ctx.figure("cases", out)
        ctx.bars("failed requests", {case: out[case]["failed"] for case in CASES})

        def errs(case):
            e = out[case]["errors"]
            return ", ".join(f"{k} {v}" for k, v in sorted(e.items(), key=lambda kv: -kv[1])) or "none"

        z, d = out["drain 0s"], out["drain 3s"]
        ctx.verdict(
            self.claims[0],
            f"terminationDrainDuration 0s: {z['failed']} of {z['requests']} requests failed "
            f"(errors: {errs('drain 0s')})",
            z["failed"] >= 1,
            f"{z['failed']} failed",
        )
        ctx.verdict(
            self.claims[1],
            f"terminationDrainDuration 3s: {d['failed']} of {d['requests']} requests failed "
            f"(errors: {errs('drain 3s')})",
            d["failed"] == 0 and z["failed"] > d["failed"],
            f"{d['failed']} failed",
        )
        ctx.note(
            f"the client is outside the mesh (kube-proxy picks a replica per new connection) and keeps "
            f"{self.connections} connections alive, spread over two replicas; one replica is deleted (its "
            f"Deployment scaled to 0) under load. The app container's preStop hook (sleep "
            f"{APP_GRACE}) keeps it serving through its shutdown, so what differs is the proxy: with 0s it exits "
            f"on SIGTERM and the kept-alive connections through it break."
        )
