"""The article's migration story through kubectl: a namespace labelled for sidecar injection runs
httpbin-legacy with its istio-proxy, a namespace labelled for ambient runs httpbin-ambient and
sleep, and the two worlds call each other over mutual TLS with their identities: ambient sleep →
sidecar httpbin-legacy, and a sidecar client (the article's sleep manifest, renamed sleep-legacy, in
the injected namespace) → ambient httpbin."""

from __future__ import annotations

import pytest

from tests.portable import kube
from tests.portable.kube import article, curl, eventually, ok, pods, ready

LEGACY, AMB = "portable-legacy", "portable-ambient"
RENAME = {"legacy-apps": LEGACY, "ambient-apps": AMB}
LEGACY_URL = f"http://httpbin-legacy.{LEGACY}:8000"
AMBIENT_URL = f"http://httpbin-ambient.{AMB}:8000"


@pytest.fixture(scope="module")
def worlds(mesh):
    with kube.namespaces(mesh, {LEGACY: kube.INJECTION, AMB: kube.AMBIENT}):
        manifests = [article(f, RENAME) for f in ("httpbin-legacy.yaml", "httpbin-ambient.yaml", "sleep-ambient.yaml")]
        manifests.append(article("sleep-ambient.yaml", {"sleep-ambient": "sleep-legacy", "ambient-apps": LEGACY}))
        ok(mesh, "apply", "-f", "-", input="---\n".join(manifests))
        ready(mesh, LEGACY, "httpbin-legacy", "sleep-legacy")
        ready(mesh, AMB, "httpbin-ambient", "sleep-ambient")
        eventually(lambda: kube.all_enrolled(mesh, AMB), what=f"every pod of {AMB} enrolled")
        eventually(
            lambda: curl(mesh, AMB, "sleep-ambient", f"{LEGACY_URL}/get").status == 200, what="ambient → sidecar"
        )
        yield mesh


def containers(pod) -> list[str]:
    """The pod's containers and init containers (Istio may inject istio-proxy as a native sidecar)."""
    return [c.name for c in [*pod.spec.containers, *(pod.spec.init_containers or [])]]


def test_injected_namespace_gets_sidecars_and_ambient_none(worlds):
    for app in ("httpbin-legacy", "sleep-legacy"):
        (pod,) = pods(worlds, LEGACY, f"app={app}")
        assert "istio-proxy" in containers(pod), containers(pod)
        assert pod.metadata.labels.get("security.istio.io/tlsMode") == "istio"
    for app in ("httpbin-ambient", "sleep-ambient"):
        (pod,) = pods(worlds, AMB, f"app={app}")
        assert "istio-proxy" not in containers(pod), containers(pod)
    row = ok(worlds, "get", "pods", "-n", LEGACY, "-l", "app=httpbin-legacy", "--no-headers").split()
    assert row[1:3] == ["2/2", "Running"], row


def test_ambient_client_reaches_the_sidecar_with_its_identity(worlds):
    r = curl(worlds, AMB, "sleep-ambient", f"{LEGACY_URL}/headers")
    assert r.status == 200, r
    # The sidecar terminated mutual TLS and tells the app who called.
    xfcc = r.json()["headers"]["X-Forwarded-Client-Cert"]
    assert f"URI=spiffe://cluster.local/ns/{AMB}/sa/sleep-ambient" in xfcc, xfcc


def test_sidecar_client_reaches_the_ambient_server_over_the_mesh(worlds):
    r = curl(worlds, LEGACY, "sleep-legacy", f"{AMBIENT_URL}/headers?from=sidecar")
    assert r.status == 200, r
    # The server's ztunnel took the connection in, with the sidecar client's identity.
    identity = f'src.identity="spiffe://cluster.local/ns/{LEGACY}/sa/sleep-legacy"'
    eventually(
        lambda: [ln for ln in kube.ztunnel_log(worlds, kube.node_of(worlds, AMB, "httpbin-ambient")) if identity in ln],
        timeout=30,
        what="the sidecar client's connection in the server ztunnel's log",
    )


def test_ambient_client_reaches_ambient_server_alongside(worlds):
    r = curl(worlds, AMB, "sleep-ambient", f"{AMBIENT_URL}/headers")
    assert r.status == 200, r
    assert "X-Forwarded-Client-Cert" not in r.json()["headers"]  # ztunnel to ztunnel: L4, no header added
