"""`lab istioctl x describe pod`: the pod's mode, its waypoint and where each policy is enforced,
decided from the objects alone (the article's manifests)."""

import yaml

from lab.testing import article_manifest
from mesh.istioctl import describe_mode as dm
from mesh.istioctl import describe_pod as d
from mesh.istioctl import describe_policies as dp
from mesh.istioctl import describe_waypoint as dw


def article(name: str) -> dict:
    return next(doc for doc in yaml.safe_load_all(article_manifest(name)) if doc)


def namespace(labels=None) -> dict:
    return {"kind": "Namespace", "metadata": {"name": "ambient-apps", "labels": dict(labels or {})}}


AMBIENT_NS = namespace({"istio.io/dataplane-mode": "ambient"})


def pod(
    name="httpbin-ambient-abc",
    app="httpbin-ambient",
    sa="httpbin-ambient",
    ns="ambient-apps",
    redirected=True,
    containers=("httpbin",),
    labels=None,
    node="worker1",
) -> dict:
    annotations = {"lab.ambient/netns": f"al-t-pod-{ns}_{name}"}
    if redirected:
        annotations["ambient.istio.io/redirection"] = "enabled"
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": app, **(labels or {})},
            "annotations": annotations,
        },
        "spec": {"serviceAccountName": sa, "nodeName": node, "containers": [{"name": c} for c in containers]},
        "status": {"phase": "Running", "podIP": "10.244.1.2"},
    }


def service(name="httpbin-ambient", app="httpbin-ambient", labels=None) -> dict:
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": "ambient-apps", "labels": dict(labels or {})},
        "spec": {
            "selector": {"app": app},
            "clusterIP": "10.96.0.4",
            "ports": [{"name": "http", "port": 8000, "targetPort": 80}],
        },
    }


def programmed(gateway: dict, ok: bool = True) -> dict:
    gateway = dict(gateway)
    gateway["status"] = {
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"},
            {
                "type": "Programmed",
                "status": "True" if ok else "False",
                "reason": "Programmed" if ok else "Pending",
                "message": "Resource programmed" if ok else "Waiting for service",
            },
        ]
    }
    return gateway


def deployment(name: str, ready: int = 1) -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ambient-apps"},
        "spec": {"replicas": 1},
        "status": {"readyReplicas": ready},
    }


ZTUNNEL = {
    "kind": "Pod",
    "metadata": {"name": "ztunnel-kf9nk", "namespace": "istio-system"},
    "spec": {"nodeName": "worker1"},
}
WAYPOINT = programmed(article("waypoint.yaml"))
L4 = article("l4-policy.yaml")
L7 = article("l7-authz-policy.yaml")
JWT = article("jwt-policy.yaml")


