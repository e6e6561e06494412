"""Which pods of this node belong in the mesh, from the lab API's Pods and Namespaces. Pure.

A pod is captured (Istio's ambient selection, mesh-internals "Address resources") when it runs on
this node, is not hostNetwork, is not in a system namespace, is selected by
`istio.io/dataplane-mode=ambient` on its namespace or itself, does not opt out with
`istio.io/dataplane-mode=none`, has not finished (Succeeded/Failed), and the lab has given it a
netns and an IP. A terminating pod stays captured until it is gone, so its last connections still
work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lab.client.contract import NETNS_ANNOTATION
from mesh.contract import (
    DATAPLANE_MODE_AMBIENT,
    DATAPLANE_MODE_LABEL,
    DATAPLANE_MODE_NONE,
    ISTIO_NAMESPACE,
    REDIRECTION_ANNOTATION,
    REDIRECTION_ENABLED,
)

SYSTEM_NAMESPACES = frozenset({ISTIO_NAMESPACE, "kube-system"})
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class Workload:
    """A pod as the agent needs it: ZDS identity (uid, workload_info) and where its netns is."""

    uid: str
    name: str
    namespace: str
    service_account: str
    netns: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def workload_of(pod: Mapping[str, Any]) -> Workload:
    md, spec = pod["metadata"], pod.get("spec") or {}
    return Workload(
        uid=md["uid"],
        name=md["name"],
        namespace=md.get("namespace", "default"),
        service_account=spec.get("serviceAccountName") or "default",
        netns=(md.get("annotations") or {}).get(NETNS_ANNOTATION, ""),
    )


def is_ambient(pod: Mapping[str, Any], namespace_labels: Mapping[str, str]) -> bool:
    """The dataplane-mode selection alone (namespace or pod label, and the pod's opt-out)."""
    md, spec = pod["metadata"], pod.get("spec") or {}
    pod_mode = (md.get("labels") or {}).get(DATAPLANE_MODE_LABEL)
    if spec.get("hostNetwork") or md.get("namespace", "default") in SYSTEM_NAMESPACES:
        return False
    if pod_mode == DATAPLANE_MODE_NONE:
        return False
    return DATAPLANE_MODE_AMBIENT in (pod_mode, namespace_labels.get(DATAPLANE_MODE_LABEL))


def should_capture(pod: Mapping[str, Any], namespace_labels: Mapping[str, str], node: str) -> bool:
    md, status = pod["metadata"], pod.get("status") or {}
    return (
        (pod.get("spec") or {}).get("nodeName") == node
        and is_ambient(pod, namespace_labels)
        and status.get("phase") not in TERMINAL_PHASES
        and bool(status.get("podIP"))
        and bool((md.get("annotations") or {}).get(NETNS_ANNOTATION))
    )


def is_marked(pod: Mapping[str, Any]) -> bool:
    """The pod carries the annotation the agent sets once ztunnel has it."""
    return (pod["metadata"].get("annotations") or {}).get(REDIRECTION_ANNOTATION) == REDIRECTION_ENABLED


class ClusterView:
    """The Pods and Namespace labels one watch stream has shown, and what they imply for a node."""

    def __init__(self, node: str):
        self.node = node
        self._pods: dict[str, dict[str, Any]] = {}
        self._namespace_labels: dict[str, dict[str, str]] = {}

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """Folds one watch event in; kinds other than Pod and Namespace are ignored."""
        kind, md = obj.get("kind"), obj.get("metadata") or {}
        store: dict[str, Any]
        if kind == "Pod":  # pods by uid, namespaces' labels by name
            store, key, value = self._pods, "uid", dict(obj)
        elif kind == "Namespace":
            store, key, value = self._namespace_labels, "name", dict(md.get("labels") or {})
        else:
            return
        if event_type != "DELETED":
            store[md[key]] = value
        elif key in md:
            store.pop(md[key], None)

    def pod(self, uid: str) -> dict[str, Any] | None:
        return self._pods.get(uid)

    def wanted(self) -> dict[str, Workload]:
        """Pods of this node that should be captured, by uid."""
        return {
            uid: workload_of(pod)
            for uid, pod in self._pods.items()
            if should_capture(pod, self._labels_of(pod), self.node)
        }

    def marked(self) -> dict[str, Workload]:
        """Pods of this node (not hostNetwork) carrying `ambient.istio.io/redirection: enabled`.

        After an agent restart this is how it finds pods it captured before and must now release."""
        return {
            uid: workload_of(pod)
            for uid, pod in self._pods.items()
            if (pod.get("spec") or {}).get("nodeName") == self.node
            and not (pod.get("spec") or {}).get("hostNetwork")
            and is_marked(pod)
        }

    def _labels_of(self, pod: Mapping[str, Any]) -> dict[str, str]:
        return self._namespace_labels.get(pod["metadata"].get("namespace", "default"), {})


@dataclass(frozen=True)
class Plan:
    """What one reconcile pass does: release these, then capture those."""

    release: tuple[Workload, ...]
    capture: tuple[Workload, ...]


def plan(wanted: Mapping[str, Workload], enrolled: Mapping[str, Workload], marked: Mapping[str, Workload]) -> Plan:
    """Release what is enrolled or still marked but no longer wanted; capture what is wanted and
    not enrolled yet (marked pods included: after a restart their rules are re-applied)."""
    stale = {**marked, **enrolled}
    return Plan(
        release=tuple(w for uid, w in stale.items() if uid not in wanted),
        capture=tuple(w for uid, w in wanted.items() if uid not in enrolled),
    )
