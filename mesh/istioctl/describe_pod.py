"""`lab istioctl x describe pod POD`: what the mesh does with one pod.

Everything that decides — the pod's mode, the waypoint that serves it and why, which policies
apply and where each is enforced — is a pure function of the objects (`describe`, `pod_mode`,
`workload_waypoint`, `service_waypoint`, `enforcement`); `cmd_describe_pod` only fetches them.

The lab follows the article's model of a waypoint: besides Istio's `istio.io/use-waypoint`
labels, a Gateway of class `istio` with an HBONE listener on 15008 and no `istio.io/waypoint-for`
label serves every pod and Service of its namespace, and the selector and namespace-wide policies
of a pod it serves are enforced there, at L7 with the original client's identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from mesh.contract import (
    DATAPLANE_MODE_AMBIENT,
    DATAPLANE_MODE_LABEL,
    DATAPLANE_MODE_NONE,
    GATEWAY_NAME_LABEL,
    ISTIO_NAMESPACE,
    REDIRECTION_ANNOTATION,
    REDIRECTION_ENABLED,
    SIDECAR_STATUS_ANNOTATION,
    USE_WAYPOINT_LABEL,
    WAYPOINT_FOR_LABEL,
)
from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN
from mesh.istioctl.waypoint import gateway_condition, waypoint_ready, waypoint_traffic_type

ROOT_NAMESPACE = ISTIO_NAMESPACE
SYSTEM_NAMESPACES = (ISTIO_NAMESPACE, "kube-system")
PROXY_CONTAINER = "istio-proxy"
GATEWAY_NAME_LABELS = (GATEWAY_NAME_LABEL, "istio.io/gateway-name")
SEPARATOR = "-" * 20

AMBIENT, SIDECAR, WAYPOINT, NONE = "ambient", "sidecar", "waypoint", "none"
WAYPOINT_L7 = (
    "waypoint {name} (L7, with the original client's identity); ztunnel applies it as L4 to "
    "traffic that does not come through the waypoint"
)
SIDECAR_L7 = "sidecar (L7, with the client's identity)"
SIDECAR_JWT = "sidecar (jwt_authn)"
SIDECAR_NO_WAYPOINT = (
    "sidecars never use waypoints: the pod's own istio-proxy enforces its policies, and its "
    "outbound traffic goes straight to the destination, over HBONE when the destination takes it"
)
NO_L7_PROXY = "not enforced: no waypoint and no sidecar serves this pod"
NOT_IN_MESH = "not enforced: the pod is not in the mesh"


def _md(obj: Mapping | None) -> Mapping:
    return (obj or {}).get("metadata") or {}


def _labels(obj: Mapping | None) -> Mapping[str, str]:
    return _md(obj).get("labels") or {}


def _key(obj: Mapping) -> str:
    return f'{_md(obj).get("namespace", "default")}/{_md(obj).get("name", "")}'


# --- mode -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    kind: str  # ambient | sidecar | waypoint | none
    text: str
    gateway: str | None = None  # for a waypoint pod: the Gateway it runs


def pod_mode(pod: Mapping, namespace_labels: Mapping[str, str]) -> Mode:
    md, spec, status = _md(pod), pod.get("spec") or {}, pod.get("status") or {}
    containers = [c.get("name") for c in spec.get("containers") or []]
    if PROXY_CONTAINER in containers:
        labels = _labels(pod)
        gw = next((labels[k] for k in GATEWAY_NAME_LABELS if labels.get(k)), None)
        if gw:
            return Mode(
                WAYPOINT, f"waypoint proxy (runs Gateway {gw}; its {PROXY_CONTAINER} container is the L7 proxy)", gw
            )
        return Mode(SIDECAR, f"sidecar ({sidecar_origin(pod)})")
    ns = md.get("namespace", "default")
    pod_label = _labels(pod).get(DATAPLANE_MODE_LABEL)
    ns_label = namespace_labels.get(DATAPLANE_MODE_LABEL)
    if spec.get("hostNetwork"):
        return Mode(NONE, "not in the mesh (hostNetwork pods are never captured)")
    if ns in SYSTEM_NAMESPACES:
        return Mode(NONE, f"not in the mesh (pods of {ns} are never captured)")
    if pod_label == DATAPLANE_MODE_NONE:
        return Mode(NONE, f"not in the mesh (the pod opts out with {DATAPLANE_MODE_LABEL}=none)")
    if DATAPLANE_MODE_AMBIENT not in (pod_label, ns_label):
        return Mode(
            NONE,
            f"not in the mesh (neither namespace {ns} nor the pod is labeled "
            f"{DATAPLANE_MODE_LABEL}=ambient, and it has no sidecar)",
        )
    if status.get("phase") in ("Succeeded", "Failed"):
        return Mode(NONE, f"not in the mesh (the pod has finished: {status.get('phase')})")
    if (md.get("annotations") or {}).get(REDIRECTION_ANNOTATION) == REDIRECTION_ENABLED:
        return Mode(AMBIENT, "ambient (ztunnel captures its traffic, redirection enabled)")
    return Mode(
        AMBIENT,
        f"ambient, not captured yet (selected by {DATAPLANE_MODE_LABEL}=ambient, but istio-cni "
        f"has not set {REDIRECTION_ANNOTATION}=enabled)",
    )


def sidecar_origin(pod: Mapping) -> str:
    """`istio-proxy <tag>, injected by ...` (or how it got there when not injected)."""
    import json

    image = next(
        (
            c.get("image") or ""
            for c in (pod.get("spec") or {}).get("containers") or []
            if c.get("name") == PROXY_CONTAINER
        ),
        "",
    )
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else (image or "image unknown")
    status = (_md(pod).get("annotations") or {}).get(SIDECAR_STATUS_ANNOTATION)
    if not status:
        return f"{PROXY_CONTAINER} {tag}, not injected: the pod's own spec has the container"
    try:
        revision = (json.loads(status) or {}).get("revision") or "default"
    except (ValueError, AttributeError):
        revision = "default"
    return f"{PROXY_CONTAINER} {tag}, injected by istio-sidecar-injector, revision {revision}"


# --- waypoints ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WaypointChoice:
    gateway: Mapping | None  # the waypoint Gateway used, None when there is none (or it is missing)
    how: str  # how it was chosen, or why there is none
    missing: bool = False  # a use-waypoint label names a waypoint that does not exist: fails closed

    @property
    def name(self) -> str | None:
        return _md(self.gateway).get("name") if self.gateway else None


def _explain_choice(
    obj: Mapping, owner: str, choice, attachments, namespace_labels: Mapping[str, str], handles: str
) -> WaypointChoice:
    """istiod's choice (mesh.istiod.waypoints) in words; when there is none, why."""
    from mesh.istiod import waypoints as wp

    ns = _md(obj).get("namespace", "default")
    own = _labels(obj).get(USE_WAYPOINT_LABEL)
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
    if _labels(obj).get(GATEWAY_NAME_LABEL):
        return WaypointChoice(None, f"it belongs to waypoint {_labels(obj)[GATEWAY_NAME_LABEL]} itself")
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


