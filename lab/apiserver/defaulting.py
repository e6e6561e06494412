"""What the API server fills in and what it holds fixed, the same on `apply` and on the REST
endpoint's writes: ClusterIP allocation from the service CIDR, each kind's defaults, the fields
that may not change once set. Apart from api.py, which keeps to the verbs."""

from __future__ import annotations

import ipaddress
from typing import Any

from lab.apiserver import admission, kinds
from lab.apiserver.errors import ApiError
from lab.apiserver.store import Store


def _dig(obj: dict, path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def immutable_changed(obj: dict, cur: dict) -> str | None:
    """The first field of the kind's immutable ones that OBJ changes from CUR (an empty clusterIP
    keeps the allocated one), or None."""
    for path in kinds.by_kind(obj["kind"]).immutable:
        new, old = _dig(obj, path), _dig(cur, path)
        if path == "spec.clusterIP" and new in (None, ""):
            continue
        if new != old:
            return path
    return None


class ServiceIPs:
    """ClusterIP allocation from the service CIDR (.1 and .10 are kubernetes and kube-dns)."""

    def __init__(self, cidr: ipaddress.IPv4Network, store: Store):
        self.cidr = cidr
        self.store = store

    def used(self) -> set[str]:
        return {s["spec"].get("clusterIP") for s in self.store.list("Service")}

    def allocate(self, taken: set[str]) -> str:
        used = self.used() | taken
        for host in self.cidr.hosts():
            ip = str(host)
            if host.packed[-1] in (1, 10) and host.packed[-2] == 0:
                continue
            if ip not in used:
                return ip
        raise ApiError(f"service CIDR {self.cidr} is exhausted")


def set_defaults(obj: dict) -> None:
    """The API server's defaulting, the same on create and on apply to an existing object."""
    kind, spec = obj["kind"], obj.get("spec")
    if not isinstance(spec, dict):
        return
    if kind == "Service":
        spec.setdefault("type", "ClusterIP")
        for p in spec.get("ports", []) or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
    elif kind == "Pod":
        admission.default_pod(obj)
    elif kind in ("Deployment", "ReplicaSet"):
        spec.setdefault("replicas", 1)
        if kind == "Deployment":  # what `kubectl rollout status` and `describe` read
            spec.setdefault(
                "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
            )
    elif kind == "DaemonSet":
        spec.setdefault(
            "updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
        )
