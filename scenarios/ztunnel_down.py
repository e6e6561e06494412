"""ztunnel-down: one node loses its ztunnel; its ambient pods fail, the other nodes' do not."""

from __future__ import annotations

import time

from scenarios import manifests as m
from scenarios.framework import Run, Scenario, pct, pod_state, recovery_time, untouched, window_rate

ARTICLE = "the article"
ISTIO = "Istio's ambient docs (ztunnel architecture)"


class ZtunnelDown(Scenario):
    name = "ztunnel-down"
    summary = "delete one node's ztunnel under load: that node's ambient clients fail, the others do not"
    claims = [
        ("ztunnel is a shared resource: a ztunnel failure affects every ambient pod of its node", ARTICLE),
        ("the other nodes' ambient pods are unaffected", ARTICLE),
        ("the DaemonSet brings the ztunnel back and traffic recovers without touching app pods", ISTIO),
    ]
    qps = 10.0
    lead = 2.0  # traffic before the break
    hold = 3.0  # the victim node has no ztunnel this long
    gap = 2.0  # after the victim's ztunnel is back, before the server-side break
    server_hold = 2.0
    tail = 2.0

    def run(self, ctx: Run) -> None:
        workers = ctx.workers(at_least=2)
        server_node, victim = workers[0], workers[-1]
        ns = ctx.namespace()
        ctx.say(f"echo server on {server_node}, a client on each of {', '.join(workers)}; victim: {victim}")
        ctx.apply(m.echo(ns, node=server_node))
        for w in workers:
            ctx.apply(m.client(ns, f"client-{w}", node=w))
        ctx.wait_ready(ns, "app=echo", enrolled=True)
        clients = {w: ctx.wait_ready(ns, f"app=client-{w}", enrolled=True)[0]["metadata"]["name"] for w in workers}
        url = f"http://echo.{ns}/"
        for w, pod in clients.items():
            ctx.wait_until(lambda: ctx.curl(pod, ns, url)[0] == 200, 20, f"a first answer from {w}", 0.2)
        before = pod_state(ctx.pods(ns))

        duration = self.lead + self.hold + 1.0 + self.tail
        ctx.say(f"load: {self.qps:g} qps from each client for {duration:g}s")
        for w, pod in clients.items():
            ctx.load(w, ns, pod, url, qps=self.qps, duration=duration, timeout=2.0)
        time.sleep(self.lead)
        ctx.say(f"deleting the ztunnel of {victim} (held away {self.hold:g}s)")
        out = ctx.outage("istio-system", "app=ztunnel", self.hold, node=victim, label=f"ztunnel {victim} down")
        ctx.say(f"ztunnel of {victim} ready again at {out['ready']:.1f}s")
        reports = ctx.collect()
        after = pod_state(ctx.pods(ns))

        tl = ctx.result.timelines
        during = {w: window_rate(tl[w], out["break"], out["release"]) for w in workers}
        rec = recovery_time(tl[victim], out["release"])
        ready_after = round(out["ready"] - out["release"], 3)
        ctx.figure("victim_node", victim)
        ctx.figure("server_node", server_node)
        ctx.figure("outage", out)
        ctx.figure("during_outage", {w: {"success_rate": r, "requests": n} for w, (r, n) in during.items()})
        ctx.figure("errors", {w: reps[0].get("errors", {}) for w, reps in reports.items()})
        ctx.figure("recovery_s", rec)
        ctx.figure("ztunnel_ready_after_release_s", ready_after)
        ctx.figure("pods_before", before)
        ctx.figure("pods_after", after)

        vr, vn = during[victim]
        errs = reports[victim][0].get("errors", {})
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(errs.items(), key=lambda kv: -kv[1])) or "none"
        ctx.verdict(
            self.claims[0],
            f"clients on {victim} (no server there): {pct(vr)} success while its ztunnel was down "
            f"({vn} requests); errors: {kinds}",
            vr is not None and vr <= 0.05,
            f"{pct(vr)} on {victim}",
        )
        others = {w: during[w] for w in workers if w != victim}
        worst = min((r for r, _ in others.values() if r is not None), default=None)
        ctx.verdict(
            self.claims[1],
            "; ".join(f"{w}: {pct(r)} ({n} requests)" for w, (r, n) in others.items()) + " during the outage",
            worst is not None and worst >= 0.99,
            f"min {pct(worst)}",
        )
        same, how = untouched(before, after)
        ctx.verdict(
            self.claims[2],
            f"new ztunnel Ready {ready_after:.1f}s after the DaemonSet could recreate it; first second back at "
            f"100% {f'{rec:.1f}s' if rec is not None else 'never'} after that; app pods: {how}",
            rec is not None and rec <= 10 and same,
            f"recovery {rec:.1f}s" if rec is not None else "no recovery",
        )

        # The server side, as notes: the server's own node loses its ztunnel.
        time.sleep(0.5)
        duration = 1.0 + self.server_hold + 1.0 + 1.0
        for w, pod in clients.items():
            ctx.load(w, ns, pod, url, qps=self.qps, duration=duration, timeout=2.0)
        time.sleep(1.0)
        ctx.say(f"deleting the ztunnel of the server's node {server_node} ({self.server_hold:g}s)")
        sout = ctx.outage(
            "istio-system", "app=ztunnel", self.server_hold, node=server_node, label=f"ztunnel {server_node} down"
        )
        sreports = ctx.collect()
        sr = {w: window_rate(tl[w], sout["break"], sout["release"]) for w in workers}
        ctx.figure("server_outage", sout)
        ctx.figure("during_server_outage", {w: {"success_rate": r, "requests": n} for w, (r, n) in sr.items()})
        ctx.figure("server_outage_errors", {w: reps[0].get("errors", {}) for w, reps in sreports.items()})
        ctx.note(
            f"server side: with the ztunnel of the server's node ({server_node}) down for "
            f"{self.server_hold:g}s, every client failed to reach it: "
            + ", ".join(f"{w} {pct(r)}" for w, (r, _) in sr.items())
            + " (inbound HBONE to the server ends at its node's ztunnel; the server's own client also "
            "loses its outbound path). That is why the victim node above hosts clients only."
        )
        ctx.note(
            f"the lab's DaemonSet recreates a ztunnel in well under a second; the scenario keeps the "
            f"victim node without one for {self.hold:g}s (deleting each replacement, as a crash-looping "
            f"ztunnel would) so the outage covers whole seconds of the per-second timeline."
        )
