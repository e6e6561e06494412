"""istiod's translation of the lab's objects into ztunnel's resources (pure)."""

from __future__ import annotations

import copy

import pytest

from mesh.istiod.translate import (
    ADDRESS,
    AUTHORIZATION,
    Settings,
    Versioned,
    diff,
    is_enrolled,
    status_update,
    translate,
    version_of,
    workload_owner,
    ztunnel_condition,
)
from mesh.policy.ztunnel import ZtunnelTranslation

AMBIENT = {"istio.io/dataplane-mode": "ambient"}
REDIRECTED = {"ambient.istio.io/redirection": "enabled"}


def namespace(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def pod(
    name: str,
    ns: str = "demo",
    ip: str | None = "10.244.1.5",
    labels: dict | None = None,
    annotations: dict | None = None,
    owner: tuple[str, str] | None = None,
    sa: str = "default",
    node: str = "worker1",
    ports: dict[str, int] | None = None,
    ready: bool = True,
    **spec,
) -> dict:
    metadata: dict = {
        "name": name,
        "namespace": ns,
        "uid": f"uid-{name}",
        "labels": labels or {},
        "annotations": annotations or {},
    }
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "owner-uid", "controller": True}
        ]
    status: dict = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    container = {
        "name": "app",
        "image": "x",
        "ports": [{"name": n, "containerPort": p} for n, p in (ports or {}).items()],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [container], **spec},
        "status": status,
    }


def service(
    name: str, ns: str = "demo", selector: dict | None = None, ports: list[dict] | None = None, ip: str = "10.96.0.12"
) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": ip, "selector": selector or {}, "ports": ports or [{"port": 80, "targetPort": 80}]},
    }


def policy(name: str, ns: str = "demo", spec: dict | None = None, generation: int = 1) -> dict:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns, "generation": generation},
        "spec": spec or {},
    }


def peer_authn(name: str, ns: str, mode: str, selector: dict | None = None) -> dict:
    spec: dict = {"mtls": {"mode": mode}}
    if selector:
        spec["selector"] = {"matchLabels": selector}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": spec,
    }


def workloads(objects: dict) -> dict[str, dict]:
    """Workload resources by pod name."""
    result = {}
    for res in translate(objects).resources[ADDRESS].values():
        if "workload" in res.resource:
            result[res.resource["workload"]["name"]] = res.resource["workload"]
    return result


def workload(p: dict, ns_labels: dict | None = None, **objects) -> dict:
    ns = namespace(p["metadata"]["namespace"], ns_labels)
    return workloads({"Pod": [p], "Namespace": [ns], **objects})[p["metadata"]["name"]]


# ---- enrollment ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ns_labels, pod_labels, annotations, host, expected",
    [
        (AMBIENT, {}, REDIRECTED, False, True),
        ({}, AMBIENT, REDIRECTED, False, True),  # the pod's own label is enough
        (AMBIENT, {}, {}, False, False),  # istio-cni has not redirected it yet
        (AMBIENT, {"istio.io/dataplane-mode": "none"}, REDIRECTED, False, False),  # opted out
        ({}, {}, REDIRECTED, False, False),  # a stale annotation alone does not enroll
        (AMBIENT, {}, REDIRECTED, True, False),  # hostNetwork never
        ({"istio.io/dataplane-mode": "none"}, {}, REDIRECTED, False, False),
    ],
)
def test_enrollment_rule(ns_labels, pod_labels, annotations, host, expected):
    p = pod("a", labels=pod_labels, annotations=annotations, hostNetwork=host)
    assert is_enrolled(p, ns_labels) is expected
    assert workload(p, ns_labels)["protocol"] == ("HBONE" if expected else "TCP")