def _attachments(namespace: Mapping | None, gateways, services, pods):
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
    att = _attachments(namespace, gateways, services, pods)
    return _explain_choice(pod, "pod", att.for_pod(pod), att, _labels(namespace), "workload")


def service_waypoint(
    service: Mapping,
    namespace: Mapping | None,
    gateways: Iterable[Mapping],
    services: Iterable[Mapping] = (),
    pods: Iterable[Mapping] = (),
) -> WaypointChoice:
    """The waypoint for traffic to a Service, as istiod chooses it."""
    services = list(services) or [service]
    att = _attachments(namespace, gateways, services, pods)
    return _explain_choice(service, "Service", att.for_service(service), att, _labels(namespace), "service")


def selects_pod(service: Mapping, pod: Mapping) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector or _md(service).get("namespace", "default") != _md(pod).get("namespace", "default"):
        return False
    labels = _labels(pod)
    return all(labels.get(k) == v for k, v in selector.items())


# --- policies -------------------------------------------------------------------------------------


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
    spec, pns = policy.get("spec") or {}, _md(policy).get("namespace", "default")
    pod_ns = _md(pod).get("namespace", "default")
    refs = ([spec["targetRef"]] if spec.get("targetRef") else []) + list(spec.get("targetRefs") or [])
    if refs:
        for ref in refs:
            kind, name, ref_ns = ref.get("kind"), ref.get("name"), ref.get("namespace") or pns
            if (
                kind == "Gateway"
                and waypoint is not None
                and (ref_ns, name) == (_md(waypoint).get("namespace", "default"), _md(waypoint).get("name"))
            ):
                return f"targetRefs Gateway/{name}", name
            if (
                kind == "GatewayClass"
                and pns == root_namespace
                and waypoint is not None
                and (waypoint.get("spec") or {}).get("gatewayClassName") == name
            ):
                return f"targetRefs GatewayClass/{name}", _md(waypoint).get("name")
            if kind == "Service" and ref_ns == pod_ns:
                for svc in services:
                    if _md(svc).get("name") == name:
                        return f"targetRefs Service/{name}", service_waypoints[name].name
        return None
    if pns not in (pod_ns, root_namespace):
        return None
    selector = spec.get("selector")
    if selector is None:
        return ("namespace-wide" if pns == pod_ns else f"mesh-wide (root namespace {root_namespace})"), None
    match = selector.get("matchLabels") or {}
    labels = _labels(pod)
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
        for policy in sorted(policies, key=_key):
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
            out.append(Enforcement(kind, _key(policy), action, attached, where, warning))
    return out


