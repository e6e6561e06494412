"""policy-mistake: an ALLOW policy with an HTTP rule, enforced by ztunnel, fails closed; how to see why, and the fix."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from scenarios import manifests as m
from scenarios.framework import Run, Scenario, ScenarioError

DOCS = "Istio's ambient docs (Layer 4 authorization policy)"
HTTP_MESSAGE = "ztunnel does not support HTTP attributes"
POLICY = "allow-ip-only"
WAYPOINT = "waypoint"


def allow_ip(ns: str, client_sa: str, *, target_service: str | None = None) -> str:
    """ALLOW CLIENT_SA to GET /ip: on the echo pods (selector) or, with TARGET_SERVICE, at its waypoint."""
    spec: dict = {
        "action": "ALLOW",
        "rules": [
            {
                "from": [{"source": {"principals": [f"cluster.local/ns/{ns}/sa/{client_sa}"]}}],
                "to": [{"operation": {"paths": ["/ip"]}}],
            }
        ],
    }
    if target_service:
        spec["targetRefs"] = [{"kind": "Service", "group": "", "name": target_service}]
    else:
        spec["selector"] = {"matchLabels": {"app": "echo"}}
    return json.dumps(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": POLICY, "namespace": ns},
            "spec": spec,
        }
    )


def condition(obj: dict, ctype: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def describe_lines(text: str, policy: str) -> list[str]:
    """The lines of `istioctl x describe pod` about POLICY (its header, enforcement and warnings)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("AuthorizationPolicy "):
            inside = policy in line
        elif line.startswith("---"):
            inside = False
        if inside:
            out.append(line.strip())
    return out


