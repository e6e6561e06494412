"""L4 policy semantics end to end (issue 3): default allow, DENY before ALLOW, the fail-closed ALLOW
with HTTP fields, namespace and root-namespace scope, PeerAuthentication STRICT vs PERMISSIVE."""
from __future__ import annotations

import pytest

from lab.testing import eventually

NS = "pol-tests"
OUTSIDE = "pol-outside"
APPS = f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: server, namespace: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: client-a, namespace: {NS}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: client-b, namespace: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: server, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: server}}}}
  template:
    metadata: {{labels: {{app: server}}}}
    spec:
      serviceAccountName: server
      containers: [{{name: echo, image: ambient-lab/echo, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {NS}}}
spec:
  selector: {{app: server}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client-a, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: client-a}}}}
  template:
    metadata: {{labels: {{app: client-a}}}}
    spec:
      serviceAccountName: client-a
      containers: [{{name: curl, image: curlimages/curl, command: [/bin/sleep, infinity]}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client-b, namespace: {NS}}}
spec:
  selector: {{matchLabels: {{app: client-b}}}}
  template:
    metadata: {{labels: {{app: client-b}}}}
    spec:
      serviceAccountName: client-b
      containers: [{{name: curl, image: curlimages/curl, command: [/bin/sleep, infinity]}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: outsider, namespace: {OUTSIDE}}}
spec:
  selector: {{matchLabels: {{app: outsider}}}}
  template:
    metadata: {{labels: {{app: outsider}}}}
    spec:
      containers: [{{name: curl, image: curlimages/curl, command: [/bin/sleep, infinity]}}]
"""


def policy(name, spec, ns=NS, kind="AuthorizationPolicy"):
    import json
    return json.dumps({"apiVersion": "security.istio.io/v1", "kind": kind,
                       "metadata": {"name": name, "namespace": ns}, "spec": spec})


def principal(sa):
    return f"cluster.local/ns/{NS}/sa/{sa}"


@pytest.fixture(scope="module")
def world(lab):
    lab.install_ambient()
    lab.create_namespace(NS, {"istio.io/dataplane-mode": "ambient"})
    lab.create_namespace(OUTSIDE)
    lab.apply(APPS)
    clients = {}
    for app, ns in (("client-a", NS), ("client-b", NS), ("outsider", OUTSIDE)):
        clients[app] = (lab.wait_ready(ns, f"app={app}")[0]["metadata"]["name"], ns)
    lab.wait_ready(NS, "app=server")
    eventually(lambda: lab.all_enrolled(NS), timeout=30)
    yield lab, clients
    for ns in (NS, OUTSIDE):
        lab.delete_namespace(ns)


def outcome(lab, clients, who):
    pod, ns = clients[who]
    r = lab.exec(pod, ns, ["curl", "-sS", "--max-time", "5", f"http://server.{NS}/"], timeout=15)
    if r.returncode == 0:
        assert "StatusCode=200" in r.stdout
        return "allow"
    assert r.returncode in (7, 52, 56), (r.returncode, r.stderr)  # refused/reset/empty: no HTTP response
    return "deny"


def expect(lab, clients, **want):
    def check():
        got = {who: outcome(lab, clients, who.replace("_", "-")) for who in want}
        return got == want or None
    eventually(check, timeout=20, interval=0.2, what=f"outcomes {want}")


@pytest.fixture
def clean(world):
    lab, clients = world
    yield lab, clients
    for name, ns, kind in (("allow-ab", NS, "AuthorizationPolicy"), ("deny-a", NS, "AuthorizationPolicy"),
                           ("http-only", NS, "AuthorizationPolicy"), ("ns-wide", NS, "AuthorizationPolicy"),
                           ("mesh-deny-a", "istio-system", "AuthorizationPolicy"),
                           ("strict", NS, "PeerAuthentication")):
        lab.client.call("delete", kind=kind, name=name, namespace=ns, ignore_not_found=True)
    expect(lab, clients, client_a="allow", client_b="allow", outsider="allow")


def test_no_policy_means_allow(clean):
    lab, clients = clean
    expect(lab, clients, client_a="allow", client_b="allow", outsider="allow")


def test_deny_wins_over_allow(clean):
    lab, clients = clean
    lab.apply(policy("allow-ab", {"selector": {"matchLabels": {"app": "server"}}, "action": "ALLOW",
                                  "rules": [{"from": [{"source": {"principals": [principal("client-a"),
                                                                                 principal("client-b")]}}]}]}))
    expect(lab, clients, client_a="allow", client_b="allow", outsider="deny")
    lab.apply(policy("deny-a", {"selector": {"matchLabels": {"app": "server"}}, "action": "DENY",
                                "rules": [{"from": [{"source": {"principals": [principal("client-a")]}}]}]}))
    expect(lab, clients, client_a="deny", client_b="allow")


def test_allow_with_http_fields_fails_closed_and_says_why(clean):
    lab, clients = clean
    lab.apply(policy("http-only", {"selector": {"matchLabels": {"app": "server"}}, "action": "ALLOW",
                                   "rules": [{"to": [{"operation": {"paths": ["/ip"]}}]}]}))
    expect(lab, clients, client_a="deny", client_b="deny", outsider="deny")

    def status_message():
        st = lab.get("AuthorizationPolicy", "http-only", NS).get("status", {})
        return " ".join(c.get("message", "") for c in st.get("conditions", []))
    msg = eventually(status_message, timeout=10)
    assert "ztunnel does not support HTTP attributes" in msg


def test_namespace_wide_policy(clean):
    lab, clients = clean
    lab.apply(policy("ns-wide", {"action": "ALLOW",
                                 "rules": [{"from": [{"source": {"principals": [principal("client-b")]}}]}]}))
    expect(lab, clients, client_a="deny", client_b="allow")


def test_root_namespace_policy_applies_everywhere(clean):
    lab, clients = clean
    lab.apply(policy("mesh-deny-a", {"action": "DENY",
                                     "rules": [{"from": [{"source": {"principals": [principal("client-a")]}}]}]},
                     ns="istio-system"))
    expect(lab, clients, client_a="deny", client_b="allow")


def test_strict_refuses_clients_outside_the_mesh(clean):
    lab, clients = clean
    expect(lab, clients, outsider="allow")  # PERMISSIVE by default: plaintext via 15006 is accepted
    lab.apply(policy("strict", {"mtls": {"mode": "STRICT"}}, kind="PeerAuthentication"))
    expect(lab, clients, outsider="deny", client_a="allow", client_b="allow")


@pytest.mark.parametrize("field,value,needle", [
    ("ipBlocks", ["10.0.0.0/33"], "ipBlocks"),
    ("principals", [""], "principals"),
])
def test_invalid_policy_is_refused_with_the_field(world, field, value, needle):
    lab, _ = world
    r = lab.lab("apply", "-f", "-", input=policy("bad", {"rules": [{"from": [{"source": {field: value}}]}]}))
    assert r.returncode == 1 and needle in r.stderr and "\n" not in r.stderr.strip(), r.stderr
    r = lab.lab("apply", "-f", "-", input=policy("bad", {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}))
    assert r.returncode == 1 and "ports" in r.stderr
    assert lab.lab("get", "authorizationpolicy", "bad", "-n", NS).returncode == 1
