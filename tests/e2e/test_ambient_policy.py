"""L4 policy semantics end to end (issue 3): default allow, DENY before ALLOW, the fail-closed ALLOW
with HTTP fields, namespace and root-namespace scope, PeerAuthentication STRICT vs PERMISSIVE."""

from __future__ import annotations

import pytest

from lab.testing import eventually, manifest
from tests.conftest import curl_client, deployment, echo_container, policy, service, service_account
from tests.e2e.conftest import AMBIENT, app_namespaces

NS = "pol-tests"
OUTSIDE = "pol-outside"
CLIENTS = ("client-a", "client-b")
APPS = [
    *(service_account(sa, NS) for sa in ("server", *CLIENTS)),
    deployment("server", NS, echo_container(), sa="server"),
    service("server", NS, ("http", 80, 8080)),
    *(curl_client(NS, c, sa=c) for c in CLIENTS),
    curl_client(OUTSIDE, "outsider"),
]


def principal(sa):
    return f"cluster.local/ns/{NS}/sa/{sa}"


def from_principals(*sas: str) -> list[dict]:
    return [{"from": [{"source": {"principals": [principal(sa) for sa in sas]}}]}]


@pytest.fixture(scope="module")
def world(lab):
    ready = ((NS, "client-a"), (NS, "client-b"), (OUTSIDE, "outsider"), (NS, "server"))
    with app_namespaces(lab, {NS: AMBIENT, OUTSIDE: None}, APPS, ready=ready, mesh=True) as pods:
        yield lab, {app: (p["metadata"]["name"], p["metadata"]["namespace"]) for app, p in pods.items()}


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


SERVER = {"selector": {"matchLabels": {"app": "server"}}}
MADE = (
    ("allow-ab", NS, "AuthorizationPolicy"),
    ("deny-a", NS, "AuthorizationPolicy"),
    ("http-only", NS, "AuthorizationPolicy"),
    ("ns-wide", NS, "AuthorizationPolicy"),
    ("mesh-deny-a", "istio-system", "AuthorizationPolicy"),
    ("strict", NS, "PeerAuthentication"),
)


@pytest.fixture
def clean(world):
    """The world, with every policy a test made removed after it (and all allowed again)."""
    lab, clients = world
    yield lab, clients
    for name, ns, kind in MADE:
        lab.client.call("delete", kind=kind, name=name, namespace=ns, ignore_not_found=True)
    expect(lab, clients, client_a="allow", client_b="allow", outsider="allow")


def test_no_policy_means_allow(clean):
    lab, clients = clean
    expect(lab, clients, client_a="allow", client_b="allow", outsider="allow")


def test_deny_wins_over_allow(clean):
    lab, clients = clean
    lab.apply(policy("allow-ab", NS, {**SERVER, "action": "ALLOW", "rules": from_principals(*CLIENTS)}))
    expect(lab, clients, client_a="allow", client_b="allow", outsider="deny")
    lab.apply(policy("deny-a", NS, {**SERVER, "action": "DENY", "rules": from_principals("client-a")}))
    expect(lab, clients, client_a="deny", client_b="allow")


def test_allow_with_http_fields_fails_closed_and_says_why(clean):
    lab, clients = clean
    lab.apply(
        policy("http-only", NS, {**SERVER, "action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/ip"]}}]}]})
    )
    expect(lab, clients, client_a="deny", client_b="deny", outsider="deny")

    def status_message():
        st = lab.get("AuthorizationPolicy", "http-only", NS).get("status", {})
        return " ".join(c.get("message", "") for c in st.get("conditions", []))

    msg = eventually(status_message, timeout=10)
    assert "ztunnel does not support HTTP attributes" in msg


@pytest.mark.parametrize(
    "name, ns, action, sa",
    [
        ("ns-wide", NS, "ALLOW", "client-b"),  # the namespace's own, for all its workloads
        ("mesh-deny-a", "istio-system", "DENY", "client-a"),  # the root namespace's: every namespace's
    ],
)
def test_policies_without_a_selector(clean, name, ns, action, sa):
    lab, clients = clean
    lab.apply(policy(name, ns, {"action": action, "rules": from_principals(sa)}))
    expect(lab, clients, client_a="deny", client_b="allow")


def test_strict_refuses_clients_outside_the_mesh(clean):
    lab, clients = clean
    expect(lab, clients, outsider="allow")  # PERMISSIVE by default: plaintext via 15006 is accepted
    lab.apply(policy("strict", NS, {"mtls": {"mode": "STRICT"}}, kind="PeerAuthentication"))
    expect(lab, clients, outsider="deny", client_a="allow", client_b="allow")


@pytest.mark.parametrize(
    "field,value,needle", [("ipBlocks", ["10.0.0.0/33"], "ipBlocks"), ("principals", [""], "principals")]
)
def test_invalid_policy_is_refused_with_the_field(world, field, value, needle):
    lab, _ = world

    def apply(rule):
        return lab.lab("apply", "-f", "-", input=manifest(policy("bad", NS, {"rules": [rule]})))

    r = apply({"from": [{"source": {field: value}}]})
    assert r.returncode == 1 and needle in r.stderr and "\n" not in r.stderr.strip(), r.stderr
    r = apply({"to": [{"operation": {"ports": ["http"]}}]})
    assert r.returncode == 1 and "ports" in r.stderr
    assert lab.lab("get", "authorizationpolicy", "bad", "-n", NS).returncode == 1
