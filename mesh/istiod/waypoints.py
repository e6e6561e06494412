"""Waypoints in istiod: what is deployed for them, and which workloads and services they serve.

A waypoint is a Gateway of class `istio-waypoint` (or `istio`, the article's 1.18 form) with an
HBONE listener on 15008 (`is_waypoint`). The model is docs/waypoints.md; in short:

- **Deployment** (`desired_objects`, applied by `mesh.istiod.waypoint_controller`): for each
  waypoint Gateway istiod keeps
  a ServiceAccount, a Deployment and a ClusterIP Service named after it, each controlled by the
  Gateway through an ownerReference (the lab's garbage collector removes them with it). Drift in
  what istiod owns is put back; the Deployment's `replicas` is the user's after creation. The
  Gateway's status says whether it is Programmed and at which addresses.
- **Attachment** (`Attachments`, `waypoint_for_service`, `waypoint_for_pod`, `served_by`): the
  `istio.io/use-waypoint` label on a Pod, Service or Namespace, limited by the waypoint's
  `istio.io/waypoint-for`; in namespaces where nothing carries that label, the article's implicit
  model (an unlabelled waypoint serves its namespace, or one service account). istiod's translation
  puts the result in the `waypoint` field of ztunnel's Workload and Service resources (`reference`).

Everything here is pure; the controller that talks to the lab API is `mesh.istiod.waypoint_controller`,
kept apart so istiod's translation (which reads the attachment model) stays pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from mesh.contract import (
    CANONICAL_NAME_LABEL,
    DATAPLANE_MODE_LABEL,
    DATAPLANE_MODE_NONE,
    ENV_GATEWAY_NAME,
    ENV_ISTIOD_ADDRESS,
    ENVOY_PROMETHEUS_PORT,
    GATEWAY_NAME_LABEL,
    HBONE_PORT,
    ISTIO_NAMESPACE,
    ISTIOD_ADDRESS,
    METRICS_PORT,
    READINESS_PORT,
    SIDECAR_INJECT_LABEL,
    USE_WAYPOINT_LABEL,
    WAYPOINT_FOR_LABEL,
)
from mesh.istiod.objects import Obj, selects_pod
from mesh.istiod.objects import annotations as _annotations
from mesh.istiod.objects import is_live as _is_live
from mesh.istiod.objects import labels as _labels
from mesh.istiod.objects import meta as _meta
from mesh.istiod.objects import name as _name
from mesh.istiod.objects import namespace as _namespace
from mesh.istiod.objects import service_account as _service_account

WAYPOINT_CLASSES = ("istio-waypoint", "istio")
FOR_SERVICE_ACCOUNT = "istio.io/for-service-account"
MANAGED = "gateway.istio.io/managed"
MANAGED_VALUE = "istio.io-mesh-controller"
NONE = "#none"  # a use-waypoint value: no waypoint for this object
TRAFFIC_TYPES = ("service", "workload", "all", "none")
DEFAULT_TRAFFIC_TYPE = "service"
PROXY_REPOSITORY = "docker.io/istio/proxyv2"
DEFAULT_TAG = "1.24.0"  # istiod deploys waypoints of its own version
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # `rollout restart` is the user's, not drift
SKIPPED_NAMESPACES = (ISTIO_NAMESPACE, "kube-system")

# How a waypoint was chosen (WaypointChoice.how).
NAMESPACE_LABEL = "namespace label"
SERVICE_LABEL = "service label"
POD_LABEL = "pod label"
IMPLICIT_NAMESPACE = "implicit (namespace)"
IMPLICIT_SERVICE_ACCOUNT = "implicit (service account)"


# ---- which Gateways are waypoints -----------------------------------------------------------------


def is_waypoint(gateway: Obj) -> bool:
    """A Gateway of a waypoint class with an HBONE listener on 15008."""
    spec = gateway.get("spec") or {}
    if gateway.get("kind", "Gateway") != "Gateway" or spec.get("gatewayClassName") not in WAYPOINT_CLASSES:
        return False
    return any(
        isinstance(listener, Mapping) and listener.get("protocol") == "HBONE" and listener.get("port") == HBONE_PORT
        for listener in spec.get("listeners") or []
    )


def traffic_type(gateway: Obj) -> str:
    """`istio.io/waypoint-for`: service (when unset), workload, all or none. Another value is
    returned as written and serves nothing."""
    return _labels(gateway).get(WAYPOINT_FOR_LABEL) or DEFAULT_TRAFFIC_TYPE


def is_implicit(gateway: Obj) -> bool:
    """A waypoint of the article's era: no `istio.io/waypoint-for` label (see `Attachments`)."""
    return WAYPOINT_FOR_LABEL not in _labels(gateway)