def test_workload_fields():
    p = pod(
        "httpbin-6d8f9c-x7k2p",
        labels={"app": "httpbin", "version": "v1", "pod-template-hash": "6d8f9c"},
        annotations=REDIRECTED,
        owner=("ReplicaSet", "httpbin-6d8f9c"),
        sa="httpbin",
    )
    w = workload(p, AMBIENT)
    assert w == {
        "uid": "Kubernetes//Pod/demo/httpbin-6d8f9c-x7k2p",
        "name": "httpbin-6d8f9c-x7k2p",
        "namespace": "demo",
        "addresses": ["10.244.1.5"],
        "protocol": "HBONE",
        "trustDomain": "cluster.local",
        "serviceAccount": "httpbin",
        "node": "worker1",
        "canonicalName": "httpbin",
        "canonicalRevision": "v1",
        "workloadType": "deployment",
        "workloadName": "httpbin",
        "waypoint": None,
        "services": {},
        "authorizationPolicies": [],
        "status": "Healthy",
        "clusterId": "Kubernetes",
        "networkMode": "STANDARD",
    }
    assert list(translate({"Pod": [p]}).resources[ADDRESS]) == ["Kubernetes//Pod/demo/httpbin-6d8f9c-x7k2p"]


def test_unready_pod_is_unhealthy_and_default_service_account():
    p = pod("a", ready=False)
    del p["spec"]["serviceAccountName"]
    w = workload(p)
    assert (w["status"], w["serviceAccount"]) == ("Unhealthy", "default")


# ---- names and ownership ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "owner, labels, expected",
    [
        (("ReplicaSet", "web-5f7d8"), {"pod-template-hash": "5f7d8"}, ("deployment", "web")),
        (("ReplicaSet", "web-5f7d8"), {}, ("pod", "web-5f7d8")),  # a bare ReplicaSet: no Deployment
        (("DaemonSet", "ztunnel"), {}, ("daemonset", "ztunnel")),
        (None, {}, ("pod", "solo")),
    ],
)
def test_workload_type_and_name(owner, labels, expected):
    assert workload_owner(pod("solo", owner=owner, labels=labels)) == expected


def test_owner_references_without_controller_are_ignored():
    p = pod("solo", owner=("DaemonSet", "ds"))
    p["metadata"]["ownerReferences"][0]["controller"] = False
    assert workload_owner(p) == ("pod", "solo")


@pytest.mark.parametrize(
    "labels, name, revision",
    [
        ({"app": "reviews", "version": "v2"}, "reviews", "v2"),
        ({"app.kubernetes.io/name": "ratings", "app": "other", "app.kubernetes.io/version": "1.2"}, "ratings", "1.2"),
        (
            {
                "service.istio.io/canonical-name": "canon",
                "app": "x",
                "service.istio.io/canonical-revision": "r1",
                "version": "v9",
            },
            "canon",
            "r1",
        ),
        ({}, "web", "latest"),  # the workload's name
    ],
)
def test_canonical_name_and_revision(labels, name, revision):
    w = workload(
        pod("web-abc12-xyz", labels={**labels, "pod-template-hash": "abc12"}, owner=("ReplicaSet", "web-abc12"))
    )
    assert (w["canonicalName"], w["canonicalRevision"]) == (name, revision)


# ---- services -------------------------------------------------------------------------------------


def test_services_map_resolves_named_target_ports():
    p = pod("httpbin-1", labels={"app": "httpbin"}, ports={"http": 8080, "admin": 9090})
    svc = service(
        "httpbin",
        selector={"app": "httpbin"},
        ports=[
            {"name": "web", "port": 8000, "targetPort": "http"},
            {"name": "metrics", "port": 9000, "targetPort": "missing"},  # not declared by the pod: left out
            {"name": "raw", "port": 7000, "targetPort": 7001},
            {"name": "same", "port": 6000},  # no targetPort: the port itself
        ],
    )
    other_ns = service("httpbin", ns="other", selector={"app": "httpbin"})
    unselected = service("sleep", selector={"app": "sleep"})
    no_selector = service("external", selector={})
    w = workload(p, Service=[svc, other_ns, unselected, no_selector])
    assert w["services"] == {"demo/httpbin.demo.svc.cluster.local": {"8000": 8080, "7000": 7001, "6000": 6000}}


