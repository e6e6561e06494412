"""Reading Kubernetes objects as istiod's translation, waypoint controller and proxy config do:
metadata with Kubernetes' defaults, a pod's service account and readiness, a Service's selection.
Pure, and said once for the three of them."""

from typing import Any, Mapping

#: A Kubernetes object, or a part of one, as JSON (what the lab API returns).
Obj = Mapping[str, Any]

TERMINAL_PHASES = ("Succeeded", "Failed")


def meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def name(obj: Obj) -> str:
    return meta(obj).get("name") or ""


def namespace(obj: Obj) -> str:
    return meta(obj).get("namespace") or "default"


def labels(obj: Obj) -> dict[str, str]:
    return dict(meta(obj).get("labels") or {})


def annotations(obj: Obj) -> dict[str, str]:
    return dict(meta(obj).get("annotations") or {})


def service_account(pod: Obj) -> str:
    spec = pod.get("spec") or {}
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


def is_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def is_live(pod: Obj) -> bool:
    """Neither terminating nor finished."""
    return not meta(pod).get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES


def selects_pod(service: Obj, pod: Obj) -> bool:
    """Kubernetes' rule: same namespace and a non-empty selector whose labels the pod carries."""
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector or namespace(service) != namespace(pod):
        return False
    pod_labels = labels(pod)
    return all(pod_labels.get(key) == value for key, value in selector.items())
