"""waypoint-down: a waypoint's only pod goes away; only the service it serves fails; two replicas hold."""

from __future__ import annotations

import time

from scenarios import manifests as m
from scenarios.framework import Run, Scenario, ScenarioError, pct, recovery_time, window_rate

ARTICLE = "the article"
ISTIO = "Istio's waypoint docs (scaling waypoints)"
WAYPOINT = "waypoint"
WP_SELECTOR = f"gateway.networking.k8s.io/gateway-name={WAYPOINT}"


def echo_peer(body: str) -> str | None:
    """The `IP=` line of the echo app's answer: the TCP peer that reached it."""
    for line in body.splitlines():
        if line.startswith("IP="):
            return line[3:].strip()
    return None


class WaypointDown(Scenario):
    name = "waypoint-down"
    summary = "delete a waypoint's only pod under load: only the service it serves fails; with 2 replicas none"
    claims = [
        ("a waypoint failure affects only L7 traffic to the workloads it serves", ARTICLE),
        ("traffic the waypoint does not serve is unaffected", ARTICLE),
        ("scale the waypoint to 2+ replicas: losing one keeps traffic flowing", ARTICLE + "; " + ISTIO),
    ]
    qps = 10.0
    lead = 1.5
    hold = 4.0  # the waypoint drains for 2s on SIGTERM; the outage proper follows
    drain = 2.0  # TERMINATION_DRAIN_DURATION_SECONDS of the lab's proxy
    tail = 2.0

    def run(self, ctx: Run) -> None:
        ns = ctx.namespace()
        ctx.say("two echo services (one labelled istio.io/use-waypoint), a waypoint, a client")
        ctx.apply(m.waypoint(ns, WAYPOINT))
        ctx.apply(m.echo(ns, "served", service_labels={"istio.io/use-waypoint": WAYPOINT}))
        ctx.apply(m.echo(ns, "plain"))
        ctx.apply(m.client(ns, "client"))
        for app in ("served", "plain", "client"):
            ctx.wait_ready(ns, f"app={app}", enrolled=True)
        client = ctx.pod_names(ns, "app=client")[0]
        wp = ctx.wait_ready(ns, WP_SELECTOR)
        wp_ips = {p["status"]["podIP"] for p in wp}
        served, plain = f"http://served.{ns}/", f"http://plain.{ns}/"

        def through_waypoint():
            status, body, _ = ctx.curl(client, ns, served)
            return status == 200 and echo_peer(body) in wp_ips

        ctx.wait_until(through_waypoint, 30, "traffic to served through the waypoint", 0.2)
        status, body, _ = ctx.curl(client, ns, plain)
        if status != 200:
            raise ScenarioError(f"plain service does not answer ({status})")
        ctx.figure("plain_peer_is_client", echo_peer(body) == ctx.pods(ns, "app=client")[0]["status"]["podIP"])

        # Phase 1: the only replica goes away.
        duration = self.lead + self.hold + 1.0 + self.tail
        ctx.say(f"load: {self.qps:g} qps to each service for {duration:g}s")
        ctx.load("served (waypoint, 1 replica)", ns, client, served, qps=self.qps, duration=duration)
        ctx.load("plain (no waypoint)", ns, client, plain, qps=self.qps, duration=duration)
        time.sleep(self.lead)
        ctx.say(f"deleting the waypoint's only pod (replacement held away {self.hold:g}s)")
        out = ctx.outage(ns, WP_SELECTOR, self.hold, label="waypoint pod deleted")
        reports = ctx.collect()
        tl = ctx.result.timelines
        start = out["break"] + self.drain
        sr, sn = window_rate(tl["served (waypoint, 1 replica)"], start, out["release"])
        pr, pn = window_rate(tl["plain (no waypoint)"], out["break"], out["release"])
        plain_all = reports["plain (no waypoint)"][0]
        rec = recovery_time(tl["served (waypoint, 1 replica)"], out["release"])
        ctx.figure("outage", out)
        ctx.figure("served_during_outage", {"success_rate": sr, "requests": sn})
        ctx.figure("plain_during_outage", {"success_rate": pr, "requests": pn})
        ctx.figure("plain_success_rate", plain_all.get("success_rate"))
        ctx.figure("served_errors", reports["served (waypoint, 1 replica)"][0].get("errors", {}))
        ctx.figure("served_recovery_s", rec)
        errs = reports["served (waypoint, 1 replica)"][0].get("errors", {})
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(errs.items(), key=lambda kv: -kv[1])) or "none"
        ctx.verdict(
            self.claims[0],
            f"service with the waypoint: {pct(sr)} success with no waypoint pod ({sn} requests, after its "
            f"{self.drain:g}s drain); errors: {kinds}; back {rec if rec is None else f'{rec:.1f}s'} after "
            f"a new pod could start",
            sr is not None and sr <= 0.05,
            f"{pct(sr)} served",
        )
        ctx.verdict(
            self.claims[1],
            f"service without a waypoint, same client and nodes: {pct(pr)} during the outage ({pn} requests), "
            f"{pct(plain_all.get('success_rate'))} over the run",
            pr is not None and pr >= 0.99 and plain_all.get("success_rate", 0) >= 0.99,
            f"{pct(pr)} plain",
        )

        # Phase 2: two replicas, one deleted.
        ctx.say("scaling the waypoint to 2 replicas")
        ctx.scale("Deployment", WAYPOINT, ns, 2)
        ctx.undo("scale the waypoint back to 1", lambda: ctx.scale("Deployment", WAYPOINT, ns, 1))
        wp = ctx.wait_ready(ns, WP_SELECTOR, count=2)
        wp_ips = {p["status"]["podIP"] for p in wp}
        seen: set[str] = set()

        def both_serving():
            status, body, _ = ctx.curl(client, ns, served)
            if status == 200 and echo_peer(body) in wp_ips:
                seen.add(echo_peer(body))
            return seen == wp_ips

        ctx.wait_until(both_serving, 30, "both waypoint replicas serving", 0.05)
        duration = self.lead + self.hold + 1.0
        group = "served (waypoint, 2 replicas)"
        ctx.load(group, ns, client, served, qps=2 * self.qps, duration=duration)
        time.sleep(self.lead)
        victim = sorted(p["metadata"]["name"] for p in wp)[0]
        ctx.say(f"deleting one of the two waypoint pods ({victim}; its replacement held away {self.hold:g}s)")
        out2 = ctx.outage(ns, WP_SELECTOR, self.hold, pod=victim, label="1 of 2 waypoint pods deleted")
        rep2 = ctx.collect()[group][0]
        ctx.figure("two_replicas_outage", out2)
        ctx.figure("two_replicas_success_rate", rep2.get("success_rate"))
        ctx.figure("two_replicas_requests", rep2.get("requests"))
        ctx.figure("two_replicas_errors", rep2.get("errors", {}))
        errs2 = ", ".join(f"{k} {v}" for k, v in sorted(rep2.get("errors", {}).items(), key=lambda kv: -kv[1]))
        ctx.verdict(
            self.claims[2],
            f"2 replicas, one deleted: {pct(rep2.get('success_rate'))} of {rep2.get('requests')} requests "
            f"succeeded{f' (errors: {errs2})' if errs2 else ''}; istiod drops the terminating pod, which "
            f"drains {self.drain:g}s",
            rep2.get("success_rate", 0) >= 0.99,
            f"{pct(rep2.get('success_rate'))} with 2",
        )
        ctx.note(
            f"the deleted waypoint drains for {self.drain:g}s (TERMINATION_DRAIN_DURATION_SECONDS): kept-alive "
            "connections still pass through it meanwhile, so the outage is measured from the end of the "
            f"drain to the moment the Deployment may recreate the pod ({self.hold:g}s after the delete)."
        )
        ctx.note(
            "with one replica the served service fails closed (resets): ztunnel does not send its traffic "
            "around the missing waypoint. With two, a request can still be lost when the deleted replica "
            "exits at the end of its drain while a kept-alive connection through it is idle."
        )
