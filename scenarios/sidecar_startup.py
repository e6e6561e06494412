"""sidecar-startup-race: an app that calls out once as it starts. With a sidecar it races its proxy
(and loses); `holdApplicationUntilProxyStarts` makes it wait; in ambient there is nothing to wait for."""

from __future__ import annotations

import json
import re

from scenarios import manifests as m
from scenarios.framework import Run, Scenario
from scenarios.headless import log_fields

ISTIO = "Istio's docs: holdApplicationUntilProxyStarts (ProxyConfig); the ambient overview"
ARTICLE = "the article"
HOLD = json.dumps({"holdApplicationUntilProxyStarts": True})
RESULT = re.compile(r"status=(\d{3}) exit=(\d+)")
CASES = ("sidecar", "sidecar + hold", "ambient")


def call_once(url: str) -> list[str]:
    """The app's command: one request at start, its HTTP status and curl's exit code on one log
    line (`status=200 exit=0`), then it idles."""
    return [
        "/bin/sh",
        "-c",
        f"curl -sS -o /dev/null -w 'status=%{{http_code}}' --max-time 3 {url}; echo \" exit=$?\"; exec sleep 3650d",
    ]


def parse_result(log: str) -> tuple[int, int] | None:
    """(HTTP status, curl exit code) from the app's log; None before it has called."""
    found = RESULT.search(log or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def failures(results: dict[str, tuple[int, int] | None]) -> int:
    """Pods whose start-up call did not get a 200 (a pod without a result counts as failed)."""
    return sum(1 for r in results.values() if r is None or r[0] != 200 or r[1] != 0)


def app_deployment(ns: str, url: str, replicas: int, annotations: dict | None = None) -> str:
    dep = m.deployment(
        ns, "app", [{"name": "app", "image": m.CLIENT_IMAGE, "command": call_once(url)}], replicas=replicas
    )
    if annotations:
        dep["spec"]["template"]["metadata"]["annotations"] = dict(annotations)
    return m._dump(dep)


class SidecarStartupRace(Scenario):
    name = "sidecar-startup-race"
    summary = "an app calls out once at start: sidecar (races its proxy), sidecar + hold, ambient"
    claims = [
        ("an app that calls out at start fails while its sidecar is not ready yet", ISTIO),
        ("holdApplicationUntilProxyStarts: the app starts once its proxy is ready, and its call succeeds", ISTIO),
        ("ambient needs nothing of the kind: the pod is captured before the app starts", ARTICLE),
    ]
    replicas = 5

    def run(self, ctx: Run) -> None:
        server = ctx.namespace("server", ambient=False)
        ctx.apply(m.echo(server))
        url = f"http://echo.{server}/"
        spaces = {
            "sidecar": ctx.namespace("sidecar", ambient=False, labels={"istio-injection": "enabled"}),
            "sidecar + hold": ctx.namespace("hold", ambient=False, labels={"istio-injection": "enabled"}),
            "ambient": ctx.namespace("ambient"),
        }
        ctx.wait_ready(server, "app=echo")
        k = self.replicas
        ctx.say(f"{k} pods per case, each calling {url} once as it starts")
        ctx.apply(app_deployment(spaces["sidecar"], url, k))
        ctx.apply(app_deployment(spaces["sidecar + hold"], url, k, {"proxy.istio.io/config": HOLD}))
        ctx.apply(app_deployment(spaces["ambient"], url, k))

        def results(case: str) -> dict[str, tuple[int, int] | None]:
            out = {}
            for p in ctx.pods(spaces[case], "app=app"):
                try:
                    out[p["metadata"]["name"]] = parse_result(ctx.logs(spaces[case], p["metadata"]["name"], "app"))
                except Exception:  # noqa: BLE001 - no log yet
                    out[p["metadata"]["name"]] = None
            return out

        got: dict[str, dict] = {}
        for case in CASES:
            got[case] = ctx.wait_until(
                lambda: (r := results(case)) and len(r) == k and all(r.values()) and r,
                90,
                f"the {case} pods' start-up calls",
            )
        ambient_pods = ctx.pods(spaces["ambient"], "app=app")
        seen = self._in_ztunnel_logs(ctx, ambient_pods, spaces["ambient"])

        counts = {case: failures(got[case]) for case in CASES}
        ctx.figure("replicas", k)
        ctx.figure(
            "results",
            {
                case: {pod: {"status": r[0], "curl_exit": r[1]} if r else None for pod, r in got[case].items()}
                for case in CASES
            },
        )
        ctx.figure("failed", counts)
        ctx.figure("ambient_calls_in_ztunnel_log", seen)
        ctx.bars("start-up calls failed (of %d)" % k, {case: counts[case] for case in CASES})

        def how(case: str) -> str:
            exits: dict[int, int] = {}
            for r in got[case].values():
                exits[r[1]] = exits.get(r[1], 0) + 1
            return ", ".join(f"curl exit {e}: {n}" for e, n in sorted(exits.items()))

        ctx.verdict(
            self.claims[0],
            f"{counts['sidecar']} of {k} pods' calls failed ({how('sidecar')}): the app "
            f"container starts first and its traffic is already redirected to a proxy "
            f"that is not listening yet",
            counts["sidecar"] >= 1,
            f"{counts['sidecar']}/{k} failed",
        )
        ctx.verdict(
            self.claims[1],
            f"{counts['sidecar + hold']} of {k} failed ({how('sidecar + hold')}) with proxy.istio.io/config {HOLD}",
            counts["sidecar + hold"] == 0,
            f"{counts['sidecar + hold']}/{k} failed",
        )
        ctx.verdict(
            self.claims[2],
            f"{counts['ambient']} of {k} failed ({how('ambient')}); {seen} of {k} calls "
            f"went through their node's ztunnel (its access log shows them)"
            + (
                ""
                if seen == k
                else f"; the other {k - seen} left before the pod was captured: uncaptured "
                f"(before istio-cni wrote the pod's rules) or refused (rules written, "
                f"ztunnel not listening in the pod yet)"
            ),
            counts["ambient"] == 0 and seen == k,
            f"{counts['ambient']}/{k} failed, {seen}/{k} via ztunnel",
        )
        ctx.note(
            "the app writes `status=<HTTP status> exit=<curl exit>` to its log (`lab logs POD -c app`); curl "
            "exit 7 is 'connection refused' (the redirect to port 15001 with no proxy behind it yet). The "
            "server is outside the mesh so that only the client side differs."
        )

    @staticmethod
    def _in_ztunnel_logs(ctx: Run, pods: list[dict], ns: str) -> int:
        """How many of PODS have an outbound connection in their node's ztunnel log."""
        logs: dict[str, str] = {}
        for z in ctx.pods("istio-system", "app=ztunnel"):
            logs[z["spec"]["nodeName"]] = ctx.logs("istio-system", z["metadata"]["name"])
        n = 0
        for p in pods:
            name = p["metadata"]["name"]
            text = logs.get(p["spec"].get("nodeName", ""), "")
            if any(
                f.get("src.workload") == name and f.get("src.namespace") == ns and f.get("direction") == "outbound"
                for f in (log_fields(ln) for ln in text.splitlines() if "connection complete" in ln)
            ):
                n += 1
        return n
