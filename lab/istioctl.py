"""`lab istioctl ...`: the istioctl verbs the article and a mesh user need.

`install --set profile=ambient -y` applies the ambient profile's manifests through the lab API and
waits for each component as istioctl does; `--set tag=X` installs (or upgrades to) Istio X: the
images of istiod, istio-cni and ztunnel get tag X, so their controllers roll them, and the sidecar
injector's `lab.ambient/proxy-tag` becomes X, so new pods get X proxies (running pods keep theirs).
`proxy-status` shows istiod's sync status of every proxy (`mesh.istiod.debug`, /debug/syncz).
"""
from __future__ import annotations

import os
import re
import sys
import time

from lab.client import LabClient, LabError

MESH_MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mesh", "manifests")
PROFILES = ("ambient",)
INSTALL_SETTINGS = ("profile", "tag")
ISTIO_REPOSITORY = "docker.io/istio/"
INJECTOR_WEBHOOK = "istio-sidecar-injector"
PROXY_TAG_ANNOTATION = "lab.ambient/proxy-tag"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class IstioctlError(Exception):
    pass


def ambient_manifest() -> str:
    with open(os.path.join(MESH_MANIFESTS, "ambient.yaml")) as f:
        return f.read()


def image_tag(image: str) -> str | None:
    """The tag of an image reference, None without one."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return (last.split(":", 1)[1] or None) if ":" in last else None


def _with_tag(image: str, tag: str) -> str:
    ref = image.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}:{tag}" if head else f"{last.split(':', 1)[0]}:{tag}"


def _templates(obj: dict) -> list[dict]:
    """The containers of a Deployment's or DaemonSet's pod template."""
    if obj.get("kind") not in ("Deployment", "DaemonSet"):
        return []
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def profile_objects(tag: str | None = None) -> list[dict]:
    """The ambient profile's objects; with `tag`, Istio's images (istiod, istio-cni, ztunnel) and
    the sidecar injector's proxy tag set to it."""
    import yaml
    objs = [o for o in yaml.safe_load_all(ambient_manifest()) if o]
    if tag is None:
        return objs
    for obj in objs:
        for c in _templates(obj):
            if str(c.get("image", "")).startswith(ISTIO_REPOSITORY):
                c["image"] = _with_tag(c["image"], tag)
        md = obj.get("metadata") or {}
        if obj.get("kind") == "MutatingWebhookConfiguration" and md.get("name") == INJECTOR_WEBHOOK:
            md.setdefault("annotations", {})[PROXY_TAG_ANNOTATION] = tag
    return objs


def default_tag() -> str:
    """The tag of the profile's istiod image (the Istio version the lab installs by default)."""
    for obj in profile_objects():
        for c in _templates(obj):
            if str(c.get("image", "")).startswith(ISTIO_REPOSITORY) and image_tag(c["image"]):
                return image_tag(c["image"])
    return "1.24.0"


def install_changes(current: dict | None, desired: dict) -> list[str]:
    """What applying `desired` over `current` changes that install reports: image tags and the
    injector's proxy tag ([] for a new object or none of those)."""
    if current is None:
        return []
    out = []
    old = {c.get("name"): c.get("image") for c in _templates(current)}
    for c in _templates(desired):
        before = old.get(c.get("name"))
        if before is not None and before != c.get("image"):
            out.append(f"image {before} -> {c.get('image')}")
    if desired.get("kind") == "MutatingWebhookConfiguration":
        before = ((current.get("metadata") or {}).get("annotations") or {}).get(PROXY_TAG_ANNOTATION)
        after = ((desired.get("metadata") or {}).get("annotations") or {}).get(PROXY_TAG_ANNOTATION)
        if after is not None and before != after:
            out.append(f"{PROXY_TAG_ANNOTATION} {before or '(unset)'} -> {after} (new pods get proxies of {after}; "
                       "running pods keep theirs until they are re-created)")
    return out


