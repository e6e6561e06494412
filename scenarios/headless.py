"""headless: a Service without a ClusterIP in ambient: DNS gives pod IPs, HBONE and L4 policy still apply."""

from __future__ import annotations

import json
import re
import sys

from scenarios import manifests as m
from scenarios.framework import Run, Scenario, ScenarioError

K8S = "Kubernetes' DNS for Services and Pods (headless Services)"
ISTIO = "Istio's ambient docs (ztunnel captures all TCP of an ambient pod)"
RESOLVE = (
    "import socket, sys, json; "
    "print(json.dumps(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 8080, socket.AF_INET, "
    "socket.SOCK_STREAM)})))"
)


def allow_from(ns: str, sa: str) -> str:
    return json.dumps(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "allow-friend", "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": "echo"}},
                "action": "ALLOW",
                "rules": [{"from": [{"source": {"principals": [f"cluster.local/ns/{ns}/sa/{sa}"]}}]}],
            },
        }
    )


def log_fields(line: str) -> dict[str, str]:
    """key=value and key="value" pairs of a ztunnel access-log line."""
    return {k: (q if q else v) for k, q, v in re.findall(r'([\w.]+)=(?:"([^"]*)"|(\S+))', line)}


class Headless(Scenario):
    name = "headless"
    summary = "a headless Service in ambient: DNS returns pod IPs, traffic is HBONE with identity, L4 policy applies"
    claims = [
        ("a headless Service (clusterIP: None) resolves to the A records of its pods", K8S),
        ("traffic to those pod IPs is captured: HBONE with the client's identity", ISTIO),
        ("an L4 policy by principal allows and denies without any ClusterIP", ISTIO),
    ]

    def run(self, ctx: Run) -> None:
        ns = ctx.namespace()
        ctx.apply(m.echo(ns, sa="echo", replicas=2, port=8080, headless=True))
        ctx.apply(m.client(ns, "friend", sa="friend"))
        ctx.apply(m.client(ns, "stranger", sa="stranger"))
        pods = ctx.wait_ready(ns, "app=echo", count=2, enrolled=True)
        friend = ctx.wait_ready(ns, "app=friend", enrolled=True)[0]["metadata"]["name"]
        stranger = ctx.wait_ready(ns, "app=stranger", enrolled=True)[0]["metadata"]["name"]
        svc = ctx.get("Service", "echo", ns)
        pod_ips = sorted(p["status"]["podIP"] for p in pods)
        host = f"echo.{ns}.svc.cluster.local"

        def resolved():
            r = ctx.exec(friend, ns, [sys.executable, "-c", RESOLVE, host], timeout=10)
            return r.returncode == 0 and json.loads(r.stdout) == pod_ips and json.loads(r.stdout)

        answer = ctx.wait_until(resolved, 15, "DNS answers with both pod IPs", 0.2)
        ctx.figure("cluster_ip", svc["spec"].get("clusterIP"))
        ctx.figure("pod_ips", pod_ips)
        ctx.figure("dns_answer", answer)
        ctx.verdict(
            self.claims[0],
            f"clusterIP {svc['spec'].get('clusterIP')}; {host} -> {', '.join(answer)} (the pods: {', '.join(pod_ips)})",
            svc["spec"].get("clusterIP") in ("None", None) and answer == pod_ips,
            f"{len(answer)} A records",
        )

        url = f"http://echo.{ns}:8080/"
        ctx.wait_until(lambda: ctx.curl(friend, ns, url)[0] == 200, 20, "a first answer", 0.2)
        for _ in range(6):  # both pods answer (the client picks an address per connection)
            ctx.curl(friend, ns, url)
        friend_id = f"spiffe://cluster.local/ns/{ns}/sa/friend"
        nodes = {p["spec"]["nodeName"] for p in pods}
        zts = [p for p in ctx.pods("istio-system", "app=ztunnel") if p["spec"]["nodeName"] in nodes]

        def inbound():
            lines = []
            for zt in zts:
                for ln in ctx.logs("istio-system", zt["metadata"]["name"]).splitlines():
                    f = log_fields(ln)
                    if (
                        f.get("direction") == "inbound"
                        and f.get("src.identity") == friend_id
                        and f.get("dst.namespace") == ns
                    ):
                        lines.append(f)
            return lines

        lines = ctx.wait_until(inbound, 10, "the destination ztunnel's inbound log", 0.2)
        hbone = [
            f
            for f in lines
            if f.get("dst.hbone_addr", "").split(":")[0] in pod_ips or f.get("dst.addr", "").split(":")[0] in pod_ips
        ]
        ctx.figure("inbound_log", lines[-1])
        ctx.verdict(
            self.claims[1],
            f"destination ztunnel logs inbound HBONE from {lines[-1].get('src.identity')} to "
            f"{lines[-1].get('dst.hbone_addr') or lines[-1].get('dst.addr')} ({len(hbone)} connections "
            f"to pod IPs)",
            bool(hbone),
            f"{len(hbone)} HBONE connections",
        )

        ctx.say("an ALLOW policy for the friend's principal on the echo pods")
        ctx.apply(allow_from(ns, "friend"))
        blocked = ctx.wait_until(
            lambda: (r := ctx.curl(stranger, ns, url))[0] is None and r, 20, "the stranger denied", 0.2
        )
        friend_codes = [ctx.curl(friend, ns, url)[0] for _ in range(4)]
        ctx.figure("policy", {"friend": friend_codes, "stranger_curl_exit": blocked[2]})
        if not friend_codes:
            raise ScenarioError("no answer from the friend")
        ctx.verdict(
            self.claims[2],
            f"friend (sa friend): HTTP {', '.join(str(c) for c in friend_codes)}; stranger (sa stranger): "
            f"curl exit {blocked[2]}",
            all(c == 200 for c in friend_codes) and blocked[2] in (7, 52, 56),
            f"allowed {friend_codes.count(200)}/{len(friend_codes)}, denied",
        )
