"""`istioctl proxy-status`: istiod's sync status of every proxy, from istiod's /debug/syncz."""

from __future__ import annotations

from mesh.contract import ADDRESS, AUTHORIZATION, CLUSTER, ISTIOD_DEBUG_PORT, LISTENER, PROXY_TYPES, ROUTE_CONFIGURATION
from mesh.istioctl.common import admin_get, table

SYNCZ_PATH = "/debug/syncz"
CLUSTER_ID = "Kubernetes"
ENVOY_COLUMNS = (("CDS", CLUSTER), ("LDS", LISTENER), ("EDS", CLUSTER), ("RDS", ROUTE_CONFIGURATION), ("ECDS", None))
WDS_COLUMN_TYPES = (ADDRESS, AUTHORIZATION)  # the order the WDS cell names them in
PROXY_STATUS_HELP = (
    "One row per proxy connected to istiod (waypoints and sidecars as POD.NAMESPACE, and each "
    "ztunnel), from each istiod's sync status (its /debug/syncz on port 15014). CDS, LDS and RDS "
    "are the state of the Clusters, Listeners and Routes istiod sent: SYNCED (the proxy holds "
    "what istiod would send now), STALE (istiod has newer config it has not taken yet) or NOT "
    "SENT. EDS follows CDS (the lab sends endpoints inside the clusters) and ECDS is IGNORED. A "
    "ztunnel takes none of Envoy's types: those columns say IGNORED, and the last column, WDS, "
    "gives the state of its Address and Authorization resources (one word when both agree). "
    "VERSION is the Istio version the proxy reported; a version other than its istiod's is a "
    "version skew, noted under the table."
)


def fetch_syncz(netns_name: str, istiod_pod: str) -> dict:
    """GET /debug/syncz from istiod's debug port, 127.0.0.1:15014 of its pod's network namespace."""
    return admin_get(netns_name, SYNCZ_PATH, f"istiod pod {istiod_pod}", ISTIOD_DEBUG_PORT)


def _sub_name(sub: dict) -> str:
    ns, _, name = str(sub.get("pod") or "?/?").partition("/")
    return f"{name}.{ns}"


def _state(sub: dict, type_: str) -> str:
    return str(((sub.get("types") or {}).get(type_) or {}).get("state") or "NOT SENT")


def _wds(sub: dict) -> str:
    states = [(t, _state(sub, t)) for t in WDS_COLUMN_TYPES if t in (sub.get("types") or {})]
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
            if any(t in types for t in PROXY_TYPES):
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
    text = table([head, *rows])
    versions = {pod: version or (doc.get("istiod") or {}).get("version") for pod, version, doc in sources}
    skewed = [r for r in rows if versions.get(r[7]) and r[8] != versions[r[7]]]
    if skewed:
        by_istiod = sorted({(r[7], versions[r[7]]) for r in skewed})
        others = sorted({r[8] for r in skewed})
        text += (
            f"\n\nVersion skew: {len(skewed)} of {len(rows)} proxies run {', '.join(others)}, not the version "
            f"of their istiod ({', '.join(f'{p} runs {v}' for p, v in by_istiod)}): "
            + ", ".join(r[0] for r in skewed)
            + ". A proxy keeps its version until its pod is re-created: "
            "a sidecar then gets the injector's tag (`lab rollout restart deploy/NAME -n NS`)."
        )
    return text
