"""istiod-down: the control plane goes away; the data plane keeps what it has, and nothing new."""

from __future__ import annotations

import json
import time

from scenarios import manifests as m
from scenarios.framework import Run, Scenario, ScenarioError, mesh_ready, pct, window_rate

ISTIO = "Istio's ambient docs (ztunnel and istiod: certificates and config are cached)"
MESH_NS = "istio-system"


def policy(ns: str, name: str, app: str, principal: str) -> str:
    """An L4 DENY for one principal, on the pods labelled app=APP."""
    return json.dumps(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": app}},
                "action": "DENY",
                "rules": [{"from": [{"source": {"principals": [principal]}}]}],
            },
        }
    )


class IstiodDown(Scenario):
    name = "istiod-down"
    summary = "scale istiod to 0 under load: existing traffic flows, a new pod and a new policy wait for istiod"
    claims = [
        ("existing traffic keeps flowing while istiod is down (cached certificates and config)", ISTIO),
        ("a new ambient pod starts, but its connections fail until istiod is back", ISTIO),
        ("a policy applied while istiod is down takes effect only once istiod is back", ISTIO),
        ("scaling istiod back to 1 recovers everything", ISTIO),
    ]
    qps = 10.0
    down_for = 3.0  # istiod stays at 0 replicas this long after it is gone (plus the checks)

    def run(self, ctx: Run) -> None:
        deploy = ctx.get("Deployment", "istiod", MESH_NS)
        replicas = int(deploy["spec"].get("replicas", 1) or 1)
        ns = ctx.namespace()
        ctx.apply(m.echo(ns))
        ctx.apply(m.client(ns, "client"))
        ctx.apply(m.client(ns, "probe", sa="probe"))
        for app in ("echo", "client", "probe"):
            ctx.wait_ready(ns, f"app={app}", enrolled=True)
        client, probe = ctx.pod_names(ns, "app=client")[0], ctx.pod_names(ns, "app=probe")[0]
        url = f"http://echo.{ns}/"
        for pod in (client, probe):
            ctx.wait_until(lambda: ctx.curl(pod, ns, url)[0] == 200, 20, f"a first answer from {pod}", 0.2)

        duration = 1.0 + self.down_for + 4.0
        ctx.load("existing client", ns, client, url, qps=self.qps, duration=duration)
        time.sleep(1.0)

        ctx.say("scaling istiod to 0")
        ctx.undo(f"scale istiod back to {replicas}", lambda: self._restore(ctx, replicas))
        t_down = ctx.event("istiod scaled to 0")
        ctx.scale("Deployment", "istiod", MESH_NS, 0)
        ctx.wait_until(lambda: not ctx.get("Pod", None, MESH_NS, "app=istiod")["items"], 30, "istiod gone", 0.05)
        t_gone = ctx.now()

        ctx.say("a new client pod, and a DENY policy for the probe, while istiod is down")
        ctx.apply(m.client(ns, "late"))
        late_pod = ctx.wait_ready(ns, "app=late", enrolled=True, timeout=30)[0]
        late = late_pod["metadata"]["name"]
        ctx.apply(policy(ns, "deny-probe", "echo", f"cluster.local/ns/{ns}/sa/probe"))
        t_policy = ctx.now()
        late_down = ctx.curl(late, ns, url, max_time=2.0)
        probe_down = ctx.curl(probe, ns, url, max_time=2.0)
        time.sleep(max(0.0, t_gone + self.down_for - ctx.now()))
        late_again = ctx.curl(late, ns, url, max_time=2.0)
        probe_again = ctx.curl(probe, ns, url, max_time=2.0)

        ctx.say(f"scaling istiod back to {replicas}")
        t_up = ctx.event("istiod scaled back")
        ctx.scale("Deployment", "istiod", MESH_NS, replicas)
        ctx.wait_until(
            lambda: [
                p
                for p in ctx.get("Pod", None, MESH_NS, "app=istiod")["items"]
                if any(
                    c.get("type") == "Ready" and c.get("status") == "True"
                    for c in p.get("status", {}).get("conditions", [])
                )
            ],
            60,
            "istiod ready",
            0.05,
        )
        t_ready = ctx.now()
        ctx.wait_until(lambda: ctx.curl(late, ns, url, max_time=1.0)[0] == 200, 30, "the new pod's traffic", 0.1)
        t_late_ok = ctx.now()
        ctx.wait_until(lambda: ctx.curl(probe, ns, url, max_time=1.0)[0] is None, 30, "the policy in force", 0.1)
        t_policy_on = ctx.now()
        ctx.collect()
        rate, n = window_rate(ctx.result.timelines["existing client"], t_down, t_up)

        ctx.figure("istiod_down_at", round(t_down, 3))
        ctx.figure("istiod_gone_at", round(t_gone, 3))
        ctx.figure("istiod_up_at", round(t_up, 3))
        ctx.figure("istiod_ready_at", round(t_ready, 3))
        ctx.figure("existing_during_outage", {"success_rate": rate, "requests": n})
        ctx.figure(
            "late_pod",
            {
                "ready_while_down": True,
                "enrolled": True,
                "curl_exit_while_down": [late_down[2], late_again[2]],
                "ok_after_istiod_ready_s": round(t_late_ok - t_ready, 3),
            },
        )
        ctx.figure(
            "policy",
            {
                "applied_at": round(t_policy, 3),
                "probe_status_while_down": [probe_down[0], probe_again[0]],
                "in_force_after_istiod_ready_s": round(t_policy_on - t_ready, 3),
            },
        )

        ctx.verdict(
            self.claims[0],
            f"the existing client: {pct(rate)} of {n} requests while istiod was at 0",
            rate is not None and rate >= 0.99,
            pct(rate),
        )
        late_failed = late_down[0] is None and late_again[0] is None
        ctx.verdict(
            self.claims[1],
            f"new pod Ready and enrolled without istiod; its requests failed (curl exit {late_down[2]}, "
            f"{late_again[2]}); answered {t_late_ok - t_ready:.1f}s after istiod was Ready",
            late_failed,
            f"curl exit {late_down[2]}",
        )
        ctx.verdict(
            self.claims[2],
            f"DENY for the probe applied with istiod down: probe still got HTTP {probe_down[0]}, "
            f"{probe_again[0]}; denied {t_policy_on - t_ready:.1f}s after istiod was Ready",
            probe_down[0] == 200 and probe_again[0] == 200,
            "late by design",
        )
        ctx.verdict(
            self.claims[3],
            f"istiod Ready {t_ready - t_up:.1f}s after scaling back; new pod and policy in force "
            f"{max(t_late_ok, t_policy_on) - t_up:.1f}s after",
            max(t_late_ok, t_policy_on) - t_up <= 30,
            f"{max(t_late_ok, t_policy_on) - t_up:.1f}s",
        )
        ctx.note(
            "the new pod's ztunnel has no workload entry and cannot get a certificate for it while istiod "
            "is away; the pods that were there keep their cached certificates (24h) and config."
        )
        ctx.note(
            "the wait after istiod is Ready comes from the ztunnels' reconnect backoff (10 ms doubling, up to "
            "15 s): the longer istiod is away, the longer new pods and new policies wait after it returns."
        )

    @staticmethod
    def _restore(ctx: Run, replicas: int) -> None:
        ctx.scale("Deployment", "istiod", MESH_NS, replicas)
        ctx.wait_until(lambda: not mesh_ready(ctx.client), 90, "the mesh ready again", 0.1)
        if mesh_ready(ctx.client):
            raise ScenarioError("mesh not ready after restoring istiod")
