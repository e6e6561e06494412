"""istiod's waypoints (docs/waypoints.md): which Gateways are waypoints, the objects istiod deploys
for them, their status, and attachment to workloads and services, as pure functions. The
controller over a real API server and store: test_istiod_waypoint_controller.py."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from lab.testing import ARTICLE
from mesh.istiod import waypoints as wp
from mesh.istiod.waypoints import (
    IMPLICIT_NAMESPACE,
    IMPLICIT_SERVICE_ACCOUNT,
    NAMESPACE_LABEL,
    POD_LABEL,
    SERVICE_LABEL,
    Attachments,
    WaypointChoice,
    desired_objects,
    drift,
    gateway_status,
    is_waypoint,
    served_by,
    status_update,
    traffic_type,
    waypoint_for_pod,
    waypoint_for_service,
)

GW = "gateway.networking.k8s.io/gateway-name"
USE = "istio.io/use-waypoint"
FOR = "istio.io/waypoint-for"


def gateway(
    name: str = "waypoint",
    ns: str = "demo",
    cls: str = "istio-waypoint",
    labels: dict | None = None,
    annotations: dict | None = None,
    listeners: list | None = None,
    api: str = "v1",
) -> dict:
    return {
        "apiVersion": f"gateway.networking.k8s.io/{api}",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-gw-{ns}-{name}",
            "generation": 1,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "gatewayClassName": cls,
            "listeners": listeners if listeners is not None else [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }


def namespace(name: str = "demo", labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def pod(name: str, ns: str = "demo", labels: dict | None = None, sa: str = "default", phase: str = "Running") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels or {"app": name}},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": phase, "podIP": "10.244.1.9"},
    }


def service(
    name: str, ns: str = "demo", selector: dict | None = None, labels: dict | None = None, ip: str = "10.96.0.50"
) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {
            "clusterIP": ip,
            "selector": selector if selector is not None else {"app": name},
            "ports": [{"port": 80}],
        },
    }


def waypoint_service(name: str = "waypoint", ns: str = "demo", ip: str = "10.96.0.99") -> dict:
    return service(name, ns, selector={GW: name}, labels={GW: name}, ip=ip)


def objects(*items: dict) -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    for item in items:
        by_kind.setdefault(item["kind"], []).append(item)
    return by_kind


# ---- which Gateways are waypoints -------------------------------------------------------------------


@pytest.mark.parametrize(
    "gw, expected",
    [
        (gateway(), True),
        (gateway(cls="istio", api="v1beta1"), True),  # the article's 1.18 form
        (gateway(cls="istio-remote"), False),
        (gateway(listeners=[{"name": "http", "port": 80, "protocol": "HTTP"}]), False),
        (gateway(listeners=[{"name": "mesh", "port": 15009, "protocol": "HBONE"}]), False),
        (
            gateway(
                listeners=[
                    {"name": "http", "port": 80, "protocol": "HTTP"},
                    {"name": "mesh", "port": 15008, "protocol": "HBONE"},
                ]
            ),
            True,
        ),
        (gateway(listeners=[]), False),
    ],
)
def test_is_waypoint(gw, expected):
    assert is_waypoint(gw) is expected


@pytest.mark.parametrize(
    "labels, expected",
    [({}, "service"), ({FOR: "workload"}, "workload"), ({FOR: "all"}, "all"), ({FOR: "none"}, "none")],
)
def test_traffic_type(labels, expected):
    assert traffic_type(gateway(labels=labels)) == expected


# ---- the objects istiod deploys ---------------------------------------------------------------------


def article_gateway() -> dict:
    with open(os.path.join(ARTICLE, "waypoint.yaml")) as f:
        gw = yaml.safe_load(f)
    gw["metadata"]["uid"] = "uid-article-gw"
    return gw


def test_desired_objects_follow_istios_waypoint_template():
    sa, svc, deploy = desired_objects(article_gateway())
    owner = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "Gateway",
        "name": "httpbin-ambient-waypoint",
        "uid": "uid-article-gw",
        "controller": True,
    }
    for obj in (sa, svc, deploy):
        assert obj["metadata"]["name"] == "httpbin-ambient-waypoint"
        assert obj["metadata"]["namespace"] == "ambient-apps"
        assert obj["metadata"]["ownerReferences"] == [owner]
        assert obj["metadata"]["labels"][GW] == "httpbin-ambient-waypoint"
    assert (sa["kind"], svc["kind"], deploy["kind"]) == ("ServiceAccount", "Service", "Deployment")

    assert deploy["metadata"]["labels"]["gateway.istio.io/managed"] == "istio.io-mesh-controller"
    assert "replicas" not in deploy["spec"]  # 1 by default on creation, the user's afterwards
    template = deploy["spec"]["template"]
    assert template["metadata"]["labels"] == {
        GW: "httpbin-ambient-waypoint",
        "gateway.istio.io/managed": "istio.io-mesh-controller",
        "istio.io/dataplane-mode": "none",
        "sidecar.istio.io/inject": "false",
        "service.istio.io/canonical-name": "httpbin-ambient-waypoint",
    }
    assert template["spec"]["serviceAccountName"] == "httpbin-ambient-waypoint"
    [container] = template["spec"]["containers"]
    assert container["name"] == "istio-proxy" and container["image"] == "docker.io/istio/proxyv2:1.24.0"
    assert container["args"] == ["proxy", "waypoint"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "mesh": 15008,
        "metrics": 15020,
        "status-port": 15021,
        "http-envoy-prom": 15090,
    }
    assert {e["name"]: e["value"] for e in container["env"]} == {
        "ISTIOD_ADDRESS": "istiod.istio-system.svc:15012",
        "GATEWAY_NAME": "httpbin-ambient-waypoint",
        "ISTIO_META_WAYPOINT_FOR": "service",
    }
    assert container["readinessProbe"] == {"httpGet": {"path": "/healthz/ready", "port": 15021}, "periodSeconds": 1}

    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {GW: "httpbin-ambient-waypoint"}
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("status-port", 15021), ("mesh", 15008)]
    assert svc["metadata"]["annotations"] == {"networking.istio.io/traffic-distribution": "PreferClose"}


def test_waypoint_for_label_reaches_the_proxy():
    deploy = desired_objects(gateway(labels={FOR: "workload"}))[2]
    env = deploy["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "ISTIO_META_WAYPOINT_FOR", "value": "workload"} in env


# ---- drift ---------------------------------------------------------------------------------------------


def test_drift_of_what_istiod_owns_but_not_replicas():
    gw = gateway()
    sa, svc, deploy = desired_objects(gw)
    assert drift(None, deploy) == deploy
    live = copy.deepcopy(deploy)
    live["spec"]["replicas"] = 3
    live["metadata"]["labels"]["team"] = "a"  # labels of others are fine
    assert drift(live, deploy) is None
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    patch = drift(live, deploy)
    assert patch["spec"] == deploy["spec"] and "replicas" not in patch["spec"]
    live = copy.deepcopy(deploy)
    del live["metadata"]["labels"][GW]
    assert drift(live, deploy) is not None
    live_svc = copy.deepcopy(svc)
    live_svc["spec"].update(clusterIP="10.96.0.7", clusterIPs=["10.96.0.7"])
    assert drift(live_svc, svc) is None
    assert drift(copy.deepcopy(sa), sa) is None


def test_rollout_restart_is_not_drift():
    deploy = desired_objects(gateway())[2]
    live = copy.deepcopy(deploy)
    live["spec"]["template"]["metadata"]["annotations"] = {wp.RESTARTED_AT: "2024-05-01T00:00:00Z"}
    assert drift(live, deploy) is None
    live["spec"]["template"]["spec"]["serviceAccountName"] = "x"
    patch = drift(live, deploy)
    assert patch["spec"]["template"]["metadata"]["annotations"] == {wp.RESTARTED_AT: "2024-05-01T00:00:00Z"}


# ---- status ---------------------------------------------------------------------------------------------


def test_status_programmed_once_the_service_has_an_address():
    gw = gateway("httpbin-ambient-waypoint", "ambient-apps")
    status = gateway_status(gw, waypoint_service("httpbin-ambient-waypoint", "ambient-apps", "10.96.0.20"))
    accepted, programmed = status["conditions"]
    assert (accepted["type"], accepted["status"], accepted["reason"]) == ("Accepted", "True", "Accepted")
    assert programmed == {
        "type": "Programmed",
        "status": "True",
        "reason": "Programmed",
        "observedGeneration": 1,
        "message": "Resource programmed, assigned to service(s) "
        "httpbin-ambient-waypoint.ambient-apps.svc.cluster.local:15008",
    }
    assert status["addresses"] == [
        {"type": "IPAddress", "value": "10.96.0.20"},
        {"type": "Hostname", "value": "httpbin-ambient-waypoint.ambient-apps.svc.cluster.local"},
    ]
    [listener] = status["listeners"]
    assert listener["name"] == "mesh" and listener["attachedRoutes"] == 0
    assert all(c["observedGeneration"] == 1 for c in listener["conditions"])


def test_status_pending_without_service_and_invalid_on_a_problem():
    gw = gateway()
    programmed = gateway_status(gw, None)["conditions"][1]
    assert (programmed["status"], programmed["reason"]) == ("False", "Pending")
    assert gateway_status(gw, None)["addresses"] == []
    programmed = gateway_status(gw, waypoint_service(), problem="unknown image")["conditions"][1]
    assert (programmed["status"], programmed["reason"]) == ("False", "Invalid")
    assert "unknown image" in programmed["message"]


def test_status_update_only_on_change_and_transition_times():
    gw = gateway()
    pending = gateway_status(gw, None)
    first = status_update(None, pending, "T1")
    assert all(c["lastTransitionTime"] == "T1" for c in first["conditions"])
    assert status_update(first, pending, "T2") is None
    programmed = status_update(first, gateway_status(gw, waypoint_service()), "T3")
    times = {c["type"]: c["lastTransitionTime"] for c in programmed["conditions"]}
    assert times == {"Accepted": "T1", "Programmed": "T3"}
    assert status_update(programmed, gateway_status(gw, waypoint_service()), "T4") is None


def test_attached_routes_count_http_routes_naming_the_gateway():
    gw = gateway("wp", "demo")
    routes = [
        {
            "kind": "HTTPRoute",
            "metadata": {"name": "r1", "namespace": "demo"},
            "spec": {"parentRefs": [{"name": "wp", "kind": "Gateway"}]},
        },
        {
            "kind": "HTTPRoute",
            "metadata": {"name": "r2", "namespace": "demo"},
            "spec": {"parentRefs": [{"name": "httpbin", "kind": "Service", "group": ""}]},
        },
        {
            "kind": "HTTPRoute",
            "metadata": {"name": "r3", "namespace": "other"},
            "spec": {"parentRefs": [{"name": "wp", "namespace": "demo"}]},
        },
    ]
    assert wp.attached_route_count(gw, routes) == 2


# ---- attachment: the modern labels ------------------------------------------------------------------


def test_namespace_label_serves_services_by_default_not_pods():
    world = objects(namespace("demo", {USE: "waypoint"}), gateway(), waypoint_service(), service("web"), pod("web"))
    assert waypoint_for_service(service("web"), world) == WaypointChoice("demo", "waypoint", NAMESPACE_LABEL)
    assert waypoint_for_pod(pod("web"), world) is None  # waypoint-for defaults to service


@pytest.mark.parametrize(
    "for_, svc_gets, pod_gets",
    [("service", True, False), ("workload", False, True), ("all", True, True), ("none", False, False)],
)
def test_waypoint_for_decides_service_and_pod_traffic(for_, svc_gets, pod_gets):
    world = objects(namespace("demo", {USE: "waypoint"}), gateway(labels={FOR: for_}), service("web"), pod("web"))
    assert (waypoint_for_service(service("web"), world) is not None) is svc_gets
    assert (waypoint_for_pod(pod("web"), world) is not None) is pod_gets


def test_own_label_beats_the_namespace_and_none_opts_out():
    world = objects(
        namespace("demo", {USE: "waypoint"}), gateway(labels={FOR: "all"}), gateway("special", labels={FOR: "all"})
    )
    web = service("web", labels={USE: "special"})
    assert waypoint_for_service(web, world) == WaypointChoice("demo", "special", SERVICE_LABEL)
    p = pod("web", labels={"app": "web", USE: "special"})
    assert waypoint_for_pod(p, world) == WaypointChoice("demo", "special", POD_LABEL)
    assert waypoint_for_service(service("web", labels={USE: "#none"}), world) is None
    assert waypoint_for_pod(pod("web", labels={USE: "#none"}), world) is None
    assert waypoint_for_pod(pod("other"), world) == WaypointChoice("demo", "waypoint", NAMESPACE_LABEL)


def test_own_label_naming_a_waypoint_of_the_wrong_type_gives_none():
    world = objects(namespace("demo", {USE: "waypoint"}), gateway(labels={FOR: "all"}), gateway("svc-only"))
    assert waypoint_for_pod(pod("web", labels={USE: "svc-only"}), world) is None


def test_cross_namespace_label_value():
    web = service("web", labels={USE: "infra/shared"})
    world = objects(
        namespace("demo"),
        namespace("infra"),
        gateway("shared", "infra", labels={FOR: "all"}),
        waypoint_service("shared", "infra", "10.96.0.77"),
        web,
    )
    choice = waypoint_for_service(web, world)
    assert choice == WaypointChoice("infra", "shared", SERVICE_LABEL)
    assert Attachments(world).reference(choice) == {
        "destination": "infra/shared.infra.svc.cluster.local",
        "address": "10.96.0.77",
        "hboneMtlsPort": 15008,
    }


@pytest.mark.parametrize("gw", [None, gateway("wp", cls="something-else")])
def test_missing_or_non_waypoint_gateway_fails_closed(gw):
    world = objects(namespace("demo", {USE: "wp"}), service("wp", labels={}, ip="10.96.0.5"), *([gw] if gw else []))
    for choice in (waypoint_for_service(service("web"), world), waypoint_for_pod(pod("web"), world)):
        assert choice == WaypointChoice("demo", "wp", NAMESPACE_LABEL, found=False)
        # No address: a Service of that name that no waypoint owns is not a waypoint.
        assert Attachments(world).reference(choice) == {
            "destination": "demo/wp.demo.svc.cluster.local",
            "hboneMtlsPort": 15008,
        }


def test_reference_without_address_until_the_service_has_one():
    world = objects(namespace("demo", {USE: "waypoint"}), gateway())
    attachments = Attachments(world)
    assert attachments.reference(attachments.for_service(service("web"))) == {
        "destination": "demo/waypoint.demo.svc.cluster.local",
        "hboneMtlsPort": 15008,
    }
    assert attachments.reference(None) is None


def test_never_its_own_pods_and_service_nor_system_namespaces():
    world = objects(
        namespace("demo", {USE: "waypoint"}),
        gateway(labels={FOR: "all"}),
        waypoint_service(),
        namespace("istio-system", {USE: "waypoint"}),
    )
    own_pod = pod("waypoint-abc", labels={GW: "waypoint"})
    assert waypoint_for_pod(own_pod, world) is None
    assert waypoint_for_service(waypoint_service(), world) is None
    labelled_self = pod("waypoint-abc", labels={GW: "waypoint", USE: "waypoint"})
    assert waypoint_for_pod(labelled_self, world) is None
    assert waypoint_for_service(service("istiod", "istio-system", labels={USE: "demo/waypoint"}), world) is None
    assert waypoint_for_pod(pod("x", "kube-system", labels={USE: "demo/waypoint"}), world) is None


# ---- attachment: the article's implicit model -------------------------------------------------------


def test_implicit_waypoint_serves_its_whole_namespace():
    world = objects(
        namespace("demo"),
        gateway(cls="istio"),
        waypoint_service(),
        service("web"),
        pod("web"),
        pod("waypoint-x", labels={GW: "waypoint"}),
    )
    expected = WaypointChoice("demo", "waypoint", IMPLICIT_NAMESPACE)
    assert waypoint_for_service(service("web"), world) == expected
    assert waypoint_for_pod(pod("web"), world) == expected
    assert waypoint_for_pod(pod("waypoint-x", labels={GW: "waypoint"}), world) is None
    assert waypoint_for_service(waypoint_service(), world) is None
    assert waypoint_for_pod(pod("elsewhere", "other"), world) is None


def test_labelled_waypoints_and_labelled_namespaces_are_not_implicit():
    # A waypoint with waypoint-for serves only what names it.
    world = objects(namespace("demo"), gateway(labels={FOR: "service"}), service("web"), pod("web"))
    assert waypoint_for_service(service("web"), world) is None
    # Anything in the namespace carrying use-waypoint (even #none) switches the namespace to labels.
    for marker in (
        namespace("demo", {USE: "#none"}),
        service("other", labels={USE: "#none"}),
        pod("other", labels={USE: "#none"}),
    ):
        world = objects(namespace("demo"), gateway(), service("web"), pod("web"))
        kind = marker["kind"]
        world[kind] = [o for o in world.get(kind, []) if o["metadata"]["name"] != marker["metadata"]["name"]]
        world[kind].append(marker)
        assert Attachments(world).for_pod(pod("web")) is None, kind
        assert Attachments(world).for_service(service("web")) is None, kind


def test_implicit_service_account_waypoint_wins_over_the_namespace_one():
    ns_wide = gateway("ns-wide", cls="istio")
    by_sa = gateway("for-httpbin", cls="istio", annotations={"istio.io/for-service-account": "httpbin"})
    world = objects(
        namespace("demo"),
        ns_wide,
        by_sa,
        service("httpbin"),
        pod("httpbin-1", labels={"app": "httpbin"}, sa="httpbin"),
        pod("httpbin-2", labels={"app": "httpbin"}, sa="httpbin"),
        service("mixed", selector={"tier": "x"}),
        pod("m1", labels={"tier": "x"}, sa="httpbin"),
        pod("m2", labels={"tier": "x"}, sa="other"),
        service("sleep"),
        pod("sleep", sa="sleep"),
    )
    a = Attachments(world)
    assert a.for_pod(pod("httpbin-1", labels={"app": "httpbin"}, sa="httpbin")) == WaypointChoice(
        "demo", "for-httpbin", IMPLICIT_SERVICE_ACCOUNT
    )
    assert a.for_service(service("httpbin")) == WaypointChoice("demo", "for-httpbin", IMPLICIT_SERVICE_ACCOUNT)
    assert a.for_service(service("mixed", selector={"tier": "x"})) == WaypointChoice(
        "demo", "ns-wide", IMPLICIT_NAMESPACE
    )  # not all its pods run as httpbin
    assert a.for_pod(pod("sleep", sa="sleep")) == WaypointChoice("demo", "ns-wide", IMPLICIT_NAMESPACE)
    # Without the namespace-wide one, only the account's pods and services are served.
    world["Gateway"] = [by_sa]
    a = Attachments(world)
    assert a.for_pod(pod("sleep", sa="sleep")) is None
    assert a.for_service(service("sleep")) is None
    assert a.for_service(service("nopods", selector={"app": "gone"})) is None


def test_finished_pods_do_not_count_for_a_service_account():
    by_sa = gateway("for-httpbin", cls="istio", annotations={"istio.io/for-service-account": "httpbin"})
    world = objects(
        namespace("demo"),
        by_sa,
        service("httpbin"),
        pod("h1", labels={"app": "httpbin"}, sa="httpbin"),
        pod("old", labels={"app": "httpbin"}, sa="legacy", phase="Succeeded"),
    )
    assert waypoint_for_service(service("httpbin"), world).name == "for-httpbin"


def test_served_by_lists_services_and_pods():
    gw = gateway(labels={FOR: "all"})
    world = objects(
        namespace("demo", {USE: "waypoint"}),
        gw,
        waypoint_service(),
        service("web"),
        service("api"),
        pod("web"),
        pod("api", labels={"app": "api", USE: "#none"}),
        pod("waypoint-1", labels={GW: "waypoint"}),
    )
    services, pods = served_by(gw, world)
    assert [s["metadata"]["name"] for s in services] == ["api", "web"]
    assert [p["metadata"]["name"] for p in pods] == ["web"]
