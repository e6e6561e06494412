"""The article's Layer 1 (ambient L4) through kubectl: a namespace labelled for ambient, the
article's httpbin, sleep and rogue client, sleep → httpbin over the mesh, then the article's L4
AuthorizationPolicy: sleep still allowed, the rogue client refused at once (a reset: curl exit 56).

Runs on the session's lab, or on any cluster with Istio ambient (`pytest --kubeconfig FILE`); the
packet capture needs the lab and is skipped elsewhere."""

from __future__ import annotations

import threading

import pytest

from tests.portable.kube import (
    AMBIENT,
    REDIRECTION,
    all_enrolled,
    article,
    curl,
    eventually,
    namespaces,
    node_of,
    ok,
    pods,
    ready,
    ztunnel_log,
)

NS = "portable-l4"
RENAME = {"ambient-apps": NS}
URL = f"http://httpbin-ambient.{NS}:8000"
APPS = ("httpbin-ambient", "sleep-ambient", "rogue-client")  # each from topologies/article/<app>.yaml
REFUSED = (56, 7)  # curl: reset while receiving (56), or before its own connect check (7)


@pytest.fixture(scope="module")
def apps(mesh):
    """The article's workloads in NS, labelled for ambient before they start."""
    with namespaces(mesh, {NS: AMBIENT}):
        for name in APPS:
            ok(mesh, "apply", "-f", "-", input=article(f"{name}.yaml", RENAME))
        ready(mesh, NS, *APPS)
        eventually(lambda: all_enrolled(mesh, NS), what=f"every pod of {NS} enrolled")
        eventually(lambda: curl(mesh, NS, "sleep-ambient", f"{URL}/get").status == 200, what="sleep reaches httpbin")
        yield mesh


def test_pods_are_enrolled_without_a_sidecar(apps):
    for pod in pods(apps, NS):
        assert pod.metadata.annotations[REDIRECTION] == "enabled"
        assert [c.name for c in pod.spec.containers] in (["httpbin"], ["sleep"])
        assert not pod.spec.init_containers
        assert all(s.restart_count == 0 for s in pod.status.container_statuses)


def test_sleep_calls_httpbin_and_keeps_its_source_ip(apps):
    r = curl(apps, NS, "sleep-ambient", f"{URL}/headers")
    assert r.status == 200, r
    assert r.json()["headers"]["Host"] == f"httpbin-ambient.{NS}:8000"
    r = curl(apps, NS, "sleep-ambient", f"{URL}/ip")
    assert r.status == 200, r
    assert r.json()["origin"] == pods(apps, NS, "app=sleep-ambient")[0].status.pod_ip


def test_l4_policy_allows_sleep_and_refuses_the_rogue_client(apps):
    policy = article("l4-policy.yaml", RENAME)
    assert ok(apps, "apply", "-f", "-", input=policy).strip() == (
        "authorizationpolicy.security.istio.io/require-sleep-identity created"
    )
    try:
        eventually(lambda: curl(apps, NS, "rogue-client", f"{URL}/headers").exit in REFUSED, what="rogue refused")
        assert curl(apps, NS, "sleep-ambient", f"{URL}/headers").status == 200
        r = curl(apps, NS, "rogue-client", f"{URL}/headers?again=1")
        assert r.exit in REFUSED and r.status is None, r
        assert "curl: (56)" in r.stderr or "curl: (7)" in r.stderr
        # The destination's ztunnel refused it, and logged whom it refused.
        rogue = f"spiffe://cluster.local/ns/{NS}/sa/rogue-sa"
        lines = eventually(
            lambda: [
                ln
                for ln in ztunnel_log(apps, node_of(apps, NS, "httpbin-ambient"))
                if rogue in ln and "policy rejection" in ln
            ],
            timeout=30,
            what="the refusal in the destination ztunnel's log",
        )
        assert f'dst.namespace="{NS}"' in lines[-1]
    finally:
        ok(apps, "delete", "-f", "-", input=policy)
    eventually(lambda: curl(apps, NS, "rogue-client", f"{URL}/get").status == 200, what="rogue allowed again")


def test_only_tls_to_15008_crosses_the_nodes(apps):
    lab = apps.lab_only("captures packets on the client's node link (`lab capture node/NAME`)")
    client, server = node_of(apps, NS, "sleep-ambient"), node_of(apps, NS, "httpbin-ambient")
    if client == server:
        pytest.skip(f"sleep and httpbin share node {client}: nothing crosses a node link")
    out = {"text": ""}

    def capture() -> None:  # 30 packets to or from the HBONE port or httpbin's ports, payloads printed
        expr = "tcp port 15008 or port 8000 or port 80"
        out["text"] = lab.lab("capture", f"node/{client}", "-c", "30", "--", "-A", expr, timeout=60).stdout

    t = threading.Thread(target=capture)
    t.start()
    for _ in range(60):
        if not t.is_alive():
            break
        assert curl(apps, NS, "sleep-ambient", f"{URL}/headers?marker=plaintext-here").status == 200
    t.join(timeout=30)
    assert ".15008: " in out["text"], out["text"][-2000:]
    assert "plaintext-here" not in out["text"] and "GET /headers" not in out["text"]