def test_service_resource():
    svc = service(
        "httpbin",
        selector={"app": "httpbin"},
        ports=[{"port": 8000, "targetPort": 80}, {"port": 8443, "targetPort": "https"}],
    )
    headless = service("db", ip="None", selector={"app": "db"})
    external = service("ext")
    external["spec"] = {"type": "ExternalName", "externalName": "example.com"}
    resources = translate({"Service": [svc, headless, external]}).resources[ADDRESS]
    assert sorted(resources) == ["demo/db.demo.svc.cluster.local", "demo/httpbin.demo.svc.cluster.local"]
    assert resources["demo/httpbin.demo.svc.cluster.local"].resource == {
        "service": {
            "name": "httpbin",
            "namespace": "demo",
            "hostname": "httpbin.demo.svc.cluster.local",
            "addresses": ["10.96.0.12"],
            "ports": [{"servicePort": 8000, "targetPort": 80}, {"servicePort": 8443, "targetPort": 0}],
            "subjectAltNames": [],
            "waypoint": None,
        }
    }
    assert resources["demo/db.demo.svc.cluster.local"].resource["service"]["addresses"] == []


# ---- policies -------------------------------------------------------------------------------------


def test_selector_policies_are_attached_and_namespace_policies_are_not():
    p = pod("httpbin-1", labels={"app": "httpbin"})
    selecting = policy(
        "allow-sleep",
        spec={
            "selector": {"matchLabels": {"app": "httpbin"}},
            "rules": [{"from": [{"source": {"principals": ["x"]}}]}],
        },
    )
    other = policy("other", spec={"selector": {"matchLabels": {"app": "other"}}})
    namespace_wide = policy("deny-all", spec={"action": "DENY", "rules": [{}]})
    custom = policy(
        "ext",
        spec={
            "selector": {"matchLabels": {"app": "httpbin"}},
            "action": "CUSTOM",
            "provider": {"name": "x"},
            "rules": [{}],
        },
    )
    objects = {"Pod": [p], "AuthorizationPolicy": [selecting, other, namespace_wide, custom]}
    w = workloads(objects)["httpbin-1"]
    assert w["authorizationPolicies"] == ["demo/allow-sleep"]
    authz = translate(objects).resources[AUTHORIZATION]
    assert sorted(authz) == ["demo/allow-sleep", "demo/deny-all", "demo/other"]  # CUSTOM never reaches ztunnel
    assert authz["demo/deny-all"].resource["scope"] == "NAMESPACE"
    assert authz["demo/allow-sleep"].resource["rules"][0]["clauses"][0]["matches"] == [{"principals": [{"exact": "x"}]}]


def test_strict_peer_authentication_adds_the_static_policy():
    p = pod("httpbin-1", labels={"app": "httpbin"})
    objects = {"Pod": [p], "PeerAuthentication": [peer_authn("default", "demo", "STRICT")]}
    assert workloads(objects)["httpbin-1"]["authorizationPolicies"] == ["istio-system/istio_converted_static_strict"]
    static = translate(objects).resources[AUTHORIZATION]["istio-system/istio_converted_static_strict"].resource
    assert static["action"] == "DENY"