# --- the whole description ------------------------------------------------------------------------


def _service_ports(service: Mapping) -> str:
    parts = []
    for p in (service.get("spec") or {}).get("ports") or []:
        target = p.get("targetPort", p.get("port"))
        name = f'/{p["name"]}' if p.get("name") else ""
        parts.append(f'{p.get("port")}{name} -> {target}')
    return ", ".join(parts) or "no ports"


def _mtls_line(peer_authentications: Iterable[Mapping], pod: Mapping, mode: Mode, root_namespace: str) -> str:
    from mesh.policy.peerauth import explain_mtls

    ns = _md(pod).get("namespace", "default")
    try:
        eff = explain_mtls(list(peer_authentications), ns, dict(_labels(pod)), root_namespace)
    except (ValueError, TypeError) as e:
        return f"Effective PeerAuthentication: unknown ({e})"
    source = f"from PeerAuthentication {eff.policy}" if eff.policy else "the default: no PeerAuthentication applies"
    line = f"Effective PeerAuthentication: mTLS {eff.mode} ({source})"
    if eff.note:
        line += f"\n   Note: {eff.note}"
    if mode.kind == SIDECAR:
        line += "\n   The sidecar takes mutual TLS (HBONE on 15008) from mesh clients; " + (
            "STRICT makes it refuse plaintext (15006) to this pod."
            if eff.mode == "STRICT"
            else "PERMISSIVE lets plaintext from outside the mesh reach this pod too (15006)."
        )
    if mode.kind == AMBIENT:
        line += "\n   In ambient, traffic between ztunnels is always mutual TLS (HBONE); " + (
            "STRICT makes ztunnel refuse plaintext to this pod."
            if eff.mode == "STRICT"
            else "PERMISSIVE lets plaintext from outside the mesh reach this pod too."
        )
    return line


