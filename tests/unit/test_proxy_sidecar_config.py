"""istiod's sidecar config (Envoy shapes) for the article's objects, read back by the engine."""

from __future__ import annotations

from mesh.contract import ADDRESS, CLUSTER, LISTENER, ROUTE_CONFIGURATION
from mesh.istiod.proxyconfig import sidecar_resources
from mesh.istiod.translate import translate
from mesh.proxy.config import ProxyConfig
from tests.unit.policy_helpers import authz


def pod(name, ns, labels, ip, sa, *, injected=False, ready=True):
    meta = {"name": name, "namespace": ns, "labels": dict(labels)}
    if injected:
        meta["labels"]["networking.istio.io/tunnel"] = "http"
        meta["annotations"] = {"sidecar.istio.io/status": "{}"}
    return {
        "kind": "Pod",
        "metadata": meta,
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "ports": [{"containerPort": 80}]}]},
        "status": {
            "podIP": ip,
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def service(name, ns, app, vip):
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "clusterIP": vip,
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 8000, "targetPort": 80}],
        },
    }


LEGACY = pod(
    "httpbin-legacy-1", "legacy-apps", {"app": "httpbin-legacy"}, "10.244.1.5", "httpbin-legacy", injected=True
)
AMBIENT = pod("httpbin-ambient-1", "ambient-apps", {"app": "httpbin-ambient"}, "10.244.2.5", "httpbin-ambient")
AMBIENT["metadata"]["annotations"] = {"ambient.istio.io/redirection": "enabled"}
PLAIN = pod("plain-1", "default", {"app": "plain"}, "10.244.3.5", "default")
SERVICES = [
    service("httpbin-legacy", "legacy-apps", "httpbin-legacy", "10.96.0.30"),
    service("httpbin-ambient", "ambient-apps", "httpbin-ambient", "10.96.0.20"),
    service("plain", "default", "plain", "10.96.0.40"),
]
NAMESPACES = [
    {"kind": "Namespace", "metadata": {"name": "ambient-apps", "labels": {"istio.io/dataplane-mode": "ambient"}}},
    {"kind": "Namespace", "metadata": {"name": "legacy-apps", "labels": {"istio-injection": "enabled"}}},
    {"kind": "Namespace", "metadata": {"name": "default"}},
]
PATH_POLICY = authz(
    {"selector": {"matchLabels": {"app": "httpbin-legacy"}}, "rules": [{"to": [{"operation": {"paths": ["/ip"]}}]}]},
    name="only-ip",
    namespace="legacy-apps",
)


def hbone(p):
    return p is not PLAIN


def config(mtls="PERMISSIVE", policies=()):
    res = sidecar_resources(
        LEGACY,
        SERVICES,
        [LEGACY, AMBIENT, PLAIN],
        list(policies),
        [],
        mtls_mode=mtls,
        jwks_for=lambda uri: None,
        hbone=hbone,
    )
    return res, ProxyConfig.build(res[LISTENER], res[CLUSTER], res[ROUTE_CONFIGURATION])


def test_inbound_chain_is_the_pod_with_its_policies_and_mode():
    res, cfg = config("STRICT", [PATH_POLICY])
    assert set(res[LISTENER]) == {"connect_terminate", "virtualInbound", "virtualOutbound"}
    chain = cfg.chain_for("10.244.1.5", 80)
    assert chain is not None and chain.cluster == "inbound|legacy-apps/httpbin-legacy-1"
    endpoint = cfg.clusters[chain.cluster].endpoints[0]
    assert (endpoint.ip, endpoint.port, endpoint.tunnel) == ("10.244.1.5", 0, "TCP")
    assert chain.policies == ("legacy-apps/only-ip",) and "legacy-apps/only-ip" in cfg.policies
    assert cfg.mtls == "STRICT"
    assert cfg.identity == "spiffe://cluster.local/ns/legacy-apps/sa/httpbin-legacy"


def test_outbound_chains_reach_services_and_hbone_pods():
    _, cfg = config()
    ambient = cfg.outbound_chain_for("10.96.0.20", 8000)
    assert ambient.cluster == "outbound|8000||httpbin-ambient.ambient-apps.svc.cluster.local"
    ep = cfg.clusters[ambient.cluster].endpoints[0]
    assert (ep.ip, ep.port, ep.tunnel, ep.identity) == (
        "10.244.2.5",
        80,
        "HBONE",
        "spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient",
    )
    plain = cfg.outbound_chain_for("10.96.0.40", 8000)
    assert cfg.clusters[plain.cluster].endpoints[0].tunnel == "TCP"  # outside the mesh: plaintext
    assert cfg.outbound_chain_for("10.244.2.5", 80).cluster == "outbound-pod|ambient-apps/httpbin-ambient-1"
    assert cfg.outbound_chain_for("10.244.3.5", 80) is None  # a non-mesh pod: passthrough
    assert cfg.outbound_chain_for("10.244.1.5", 80) is None  # never itself
    assert cfg.outbound_chain_for("10.96.0.20", 9999) is None


def test_translate_gives_sidecar_pods_hbone_and_their_own_config():
    objects = {"Namespace": NAMESPACES, "Pod": [LEGACY, AMBIENT, PLAIN], "Service": SERVICES}
    translation = translate(objects)
    legacy = translation.resources[ADDRESS]["Kubernetes//Pod/legacy-apps/httpbin-legacy-1"].resource["workload"]
    assert legacy["protocol"] == "HBONE"
    names = translation.resources["Listener"]
    assert "legacy-apps/httpbin-legacy-1/virtualInbound" in names
    assert not any(name.startswith("default/") for name in names)
