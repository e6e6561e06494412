"""`lab istioctl ...`: the istioctl verbs the article and a mesh user need.

`install --set profile=ambient -y` applies the ambient profile's manifests through the lab API and
waits for each component as istioctl does.
"""
from __future__ import annotations

import os
import sys
import time

from lab.client import LabClient, LabError

MESH_MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mesh", "manifests")
PROFILES = ("ambient",)


class IstioctlError(Exception):
    pass


def ambient_manifest() -> str:
    with open(os.path.join(MESH_MANIFESTS, "ambient.yaml")) as f:
        return f.read()


def _ready(client: LabClient, kind: str, name: str) -> bool:
    try:
        obj = client.call("get", kind=kind, name=name, namespace="istio-system")
    except LabError:
        return False
    st = obj.get("status", {})
    if kind == "Deployment":
        return st.get("readyReplicas", 0) >= obj["spec"].get("replicas", 1)
    want = st.get("desiredNumberScheduled", 0)
    return want > 0 and st.get("numberReady", 0) == want and st.get("updatedNumberScheduled", 0) == want


def install(client: LabClient, settings: list[str], timeout: float = 120.0, out=sys.stdout) -> None:
    values = dict(s.split("=", 1) for s in settings if "=" in s)
    bad = [s for s in settings if "=" not in s]
    if bad:
        raise IstioctlError(f'Error: --set {bad[0]}: expected key=value')
    profile = values.pop("profile", "default")
    if profile not in PROFILES:
        raise IstioctlError(f'Error: profile "{profile}" is not available in this lab; '
                            f'available: {", ".join(PROFILES)}')
    if values:
        raise IstioctlError(f"Error: unsupported setting --set {next(iter(values))}")
    client.call("apply", manifests=ambient_manifest(), source="profile=ambient")
    print("\u2714 Istio core installed \u26f5\ufe0f", file=out, flush=True)
    deadline = time.monotonic() + timeout
    for kind, name, label in (("Deployment", "istiod", "Istiod installed \U0001f9e0"),
                              ("DaemonSet", "istio-cni-node", "CNI installed \U0001fa62"),
                              ("DaemonSet", "ztunnel", "Ztunnel installed \U0001f512")):
        while not _ready(client, kind, name):
            if time.monotonic() > deadline:
                raise IstioctlError(f"Error: {kind.lower()} istio-system/{name} was not ready after {timeout:.0f}s; "
                                    f"see `lab logs -n istio-system {kind.lower()}/{name}`")
            time.sleep(0.05)
        print(f"\u2714 {label}", file=out, flush=True)
    print("\u2714 Installation complete", file=out, flush=True)


# ztunnel-config ---------------------------------------------------------------------------------
ZTUNNEL_ADMIN = ("127.0.0.1", 15000)


def fetch_config_dump(lab_name: str, node: str) -> dict:
    """GET /config_dump from the ztunnel admin port (localhost of the node's network namespace)."""
    import json
    import socket

    from lab.runtime import netns
    from lab.runtime.sandbox import node_netns_name
    sock = netns.socket_in(node_netns_name(lab_name, node), socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(ZTUNNEL_ADMIN)
        sock.sendall(b"GET /config_dump HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    except OSError as e:
        raise IstioctlError(f"Error: cannot reach the ztunnel admin port on node {node}: {e}") from None
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise IstioctlError(f"Error: ztunnel on node {node} answered {head.splitlines()[0:1]}")
    return json.loads(body)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _waypoint(obj: dict) -> str:
    wp = obj.get("waypoint")
    if not wp:
        return "None"
    return wp.get("destination") or wp.get("address") or "None"


def format_workloads(dump: dict, namespace: str | None = None) -> str:
    rows = [["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"]]
    for w in sorted(dump.get("workloads", []), key=lambda w: (w.get("namespace", ""), w.get("name", ""))):
        if namespace and w.get("namespace") != namespace:
            continue
        rows.append([w.get("namespace", ""), w.get("name", ""), ",".join(w.get("addresses", [])),
                     w.get("node", ""), _waypoint(w), w.get("protocol", "TCP")])
    return _table(rows)


def format_services(dump: dict, namespace: str | None = None) -> str:
    rows = [["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"]]
    for s in sorted(dump.get("services", []), key=lambda s: (s.get("namespace", ""), s.get("name", ""))):
        if namespace and s.get("namespace") != namespace:
            continue
        eps = list((s.get("endpoints") or {}).values())
        healthy = sum(1 for e in eps if e.get("status", "Healthy") == "Healthy")
        rows.append([s.get("namespace", ""), s.get("name", ""), ",".join(s.get("addresses", [])) or "None",
                     _waypoint(s), f"{healthy}/{len(eps)}"])
    return _table(rows)


def format_policies(dump: dict, namespace: str | None = None) -> str:
    rows = [["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"]]
    for p in sorted(dump.get("policies", []), key=lambda p: (p.get("namespace", ""), p.get("name", ""))):
        if namespace and p.get("namespace") != namespace:
            continue
        scope = {"GLOBAL": "Global", "NAMESPACE": "Namespace", "WORKLOAD_SELECTOR": "WorkloadSelector"}.get(
            p.get("scope", ""), p.get("scope", ""))
        rows.append([p.get("namespace", ""), p.get("name", ""), p.get("action", "").title(), scope])
    return _table(rows)


def format_certificates(dump: dict) -> str:
    rows = [["CERTIFICATE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]]
    for c in dump.get("certificates", []):
        state = c.get("state", "")
        status = "Available" if state.lower() in ("available", "ready") else state.split(":")[0] or "Unavailable"
        for kind, certs in (("Leaf", c.get("certChain", [])[:1]), ("Intermediate", c.get("certChain", [])[1:]),
                            ("Root", c.get("rootCerts", []))):
            for cert in certs:
                rows.append([c.get("identity", ""), kind, status, "true" if status == "Available" else "false",
                             cert.get("serialHex", ""), cert.get("expirationTime", ""), cert.get("validFrom", "")])
    return _table(rows)


def format_connections(dump: dict) -> str:
    rows = [["WORKLOAD", "DIRECTION", "LOCAL", "REMOTE", "REMOTE TARGET", "PROTOCOL"]]
    for pod, conns in sorted((dump.get("connections") or {}).items()):
        for c in conns.get("inbound", []):
            rows.append([pod, "Inbound", c.get("actualDst", ""), c.get("src", ""), c.get("originalDst", ""),
                         c.get("protocol", "")])
        for c in conns.get("outbound", []):
            rows.append([pod, "Outbound", c.get("src", ""), c.get("actualDst", ""), c.get("originalDst", ""),
                         c.get("protocol", "")])
    return _table(rows)


ZTUNNEL_CONFIG_VIEWS = {
    "workload": format_workloads, "workloads": format_workloads, "w": format_workloads,
    "service": format_services, "services": format_services, "s": format_services, "svc": format_services,
    "policy": format_policies, "policies": format_policies, "p": format_policies, "pol": format_policies,
    "certificate": format_certificates, "certificates": format_certificates, "certs": format_certificates,
    "cert": format_certificates,
    "connections": format_connections, "cons": format_connections,
}