def service_hostname(namespace: str, name: str, domain_suffix: str = "cluster.local") -> str:
    return f"{name}.{namespace}.svc.{domain_suffix}"


# ---- what istiod deploys for a waypoint ---------------------------------------------------------------


def owner_reference(gateway: Obj) -> dict[str, Any]:
    return {
        "apiVersion": gateway.get("apiVersion") or "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "name": _name(gateway),
        "uid": _meta(gateway).get("uid") or "",
        "controller": True,
    }


def _object_meta(gateway: Obj, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta = {
        "name": _name(gateway),
        "namespace": _namespace(gateway),
        "labels": labels,
        "ownerReferences": [owner_reference(gateway)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def desired_service_account(gateway: Obj) -> dict[str, Any]:
    name = _name(gateway)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _object_meta(gateway, {GATEWAY_NAME_LABEL: name, MANAGED: MANAGED_VALUE}),
    }


def desired_deployment(gateway: Obj, tag: str = DEFAULT_TAG) -> dict[str, Any]:
    """The waypoint's Deployment, without `replicas` (1 on creation, the user's afterwards)."""
    name = _name(gateway)
    labels = {GATEWAY_NAME_LABEL: name, MANAGED: MANAGED_VALUE}
    pod_labels = {
        **labels,
        DATAPLANE_MODE_LABEL: DATAPLANE_MODE_NONE,
        SIDECAR_INJECT_LABEL: "false",
        CANONICAL_NAME_LABEL: name,
    }
    container = {
        "name": "istio-proxy",
        "image": f"{PROXY_REPOSITORY}:{tag}",
        "args": ["proxy", "waypoint"],
        "ports": [
            {"name": "mesh", "containerPort": HBONE_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": "status-port", "containerPort": READINESS_PORT, "protocol": "TCP"},
            {"name": "http-envoy-prom", "containerPort": ENVOY_PROMETHEUS_PORT, "protocol": "TCP"},
        ],
        "env": [
            {"name": ENV_ISTIOD_ADDRESS, "value": ISTIOD_ADDRESS},
            {"name": ENV_GATEWAY_NAME, "value": name},
            {"name": "ISTIO_META_WAYPOINT_FOR", "value": traffic_type(gateway)},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": READINESS_PORT}, "periodSeconds": 1},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _object_meta(gateway, labels),
        "spec": {
            "selector": {"matchLabels": {GATEWAY_NAME_LABEL: name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"serviceAccountName": name, "terminationGracePeriodSeconds": 2, "containers": [container]},
            },
        },
    }


def desired_service(gateway: Obj) -> dict[str, Any]:
    name = _name(gateway)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _object_meta(
            gateway,
            {GATEWAY_NAME_LABEL: name, MANAGED: MANAGED_VALUE},
            {"networking.istio.io/traffic-distribution": "PreferClose"},
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": {GATEWAY_NAME_LABEL: name},
            "ports": [
                {"name": "status-port", "port": READINESS_PORT, "protocol": "TCP", "targetPort": READINESS_PORT},
                {"name": "mesh", "port": HBONE_PORT, "protocol": "TCP", "targetPort": HBONE_PORT},
            ],
        },
    }


def desired_objects(gateway: Obj, tag: str = DEFAULT_TAG) -> list[dict[str, Any]]:
    """ServiceAccount, Service, Deployment (the order they are created in)."""
    return [desired_service_account(gateway), desired_service(gateway), desired_deployment(gateway, tag)]


def is_owned_by(obj: Obj, gateway: Obj) -> bool:
    uid = _meta(gateway).get("uid")
    return any(
        ref.get("controller") and ref.get("kind") == "Gateway" and ref.get("uid") == uid
        for ref in _meta(obj).get("ownerReferences") or []
    )


def drift(current: Obj | None, desired: Obj) -> dict[str, Any] | None:
    """What to apply so that `current` carries what istiod owns of `desired`, or None when it does.

    Owned: the labels and annotations istiod sets, and the `spec` fields it sets, except the Deployment's `replicas`
    (left out of what is applied, so the live value stays) and a `rollout restart` stamp in its
    template (carried over). A Service's allocated clusterIP is the API server's.
    """
    if current is None:
        return dict(desired)
    meta, live_meta = desired["metadata"], _meta(current)
    wanted = copy_json(desired)
    if desired["kind"] == "Deployment":
        stamp = (
            (((current.get("spec") or {}).get("template") or {}).get("metadata") or {})
            .get("annotations", {})
            .get(RESTARTED_AT)
        )
        if stamp:
            wanted["spec"]["template"]["metadata"].setdefault("annotations", {})[RESTARTED_AT] = stamp
    labels_ok = all((live_meta.get("labels") or {}).get(k) == v for k, v in (meta.get("labels") or {}).items())
    annotations_ok = all(
        (live_meta.get("annotations") or {}).get(k) == v for k, v in (meta.get("annotations") or {}).items()
    )
    live_spec = dict(current.get("spec") or {})
    if desired["kind"] == "Deployment":
        live_spec.pop("replicas", None)
    elif desired["kind"] == "Service":
        live_spec.pop("clusterIP", None)
        live_spec.pop("clusterIPs", None)
    # Only the spec fields istiod sets are its own: what the API server defaults (a Deployment's
    # strategy) is not drift.
    spec_ok = "spec" not in wanted or all(live_spec.get(k) == v for k, v in wanted["spec"].items())
    return None if labels_ok and annotations_ok and spec_ok else wanted


def copy_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


# ---- the Gateway's status ------------------------------------------------------------------------------


def waypoint_service_address(service: Obj | None) -> str | None:
    ip = ((service or {}).get("spec") or {}).get("clusterIP")
    return ip if ip and ip != "None" else None


def gateway_status(
    gateway: Obj,
    service: Obj | None,
    problem: str | None = None,
    attached_routes: int = 0,
    domain_suffix: str = "cluster.local",
) -> dict[str, Any]:
    """The status istiod reports for a waypoint Gateway (conditions without lastTransitionTime).

    Programmed once its Service has a ClusterIP; False/Invalid when istiod could not create its
    objects (`problem`), False/Pending while the Service has no address yet.
    """
    name, namespace = _name(gateway), _namespace(gateway)
    generation = _meta(gateway).get("generation")
    host = service_hostname(namespace, name, domain_suffix)
    ip = waypoint_service_address(service)

    def condition(type_: str, status: bool, reason: str, message: str) -> dict[str, Any]:
        c = {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message}
        if generation is not None:
            c["observedGeneration"] = generation
        return c

    if problem:
        programmed = condition("Programmed", False, "Invalid", f"Failed to create the waypoint: {problem}")
    elif ip:
        programmed = condition(
            "Programmed", True, "Programmed", f"Resource programmed, assigned to service(s) {host}:{HBONE_PORT}"
        )
    else:
        programmed = condition("Programmed", False, "Pending", f"Waiting for service {host} to get an address")
    status: dict[str, Any] = {
        "conditions": [condition("Accepted", True, "Accepted", "Resource accepted"), programmed],
        "addresses": [{"type": "IPAddress", "value": ip}, {"type": "Hostname", "value": host}] if ip else [],
        "listeners": [],
    }
    for listener in (gateway.get("spec") or {}).get("listeners") or []:
        status["listeners"].append(
            {
                "name": listener.get("name", ""),
                "supportedKinds": [],
                "attachedRoutes": attached_routes,
                "conditions": [
                    condition("Accepted", True, "Accepted", "No errors found"),
                    condition("Conflicted", False, "NoConflicts", "No errors found"),
                    condition("Programmed", True, "Programmed", "No errors found"),
                    condition("ResolvedRefs", True, "ResolvedRefs", "No errors found"),
                ],
            }
        )
    return status


def attached_route_count(gateway: Obj, routes: Iterable[Obj]) -> int:
    """HTTPRoutes whose parentRefs name this Gateway."""
    name, namespace = _name(gateway), _namespace(gateway)
    count = 0
    for route in routes:
        for ref in (route.get("spec") or {}).get("parentRefs") or []:
            if (
                (ref.get("kind") or "Gateway") == "Gateway"
                and ref.get("name") == name
                and (ref.get("namespace") or _namespace(route)) == namespace
            ):
                count += 1
                break
    return count


def _timed(conditions: list[dict[str, Any]], old: list[dict[str, Any]] | None, now: str) -> list[dict[str, Any]]:
    """lastTransitionTime kept from the old condition of the same type and status, else now."""
    previous = {c.get("type"): c for c in old or []}
    result = []
    for c in conditions:
        before = previous.get(c["type"])
        kept = before.get("lastTransitionTime") if before is not None and before.get("status") == c["status"] else None
        result.append({**c, "lastTransitionTime": kept or now})
    return result


def _untimed(status: Any) -> Any:
    if isinstance(status, dict):
        return {k: _untimed(v) for k, v in status.items() if k != "lastTransitionTime"}
    if isinstance(status, list):
        return [_untimed(v) for v in status]
    return status


def status_update(current: Obj | None, desired: Obj, now: str) -> dict[str, Any] | None:
    """The status to write (other fields of `current` kept), or None when it already says `desired`."""
    current = dict(current or {})
    if all(_untimed(current.get(k)) == _untimed(v) for k, v in desired.items()):
        return None
    new = {**current, **copy_json(desired)}
    new["conditions"] = _timed(new["conditions"], current.get("conditions"), now)
    old_listeners = {entry.get("name"): entry for entry in current.get("listeners") or []}
    for entry in new["listeners"]:
        entry["conditions"] = _timed(entry["conditions"], old_listeners.get(entry["name"], {}).get("conditions"), now)
    return new


# ---- attachment: which workloads and services a waypoint serves -------------------------------------


@dataclass(frozen=True)
class WaypointChoice:
    """The waypoint an object uses, how it was chosen, and whether such a waypoint Gateway exists."""

    namespace: str
    name: str
    how: str
    found: bool = True

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def hostname(self, domain_suffix: str = "cluster.local") -> str:
        return service_hostname(self.namespace, self.name, domain_suffix)


def parse_use_waypoint(value: str, namespace: str) -> tuple[str, str] | None:
    """`<name>` (in `namespace`) or `<ns>/<name>`; None for `#none` or an empty value."""
    value = (value or "").strip()
    if not value or value == NONE:
        return None
    if "/" in value:
        ns, _, name = value.partition("/")
        return (ns or namespace, name) if name else None
    return namespace, value


class Attachments:
    """Waypoint attachment over one snapshot of the objects (by kind: Namespace, Gateway, Service,
    Pod). Built once per translation; `for_service` and `for_pod` answer per object.

    Modern model: an object's own `istio.io/use-waypoint`, else its namespace's, names the waypoint
    (`#none` on the object opts it out); the waypoint must handle that traffic (`waypoint-for`:
    service/all for Services, workload/all for Pods). A name that is no waypoint Gateway still gives a
    choice (found=False), so ztunnel fails closed. Implicit model, in namespaces where nothing carries
    the label: unlabelled waypoints serve every Service and Pod of their namespace, those annotated
    `istio.io/for-service-account` only that account's pods and the Services whose pods all run as
    it; the account's waypoint wins over the namespace's, and among equals the first by name.
    Waypoints never serve their own pods and Service (nor, but by their own label, any Gateway's), nor
    istio-system and kube-system.
    """

    def __init__(self, objects: Mapping[str, Iterable[Obj]], domain_suffix: str = "cluster.local"):
        self.domain_suffix = domain_suffix
        self._namespace_labels = {_name(ns): _labels(ns) for ns in objects.get("Namespace", ())}
        self._gateways = {(_namespace(gw), _name(gw)): gw for gw in objects.get("Gateway", ())}
        self._services = {(_namespace(s), _name(s)): s for s in objects.get("Service", ())}
        self._pods: dict[str, list[Obj]] = {}
        for pod in objects.get("Pod", ()):
            if _is_live(pod):
                self._pods.setdefault(_namespace(pod), []).append(pod)
        self._labelled = {ns for ns, labels in self._namespace_labels.items() if USE_WAYPOINT_LABEL in labels}
        for obj in [*self._services.values(), *(p for pods in self._pods.values() for p in pods)]:
            if USE_WAYPOINT_LABEL in _labels(obj):
                self._labelled.add(_namespace(obj))
        self._implicit: dict[str, list[Obj]] = {}
        for (ns, _), gw in sorted(self._gateways.items()):
            if is_waypoint(gw) and is_implicit(gw):
                self._implicit.setdefault(ns, []).append(gw)

    def waypoint(self, namespace: str, name: str) -> Obj | None:
        """The waypoint Gateway of that name, or None (missing, or a Gateway that is no waypoint)."""
        gw = self._gateways.get((namespace, name))
        return gw if gw is not None and is_waypoint(gw) else None

    def is_implicit_namespace(self, namespace: str) -> bool:
        """The article's model applies: nothing in the namespace carries `istio.io/use-waypoint`."""
        return namespace not in self._labelled

    def for_service(self, service: Obj) -> WaypointChoice | None:
        return self._choose(service, SERVICE_LABEL, ("service", "all"))

    def for_pod(self, pod: Obj) -> WaypointChoice | None:
        return self._choose(pod, POD_LABEL, ("workload", "all"))

    def _choose(self, obj: Obj, own_how: str, handles: tuple[str, ...]) -> WaypointChoice | None:
        namespace = _namespace(obj)
        if namespace in SKIPPED_NAMESPACES:
            return None
        labels = _labels(obj)
        gateway_of = labels.get(GATEWAY_NAME_LABEL)  # set on a waypoint's own pods and Service
        if self.is_implicit_namespace(namespace):
            return None if gateway_of else self._implicit_choice(obj, own_how == POD_LABEL)
        if USE_WAYPOINT_LABEL in labels:
            target, how = parse_use_waypoint(labels[USE_WAYPOINT_LABEL], namespace), own_how
        elif gateway_of:
            return None
        else:
            value = self._namespace_labels.get(namespace, {}).get(USE_WAYPOINT_LABEL, "")
            target, how = parse_use_waypoint(value, namespace), NAMESPACE_LABEL
        if target is None or (gateway_of and target == (namespace, gateway_of)):
            return None
        gateway = self.waypoint(*target)
        if gateway is None:
            return WaypointChoice(target[0], target[1], how, found=False)
        if traffic_type(gateway) not in handles:
            return None
        return WaypointChoice(target[0], target[1], how)

    def _implicit_choice(self, obj: Obj, is_pod: bool) -> WaypointChoice | None:
        candidates = self._implicit.get(_namespace(obj))
        if not candidates:
            return None
        if is_pod:
            accounts = {_service_account(obj)}
        else:
            accounts = {_service_account(p) for p in self._pods.get(_namespace(obj), []) if selects_pod(obj, p)}
        if len(accounts) == 1:
            account = next(iter(accounts))
            for gw in candidates:
                if _annotations(gw).get(FOR_SERVICE_ACCOUNT) == account:
                    return WaypointChoice(_namespace(gw), _name(gw), IMPLICIT_SERVICE_ACCOUNT)
        for gw in candidates:
            if not _annotations(gw).get(FOR_SERVICE_ACCOUNT):
                return WaypointChoice(_namespace(gw), _name(gw), IMPLICIT_NAMESPACE)
        return None

    def reference(self, choice: WaypointChoice | None) -> dict[str, Any] | None:
        """The WDS `waypoint` field: the waypoint Service's hostname, and its ClusterIP once it has one
        (never for a missing waypoint: a Service of that name that no waypoint owns is not one)."""
        if choice is None:
            return None
        ref: dict[str, Any] = {"destination": f"{choice.namespace}/{choice.hostname(self.domain_suffix)}"}
        service = self._services.get((choice.namespace, choice.name))
        if choice.found and service is not None and _labels(service).get(GATEWAY_NAME_LABEL) == choice.name:
            ip = waypoint_service_address(service)
            if ip:
                ref["address"] = ip
        ref["hboneMtlsPort"] = HBONE_PORT
        return ref

    def served_by(
        self, gateway: Obj, objects: Mapping[str, Iterable[Obj]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        key = (_namespace(gateway), _name(gateway))

        def mine(choice: WaypointChoice | None) -> bool:
            return choice is not None and (choice.namespace, choice.name) == key

        services = [dict(s) for s in objects.get("Service", ()) if mine(self.for_service(s))]
        pods = [dict(p) for p in objects.get("Pod", ()) if _is_live(p) and mine(self.for_pod(p))]
        order = lambda o: (_namespace(o), _name(o))  # noqa: E731
        return sorted(services, key=order), sorted(pods, key=order)


def waypoint_for_service(
    service: Obj, objects: Mapping[str, Iterable[Obj]], domain_suffix: str = "cluster.local"
) -> WaypointChoice | None:
    """The waypoint `service` uses, given the objects by kind (Namespace, Gateway, Service, Pod)."""
    return Attachments(objects, domain_suffix).for_service(service)


def waypoint_for_pod(
    pod: Obj, objects: Mapping[str, Iterable[Obj]], domain_suffix: str = "cluster.local"
) -> WaypointChoice | None:
    """The waypoint `pod` uses, given the objects by kind (Namespace, Gateway, Service, Pod)."""
    return Attachments(objects, domain_suffix).for_pod(pod)


def served_by(
    waypoint_gateway: Obj, objects: Mapping[str, Iterable[Obj]], domain_suffix: str = "cluster.local"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the Services, the live Pods) that use this waypoint, each sorted by namespace and name."""
    return Attachments(objects, domain_suffix).served_by(waypoint_gateway, objects)