class PolicyMistake(Scenario):
    name = "policy-mistake"
    summary = "an ALLOW policy with a path rule on a pod without a waypoint fails closed; see why; fix it"
    claims = [
        (
            "ztunnel cannot enforce HTTP rules: in an ALLOW policy they are omitted, so it is more restrictive "
            "than requested (all traffic denied)",
            DOCS,
        ),
        (
            "the policy's status says so: ZtunnelAccepted with \"ztunnel does not support HTTP attributes\"",
            "Istio's AuthorizationPolicy status (ambient)",
        ),
        ("istioctl x describe pod and the ztunnel access log show which policy denied", "istioctl; ztunnel"),
        ("the fix: a waypoint and a targetRefs policy enforce the HTTP rule at L7", DOCS),
    ]

    def run(self, ctx: Run) -> None:
        ns = ctx.namespace()
        ctx.apply(m.echo(ns, sa="echo"))
        ctx.apply(m.client(ns, "client", sa="client"))
        echo_pod = ctx.wait_ready(ns, "app=echo", enrolled=True)[0]
        client = ctx.wait_ready(ns, "app=client", enrolled=True)[0]["metadata"]["name"]
        echo = echo_pod["metadata"]["name"]
        url = f"http://echo.{ns}"
        ctx.wait_until(lambda: ctx.curl(client, ns, f"{url}/ip")[0] == 200, 20, "a first answer", 0.2)

        ctx.say("applying an ALLOW policy with paths: [/ip] on the echo pods (no waypoint)")
        ctx.apply(allow_ip(ns, "client"))
        denied = ctx.wait_until(
            lambda: (r := ctx.curl(client, ns, f"{url}/ip?mistake=1"))[0] is None and r, 20, "the policy in force", 0.2
        )
        other = ctx.curl(client, ns, f"{url}/headers?mistake=1")
        ctx.figure("mistake_curl_exit", {"/ip": denied[2], "/headers": other[2]})
        ctx.verdict(
            self.claims[0],
            f"GET /ip (what the policy meant to allow): curl exit {denied[2]}; GET /headers: curl exit {other[2]}",
            denied[2] in (7, 52, 56) and other[2] in (7, 52, 56),
            f"curl exit {denied[2]}",
        )

        cond = ctx.wait_until(
            lambda: condition(ctx.get("AuthorizationPolicy", POLICY, ns), "ZtunnelAccepted"),
            10,
            "the policy's status",
            0.1,
        )
        ctx.figure("status", cond)
        ctx.verdict(
            self.claims[1],
            f"ZtunnelAccepted {cond.get('status')} ({cond.get('reason')}): {cond.get('message', '')[:90]}...",
            HTTP_MESSAGE in cond.get("message", ""),
            cond.get("reason", ""),
        )

        described = subprocess.run(
            [
                sys.executable,
                "-m",
                "lab.cli",
                "--lab",
                ctx.client.name,
                "istioctl",
                "x",
                "describe",
                "pod",
                echo,
                "-n",
                ns,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines = describe_lines(described.stdout, f"{ns}/{POLICY}")
        zt = [
            p for p in ctx.pods("istio-system", "app=ztunnel") if p["spec"]["nodeName"] == echo_pod["spec"]["nodeName"]
        ]
        if not zt:
            raise ScenarioError("no ztunnel on the echo pod's node")

        def denial():
            log = ctx.logs("istio-system", zt[0]["metadata"]["name"])
            return [
                ln
                for ln in log.splitlines()
                if "policy rejection" in ln and f"{ns}/{POLICY}" in ln and f"/ns/{ns}/sa/client" in ln
            ]

        logged = ctx.wait_until(denial, 10, "the ztunnel's denial log line", 0.2)
        ctx.figure("describe", lines)
        ctx.figure("ztunnel_log", logged[-1])
        warned = any(HTTP_MESSAGE in ln for ln in lines)
        ctx.verdict(
            self.claims[2],
            f"describe: \"{next((ln for ln in lines if ln.startswith('Enforcement')), '?')}\" and a Warning "
            f"({'present' if warned else 'absent'}); ztunnel log: "
            f"\"{_excerpt(logged[-1])}\"",
            warned and bool(logged),
            "both point at it",
        )

        ctx.say("the fix: a waypoint for the echo Service, and the policy attached to it with targetRefs")
        ctx.apply(m.waypoint(ns, WAYPOINT))
        ctx.wait_ready(ns, f"gateway.networking.k8s.io/gateway-name={WAYPOINT}")
        ctx.client.call("delete", kind="AuthorizationPolicy", name=POLICY, namespace=ns)
        ctx.apply(m.echo(ns, sa="echo", service_labels={"istio.io/use-waypoint": WAYPOINT}))
        ctx.apply(allow_ip(ns, "client", target_service="echo"))
        fixed = ctx.wait_until(
            lambda: (r := ctx.curl(client, ns, f"{url}/ip"))[0] == 200 and r,
            30,
            "GET /ip allowed through the waypoint",
            0.2,
        )
        headers = ctx.wait_until(
            lambda: (r := ctx.curl(client, ns, f"{url}/headers"))[0] == 403 and r,
            15,
            "GET /headers denied by the waypoint",
            0.2,
        )
        ctx.figure("fixed", {"/ip": fixed[0], "/headers": headers[0], "/headers body": headers[1][:60]})
        ctx.verdict(
            self.claims[3],
            f"GET /ip: HTTP {fixed[0]}; GET /headers: HTTP {headers[0]} \"{headers[1][:40]}\" from the waypoint",
            fixed[0] == 200 and headers[0] == 403,
            f"{fixed[0]} / {headers[0]}",
        )
        ctx.note(
            "the article's model (Istio 1.18-1.21) is the other fix: with a waypoint for the namespace, the "
            "selector policy itself is enforced at the waypoint."
        )


def _excerpt(line: str, keys: tuple[str, ...] = ("error", "policy")) -> str:
    """The `key="value"` pairs of KEYS in an access-log line (the line itself if none)."""
    parts = [f'{k}="{v}"' for k, v in re.findall(r'(\w[\w.]*)="([^"]*)"', line) if k in keys]
    return (" ".join(parts) if parts else line)[:200]