def parse_install_settings(settings: list[str]) -> tuple[str, str | None]:
    """(profile, tag) from `--set key=value` settings; IstioctlError for anything else."""
    bad = [s for s in settings if "=" not in s]
    if bad:
        raise IstioctlError(f'Error: --set {bad[0]}: expected key=value')
    values = dict(s.split("=", 1) for s in settings)
    profile = values.pop("profile", "default")
    if profile not in PROFILES:
        raise IstioctlError(f'Error: profile "{profile}" is not available in this lab; '
                            f'available: {", ".join(PROFILES)}')
    tag = values.pop("tag", None)
    if tag is not None and not _TAG.fullmatch(tag):
        raise IstioctlError(f'Error: --set tag={tag}: not an image tag')
    if values:
        raise IstioctlError(f"Error: unsupported setting --set {next(iter(values))}; "
                            f"supported: {', '.join(INSTALL_SETTINGS)}")
    return profile, tag


def _ready(client: LabClient, kind: str, name: str) -> bool:
    """Ready and rolled out: every replica of the current template, none of an older one."""
    try:
        obj = client.call("get", kind=kind, name=name, namespace="istio-system")
    except LabError:
        return False
    st = obj.get("status", {})
    if st.get("observedGeneration", 0) < obj["metadata"].get("generation", 0):
        return False
    if kind == "Deployment":
        want = obj["spec"].get("replicas", 1)
        return (st.get("readyReplicas", 0) >= want and st.get("updatedReplicas", want) >= want
                and st.get("replicas", want) <= want)
    want = st.get("desiredNumberScheduled", 0)
    return want > 0 and st.get("numberReady", 0) == want and st.get("updatedNumberScheduled", 0) == want


def install(client: LabClient, settings: list[str], timeout: float = 120.0, out=sys.stdout) -> None:
    import json
    _, tag = parse_install_settings(settings)
    if tag is None or tag == default_tag():
        tag = None
    objs = profile_objects(tag)
    current = {}
    for obj in objs:
        md = obj["metadata"]
        try:
            current[(obj["kind"], md.get("namespace"), md["name"])] = client.call(
                "get", kind=obj["kind"], name=md["name"], namespace=md.get("namespace"))
        except LabError:
            current[(obj["kind"], md.get("namespace"), md["name"])] = None
    manifests = ambient_manifest() if tag is None else "\n---\n".join(json.dumps(o) for o in objs)
    results = client.call("apply", manifests=manifests, source="profile=ambient")
    print("\u2714 Istio core installed \u26f5\ufe0f", file=out, flush=True)
    changed = [r for r in results if r.get("action") != "unchanged"]
    if not changed:
        print(f"  nothing changed: Istio {tag or default_tag()} (profile ambient) is already installed with these "
              "values", file=out, flush=True)
    for r in changed:
        key = (r["kind"], r.get("namespace"), r["name"])
        desired = next(o for o in objs if (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) == key)
        if current.get(key) is None:
            continue  # a new object: a first install says nothing more
        what = install_changes(current[key], desired) or ["configured"]
        for line in what:
            print(f"  {r['kind']}/{r['name']}: {line}", file=out, flush=True)
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