def describe(
    pod: Mapping,
    *,
    namespace: Mapping | None,
    services: Iterable[Mapping],
    gateways: Iterable[Mapping],
    pods: Iterable[Mapping] = (),
    deployments: Iterable[Mapping] = (),
    ztunnels: Iterable[Mapping] = (),
    authorization_policies: Iterable[Mapping] = (),
    request_authentications: Iterable[Mapping] = (),
    peer_authentications: Iterable[Mapping] = (),
    root_namespace: str = ROOT_NAMESPACE,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
) -> str:
    """The text of `x describe pod` for POD, from the objects around it (`services` and `pods`: those
    of its namespace; `gateways`: all)."""
    md, spec = _md(pod), pod.get("spec") or {}
    ns = md.get("namespace", "default")
    ns_labels = _labels(namespace)
    gateways, services = list(gateways), list(services)
    pods = list(pods) or [pod]
    deploys = {(_md(d).get("namespace", "default"), _md(d).get("name")): d for d in deployments}
    mode = pod_mode(pod, ns_labels)
    lines = [f"Pod: {md.get('name')}.{ns}", f"   Mode: {mode.text}"]
    sa = spec.get("serviceAccountName") or "default"
    identity = f"spiffe://{trust_domain}/ns/{ns}/sa/{sa}"
    lines.append(
        f"   Identity: {identity}"
        if mode.kind != NONE
        else f"   Identity: none in the mesh (enrolled, it would be {identity})"
    )
    node = spec.get("nodeName")
    zt = next((z for z in ztunnels if (z.get("spec") or {}).get("nodeName") == node), None) if node else None
    if node and mode.kind == SIDECAR:
        lines.append(f"   Node: {node} (its sidecar, not the node's ztunnel, carries its traffic)")
    elif node:
        lines.append(f"   Node: {node} (ztunnel: {_md(zt).get('name') if zt else 'none on this node'})")
    else:
        lines.append("   Node: not scheduled yet")

    def ready_text(gw: Mapping) -> str:
        ok, why = waypoint_ready(dict(gw), deploys.get((_md(gw).get("namespace", "default"), _md(gw).get("name"))))
        return "ready" if ok else f"NOT ready: {why}"

    my_services = sorted((s for s in services if selects_pod(s, pod)), key=lambda s: _md(s).get("name", ""))
    att = _attachments(namespace, gateways, services, pods)
    svc_wps = {
        _md(s).get("name"): _explain_choice(s, "Service", att.for_service(s), att, ns_labels, "service")
        for s in my_services
    }
    wl_wp = _explain_choice(pod, "pod", att.for_pod(pod), att, ns_labels, "workload")
    serving = wl_wp
    if mode.kind == WAYPOINT:
        gw = next((g for g in gateways if _md(g).get("namespace") == ns and _md(g).get("name") == mode.gateway), None)
        ttype = waypoint_traffic_type(dict(gw), att.is_implicit_namespace(ns)) if gw else ""
        lines.append(
            f"   Waypoint: this pod is waypoint {mode.gateway}"
            + (f" ({ready_text(gw)}; traffic type {ttype})" if gw else "")
        )
        lines.append(f"   See: lab istioctl proxy-config all {md.get('name')} -n {ns}")
        serving = WaypointChoice(None, "")
    elif mode.kind == NONE:
        lines.append("   Waypoint: none (the pod is not in the mesh)")
        serving = WaypointChoice(None, "")
    elif mode.kind == SIDECAR:
        lines.append(f"   Waypoint: none ({SIDECAR_NO_WAYPOINT})")
        serving = WaypointChoice(None, "")
    elif wl_wp.gateway is not None:
        lines.append(f"   Waypoint: {wl_wp.name} ({ready_text(wl_wp.gateway)})")
        lines.append(f"      chosen by: {wl_wp.how}")
    elif wl_wp.missing:
        lines.append(f"   Waypoint: MISSING ({wl_wp.how})")
    else:
        via = next(((n, c, c.gateway) for n, c in svc_wps.items() if c.gateway is not None), None)
        if via is not None:
            serving = via[1]
            lines.append(
                f"   Waypoint: none for traffic to the pod itself ({wl_wp.how}); traffic through "
                f"Service {via[0]} goes through waypoint {via[1].name} ({ready_text(via[2])})"
            )
        else:
            lines.append(f"   Waypoint: none ({wl_wp.how})")

    for svc in my_services:
        choice = svc_wps[_md(svc).get("name")]
        lines.append(SEPARATOR)
        lines.append(f"Service: {_md(svc).get('name')}.{ns} ({_service_ports(svc)})")
        if mode.kind == SIDECAR and choice.gateway is not None:
            lines.append(
                f"   Waypoint: {choice.name} ({ready_text(choice.gateway)}) for the Service's ambient "
                "clients; this pod's sidecar, as a client, never uses waypoints"
            )
        elif mode.kind == AMBIENT:
            if choice.gateway is not None:
                lines.append(f"   Waypoint: {choice.name} ({ready_text(choice.gateway)})")
                same = choice.gateway is serving.gateway and choice.how == serving.how
                lines.append(f"      chosen by: {'the same rule as for the pod' if same else choice.how}")
            else:
                lines.append(f"   Waypoint: {'MISSING' if choice.missing else 'none'} ({choice.how})")

    lines.append(SEPARATOR)
    found = enforcement(
        pod, mode, serving, my_services, svc_wps, authorization_policies, request_authentications, root_namespace
    )
    if not found:
        lines.append("No AuthorizationPolicy or RequestAuthentication applies to this pod.")
    for e in found:
        what = f"{e.action}, {e.attached}" if e.action else e.attached
        lines.append(f"{e.kind} {e.key} ({what})")
        lines.append(f"   Enforcement: {e.where}")
        if e.warning:
            lines.append(f"   Warning: {' '.join(e.warning.split())}")
    lines.append(SEPARATOR)
    lines.append(_mtls_line(peer_authentications, pod, mode, root_namespace))
    return "\n".join(lines) + "\n"


