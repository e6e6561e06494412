"""`x describe pod`, part three: which AuthorizationPolicies and RequestAuthentications apply to a
pod, how each reaches it (selector, namespace, root namespace, targetRefs) and where it is
enforced: waypoint, sidecar, destination ztunnel, or nowhere and why. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from mesh.istioctl.describe_mode import NONE, ROOT_NAMESPACE, SIDECAR, WAYPOINT, Mode, key_of, labels_of, meta_of
from mesh.istioctl.describe_waypoint import WaypointChoice
from mesh.istioctl.waypoint import gateway_condition

WAYPOINT_L7 = (
    "waypoint {name} (L7, with the original client's identity); ztunnel applies it as L4 to "
    "traffic that does not come through the waypoint"
)
SIDECAR_L7 = "sidecar (L7, with the client's identity)"
SIDECAR_JWT = "sidecar (jwt_authn)"
NO_L7_PROXY = "not enforced: no waypoint and no sidecar serves this pod"
NOT_IN_MESH = "not enforced: the pod is not in the mesh"


@dataclass(frozen=True)
class Enforcement:
    kind: str  # AuthorizationPolicy | RequestAuthentication
    key: str  # ns/name
    action: str | None  # ALLOW/DENY/... for AuthorizationPolicy
    attached: str  # how it reaches the pod
    where: str  # where and how it is enforced
    warning: str | None = None


def _attachment(
    policy: Mapping,
    pod: Mapping,
    services: list[Mapping],
    waypoint: Mapping | None,
    service_waypoints: Mapping[str | None, WaypointChoice],
    root_namespace: str,
) -> tuple[str, str | None] | None:
    """(how the policy reaches the pod, the waypoint that enforces a targetRefs policy) or None."""
    spec, pns = policy.get("spec") or {}, meta_of(policy).get("namespace", "default")
    pod_ns = meta_of(pod).get("namespace", "default")
    refs = ([spec["targetRef"]] if spec.get("targetRef") else []) + list(spec.get("targetRefs") or [])
    if refs:
        for ref in refs:
            kind, name, ref_ns = ref.get("kind"), ref.get("name"), ref.get("namespace") or pns
            if (
                kind == "Gateway"
                and waypoint is not None
                and (ref_ns, name) == (meta_of(waypoint).get("namespace", "default"), meta_of(waypoint).get("name"))
            ):
                return f"targetRefs Gateway/{name}", name
            if (
                kind == "GatewayClass"
                and pns == root_namespace
                and waypoint is not None
                and (waypoint.get("spec") or {}).get("gatewayClassName") == name
            ):
                return f"targetRefs GatewayClass/{name}", meta_of(waypoint).get("name")
            if kind == "Service" and ref_ns == pod_ns:
                for svc in services:
                    if meta_of(svc).get("name") == name:
                        return f"targetRefs Service/{name}", service_waypoints[name].name
        return None
    if pns not in (pod_ns, root_namespace):
        return None
    selector = spec.get("selector")
    if selector is None:
        return ("namespace-wide" if pns == pod_ns else f"mesh-wide (root namespace {root_namespace})"), None
    match = selector.get("matchLabels") or {}
    labels = labels_of(pod)
    if match and all(labels.get(k) == v for k, v in match.items()):
        where = "" if pns == pod_ns else f" (root namespace {root_namespace})"
        return "selector " + ",".join(f"{k}={v}" for k, v in sorted(match.items())) + where, None
    return None


def _ztunnel_condition(policy: Mapping) -> Mapping | None:
    """The policy's ZtunnelAccepted condition: from its status, else as istiod would write it."""
    cond = gateway_condition(dict(policy), "ZtunnelAccepted")
    if cond is not None:
        return cond
    try:
        from mesh.istiod.translate import ztunnel_condition
        from mesh.policy.ztunnel import to_ztunnel

        return ztunnel_condition(to_ztunnel(dict(policy)))
    except (ValueError, TypeError, ImportError):
        return None


def enforcement(
    pod: Mapping,
    mode: Mode,
    waypoint: WaypointChoice,
    services: list[Mapping],
    service_waypoints: Mapping[str | None, WaypointChoice],
    authorization_policies: Iterable[Mapping],
    request_authentications: Iterable[Mapping],
    root_namespace: str = ROOT_NAMESPACE,
) -> list[Enforcement]:
    """Every AuthorizationPolicy and RequestAuthentication that applies to the pod, with where it
    is enforced. `waypoint` is the one serving the pod (its own, else its Services')."""
    out = []
    for kind, policies in (
        ("AuthorizationPolicy", authorization_policies),
        ("RequestAuthentication", request_authentications),
    ):
        for policy in sorted(policies, key=key_of):
            found = _attachment(policy, pod, services, waypoint.gateway, service_waypoints, root_namespace)
            if found is None:
                continue
            attached, target_waypoint = found
            action = None
            if kind == "AuthorizationPolicy":
                action = (policy.get("spec") or {}).get("action") or "ALLOW"
            warning = None
            if attached.startswith("targetRefs"):
                if mode.kind == NONE:
                    where = NOT_IN_MESH
                elif mode.kind == SIDECAR:
                    where = (
                        f"waypoint {target_waypoint}, for ambient clients that go through it; the sidecar "
                        "does not apply targetRefs policies"
                        if target_waypoint
                        else "not enforced: targetRefs policies are enforced by a waypoint, and the sidecar does "
                        "not apply them"
                    )
                elif target_waypoint:
                    where = f"waypoint {target_waypoint}" + (" (jwt_authn)" if action is None else "")
                else:
                    where = (
                        f"not enforced: targetRefs policies are enforced by a waypoint, and none serves "
                        f"{attached.split(' ', 1)[1]}"
                    )
            elif mode.kind == NONE:
                where = NOT_IN_MESH
            elif mode.kind == WAYPOINT:
                where = "not enforced on this pod: it is a waypoint proxy"
            elif mode.kind == SIDECAR:
                where = SIDECAR_L7 if action is not None else SIDECAR_JWT
            elif waypoint.gateway is not None:
                where = (
                    WAYPOINT_L7.format(name=waypoint.name)
                    if action is not None
                    else f"waypoint {waypoint.name} (jwt_authn)"
                )
            elif action is None:
                where = NO_L7_PROXY
            else:
                cond = _ztunnel_condition(policy)
                if cond is not None and cond.get("status") == "False":
                    where = "not enforced: ztunnel does not take it"
                    warning = cond.get("message")
                else:
                    where = "destination ztunnel (L4)"
                    if cond is not None and cond.get("reason") == "UnsupportedValue":
                        warning = cond.get("message")
            out.append(Enforcement(kind, key_of(policy), action, attached, where, warning))
    return out