def admin_get(netns_name: str, path: str, what: str, port: int = 15000) -> dict:
    """GET PATH (JSON) from an admin port on 127.0.0.1 of network namespace NETNS_NAME; WHAT names
    the proxy in error messages."""
    import json
    import socket

    from lab.runtime import netns
    try:
        sock = netns.socket_in(netns_name, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        raise IstioctlError(f"Error: cannot enter the network namespace of {what}: {e}") from None
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    except OSError as e:
        raise IstioctlError(f"Error: cannot reach the admin port of {what}: {e}") from None
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise IstioctlError(f"Error: {what} answered {head.splitlines()[0:1]}")
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    try:
        return json.loads(body)
    except ValueError as e:
        raise IstioctlError(f"Error: {what} sent a config dump that is not JSON: {e}") from None


def _dechunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out


def fetch_config_dump(lab_name: str, node: str) -> dict:
    """GET /config_dump from the ztunnel admin port (localhost of the node's network namespace)."""
    from lab.runtime.sandbox import node_netns_name
    return admin_get(node_netns_name(lab_name, node), "/config_dump", f"the ztunnel on node {node}",
                     ZTUNNEL_ADMIN[1])


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


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


# proxy-status -----------------------------------------------------------------------------------
ISTIOD_DEBUG_PORT = 15014
SYNCZ_PATH = "/debug/syncz"
CLUSTER_ID = "Kubernetes"
ENVOY_COLUMNS = (("CDS", "Cluster"), ("LDS", "Listener"), ("EDS", "Cluster"), ("RDS", "RouteConfiguration"),
                 ("ECDS", None))
ENVOY_TYPES = ("Listener", "Cluster", "RouteConfiguration")
WDS_TYPES = ("Address", "Authorization")
PROXY_STATUS_HELP = ("One row per proxy connected to istiod (waypoints and sidecars as POD.NAMESPACE, and each "
                     "ztunnel), from each istiod's sync status (its /debug/syncz on port 15014). CDS, LDS and RDS "
                     "are the state of the Clusters, Listeners and Routes istiod sent: SYNCED (the proxy holds "
                     "what istiod would send now), STALE (istiod has newer config it has not taken yet) or NOT "
                     "SENT. EDS follows CDS (the lab sends endpoints inside the clusters) and ECDS is IGNORED. A "
                     "ztunnel takes none of Envoy's types: those columns say IGNORED, and the last column, WDS, "
                     "gives the state of its Address and Authorization resources (one word when both agree). "
                     "VERSION is the Istio version the proxy reported; a version other than its istiod's is a "
                     "version skew, noted under the table.")


def fetch_syncz(netns_name: str, istiod_pod: str) -> dict:
    """GET /debug/syncz from istiod's debug port, 127.0.0.1:15014 of its pod's network namespace."""
    return admin_get(netns_name, SYNCZ_PATH, f"istiod pod {istiod_pod}", ISTIOD_DEBUG_PORT)


def _sub_name(sub: dict) -> str:
    ns, _, name = str(sub.get("pod") or "?/?").partition("/")
    return f"{name}.{ns}"


def _state(sub: dict, type_: str) -> str:
    return str(((sub.get("types") or {}).get(type_) or {}).get("state") or "NOT SENT")


def _wds(sub: dict) -> str:
    states = [(t, _state(sub, t)) for t in WDS_TYPES if t in (sub.get("types") or {})]
    if not states:
        return "-"
    if len({s for _, s in states}) == 1:
        return states[0][1]
    return ", ".join(f"{t} {s}" for t, s in states)


def proxy_status_rows(sources: list[tuple[str, str | None, dict]]) -> list[list[str]]:
    """[NAME, CLUSTER, CDS, LDS, EDS, RDS, ECDS, ISTIOD, VERSION, WDS] per subscriber of each
    (istiod pod, istiod version, its syncz) source, sorted by name."""
    rows = []
    for istiod_pod, _, doc in sources:
        for sub in doc.get("subscribers") or []:
            types = sub.get("types") or {}
            if any(t in types for t in ENVOY_TYPES):
                cells = [_state(sub, t) if t else "IGNORED" for _, t in ENVOY_COLUMNS]
                wds = "-"
            else:
                cells = ["IGNORED"] * len(ENVOY_COLUMNS)
                wds = _wds(sub)
            rows.append([_sub_name(sub), CLUSTER_ID, *cells, istiod_pod, str(sub.get("version") or "unknown"), wds])
    return sorted(rows, key=lambda r: (r[0], r[7]))


def format_proxy_status(sources: list[tuple[str, str | None, dict]]) -> str:
    """istioctl's proxy-status table, plus a WDS column for ztunnels and a version-skew note."""
    head = ["NAME", "CLUSTER", *(c for c, _ in ENVOY_COLUMNS), "ISTIOD", "VERSION", "WDS"]
    rows = proxy_status_rows(sources)
    text = _table([head, *rows])
    versions = {pod: version or (doc.get("istiod") or {}).get("version") for pod, version, doc in sources}
    skewed = [r for r in rows if versions.get(r[7]) and r[8] != versions[r[7]]]
    if skewed:
        by_istiod = sorted({(r[7], versions[r[7]]) for r in skewed})
        others = sorted({r[8] for r in skewed})
        text += (f"\n\nVersion skew: {len(skewed)} of {len(rows)} proxies run {', '.join(others)}, not the version "
                 f"of their istiod ({', '.join(f'{p} runs {v}' for p, v in by_istiod)}): "
                 + ", ".join(r[0] for r in skewed) + ". A proxy keeps its version until its pod is re-created: "
                 "a sidecar then gets the injector's tag (`lab rollout restart deploy/NAME -n NS`).")
    return text


# waypoint ---------------------------------------------------------------------------------------
# Which Gateways are waypoints and whom they serve is istiod's decision (mesh.istiod.waypoints);
# these helpers only present it.
WAYPOINT_CLASS = "istio-waypoint"
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
TRAFFIC_TYPES = ("service", "workload", "all", "none")
NAMESPACE_TRAFFIC = "namespace"  # an unlabelled waypoint in the article's implicit model
WAYPOINT_TYPE_HELP = (f"TRAFFIC TYPE is the Gateway's {WAYPOINT_FOR_LABEL} label. Without it: `namespace` when "
                      f"nothing in the waypoint's namespace carries {USE_WAYPOINT_LABEL} (the article's model: "
                      f"the waypoint serves every pod and Service of its namespace), else `service` (Istio's "
                      f"default)")


def is_waypoint(gateway: dict) -> bool:
    """A Gateway of class istio-waypoint or istio with an HBONE listener on 15008."""
    from mesh.istiod.waypoints import is_waypoint as decide
    return decide(gateway)


def waypoint_traffic_type(gateway: dict, implicit_namespace: bool | None = None) -> str:
    """The label's value; unlabelled: `namespace` in an implicit namespace, else `service`. Without
    knowing the namespace (`implicit_namespace` None), a class `istio` Gateway counts as implicit."""
    label = ((gateway.get("metadata") or {}).get("labels") or {}).get(WAYPOINT_FOR_LABEL)
    if label:
        return label
    if implicit_namespace is None:
        implicit_namespace = (gateway.get("spec") or {}).get("gatewayClassName") != WAYPOINT_CLASS
    return NAMESPACE_TRAFFIC if implicit_namespace else "service"


def implicit_namespaces(namespaces: list[dict], labelled_objects: list[dict]) -> set[str]:
    """The namespaces where nothing (the namespace, a Service, a Pod) carries istio.io/use-waypoint."""
    names = {(n.get("metadata") or {}).get("name") for n in namespaces}
    for obj in [*namespaces, *labelled_objects]:
        md = obj.get("metadata") or {}
        if USE_WAYPOINT_LABEL in (md.get("labels") or {}):
            names.discard(md.get("name") if obj.get("kind") == "Namespace" else md.get("namespace", "default"))
    return names


def gateway_condition(gateway: dict, ctype: str) -> dict | None:
    for c in (gateway.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def format_waypoint_list(gateways: list[dict], all_namespaces: bool = False,
                         implicit: set[str] | None = None) -> str:
    """`waypoint list`: NAME REVISION TRAFFIC TYPE PROGRAMMED (NAMESPACE first with -A);
    `implicit`: the namespaces of the article's model (see `waypoint_traffic_type`)."""
    waypoints = sorted((g for g in gateways if is_waypoint(g)),
                       key=lambda g: (g["metadata"].get("namespace", ""), g["metadata"]["name"]))
    if not waypoints:
        return "No waypoints found."
    head = ["NAME", "REVISION", "TRAFFIC TYPE", "PROGRAMMED"]
    rows = [(["NAMESPACE"] if all_namespaces else []) + head]
    for g in waypoints:
        md = g["metadata"]
        revision = (md.get("labels") or {}).get("istio.io/rev") or "default"
        programmed = (gateway_condition(g, "Programmed") or {}).get("status") or "Unknown"
        rows.append(([md.get("namespace", "")] if all_namespaces else [])
                    + [md["name"], revision,
                       waypoint_traffic_type(g, None if implicit is None
                                             else md.get("namespace", "default") in implicit),
                       programmed])
    return _table(rows)


def format_waypoint_status(gateways: list[dict], all_namespaces: bool = False) -> str:
    """`waypoint status`: one row per status condition of each waypoint Gateway."""
    waypoints = sorted((g for g in gateways if is_waypoint(g)),
                       key=lambda g: (g["metadata"].get("namespace", ""), g["metadata"]["name"]))
    if not waypoints:
        return "No waypoints found."
    rows = [(["NAMESPACE"] if all_namespaces else []) + ["NAME", "STATUS", "TYPE", "REASON", "MESSAGE"]]
    for g in waypoints:
        md = g["metadata"]
        lead = [md.get("namespace", "")] if all_namespaces else []
        conditions = (g.get("status") or {}).get("conditions") or []
        if not conditions:
            rows.append(lead + [md["name"], "Unknown", "Programmed", "Pending", "istiod has not reported on it yet"])
        for c in conditions:
            rows.append(lead + [md["name"], str(c.get("status", "")), c.get("type", ""), c.get("reason", ""),
                                " ".join(str(c.get("message", "")).split())])
    return _table(rows)


def waypoint_gateway(name: str = "waypoint", namespace: str = "default", traffic_type: str | None = None) -> dict:
    """The Gateway `waypoint generate/apply` makes."""
    if traffic_type is not None and traffic_type not in TRAFFIC_TYPES:
        raise IstioctlError(f'Error: invalid traffic type "{traffic_type}"; one of {", ".join(TRAFFIC_TYPES)}')
    metadata: dict = {"name": name, "namespace": namespace}
    if traffic_type:
        metadata["labels"] = {WAYPOINT_FOR_LABEL: traffic_type}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": metadata,
            "spec": {"gatewayClassName": WAYPOINT_CLASS,
                     "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}


def waypoint_yaml(gateway: dict) -> str:
    import yaml
    return yaml.safe_dump(gateway, sort_keys=False, default_flow_style=False)


def deployment_ready(deployment: dict | None) -> bool:
    if not deployment:
        return False
    want = (deployment.get("spec") or {}).get("replicas", 1)
    return want > 0 and (deployment.get("status") or {}).get("readyReplicas", 0) >= want


def waypoint_ready(gateway: dict, deployment: dict | None) -> tuple[bool, str]:
    """Whether a waypoint is ready (Programmed True and its Deployment ready), and why not."""
    programmed = gateway_condition(gateway, "Programmed")
    if not programmed or programmed.get("status") != "True":
        why = (programmed or {}).get("message") or "istiod has not programmed it yet"
        return False, f"not programmed: {why}"
    if deployment is None:
        return False, f"no Deployment {gateway['metadata']['name']}"
    if not deployment_ready(deployment):
        st = deployment.get("status") or {}
        return False, (f"Deployment {deployment['metadata']['name']} has {st.get('readyReplicas', 0)}/"
                       f"{(deployment.get('spec') or {}).get('replicas', 1)} ready")
    return True, "ready"


# proxy-config -----------------------------------------------------------------------------------
PROXY_ADMIN_PORT = 15000
PROXY_CONTAINER = "istio-proxy"
DUMP_TYPES = {
    "listeners": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "clusters": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    "routes": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
    "secret": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


def _f(obj, key: str, default=None):
    """obj[key], accepting the protobuf JSON camelCase spelling too."""
    if not isinstance(obj, dict):
        return default
    if key in obj:
        return obj[key]
    return obj.get(_camel(key), default)


def dump_section(dump: dict, what: str) -> dict:
    """The config of one @type (listeners, clusters, routes, secret) of an Envoy config_dump."""
    want = DUMP_TYPES[what]
    for cfg in dump.get("configs") or []:
        if cfg.get("@type") == want:
            return cfg
    return {}


def _listener_entries(section: dict) -> list[dict]:
    out = [_f(s, "listener") or {} for s in _f(section, "static_listeners") or []]
    for d in _f(section, "dynamic_listeners") or []:
        state = _f(d, "active_state") or _f(d, "warming_state") or {}
        if _f(state, "listener"):
            out.append(_f(state, "listener"))
    return out


def _socket_address(addr: dict | None) -> tuple[str, str]:
    sa = _f(addr, "socket_address") or {}
    if sa:
        return str(_f(sa, "address", "")), str(_f(sa, "port_value", "") or _f(sa, "named_port", "") or "")
    pipe = _f(addr, "pipe") or {}
    if pipe:
        return str(_f(pipe, "path", "")), ""
    internal = _f(addr, "envoy_internal_address") or {}
    if internal:
        return "envoy://" + str(_f(internal, "server_listener_name", "")), ""
    return "", ""


def _chain_match(match: dict | None) -> str:
    match = match or {}
    parts = []
    ranges = _f(match, "prefix_ranges") or []
    if ranges:
        parts.append("Addr: " + ",".join(f'{_f(r, "address_prefix", "")}/{_f(r, "prefix_len", 0)}' for r in ranges))
    if _f(match, "destination_port") is not None:
        parts.append(f'Port: {_f(match, "destination_port")}')
    if _f(match, "server_names"):
        parts.append("SNI: " + ",".join(_f(match, "server_names")))
    if _f(match, "transport_protocol"):
        parts.append("Trans: " + _f(match, "transport_protocol"))
    if _f(match, "application_protocols"):
        parts.append("App: " + ",".join(_f(match, "application_protocols")))
    return "; ".join(parts) or "ALL"


SPECIAL_CLUSTERS = ("PassthroughCluster", "BlackHoleCluster", "InboundPassthroughCluster")


def _chain_destination(chain: dict) -> str:
    for flt in _f(chain, "filters") or []:
        name = _f(flt, "name", "")
        cfg = _f(flt, "typed_config") or {}
        kind = str(cfg.get("@type", ""))
        if name.endswith("http_connection_manager") or kind.endswith("HttpConnectionManager"):
            rds = _f(cfg, "rds")
            if rds:
                return "Route: " + str(_f(rds, "route_config_name", ""))
            inline = _f(cfg, "route_config") or {}
            routes = [_f(_f(r, "route") or {}, "cluster") for vh in _f(inline, "virtual_hosts") or []
                      for r in _f(vh, "routes") or []]
            routes = [r for r in routes if r]
            if routes:
                return "Inline Route: " + ",".join(dict.fromkeys(routes))
            return "Inline Route: " + str(_f(inline, "name", "")) if inline else "HTTP"
        if name.endswith("tcp_proxy") or kind.endswith("TcpProxy"):
            if _f(cfg, "cluster"):
                cluster = str(_f(cfg, "cluster"))
                return cluster if cluster in SPECIAL_CLUSTERS else "Cluster: " + cluster
            weighted = _f(_f(cfg, "weighted_clusters") or {}, "clusters") or []
            if weighted:
                return "Clusters: " + ",".join(str(_f(c, "name", "")) for c in weighted)
            return "TCP"
    return "Non-HTTP/Non-TCP"


def format_proxy_listeners(dump: dict) -> str:
    rows = [["ADDRESSES", "PORT", "MATCH", "DESTINATION"]]
    for lst in _listener_entries(dump_section(dump, "listeners")):
        addrs = [_socket_address(_f(lst, "address"))]
        if not addrs[0][0] and _f(lst, "internal_listener") is not None:
            addrs = [("envoy://" + str(_f(lst, "name", "")), "")]
        addrs += [_socket_address(_f(a, "address")) for a in _f(lst, "additional_addresses") or []]
        address = ",".join(a for a, _ in addrs if a) or "-"
        port = addrs[0][1] or "-"
        chains = list(_f(lst, "filter_chains") or [])
        default = _f(lst, "default_filter_chain")
        if not chains and not default:
            rows.append([address, port, "ALL", "-"])
        for chain in chains:
            rows.append([address, port, _chain_match(_f(chain, "filter_chain_match")), _chain_destination(chain)])
        if default:  # what no chain matched: its own match is moot
            rows.append([address, port, "ALL", _chain_destination(default)])
    return _table(rows)


def parse_cluster_name(name: str) -> tuple[str, str, str, str]:
    """Istio's `direction|port|subset|host` → (fqdn, port, subset, direction); other names as
    themselves with `-` for the rest."""
    parts = name.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound", "inbound-vip"):
        direction, port, subset, host = parts
        return host or "-", port or "-", subset or "-", direction
    if len(parts) == 2 and parts[0].startswith(("inbound", "outbound")):
        return parts[1] or "-", "-", "-", parts[0]
    return name, "-", "-", "-"


def _config_ref(obj: dict, kind: str) -> str:
    """`name.ns` of the Istio config an Envoy resource came from (its istio metadata), or `-`."""
    meta = _f(_f(_f(obj, "metadata") or {}, "filter_metadata") or {}, "istio") or {}
    path = str(meta.get("config", ""))
    bits = path.strip("/").split("/")
    if kind in bits and "namespaces" in bits:
        return f'{bits[-1]}.{bits[bits.index("namespaces") + 1]}'
    return "-"


def format_proxy_clusters(dump: dict) -> str:
    rows = [["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]]
    section = dump_section(dump, "clusters")
    clusters = [_f(c, "cluster") or {} for c in
                (_f(section, "static_clusters") or []) + (_f(section, "dynamic_active_clusters") or [])]
    entries = []
    for c in clusters:
        name = str(_f(c, "name", ""))
        ctype = _f(c, "type") or _f(_f(c, "cluster_type") or {}, "name") or "-"
        entries.append([*parse_cluster_name(name), str(ctype), _config_ref(c, "destination-rule")])
    for e in sorted(entries, key=lambda r: (r[0], r[1], r[3], r[2])):
        rows.append(e)
    return _table(rows)


def _route_match(match: dict | None) -> str:
    match = match or {}
    if _f(match, "prefix") is not None:
        return (_f(match, "prefix") or "/") + "*"
    if _f(match, "path") is not None:
        return _f(match, "path")
    if _f(match, "path_separated_prefix") is not None:
        return _f(match, "path_separated_prefix") + "/*"
    regex = _f(_f(match, "safe_regex") or {}, "regex")
    if regex is not None:
        return regex
    if _f(match, "connect_matcher") is not None:
        return "CONNECT"
    return "/*"


def format_proxy_routes(dump: dict) -> str:
    rows = [["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]]
    section = dump_section(dump, "routes")
    configs = [_f(r, "route_config") or {} for r in
               (_f(section, "static_route_configs") or []) + (_f(section, "dynamic_route_configs") or [])]
    for rc in configs:
        for vh in _f(rc, "virtual_hosts") or []:
            domains = _f(vh, "domains") or []
            routes = _f(vh, "routes") or [{}]
            for r in routes:
                rows.append([str(_f(rc, "name", "")), str(_f(vh, "name", "")), ",".join(domains) or "-",
                             _route_match(_f(r, "match")) if r else "-", _config_ref(r, "virtual-service")])
    return _table(rows)


def _pem_certs(source: dict | None) -> list:
    import base64

    from cryptography import x509
    if not source:
        return []
    if _f(source, "inline_bytes"):
        pem = base64.b64decode(_f(source, "inline_bytes"))
    elif _f(source, "inline_string"):
        pem = _f(source, "inline_string").encode()
    else:
        return []
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def _rfc3339(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_proxy_secrets(dump: dict, now=None) -> str:
    import datetime as dt
    now = now or dt.datetime.now(dt.timezone.utc)
    rows = [["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]]
    section = dump_section(dump, "secret")
    entries = [(s, "ACTIVE") for s in _f(section, "dynamic_active_secrets") or []]
    entries += [(s, "WARMING") for s in _f(section, "dynamic_warming_secrets") or []]
    entries += [(s, "ACTIVE") for s in _f(section, "static_secrets") or []]
    for entry, status in entries:
        secret = _f(entry, "secret") or {}
        name = str(_f(entry, "name") or _f(secret, "name", ""))
        if _f(secret, "tls_certificate"):
            kind, certs = "Cert Chain", _pem_certs(_f(_f(secret, "tls_certificate"), "certificate_chain"))
        elif _f(secret, "validation_context"):
            kind, certs = "CA", _pem_certs(_f(_f(secret, "validation_context"), "trusted_ca"))
        else:
            rows.append([name, "-", status, "false", "-", "-", "-"])
            continue
        if not certs:
            rows.append([name, kind, status, "false", "-", "-", "-"])
            continue
        cert = certs[0]
        before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
        valid = "true" if before <= now <= after else "false"
        rows.append([name, kind, status, valid, format(cert.serial_number, "x"), _rfc3339(after), _rfc3339(before)])
    return _table(rows)


PROXY_CONFIG_VIEWS = {
    "listeners": format_proxy_listeners, "listener": format_proxy_listeners, "l": format_proxy_listeners,
    "clusters": format_proxy_clusters, "cluster": format_proxy_clusters, "c": format_proxy_clusters,
    "routes": format_proxy_routes, "route": format_proxy_routes, "r": format_proxy_routes,
    "secret": format_proxy_secrets, "secrets": format_proxy_secrets, "s": format_proxy_secrets,
}
PROXY_CONFIG_SECTION = {
    format_proxy_listeners: "listeners", format_proxy_clusters: "clusters", format_proxy_routes: "routes",
    format_proxy_secrets: "secret",
}


def format_proxy_all(dump: dict, now=None) -> str:
    return "\n\n".join([format_proxy_clusters(dump), format_proxy_listeners(dump), format_proxy_routes(dump),
                        format_proxy_secrets(dump, now)])


def fetch_proxy_config_dump(netns_name: str, pod: str) -> dict:
    """GET /config_dump from the L7 proxy's admin port, 127.0.0.1:15000 of the pod's namespace."""
    return admin_get(netns_name, "/config_dump", f"the proxy of pod {pod}", PROXY_ADMIN_PORT)