# --- the command ----------------------------------------------------------------------------------


def _items(client, kind: str, namespace: str | None = None, selector: str | None = None) -> list[dict]:
    from lab.client import LabError

    try:
        return client.call("get", kind=kind, namespace=namespace, selector=selector)["items"]
    except LabError:
        return []


def cmd_describe_pod(args, client) -> int:
    from lab.client.cli import CliError, get_or_none

    name, ns = args.pod, args.namespace
    if "." in name and not args.namespace_set:
        name, ns = name.split(".", 1)
    pod = get_or_none(client, "Pod", name, ns)
    if pod is None:
        raise CliError(f'Error: pod "{name}" not found in namespace {ns}')
    namespace = get_or_none(client, "Namespace", ns, None)
    gateways = _items(client, "Gateway")
    deployments = [
        d
        for d in _items(client, "Deployment")
        if (_md(d).get("namespace"), _md(d).get("name"))
        in {(_md(g).get("namespace"), _md(g).get("name")) for g in gateways}
    ]
    relevant = (ns, ROOT_NAMESPACE)
    policies = {
        k: [p for p in _items(client, k) if _md(p).get("namespace") in relevant]
        for k in ("AuthorizationPolicy", "RequestAuthentication", "PeerAuthentication")
    }
    print(
        describe(
            pod,
            namespace=namespace,
            services=_items(client, "Service", ns),
            gateways=gateways,
            pods=_items(client, "Pod", ns),
            deployments=deployments,
            ztunnels=_items(client, "Pod", ROOT_NAMESPACE, "app=ztunnel"),
            authorization_policies=policies["AuthorizationPolicy"],
            request_authentications=policies["RequestAuthentication"],
            peer_authentications=policies["PeerAuthentication"],
        ),
        end="",
    )
    return 0