def strict_mtls(namespace: str) -> dict:
    """PeerAuthentication `default` of NAMESPACE in STRICT mode."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"mtls": {"mode": "STRICT"}},
    }


def with_status(policy: dict, reason: str, message: str, status: str = "True") -> dict:
    policy = dict(policy)
    policy["status"] = {
        "conditions": [{"type": "ZtunnelAccepted", "status": status, "reason": reason, "message": message}]
    }
    return policy


def test_pod_modes():
    assert dm.pod_mode(pod(), AMBIENT_NS.get("metadata")["labels"]).kind == dm.AMBIENT
    assert "redirection enabled" in dm.pod_mode(pod(), {"istio.io/dataplane-mode": "ambient"}).text
    pending = dm.pod_mode(pod(redirected=False), {"istio.io/dataplane-mode": "ambient"})
    assert pending.kind == dm.AMBIENT and "not captured yet" in pending.text
    assert dm.pod_mode(pod(containers=("httpbin", "istio-proxy")), {}).kind == dm.SIDECAR
    waypoint_pod = pod(containers=("istio-proxy",), labels={"gateway.networking.k8s.io/gateway-name": "wp"})
    assert dm.pod_mode(waypoint_pod, {}).kind == dm.WAYPOINT
    outside = dm.pod_mode(pod(ns="legacy-apps", redirected=False), {})
    assert outside.kind == dm.NONE and "istio.io/dataplane-mode=ambient" in outside.text
    opted_out = dm.pod_mode(pod(labels={"istio.io/dataplane-mode": "none"}), {"istio.io/dataplane-mode": "ambient"})
    assert opted_out.kind == dm.NONE and "opts out" in opted_out.text
    assert "never captured" in dm.pod_mode(pod(ns="kube-system"), {"istio.io/dataplane-mode": "ambient"}).text


def _where(objs, **kw):
    target = kw.pop("target", pod())
    ns = kw.pop("namespace", AMBIENT_NS)
    gateways = kw.pop("gateways", [])
    services = kw.pop("services", [service()])
    mode = dm.pod_mode(target, ns["metadata"]["labels"])
    att = dw.waypoint_attachments(ns, gateways, services, [target])
    wl = dw.explain_choice(target, "pod", att.for_pod(target), att, ns["metadata"]["labels"], "workload")
    svc_wps = {
        s["metadata"]["name"]: dw.explain_choice(
            s, "Service", att.for_service(s), att, ns["metadata"]["labels"], "service"
        )
        for s in services
    }
    return {
        e.key: e
        for e in dp.enforcement(
            target,
            mode,
            wl,
            services,
            svc_wps,
            [o for o in objs if o["kind"] == "AuthorizationPolicy"],
            [o for o in objs if o["kind"] == "RequestAuthentication"],
        )
    }


def test_without_a_waypoint_policies_are_ztunnels_and_jwt_is_not_enforced():
    l7 = with_status(
        L7,
        "UnsupportedValue",
        "ztunnel does not support HTTP attributes (found: paths, "
        "request.auth.claims[iss]). In ambient mode you must use a waypoint.",
    )
    found = _where([L4, l7, JWT])
    assert found["ambient-apps/require-sleep-identity"].where == "destination ztunnel (L4)"
    assert found["ambient-apps/require-sleep-identity"].warning is None
    assert found["ambient-apps/require-sleep-identity"].attached == "selector app=httpbin-ambient"
    assert found["ambient-apps/allow-ip-path-with-jwt"].where == "destination ztunnel (L4)"
    assert "HTTP attributes" in found["ambient-apps/allow-ip-path-with-jwt"].warning
    assert found["ambient-apps/require-jwt-for-billing"].where == dp.NO_L7_PROXY


def test_the_warning_is_computed_when_istiod_has_not_written_the_status_yet():
    found = _where([L7])
    assert "waypoint" in found["ambient-apps/allow-ip-path-with-jwt"].warning


def test_with_the_articles_waypoint_selector_policies_go_to_the_waypoint():
    found = _where([L4, L7, JWT], gateways=[WAYPOINT])
    l4 = found["ambient-apps/require-sleep-identity"]
    assert l4.where == dp.WAYPOINT_L7.format(name="httpbin-ambient-waypoint")
    assert "original client's identity" in l4.where and "L4" in l4.where
    assert found["ambient-apps/require-jwt-for-billing"].where == "waypoint httpbin-ambient-waypoint (jwt_authn)"


def test_target_refs_bind_to_the_waypoint_or_to_a_service():
    to_gateway = {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "at-gw", "namespace": "ambient-apps"},
        "spec": {
            "targetRefs": [
                {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "httpbin-ambient-waypoint"}
            ],
            "action": "DENY",
            "rules": [{"to": [{"operation": {"methods": ["DELETE"]}}]}],
        },
    }
    to_service = {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "at-svc", "namespace": "ambient-apps"},
        "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "httpbin-ambient"}]},
    }
    to_other = {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "other", "namespace": "ambient-apps"},
        "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "sleep-ambient"}]},
    }
    found = _where([to_gateway, to_service, to_other], gateways=[WAYPOINT])
    assert found["ambient-apps/at-gw"].where == "waypoint httpbin-ambient-waypoint"
    assert found["ambient-apps/at-gw"].attached == "targetRefs Gateway/httpbin-ambient-waypoint"
    assert found["ambient-apps/at-svc"].where == "waypoint httpbin-ambient-waypoint"
    assert "ambient-apps/other" not in found
    alone = _where([to_gateway, to_service])
    assert "ambient-apps/at-gw" not in alone  # no waypoint serves the pod: that Gateway is not its
    assert alone["ambient-apps/at-svc"].where.startswith("not enforced")


def test_namespace_and_root_policies_and_outside_the_mesh():
    ns_wide = {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "ns-wide", "namespace": "ambient-apps"},
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["evil"]}}]}]},
    }
    mesh = {"kind": "AuthorizationPolicy", "metadata": {"name": "mesh", "namespace": "istio-system"}, "spec": {}}
    elsewhere = {"kind": "AuthorizationPolicy", "metadata": {"name": "x", "namespace": "legacy-apps"}, "spec": {}}
    found = _where([ns_wide, mesh, elsewhere])
    assert found["ambient-apps/ns-wide"].attached == "namespace-wide"
    assert found["istio-system/mesh"].attached == "mesh-wide (root namespace istio-system)"
    assert "legacy-apps/x" not in found
    outside = _where([ns_wide, JWT], target=pod(redirected=False), namespace=namespace())
    assert outside["ambient-apps/ns-wide"].where == dp.NOT_IN_MESH
    assert outside["ambient-apps/require-jwt-for-billing"].where == dp.NOT_IN_MESH
    sidecar = _where([ns_wide, JWT], target=pod(containers=("httpbin", "istio-proxy")), namespace=namespace())
    assert sidecar["ambient-apps/ns-wide"].where == "sidecar (L7, with the client's identity)"
    assert sidecar["ambient-apps/require-jwt-for-billing"].where == "sidecar (jwt_authn)"


def test_a_policy_istiod_does_not_send_to_ztunnel_is_not_enforced():
    custom = with_status(
        {
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "ext", "namespace": "ambient-apps"},
            "spec": {"action": "CUSTOM", "provider": {"name": "x"}, "rules": [{}]},
        },
        "UnsupportedValue",
        "ztunnel does not support the CUSTOM action",
        status="False",
    )
    found = _where([custom])["ambient-apps/ext"]
    assert found.where.startswith("not enforced") and "CUSTOM" in found.warning


def test_waypoint_choice_by_label_and_by_the_articles_implicit_model():
    labelled_ns = namespace({"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"})
    svc_only = programmed(
        {
            "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": "ambient-apps"},
            "spec": {
                "gatewayClassName": "istio-waypoint",
                "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
            },
        }
    )
    wl = dw.workload_waypoint(pod(), labelled_ns, [svc_only], [service()])
    assert wl.gateway is None and "serves service traffic, not workload traffic" in wl.how
    sv = dw.service_waypoint(service(), labelled_ns, [svc_only], [service()], [pod()])
    assert sv.name == "waypoint" and sv.how == "namespace ambient-apps label istio.io/use-waypoint=waypoint"
    implicit = dw.workload_waypoint(pod(), AMBIENT_NS, [WAYPOINT])
    assert implicit.name == "httpbin-ambient-waypoint" and "article's model" in implicit.how
    missing = dw.workload_waypoint(pod(labels={"istio.io/use-waypoint": "nope"}), AMBIENT_NS, [])
    assert missing.missing and "does not exist" in missing.how
    none = dw.workload_waypoint(pod(labels={"istio.io/use-waypoint": "#none"}), labelled_ns, [svc_only])
    assert none.gateway is None and "opts out" in none.how


def describe(**kw):
    args = dict(
        namespace=AMBIENT_NS,
        services=[service(), service("sleep-ambient", "sleep-ambient")],
        gateways=[],
        ztunnels=[ZTUNNEL],
        authorization_policies=[L4],
        request_authentications=[JWT],
    )
    args.update(kw)
    return d.describe(kw.pop("pod", pod()), **{k: v for k, v in args.items() if k != "pod"})


def test_describe_text_without_a_waypoint():
    out = describe().splitlines()
    assert out[0] == "Pod: httpbin-ambient-abc.ambient-apps"
    assert out[1] == "   Mode: ambient (ztunnel captures its traffic, redirection enabled)"
    assert out[2] == "   Identity: spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient"
    assert out[3] == "   Node: worker1 (ztunnel: ztunnel-kf9nk)"
    assert out[4].startswith("   Waypoint: none (")
    text = "\n".join(out)
    assert "Service: httpbin-ambient.ambient-apps (8000/http -> 80)" in text
    assert "sleep-ambient.ambient-apps" not in text
    assert (
        "AuthorizationPolicy ambient-apps/require-sleep-identity (ALLOW, selector app=httpbin-ambient)\n"
        "   Enforcement: destination ztunnel (L4)"
    ) in text
    assert "Enforcement: " + dp.NO_L7_PROXY in text
    assert out[-1].startswith("   In ambient, traffic between ztunnels is always mutual TLS")
    assert "Effective PeerAuthentication: mTLS PERMISSIVE (the default: no PeerAuthentication applies)" in text


def test_describe_text_with_the_articles_waypoint_and_readiness():
    ready = describe(gateways=[WAYPOINT], deployments=[deployment("httpbin-ambient-waypoint")])
    assert "   Waypoint: httpbin-ambient-waypoint (ready)\n      chosen by: implicit:" in ready
    assert "Enforcement: waypoint httpbin-ambient-waypoint (jwt_authn)" in ready
    not_ready = describe(gateways=[WAYPOINT], deployments=[deployment("httpbin-ambient-waypoint", ready=0)])
    assert (
        "Waypoint: httpbin-ambient-waypoint (NOT ready: Deployment httpbin-ambient-waypoint has 0/1 ready)" in not_ready
    )
    pending = describe(gateways=[programmed(article("waypoint.yaml"), ok=False)])
    assert "NOT ready: not programmed: Waiting for service" in pending


def test_describe_strict_peer_authentication_and_no_policies():
    strict = strict_mtls("istio-system")
    out = describe(authorization_policies=[], request_authentications=[], peer_authentications=[strict])
    assert "No AuthorizationPolicy or RequestAuthentication applies to this pod." in out
    assert "mTLS STRICT (from PeerAuthentication istio-system/default)" in out
    assert "STRICT makes ztunnel refuse plaintext" in out


def test_describe_a_pod_outside_the_mesh_and_a_waypoint_pod():
    out = describe(pod=pod(ns="legacy-apps", redirected=False), namespace=None, services=[])
    assert "Mode: not in the mesh" in out and "Waypoint: none (the pod is not in the mesh)" in out
    wp = pod(
        name="httpbin-ambient-waypoint-x",
        containers=("istio-proxy",),
        labels={"gateway.networking.k8s.io/gateway-name": "httpbin-ambient-waypoint"},
    )
    out = describe(
        pod=wp,
        gateways=[WAYPOINT],
        deployments=[deployment("httpbin-ambient-waypoint")],
        authorization_policies=[],
        request_authentications=[],
    )
    assert "Waypoint: this pod is waypoint httpbin-ambient-waypoint (ready; traffic type namespace)" in out
    assert "lab istioctl proxy-config all httpbin-ambient-waypoint-x -n ambient-apps" in out


# ---- a pod with a sidecar -------------------------------------------------------------------------


def sidecar_pod(tag="1.24.0", injected=True) -> dict:
    p = pod(name="httpbin-sidecar-abc", app="httpbin-ambient", redirected=False)
    p["spec"]["containers"] = [
        {"name": "httpbin", "image": "docker.io/kennethreitz/httpbin"},
        {"name": "istio-proxy", "image": f"docker.io/istio/proxyv2:{tag}", "args": ["proxy", "sidecar"]},
    ]
    if injected:
        p["metadata"]["annotations"]["sidecar.istio.io/status"] = (
            '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":[],'
            '"imagePullSecrets":null,"revision":"default"}'
        )
    return p


def test_describe_a_sidecar_pod():
    strict = strict_mtls("ambient-apps")
    out = describe(
        pod=sidecar_pod("1.25.0"),
        namespace=namespace({"istio-injection": "enabled"}),
        gateways=[WAYPOINT],
        deployments=[deployment("httpbin-ambient-waypoint")],
        peer_authentications=[strict],
    )
    lines = out.splitlines()
    assert lines[1] == ("   Mode: sidecar (istio-proxy 1.25.0, injected by istio-sidecar-injector, revision default)")
    assert lines[3] == "   Node: worker1 (its sidecar, not the node's ztunnel, carries its traffic)"
    assert lines[4] == "   Waypoint: none (" + d.SIDECAR_NO_WAYPOINT + ")"
    assert "sidecars never use waypoints" in lines[4]
    assert (
        "Waypoint: httpbin-ambient-waypoint (ready) for the Service's ambient clients; this pod's sidecar, as a "
        "client, never uses waypoints"
    ) in out
    assert (
        "AuthorizationPolicy ambient-apps/require-sleep-identity (ALLOW, selector app=httpbin-ambient)\n"
        "   Enforcement: sidecar (L7, with the client's identity)"
    ) in out
    assert "   Enforcement: sidecar (jwt_authn)" in out
    assert "mTLS STRICT (from PeerAuthentication ambient-apps/default)" in out
    assert "STRICT makes it refuse plaintext (15006) to this pod." in out
    assert "ztunnel" not in out.split("Effective PeerAuthentication")[1]


def test_a_sidecar_in_the_pod_spec_and_target_refs_policies():
    assert dm.pod_mode(sidecar_pod(injected=False), {}).text == (
        "sidecar (istio-proxy 1.24.0, not injected: the pod's own spec has the container)"
    )
    gateway_policy = {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "at-gw", "namespace": "ambient-apps"},
        "spec": {
            "targetRefs": [{"kind": "Service", "group": "", "name": "httpbin-ambient"}],
            "action": "DENY",
            "rules": [{}],
        },
    }
    found = _where([gateway_policy], target=sidecar_pod(), namespace=namespace())
    assert found["ambient-apps/at-gw"].where.startswith("not enforced: targetRefs policies are enforced by a waypoint")
    out = describe(pod=sidecar_pod(), namespace=namespace(), authorization_policies=[], request_authentications=[])
    assert "PERMISSIVE lets plaintext from outside the mesh reach this pod too (15006)." in out
