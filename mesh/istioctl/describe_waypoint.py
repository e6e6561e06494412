"""`x describe pod`, part two: the waypoint that serves a pod or a Service, as istiod chooses it
(mesh.istiod.waypoints), and the reason in words, including why there is none. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from mesh.contract import GATEWAY_NAME_LABEL, USE_WAYPOINT_LABEL, WAYPOINT_FOR_LABEL
from mesh.istioctl.describe_mode import labels_of, meta_of


@dataclass(frozen=True)
class WaypointChoice:
    gateway: Mapping | None  # the waypoint Gateway used, None when there is none (or it is missing)
    how: str  # how it was chosen, or why there is none
    missing: bool = False  # a use-waypoint label names a waypoint that does not exist: fails closed

    @property
    def name(self) -> str | None:
        return meta_of(self.gateway).get("name") if self.gateway else None


def explain_choice(
    obj: Mapping, owner: str, choice, attachments, namespace_labels: Mapping[str, str], handles: str
) -> WaypointChoice:
    """istiod's choice (mesh.istiod.waypoints) in words; when there is none, why."""
    from mesh.istiod import waypoints as wp

    ns = meta_of(obj).get("namespace", "default")
    own = labels_of(obj).get(USE_WAYPOINT_LABEL)
    ns_value = namespace_labels.get(USE_WAYPOINT_LABEL)
    if choice is not None:
        gw = attachments.waypoint(choice.namespace, choice.name)
        label = {
            wp.POD_LABEL: f"{owner} label {USE_WAYPOINT_LABEL}={own}",
            wp.SERVICE_LABEL: f"{owner} label {USE_WAYPOINT_LABEL}={own}",
            wp.NAMESPACE_LABEL: f"namespace {ns} label {USE_WAYPOINT_LABEL}={ns_value}",
        }.get(choice.how)
        if not choice.found:
            return WaypointChoice(
                None,
                f"{label} names waypoint {choice.key}, which does not exist: its traffic fails closed",
                missing=True,
            )
        if choice.how == wp.IMPLICIT_NAMESPACE:
            how = (
                f"implicit: waypoint {choice.key} has no {WAYPOINT_FOR_LABEL} label and nothing in namespace {ns} "
                f"carries {USE_WAYPOINT_LABEL}, so it serves the whole namespace (the article's model)"
            )
        elif choice.how == wp.IMPLICIT_SERVICE_ACCOUNT:
            sa = ((gw or {}).get("metadata", {}).get("annotations") or {}).get(wp.FOR_SERVICE_ACCOUNT)
            how = f"implicit: waypoint {choice.key} is annotated {wp.FOR_SERVICE_ACCOUNT}={sa}"
        else:
            how = label or choice.how
        return WaypointChoice(gw, how)
    if ns in wp.SKIPPED_NAMESPACES:
        return WaypointChoice(None, f"waypoints never serve {ns}")
    if labels_of(obj).get(GATEWAY_NAME_LABEL):
        return WaypointChoice(None, f"it belongs to waypoint {labels_of(obj)[GATEWAY_NAME_LABEL]} itself")
    for who, value in ((f"{owner} label", own), (f"namespace {ns} label", ns_value)):
        if value is None:
            continue
        target = wp.parse_use_waypoint(value, ns)
        if target is None:
            return WaypointChoice(None, f"{who} {USE_WAYPOINT_LABEL}={value} opts out")
        gw = attachments.waypoint(*target)
        if gw is not None:
            return WaypointChoice(
                None,
                f"{who} {USE_WAYPOINT_LABEL}={value}, but waypoint {target[0]}/{target[1]} "
                f"serves {wp.traffic_type(gw)} traffic, not {handles} traffic",
            )
        return WaypointChoice(None, f"{who} {USE_WAYPOINT_LABEL}={value} names no waypoint")
    if attachments.is_implicit_namespace(ns):
        return WaypointChoice(None, f"no {USE_WAYPOINT_LABEL} label and no unlabelled waypoint in namespace {ns}")
    return WaypointChoice(None, f"no {USE_WAYPOINT_LABEL} label on the {owner} or namespace {ns}")


def waypoint_attachments(namespace: Mapping | None, gateways, services, pods):
    """istiod's Attachments (mesh.istiod.waypoints) over the objects around one pod or Service."""
    from mesh.istiod.waypoints import Attachments

    objects = {
        "Namespace": [dict(namespace, kind="Namespace")] if namespace else [],
        "Gateway": list(gateways),
        "Service": list(services),
        "Pod": list(pods),
    }
    return Attachments(objects)


def workload_waypoint(
    pod: Mapping,
    namespace: Mapping | None,
    gateways: Iterable[Mapping],
    services: Iterable[Mapping] = (),
    pods: Iterable[Mapping] = (),
) -> WaypointChoice:
    """The waypoint for traffic addressed to the pod itself, as istiod chooses it."""
    pods = list(pods) or [pod]
    att = waypoint_attachments(namespace, gateways, services, pods)
    return explain_choice(pod, "pod", att.for_pod(pod), att, labels_of(namespace), "workload")


def service_waypoint(
    service: Mapping,
    namespace: Mapping | None,
    gateways: Iterable[Mapping],
    services: Iterable[Mapping] = (),
    pods: Iterable[Mapping] = (),
) -> WaypointChoice:
    """The waypoint for traffic to a Service, as istiod chooses it."""
    services = list(services) or [service]
    att = waypoint_attachments(namespace, gateways, services, pods)
    return explain_choice(service, "Service", att.for_service(service), att, labels_of(namespace), "service")


def selects_pod(service: Mapping, pod: Mapping) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector or meta_of(service).get("namespace", "default") != meta_of(pod).get("namespace", "default"):
        return False
    labels = labels_of(pod)
    return all(labels.get(k) == v for k, v in selector.items())
