"""`istioctl ztunnel-config`: what a ztunnel knows, read from its admin port's /config_dump."""

from __future__ import annotations

from collections.abc import Callable

from lab.client.paths import node_netns_name
from mesh.contract import ADMIN_PORT, PROTOCOL_TCP, STATUS_HEALTHY
from mesh.istioctl.common import admin_get, table


def fetch_config_dump(lab_name: str, node: str) -> dict:
    """GET /config_dump from the ztunnel admin port (localhost of the node's network namespace)."""
    return admin_get(node_netns_name(lab_name, node), "/config_dump", f"the ztunnel on node {node}", ADMIN_PORT)


def _waypoint(obj: dict) -> str:
    """The WAYPOINT cell: the waypoint's name, from `destination` "<ns>/<hostname>" (hostname
    `<name>.<ns>.svc...`), or its address when it names no host."""
    wp = obj.get("waypoint")
    if not wp:
        return "None"
    dest = wp.get("destination") or ""
    if dest:
        host = dest.split("/", 1)[-1]
        return host.split(".", 1)[0] or host
    return wp.get("address") or "None"


def format_workloads(dump: dict, namespace: str | None = None) -> str:
    rows = [["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"]]
    for w in sorted(dump.get("workloads", []), key=lambda w: (w.get("namespace", ""), w.get("name", ""))):
        if namespace and w.get("namespace") != namespace:
            continue
        rows.append(
            [
                w.get("namespace", ""),
                w.get("name", ""),
                ",".join(w.get("addresses", [])),
                w.get("node", ""),
                _waypoint(w),
                w.get("protocol", PROTOCOL_TCP),
            ]
        )
    return table(rows)


def format_services(dump: dict, namespace: str | None = None) -> str:
    rows = [["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"]]
    for s in sorted(dump.get("services", []), key=lambda s: (s.get("namespace", ""), s.get("name", ""))):
        if namespace and s.get("namespace") != namespace:
            continue
        eps = list((s.get("endpoints") or {}).values())
        healthy = sum(1 for e in eps if e.get("status", STATUS_HEALTHY) == STATUS_HEALTHY)
        rows.append(
            [
                s.get("namespace", ""),
                s.get("name", ""),
                ",".join(s.get("addresses", [])) or "None",
                _waypoint(s),
                f"{healthy}/{len(eps)}",
            ]
        )
    return table(rows)


def format_policies(dump: dict, namespace: str | None = None) -> str:
    rows = [["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"]]
    for p in sorted(dump.get("policies", []), key=lambda p: (p.get("namespace", ""), p.get("name", ""))):
        if namespace and p.get("namespace") != namespace:
            continue
        scope = {"GLOBAL": "Global", "NAMESPACE": "Namespace", "WORKLOAD_SELECTOR": "WorkloadSelector"}.get(
            p.get("scope", ""), p.get("scope", "")
        )
        rows.append([p.get("namespace", ""), p.get("name", ""), p.get("action", "").title(), scope])
    return table(rows)


def format_certificates(dump: dict) -> str:
    rows = [["CERTIFICATE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]]
    for c in dump.get("certificates", []):
        state = c.get("state", "")
        status = "Available" if state.lower() in ("available", "ready") else state.split(":")[0] or "Unavailable"
        for kind, certs in (
            ("Leaf", c.get("certChain", [])[:1]),
            ("Intermediate", c.get("certChain", [])[1:]),
            ("Root", c.get("rootCerts", [])),
        ):
            for cert in certs:
                rows.append(
                    [
                        c.get("identity", ""),
                        kind,
                        status,
                        "true" if status == "Available" else "false",
                        cert.get("serialHex", ""),
                        cert.get("expirationTime", ""),
                        cert.get("validFrom", ""),
                    ]
                )
    return table(rows)


def format_connections(dump: dict) -> str:
    rows = [["WORKLOAD", "DIRECTION", "LOCAL", "REMOTE", "REMOTE TARGET", "PROTOCOL"]]
    for pod, conns in sorted((dump.get("connections") or {}).items()):
        # LOCAL is this pod's end: the actual destination inbound, the source outbound.
        for direction, local, remote in (("Inbound", "actualDst", "src"), ("Outbound", "src", "actualDst")):
            columns = (local, remote, "originalDst", "protocol")
            rows += [[pod, direction, *(c.get(k, "") for k in columns)] for c in conns.get(direction.lower(), [])]
    return table(rows)


#: Views of the mesh's config, filtered by a namespace (None: every namespace).
NAMESPACED_VIEWS: dict[str, Callable[[dict, str | None], str]] = {
    "workload": format_workloads,
    "workloads": format_workloads,
    "w": format_workloads,
    "service": format_services,
    "services": format_services,
    "s": format_services,
    "svc": format_services,
    "policy": format_policies,
    "policies": format_policies,
    "p": format_policies,
    "pol": format_policies,
}
#: Views of the ztunnel's own state, never filtered by namespace.
NODE_VIEWS: dict[str, Callable[[dict], str]] = {
    "certificate": format_certificates,
    "certificates": format_certificates,
    "certs": format_certificates,
    "cert": format_certificates,
    "connections": format_connections,
    "cons": format_connections,
}
#: Every view by name (the two kinds take different arguments).
ZTUNNEL_CONFIG_VIEWS: dict[str, Callable[..., str]] = {**NAMESPACED_VIEWS, **NODE_VIEWS}
