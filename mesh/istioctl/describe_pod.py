"""`lab istioctl x describe pod POD`: what the mesh does with one pod.

Everything that decides — the pod's mode, the waypoint that serves it and why, which policies
apply and where each is enforced — is a pure function of the objects: `describe` here, from
`pod_mode` (describe_mode.py), `workload_waypoint` and `service_waypoint` (describe_waypoint.py) and
`enforcement` (describe_policies.py); `cmd_describe_pod` only fetches them.

The lab follows the article's model of a waypoint: besides Istio's `istio.io/use-waypoint`
labels, a Gateway of class `istio` with an HBONE listener on 15008 and no `istio.io/waypoint-for`
label serves every pod and Service of its namespace, and the selector and namespace-wide policies
of a pod it serves are enforced there, at L7 with the original client's identity.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN
from mesh.istioctl.describe_mode import (
    AMBIENT,
    NONE,
    ROOT_NAMESPACE,
    SIDECAR,
    WAYPOINT,
    Mode,
    labels_of,
    meta_of,
    pod_mode,
)
from mesh.istioctl.describe_policies import enforcement
from mesh.istioctl.describe_waypoint import WaypointChoice, explain_choice, selects_pod, waypoint_attachments
from mesh.istioctl.waypoint import waypoint_ready, waypoint_traffic_type

SEPARATOR = "-" * 20
SIDECAR_NO_WAYPOINT = (
    "sidecars never use waypoints: the pod's own istio-proxy enforces its policies, and its "
    "outbound traffic goes straight to the destination, over HBONE when the destination takes it"
)


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

    ns = meta_of(pod).get("namespace", "default")
    try:
        eff = explain_mtls(list(peer_authentications), ns, dict(labels_of(pod)), root_namespace)
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
    md, spec = meta_of(pod), pod.get("spec") or {}
    ns = md.get("namespace", "default")
    ns_labels = labels_of(namespace)
    gateways, services = list(gateways), list(services)
    pods = list(pods) or [pod]
    deploys = {(meta_of(d).get("namespace", "default"), meta_of(d).get("name")): d for d in deployments}
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
        lines.append(f"   Node: {node} (ztunnel: {meta_of(zt).get('name') if zt else 'none on this node'})")
    else:
        lines.append("   Node: not scheduled yet")

    def ready_text(gw: Mapping) -> str:
        ok, why = waypoint_ready(
            dict(gw), deploys.get((meta_of(gw).get("namespace", "default"), meta_of(gw).get("name")))
        )
        return "ready" if ok else f"NOT ready: {why}"

    my_services = sorted((s for s in services if selects_pod(s, pod)), key=lambda s: meta_of(s).get("name", ""))
    att = waypoint_attachments(namespace, gateways, services, pods)
    svc_wps = {
        meta_of(s).get("name"): explain_choice(s, "Service", att.for_service(s), att, ns_labels, "service")
        for s in my_services
    }
    wl_wp = explain_choice(pod, "pod", att.for_pod(pod), att, ns_labels, "workload")
    serving = wl_wp
    if mode.kind == WAYPOINT:
        gw = next(
            (g for g in gateways if meta_of(g).get("namespace") == ns and meta_of(g).get("name") == mode.gateway), None
        )
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
        choice = svc_wps[meta_of(svc).get("name")]
        lines.append(SEPARATOR)
        lines.append(f"Service: {meta_of(svc).get('name')}.{ns} ({_service_ports(svc)})")
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
        if (meta_of(d).get("namespace"), meta_of(d).get("name"))
        in {(meta_of(g).get("namespace"), meta_of(g).get("name")) for g in gateways}
    ]
    relevant = (ns, ROOT_NAMESPACE)
    policies = {
        k: [p for p in _items(client, k) if meta_of(p).get("namespace") in relevant]
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
