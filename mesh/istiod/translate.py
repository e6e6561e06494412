"""istiod's translation: the lab's objects in, ztunnel's `Address` and `Authorization` resources out.

Pure and deterministic: the same objects always give the same resources and versions (a hash of the
resource's JSON), so a reconnecting ztunnel that sends its known versions gets exactly what changed.
Shapes are the contract's (docs/mesh-internals.md), semantics istiod's ambient index (docs/ambient-facts.md §4, §5):

- every Service is an Address `<ns>/<hostname>`; every running pod with an IP is an Address
  `<cluster>//Pod/<ns>/<name>`, HBONE only when enrolled (`is_enrolled`);
- a workload lists the Services whose selector selects it (service port → its target port, named
  target ports resolved through the pod's container ports) and the selector policies attached to it;
- a workload or Service a waypoint serves carries its `waypoint` reference (`mesh.istiod.waypoints`,
  docs/waypoints.md);
- every AuthorizationPolicy ztunnel can use is an Authorization `<ns>/<name>`, plus the policies
  PeerAuthentications derive; each policy's outcome is a `ZtunnelAccepted` condition for its status;
- every waypoint gets its Envoy-shaped Listeners, Clusters and RouteConfigurations
  (`mesh.istiod.proxyconfig`), named `<waypoint ns>/<waypoint name>/<envoy name>`; `jwks_for`
  answers the RequestAuthentications' `jwksUri` from what istiod has fetched so far.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from mesh.contract import (
    ADDRESS,
    AUTHORIZATION,
    CANONICAL_NAME_LABEL,
    CANONICAL_REVISION_LABEL,
    DATAPLANE_MODE_AMBIENT,
    DATAPLANE_MODE_LABEL,
    DATAPLANE_MODE_NONE,
    NETWORK_MODE_HOST,
    NETWORK_MODE_STANDARD,
    PROTOCOL_HBONE,
    PROTOCOL_TCP,
    PROXY_TYPES,
    REDIRECTION_ANNOTATION,
    REDIRECTION_ENABLED,
    SIDECAR_STATUS_ANNOTATION,
    STATUS_HEALTHY,
    STATUS_UNHEALTHY,
    TUNNEL_LABEL,
    WDS_TYPES,
)
from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN
from mesh.istiod.objects import TERMINAL_PHASES, Obj, is_ready, selects_pod, service_account
from mesh.istiod.objects import labels as _labels
from mesh.istiod.objects import meta as _meta
from mesh.istiod.objects import name as _name
from mesh.istiod.objects import namespace as _namespace
from mesh.istiod.proxyconfig import proxy_id, sidecar_resources, waypoint_resources
from mesh.istiod.waypoints import Attachments, is_waypoint
from mesh.policy.model import AuthorizationPolicy, PeerAuthentication, parse_as
from mesh.policy.peerauth import derived_authorizations, effective_mtls_mode, explain_mtls
from mesh.policy.ztunnel import ZtunnelTranslation, to_ztunnel, workload_policy_keys

TYPES = WDS_TYPES  # push order: a policy arrives before the workloads that name it
ALL_TYPES = TYPES + PROXY_TYPES

CONDITION = "ZtunnelAccepted"
ACCEPTED_MESSAGE = "attached to ztunnel"  # istiod's message for a policy ztunnel takes as written

_NAME_LABELS = (CANONICAL_NAME_LABEL, "app.kubernetes.io/name", "app")
_REVISION_LABELS = (CANONICAL_REVISION_LABEL, "app.kubernetes.io/version", "version")


class Versioned(NamedTuple):
    """One resource as the config stream carries it. `resource` is None for versions a client
    reported as known (only the version is compared)."""

    version: str
    resource: dict[str, Any] | None


Resources = dict[str, dict[str, Versioned]]  # type (ADDRESS, AUTHORIZATION) → name → resource


@dataclass(frozen=True)
class Settings:
    """The mesh-wide values istiod's translation depends on (its defaults are Istio's)."""

    trust_domain: str = DEFAULT_TRUST_DOMAIN
    domain_suffix: str = "cluster.local"
    root_namespace: str = "istio-system"
    cluster_id: str = "Kubernetes"
    dry_run_enabled: bool = False  # AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY


@dataclass(frozen=True)
class Translation:
    resources: Resources
    conditions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # policy (ns, name) → condition
    problems: tuple[str, ...] = ()  # objects left out, with why (for istiod's log)


# ---- versions and deltas -----------------------------------------------------------------------


def version_of(resource: dict[str, Any]) -> str:
    """A stable version: the hash of the canonical JSON (same content, same version, any process)."""
    data = json.dumps(resource, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def versioned(resource: dict[str, Any]) -> Versioned:
    return Versioned(version_of(resource), resource)


def diff(old: Mapping[str, Versioned], new: Mapping[str, Versioned]) -> tuple[dict[str, Versioned], list[str]]:
    """(the resources of `new` that `old` lacks or has at another version, the names gone), sorted."""
    changed = {name: res for name, res in sorted(new.items()) if name not in old or old[name].version != res.version}
    removed = sorted(name for name in old if name not in new)
    return changed, removed


# ---- pods: enrollment, identity, ownership -------------------------------------------------------


def is_enrolled(pod: Obj, namespace_labels: Mapping[str, str]) -> bool:
    """HBONE for this pod: ambient by its namespace or itself, not opted out, not hostNetwork, and
    istio-cni has finished redirecting it (until then ztunnel must not send it HBONE)."""
    labels = _labels(pod)
    if labels.get(DATAPLANE_MODE_LABEL) == DATAPLANE_MODE_NONE or (pod.get("spec") or {}).get("hostNetwork"):
        return False
    if DATAPLANE_MODE_AMBIENT not in (labels.get(DATAPLANE_MODE_LABEL), namespace_labels.get(DATAPLANE_MODE_LABEL)):
        return False
    return (_meta(pod).get("annotations") or {}).get(REDIRECTION_ANNOTATION) == REDIRECTION_ENABLED


def has_sidecar(pod: Obj) -> bool:
    """The injector marks a pod it gave a sidecar with its status annotation."""
    return SIDECAR_STATUS_ANNOTATION in (_meta(pod).get("annotations") or {})


def sidecar_takes_hbone(pod: Obj) -> bool:
    """An injected pod whose sidecar advertises HBONE (the ambient profile's ENABLE_HBONE)."""
    return has_sidecar(pod) and _labels(pod).get(TUNNEL_LABEL) == "http"


def workload_owner(pod: Obj) -> tuple[str, str]:
    """(workloadType, workloadName): a ReplicaSet made by a Deployment names the Deployment (its
    pod-template-hash suffix removed), a DaemonSet itself, anything else is the pod's own."""
    labels = _labels(pod)
    for ref in _meta(pod).get("ownerReferences") or []:
        if not ref.get("controller"):
            continue  # only the controller owns the pod, as metav1.GetControllerOf
        kind, name = ref.get("kind"), ref.get("name") or ""
        if kind == "DaemonSet":
            return "daemonset", name
        if kind == "ReplicaSet":
            suffix = "-" + labels.get("pod-template-hash", "")
            if suffix != "-" and name.endswith(suffix):
                return "deployment", name[: -len(suffix)]
            return "pod", name
        if name:
            return "pod", name
    return "pod", _meta(pod).get("name", "")


def canonical_name(labels: Mapping[str, str], workload_name: str) -> str:
    return next((labels[key] for key in _NAME_LABELS if key in labels), workload_name)


def canonical_revision(labels: Mapping[str, str]) -> str:
    return next((labels[key] for key in _REVISION_LABELS if key in labels), "latest")


def is_listed(pod: Obj) -> bool:
    """Pods istiod serves: with an IP, not terminating, not finished."""
    status = pod.get("status") or {}
    return (
        bool(status.get("podIP"))
        and not _meta(pod).get("deletionTimestamp")
        and status.get("phase") not in TERMINAL_PHASES
    )


def pod_addresses(pod: Obj) -> list[str]:
    status = pod.get("status") or {}
    ips = [entry.get("ip") for entry in status.get("podIPs") or [] if entry.get("ip")]
    return ips or [status["podIP"]]


# ---- services -----------------------------------------------------------------------------------


def hostname(service: Obj, settings: Settings = Settings()) -> str:
    return f"{_meta(service).get('name')}.{_namespace(service)}.svc.{settings.domain_suffix}"


def service_key(service: Obj, settings: Settings = Settings()) -> str:
    """`<ns>/<hostname>`: the Address name and the key of workloads' `services` maps."""
    return f"{_namespace(service)}/{hostname(service, settings)}"


def service_resource(
    service: Obj, settings: Settings = Settings(), waypoint: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The Service Address. A named targetPort is resolved per workload, so here it is 0."""
    spec = service.get("spec") or {}
    cluster_ip = spec.get("clusterIP")
    ports = []
    for port in spec.get("ports") or []:
        target = port.get("targetPort", port.get("port"))
        ports.append({"servicePort": port.get("port"), "targetPort": target if isinstance(target, int) else 0})
    return {
        "service": {
            "name": _meta(service).get("name"),
            "namespace": _namespace(service),
            "hostname": hostname(service, settings),
            "addresses": [cluster_ip] if cluster_ip and cluster_ip != "None" else [],
            "ports": ports,
            "subjectAltNames": [],
            "waypoint": waypoint,
        }
    }


def container_ports(pod: Obj) -> dict[str, int]:
    """The pod's named container ports: what `targetPort: <name>` refers to."""
    ports: dict[str, int] = {}
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") and port.get("containerPort") is not None:
                ports.setdefault(port["name"], port["containerPort"])
    return ports


def container_ports_of(pod: Obj) -> list[int]:
    """Every port the pod's containers declare."""
    return sorted(
        {
            port["containerPort"]
            for container in (pod.get("spec") or {}).get("containers") or []
            for port in container.get("ports") or []
            if port.get("containerPort") is not None
        }
    )


def pod_services(pod: Obj, services: Iterable[Obj], settings: Settings = Settings()) -> dict[str, dict[str, int]]:
    """Workload.services: for each selecting Service, service port → the pod's target port. A named
    targetPort the pod does not declare leaves that port out (nothing listens under that name)."""
    named = container_ports(pod)
    result: dict[str, dict[str, int]] = {}
    for service in services:
        if not selects_pod(service, pod):
            continue
        ports: dict[str, int] = {}
        for port in (service.get("spec") or {}).get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, str):
                target = named.get(target)
            if target is not None:
                ports[str(port.get("port"))] = target
        result[service_key(service, settings)] = ports
    return dict(sorted(result.items()))


# ---- workloads ----------------------------------------------------------------------------------


def workload_name(pod: Obj, settings: Settings = Settings()) -> str:
    return f"{settings.cluster_id}//Pod/{_namespace(pod)}/{_meta(pod).get('name')}"


def workload_resource(
    pod: Obj,
    namespace_labels: Mapping[str, str],
    services: Iterable[Obj],
    policies: Iterable[AuthorizationPolicy],
    peer_authns: Iterable[PeerAuthentication],
    settings: Settings = Settings(),
    waypoint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Workload Address of a listed pod (see `is_listed`)."""
    spec = pod.get("spec") or {}
    labels = _labels(pod)
    namespace = _namespace(pod)
    kind, owner = workload_owner(pod)
    host_network = bool(spec.get("hostNetwork"))
    name = workload_name(pod, settings)
    return {
        "workload": {
            "uid": name,
            "name": _meta(pod).get("name"),
            "namespace": namespace,
            "addresses": pod_addresses(pod),
            "protocol": PROTOCOL_HBONE
            if is_enrolled(pod, namespace_labels) or sidecar_takes_hbone(pod)
            else PROTOCOL_TCP,
            "trustDomain": settings.trust_domain,
            "serviceAccount": service_account(pod),
            "node": spec.get("nodeName") or "",
            "canonicalName": canonical_name(labels, owner),
            "canonicalRevision": canonical_revision(labels),
            "workloadType": kind,
            "workloadName": owner,
            "waypoint": waypoint,
            "services": pod_services(pod, services, settings),
            "authorizationPolicies": workload_policy_keys(
                policies,
                peer_authns,
                labels,
                namespace,
                settings.root_namespace,
                dry_run_enabled=settings.dry_run_enabled,
            ),
            "status": STATUS_HEALTHY if is_ready(pod) else STATUS_UNHEALTHY,
            "clusterId": settings.cluster_id,
            "networkMode": NETWORK_MODE_HOST if host_network else NETWORK_MODE_STANDARD,
        }
    }


# ---- policies -----------------------------------------------------------------------------------


def ztunnel_condition(outcome: ZtunnelTranslation, generation: int | None = None) -> dict[str, Any] | None:
    """The `ZtunnelAccepted` condition istiod reports, or None for a policy that is not ztunnel's
    (targetRefs: a waypoint's). Sent with a caveat: True/UnsupportedValue; not sent: False."""
    if outcome.authorization is None and outcome.status_message is None:
        return None
    condition: dict[str, Any] = {
        "type": CONDITION,
        "status": "True" if outcome.authorization is not None else "False",
        "reason": "UnsupportedValue" if outcome.status_message else "Accepted",
        "message": outcome.status_message or ACCEPTED_MESSAGE,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def status_update(current: Obj | None, condition: Obj, now: str) -> dict[str, Any] | None:
    """The status to write so that it carries `condition` (other conditions kept), or None when it
    already does. lastTransitionTime moves only when the condition's status flips."""
    current = dict(current or {})
    conditions = list(current.get("conditions") or [])
    old = next((c for c in conditions if c.get("type") == condition["type"]), None)
    if old is not None and {k: v for k, v in old.items() if k != "lastTransitionTime"} == dict(condition):
        return None
    since = old.get("lastTransitionTime") if old and old.get("status") == condition["status"] else None
    new = {**condition, "lastTransitionTime": since or now}
    current["conditions"] = [new if c is old else c for c in conditions] if old else [*conditions, new]
    return current


def _parse_all(cls: type, objects: Iterable[dict[str, Any]], problems: list[str]) -> list[Any]:
    parsed = []
    for obj in objects:
        try:
            parsed.append(parse_as(cls, obj))
        except (ValueError, TypeError) as e:
            problems.append(f"{obj.get('kind')} {_namespace(obj)}/{_meta(obj).get('name')} left out: {e}")
    return parsed


# ---- waypoints ----------------------------------------------------------------------------------


def proxy_resources(
    objects: Mapping[str, Iterable[dict[str, Any]]],
    attachments: Attachments,
    namespace_labels: Mapping[str, Mapping[str, str]],
    settings: Settings,
    jwks_for: Callable[[str], str | None],
    problems: list[str],
) -> Resources:
    """Every waypoint's and sidecar's Envoy resources, keyed `<ns>/<proxy name>/<envoy name>` per type."""
    out: Resources = {t: {} for t in PROXY_TYPES}
    pods = [p for p in objects.get("Pod", ()) if is_listed(p)]

    def hbone(pod: Obj) -> bool:
        return is_enrolled(pod, namespace_labels.get(_namespace(pod), {})) or sidecar_takes_hbone(pod)

    # What every proxy's resources are made of: the cluster's policies and the mesh's settings.
    policies = objects.get("AuthorizationPolicy", ())
    authns = objects.get("RequestAuthentication", ())
    shared: dict[str, Any] = {
        "jwks_for": jwks_for,
        "trust_domain": settings.trust_domain,
        "domain_suffix": settings.domain_suffix,
        "root_namespace": settings.root_namespace,
    }

    def add(what: str, owner: Obj, make: Callable[[], dict[str, dict[str, dict[str, Any]]]]) -> None:
        """`make()`'s resources under the owner's proxy id; a broken owner is left out, with why."""
        try:
            resources = make()
        except (ValueError, TypeError) as e:
            problems.append(f"{what} {_namespace(owner)}/{_meta(owner).get('name')} left out: {e}")
            return
        prefix = proxy_id(_namespace(owner), _name(owner))
        for type_, items in resources.items():
            for envoy_name, resource in items.items():
                out[type_][prefix + envoy_name] = versioned(resource)

    for gateway in objects.get("Gateway", ()):
        if is_waypoint(gateway):
            services, served_pods = attachments.served_by(gateway, objects)
            add(
                "waypoint",
                gateway,
                lambda: waypoint_resources(
                    gateway, services, served_pods, pods, policies, authns, enrolled=hbone, **shared
                ),
            )
    services = [s for s in objects.get("Service", ()) if (s.get("spec") or {}).get("type") != "ExternalName"]
    peer_authns = objects.get("PeerAuthentication", ())

    def sidecar(pod: Obj) -> dict[str, dict[str, dict[str, Any]]]:
        mtls = explain_mtls(peer_authns, _namespace(pod), _labels(pod), settings.root_namespace).mode
        # Every port a PeerAuthentication names, and the pod's own: a port-level mode applies
        # whether or not the pod declares the port.
        named = {
            int(p)
            for pa in peer_authns
            for p in ((pa.get("spec") or {}).get("portLevelMtls") or {})
            if str(p).isdigit()
        }
        ports = (
            {
                port: effective_mtls_mode(peer_authns, _namespace(pod), _labels(pod), settings.root_namespace, port)
                for port in sorted(named | set(container_ports_of(pod)))
            }
            if peer_authns
            else {}
        )
        return sidecar_resources(
            pod, services, pods, policies, authns, mtls_mode=mtls, mtls_ports=ports, hbone=hbone, **shared
        )

    # Sidecars get config while they run, terminating included (they drain), but not once finished.
    for pod in objects.get("Pod", ()):
        status = pod.get("status") or {}
        if has_sidecar(pod) and status.get("podIP") and status.get("phase") not in TERMINAL_PHASES:
            add("sidecar of", pod, lambda: sidecar(pod))
    return {t: dict(sorted(items.items())) for t, items in out.items()}


# ---- the whole translation ------------------------------------------------------------------------


def translate(
    objects: Mapping[str, Iterable[dict[str, Any]]],
    settings: Settings = Settings(),
    jwks_for: Callable[[str], str | None] = lambda uri: None,
) -> Translation:
    """Everything ztunnels and waypoints are sent, from the objects by kind: Namespace, Pod, Service,
    AuthorizationPolicy, PeerAuthentication, RequestAuthentication, Gateway (missing kinds count as
    none)."""
    objects = {kind: list(items) for kind, items in objects.items()}  # some are read twice
    problems: list[str] = []
    policy_objects = list(objects.get("AuthorizationPolicy", ()))
    policies = _parse_all(AuthorizationPolicy, policy_objects, problems)
    peer_authns = _parse_all(PeerAuthentication, objects.get("PeerAuthentication", ()), problems)

    authorizations: dict[str, Versioned] = {}
    conditions: dict[tuple[str, str], dict[str, Any]] = {}
    generations = {(_namespace(o), _meta(o).get("name")): _meta(o).get("generation") for o in policy_objects}
    for policy in policies:
        outcome = to_ztunnel(policy, settings.root_namespace, dry_run_enabled=settings.dry_run_enabled)
        if outcome.authorization is not None:
            authorizations[policy.key] = versioned(outcome.authorization)
        condition = ztunnel_condition(outcome, generations.get((policy.namespace, policy.name)))
        if condition is not None:
            conditions[policy.namespace, policy.name] = condition
    for derived in derived_authorizations(peer_authns, settings.root_namespace):
        authorizations[f"{derived['namespace']}/{derived['name']}"] = versioned(derived)

    namespace_labels = {_name(ns): _labels(ns) for ns in objects.get("Namespace", ())}
    attachments = Attachments(objects, settings.domain_suffix)
    services_by_namespace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    addresses: dict[str, Versioned] = {}
    for service in objects.get("Service", ()):
        services_by_namespace[_namespace(service)].append(service)
        if (service.get("spec") or {}).get("type") != "ExternalName":
            waypoint = attachments.reference(attachments.for_service(service))
            addresses[service_key(service, settings)] = versioned(service_resource(service, settings, waypoint))
    for pod in objects.get("Pod", ()):
        if not is_listed(pod):
            continue
        namespace = _namespace(pod)
        resource = workload_resource(
            pod,
            namespace_labels.get(namespace, {}),
            services_by_namespace[namespace],
            policies,
            peer_authns,
            settings,
            attachments.reference(attachments.for_pod(pod)),
        )
        addresses[workload_name(pod, settings)] = versioned(resource)

    resources = {AUTHORIZATION: dict(sorted(authorizations.items())), ADDRESS: dict(sorted(addresses.items()))}
    resources.update(proxy_resources(objects, attachments, namespace_labels, settings, jwks_for, problems))
    return Translation(resources, conditions, tuple(problems))
