"""The article's Layer 2 through kubectl: its waypoint Gateway (waypoint.yaml), then its billing API
rules (jwt-policy.yaml, l7-authz-policy.yaml) with its token (demo.jwt): `/headers` with the token
403, `/ip` without it 403, `/ip` with it 200, a malformed token 401.

The article's waypoint is Istio 1.18-1.21's model: a Gateway of class `istio` that serves its whole
namespace and enforces the selector policies of what it serves. The lab follows it. Istio 1.22 and
later attach waypoints with `istio.io/use-waypoint` and bind L7 policy with `targetRefs`, so on such
a cluster the article's manifests put no waypoint in front of httpbin and this module is skipped,
saying so."""

from __future__ import annotations

import pytest

from tests.portable.kube import AMBIENT, article, article_token, curl, eventually, namespaces, ok, pods, ready

NS = "portable-waypoint"
RENAME = {"ambient-apps": NS}
URL = f"http://httpbin-ambient.{NS}:8000"
WAYPOINT = "httpbin-ambient-waypoint"
WAYPOINT_PODS = f"gateway.networking.k8s.io/gateway-name={WAYPOINT}"


def through_waypoint(cluster) -> bool:
    """A call from sleep reaches httpbin through an L7 proxy: it carries the X-Request-Id the
    waypoint (Envoy, or the lab's proxy) adds; ztunnel alone adds no header."""
    r = curl(cluster, NS, "sleep-ambient", f"{URL}/headers?show_env=1")
    return r.status == 200 and "X-Request-Id" in r.json()["headers"]


@pytest.fixture(scope="module")
def waypoint(mesh):
    with namespaces(mesh, {NS: AMBIENT}):
        for name in ("httpbin-ambient", "sleep-ambient"):
            ok(mesh, "apply", "-f", "-", input=article(f"{name}.yaml", RENAME))
        ready(mesh, NS, "httpbin-ambient", "sleep-ambient")
        before = {p.metadata.uid for p in pods(mesh, NS)}
        assert "created" in ok(mesh, "apply", "-f", "-", input=article("waypoint.yaml", RENAME))
        try:
            eventually(
                lambda: ok(mesh, "wait", "--for=condition=Ready", "pod", "-l", WAYPOINT_PODS, "-n", NS, "--timeout=5s"),
                timeout=180,
                what="the waypoint's pod Ready",
            )
            eventually(lambda: through_waypoint(mesh), timeout=60, what="httpbin's traffic through the waypoint")
        except AssertionError as e:
            if mesh.is_lab:
                raise
            pytest.skip(
                f"the article's waypoint.yaml (gatewayClassName istio, no istio.io/use-waypoint label) is not "
                f"a waypoint for {NS} on {mesh.name} ({e}); the article follows Istio 1.18-1.21's waypoint "
                "model, which the lab reproduces"
            )
        yield mesh, before


def test_waypoint_deployed_and_no_app_pod_restarts(waypoint):
    cluster, before = waypoint
    assert [p.metadata.name.startswith(WAYPOINT) for p in pods(cluster, NS, WAYPOINT_PODS)] == [True]
    apps = [p for p in pods(cluster, NS) if not p.metadata.name.startswith(WAYPOINT)]
    assert {p.metadata.uid for p in apps} == before
    assert all(s.restart_count == 0 for p in apps for s in p.status.container_statuses)
    row = ok(cluster, "get", "gateway", WAYPOINT, "-n", NS, "--no-headers").split()
    assert row[0] == WAYPOINT and "True" in row  # PROGRAMMED


def test_calls_to_httpbin_go_through_the_waypoint(waypoint):
    cluster, _ = waypoint
    ids = set()
    for _ in range(2):
        r = curl(cluster, NS, "sleep-ambient", f"{URL}/headers?show_env=1")
        assert r.status == 200, r
        headers = r.json()["headers"]
        assert headers["Host"] == f"httpbin-ambient.{NS}:8000"
        ids.add(headers["X-Request-Id"])
    assert len(ids) == 2  # the waypoint gives each request its own id


@pytest.fixture
def billing_rules(waypoint):
    """The article's RequestAuthentication and L7 AuthorizationPolicy, removed afterwards."""
    cluster, _ = waypoint
    rules = "---\n".join(article(f, RENAME) for f in ("jwt-policy.yaml", "l7-authz-policy.yaml"))
    ok(cluster, "apply", "-f", "-", input=rules)
    try:
        eventually(lambda: curl(cluster, NS, "sleep-ambient", f"{URL}/ip").status == 403, what="the rules in force")
        yield cluster
    finally:
        ok(cluster, "delete", "-f", "-", input=rules)


def test_article_jwt_and_path_rules(billing_rules):
    cluster = billing_rules
    token = ["-H", f"Authorization: Bearer {article_token()}"]
    assert curl(cluster, NS, "sleep-ambient", f"{URL}/headers", *token).status == 403  # path not allowed
    r = curl(cluster, NS, "sleep-ambient", f"{URL}/ip")
    assert (r.status, r.body) == (403, "RBAC: access denied")  # no token, so no issuer claim
    r = curl(cluster, NS, "sleep-ambient", f"{URL}/ip", *token)
    assert r.status == 200 and "origin" in r.json(), r
    r = curl(cluster, NS, "sleep-ambient", f"{URL}/ip", "-H", "Authorization: Bearer deadbeef")
    assert r.status == 401 and r.body.startswith("Jwt is not in the form of Header.Payload.Signature"), r