def test_policy_conditions():
    accepted = policy("ok", spec={"rules": [{"to": [{"operation": {"ports": ["80"]}}]}]}, generation=3)
    http = policy("http", spec={"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
    custom = policy("custom", spec={"action": "CUSTOM", "provider": {"name": "x"}, "rules": [{}]})
    waypoint = policy(
        "wp",
        spec={
            "targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}],
            "rules": [{}],
        },
    )
    conditions = translate({"AuthorizationPolicy": [accepted, http, custom, waypoint]}).conditions
    assert conditions[("demo", "ok")] == {
        "type": "ZtunnelAccepted",
        "status": "True",
        "reason": "Accepted",
        "message": "attached to ztunnel",
        "observedGeneration": 3,
    }
    assert conditions[("demo", "http")]["status"] == "True"  # sent, with its HTTP rules dropped
    assert conditions[("demo", "http")]["reason"] == "UnsupportedValue"
    assert "found: methods" in conditions[("demo", "http")]["message"]
    assert conditions[("demo", "custom")]["status"] == "False"  # not sent at all
    assert conditions[("demo", "custom")]["message"] == "ztunnel does not support the CUSTOM action"
    assert ("demo", "wp") not in conditions  # a waypoint's policy, not ztunnel's
    assert ztunnel_condition(ZtunnelTranslation(None, None)) is None


def test_invalid_policy_is_left_out_with_a_problem():
    bad = policy("bad", spec={"action": "MAYBE"})
    result = translate({"AuthorizationPolicy": [bad]})
    assert result.resources[AUTHORIZATION] == {}
    assert len(result.problems) == 1 and "demo/bad" in result.problems[0]


def test_status_update_writes_only_changes():
    condition = {"type": "ZtunnelAccepted", "status": "True", "reason": "Accepted", "message": "attached to ztunnel"}
    first = status_update(None, condition, "T1")
    assert first == {"conditions": [{**condition, "lastTransitionTime": "T1"}]}
    assert status_update(first, condition, "T2") is None
    reworded = status_update(first, {**condition, "reason": "UnsupportedValue", "message": "m"}, "T3")
    assert reworded["conditions"][0]["lastTransitionTime"] == "T1"  # same status: no transition
    flipped = status_update(first, {**condition, "status": "False"}, "T4")
    assert flipped["conditions"][0]["lastTransitionTime"] == "T4"
    other = {"conditions": [{"type": "WaypointAccepted", "status": "True"}]}
    assert status_update(other, condition, "T5")["conditions"][0] == {"type": "WaypointAccepted", "status": "True"}


# ---- which pods, host network --------------------------------------------------------------------


def test_pods_without_ip_terminating_or_finished_are_left_out():
    no_ip = pod("pending", ip=None)
    terminating = pod("leaving")
    terminating["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    done = pod("done")
    done["status"]["phase"] = "Succeeded"
    assert set(workloads({"Pod": [no_ip, terminating, done, pod("running")]})) == {"running"}


def test_host_network_pod():
    p = pod(
        "ztunnel-abcde",
        ns="istio-system",
        ip="172.18.0.11",
        owner=("DaemonSet", "ztunnel"),
        annotations=REDIRECTED,
        hostNetwork=True,
    )
    w = workload(p, AMBIENT)
    assert (w["networkMode"], w["protocol"], w["workloadType"]) == ("HOST_NETWORK", "TCP", "daemonset")
    assert w["addresses"] == ["172.18.0.11"]


# ---- versions and diff ---------------------------------------------------------------------------


def objects_fixture() -> dict:
    return {
        "Namespace": [namespace("demo", AMBIENT)],
        "Pod": [pod("a", labels={"app": "a"}, annotations=REDIRECTED), pod("b", ip="10.244.1.6")],
        "Service": [service("a", selector={"app": "a"})],
        "AuthorizationPolicy": [policy("p", spec={"selector": {"matchLabels": {"app": "a"}}})],
    }


def test_versions_are_stable_and_content_addressed():
    first = translate(objects_fixture())
    shuffled = {kind: list(reversed(objs)) for kind, objs in objects_fixture().items()}
    assert translate(shuffled).resources == first.resources
    assert translate(objects_fixture(), Settings()).resources == first.resources
    for resources in first.resources.values():
        for res in resources.values():
            assert res.version == version_of(copy.deepcopy(res.resource))
            assert len(res.version) == 16


def test_diff_reports_changes_and_removals():
    old = translate(objects_fixture()).resources[ADDRESS]
    objects = objects_fixture()
    objects["Pod"] = [pod("a", labels={"app": "a"}, annotations={}), pod("c", ip="10.244.1.7")]  # a un-enrolled, b gone
    new = translate(objects).resources[ADDRESS]
    changed, removed = diff(old, new)
    assert sorted(changed) == ["Kubernetes//Pod/demo/a", "Kubernetes//Pod/demo/c"]
    assert changed["Kubernetes//Pod/demo/a"].resource["workload"]["protocol"] == "TCP"
    assert removed == ["Kubernetes//Pod/demo/b"]
    assert diff(new, new) == ({}, [])
    known = {name: Versioned(res.version, None) for name, res in new.items()}  # what a client reports
    assert diff(known, new) == ({}, [])
    assert diff({}, new)[0] == new


# ---- waypoints: the `waypoint` field (docs/waypoints.md) --------------------------------------------------


def article_waypoint_objects() -> dict[str, list[dict]]:
    """The article's ambient namespace with its waypoint Gateway (topologies/article), as the lab
    would hold them: Services with ClusterIPs, one pod per Deployment, and the objects istiod deploys
    for the Gateway (its Service and a pod of its Deployment)."""
    import os

    import yaml

    from lab.testing import ARTICLE
    from mesh.istiod.waypoints import desired_objects

    docs = []
    for name in ("httpbin-ambient.yaml", "sleep-ambient.yaml", "waypoint.yaml"):
        with open(os.path.join(ARTICLE, name)) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    [gw] = [d for d in docs if d["kind"] == "Gateway"]
    gw["metadata"]["uid"] = "uid-gw"
    docs.extend(d for d in desired_objects(gw) if d["kind"] != "ServiceAccount")
    objects: dict[str, list[dict]] = {
        "Namespace": [namespace("ambient-apps", AMBIENT)],
        "Gateway": [gw],
        "Service": [],
        "Pod": [],
    }
    for i, doc in enumerate(docs):
        if doc["kind"] == "Service":
            doc["spec"]["clusterIP"] = f"10.96.0.{20 + i}"
            objects["Service"].append(doc)
        elif doc["kind"] == "Deployment":
            template = doc["spec"]["template"]
            p = pod(
                f"{doc['metadata']['name']}-abc12-xyz",
                ns="ambient-apps",
                ip=f"10.244.1.{20 + i}",
                labels=dict(template["metadata"]["labels"]),
                annotations=REDIRECTED,
                sa=template["spec"]["serviceAccountName"],
            )
            p["spec"]["containers"] = template["spec"]["containers"]
            objects["Pod"].append(p)
    return objects


def test_article_waypoint_serves_httpbin_and_sleep_workloads_and_services():
    objects = article_waypoint_objects()
    waypoint_ip = next(
        s["spec"]["clusterIP"] for s in objects["Service"] if s["metadata"]["name"] == "httpbin-ambient-waypoint"
    )
    expected = {
        "destination": "ambient-apps/httpbin-ambient-waypoint.ambient-apps.svc.cluster.local",
        "address": waypoint_ip,
        "hboneMtlsPort": 15008,
    }
    resources = translate(objects).resources[ADDRESS]
    for name in ("httpbin-ambient", "sleep-ambient"):
        svc = resources[f"ambient-apps/{name}.ambient-apps.svc.cluster.local"].resource["service"]
        assert svc["waypoint"] == expected, name
        wl = resources[f"Kubernetes//Pod/ambient-apps/{name}-abc12-xyz"].resource["workload"]
        assert wl["waypoint"] == expected, name
    # The waypoint itself goes direct: its Service and its pod carry no waypoint.
    own = resources["ambient-apps/httpbin-ambient-waypoint.ambient-apps.svc.cluster.local"].resource["service"]
    assert own["waypoint"] is None
    wl = resources["Kubernetes//Pod/ambient-apps/httpbin-ambient-waypoint-abc12-xyz"].resource["workload"]
    assert wl["waypoint"] is None and wl["protocol"] == "TCP"  # dataplane-mode none: not enrolled


def test_waypoint_reference_follows_labels_and_gateway_deletion():
    objects = article_waypoint_objects()
    key = "ambient-apps/httpbin-ambient.ambient-apps.svc.cluster.local"
    # The modern label on the namespace switches the namespace to labels: #none opts everything out.
    objects["Namespace"] = [namespace("ambient-apps", {**AMBIENT, "istio.io/use-waypoint": "#none"})]
    assert translate(objects).resources[ADDRESS][key].resource["service"]["waypoint"] is None
    # Naming a waypoint that does not exist fails closed: a reference without an address.
    objects["Namespace"] = [namespace("ambient-apps", {**AMBIENT, "istio.io/use-waypoint": "missing"})]
    assert translate(objects).resources[ADDRESS][key].resource["service"]["waypoint"] == {
        "destination": "ambient-apps/missing.ambient-apps.svc.cluster.local",
        "hboneMtlsPort": 15008,
    }
    # No Gateway, no waypoint (the implicit model).
    objects["Namespace"] = [namespace("ambient-apps", AMBIENT)]
    objects["Gateway"] = []
    assert translate(objects).resources[ADDRESS][key].resource["service"]["waypoint"] is None
