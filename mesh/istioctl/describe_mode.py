"""`x describe pod`, part one: how the mesh captures a pod (ambient, sidecar, waypoint proxy or
none) and the object accessors the other parts share. Pure; also what `proxy-config` asks before
it looks for a proxy. The other parts: describe_waypoint.py, describe_policies.py, describe_pod.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from mesh.contract import (
    DATAPLANE_MODE_AMBIENT,
    DATAPLANE_MODE_LABEL,
    DATAPLANE_MODE_NONE,
    GATEWAY_NAME_LABEL,
    ISTIO_NAMESPACE,
    REDIRECTION_ANNOTATION,
    REDIRECTION_ENABLED,
    SIDECAR_STATUS_ANNOTATION,
)

ROOT_NAMESPACE = ISTIO_NAMESPACE
SYSTEM_NAMESPACES = (ISTIO_NAMESPACE, "kube-system")
PROXY_CONTAINER = "istio-proxy"
GATEWAY_NAME_LABELS = (GATEWAY_NAME_LABEL, "istio.io/gateway-name")

AMBIENT, SIDECAR, WAYPOINT, NONE = "ambient", "sidecar", "waypoint", "none"


def meta_of(obj: Mapping | None) -> Mapping:
    return (obj or {}).get("metadata") or {}


def labels_of(obj: Mapping | None) -> Mapping[str, str]:
    return meta_of(obj).get("labels") or {}


def key_of(obj: Mapping) -> str:
    return f'{meta_of(obj).get("namespace", "default")}/{meta_of(obj).get("name", "")}'


# --- mode -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    kind: str  # ambient | sidecar | waypoint | none
    text: str
    gateway: str | None = None  # for a waypoint pod: the Gateway it runs


def pod_mode(pod: Mapping, namespace_labels: Mapping[str, str]) -> Mode:
    md, spec, status = meta_of(pod), pod.get("spec") or {}, pod.get("status") or {}
    containers = [c.get("name") for c in spec.get("containers") or []]
    if PROXY_CONTAINER in containers:
        labels = labels_of(pod)
        gw = next((labels[k] for k in GATEWAY_NAME_LABELS if labels.get(k)), None)
        if gw:
            return Mode(
                WAYPOINT, f"waypoint proxy (runs Gateway {gw}; its {PROXY_CONTAINER} container is the L7 proxy)", gw
            )
        return Mode(SIDECAR, f"sidecar ({sidecar_origin(pod)})")
    ns = md.get("namespace", "default")
    pod_label = labels_of(pod).get(DATAPLANE_MODE_LABEL)
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
    status = (meta_of(pod).get("annotations") or {}).get(SIDECAR_STATUS_ANNOTATION)
    if not status:
        return f"{PROXY_CONTAINER} {tag}, not injected: the pod's own spec has the container"
    try:
        revision = (json.loads(status) or {}).get("revision") or "default"
    except (ValueError, AttributeError):
        revision = "default"
    return f"{PROXY_CONTAINER} {tag}, injected by istio-sidecar-injector, revision {revision}"
