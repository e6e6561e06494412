"""API discovery: which groups, versions and resources the lab serves, as kubectl learns them.

Legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`: APIVersions, APIGroupList,
APIGroup, APIResourceList) and aggregated discovery (`/api` and `/apis` as an
APIGroupDiscoveryList, apidiscovery.k8s.io v2 or v2beta1, chosen by the Accept header: KEP-3352,
k8s.io/api/apidiscovery). Everything comes from the kind registry (lab/apiserver/kinds.py). Pure.
"""

from __future__ import annotations

from typing import Any

from lab.apiserver import kinds
from lab.apiserver.rest import routes

VERBS_RW = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
VERBS_RO = ["get", "list", "watch"]
SUB_VERBS = ["get", "patch", "update"]
SCALABLE = ("Deployment", "ReplicaSet")

_CATEGORIES: dict[str, list[str]] = {
    "Pod": ["all"],
    "Service": ["all"],
    "Deployment": ["all"],
    "ReplicaSet": ["all"],
    "DaemonSet": ["all"],
}
_GROUP_CATEGORIES = {
    "security.istio.io": ["istio-io", "security-istio-io"],
    "networking.istio.io": ["istio-io", "networking-istio-io"],
    "gateway.networking.k8s.io": ["gateway-api"],
}


def verbs(kind: kinds.Kind) -> list[str]:
    return list(VERBS_RW if kind.appliable else VERBS_RO)


def categories(kind: kinds.Kind) -> list[str]:
    return _CATEGORIES.get(kind.kind) or _GROUP_CATEGORIES.get(kind.group, [])


def subresources(kind: kinds.Kind) -> list[tuple[str, tuple[str, str, str], list[str]]]:
    """(name, (group, version, kind) answered, verbs) of KIND's subresources."""
    version = kind.versions[0]
    own = (kind.group, version, kind.kind)
    out: list[tuple[str, tuple[str, str, str], list[str]]] = []
    if kind.has_status:
        out.append(("status", own, SUB_VERBS))
    if kind.kind in SCALABLE:
        out.append(("scale", ("autoscaling", "v1", "Scale"), SUB_VERBS))
    if kind.kind == "Pod":
        out += [("exec", ("", "v1", "PodExecOptions"), ["create", "get"]), ("log", own, ["get"])]
    return sorted(out)


def has_subresource(kind: kinds.Kind, name: str) -> bool:
    return any(s == name for s, _, _ in subresources(kind))


# --- legacy -----------------------------------------------------------------------------------


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(group: str, versions: tuple[str, ...]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def api_group_list() -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(g, vs) for g, vs in routes.served_group_versions() if g],
    }


def api_group(group: str) -> dict[str, Any] | None:
    for g, vs in routes.served_group_versions():
        if g == group and g:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(g, vs)}
    return None


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    served = routes.kinds_in(group, version)
    if not served:
        return None
    resources: list[dict[str, Any]] = []
    for k in sorted(served, key=lambda k: k.plural):
        entry: dict[str, Any] = {
            "name": k.plural,
            "singularName": k.kind.lower(),
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": verbs(k),
        }
        if k.short:
            entry["shortNames"] = list(k.short)
        if categories(k):
            entry["categories"] = categories(k)
        resources.append(entry)
        for name, (g, v, kind), sub_verbs in subresources(k):
            sub: dict[str, Any] = {
                "name": f"{k.plural}/{name}",
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": kind,
                "verbs": sub_verbs,
            }
            if (g, v) != (group, version) and kind != k.kind:
                sub.update(group=g, version=v)
            resources.append(sub)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


# --- aggregated -------------------------------------------------------------------------------


def _aggregated_resource(k: kinds.Kind, version: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": k.plural,
        "responseKind": {"group": k.group, "version": version, "kind": k.kind},
        "scope": "Namespaced" if k.namespaced else "Cluster",
        "singularResource": k.kind.lower(),
        "verbs": verbs(k),
    }
    if k.short:
        entry["shortNames"] = list(k.short)
    if categories(k):
        entry["categories"] = categories(k)
    subs = []
    for name, (g, v, kind), sub_verbs in subresources(k):
        if kind == k.kind:
            g, v = k.group, version
        subs.append({"subresource": name, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": sub_verbs})
    if subs:
        entry["subresources"] = subs
    return entry


def _discovery_group(group: str, versions: tuple[str, ...]) -> dict[str, Any]:
    return {
        "metadata": {"name": group} if group else {},
        "versions": [
            {
                "version": v,
                "freshness": "Current",
                "resources": [
                    _aggregated_resource(k, v) for k in sorted(routes.kinds_in(group, v), key=lambda k: k.plural)
                ],
            }
            for v in versions
        ],
    }


def aggregated(core: bool, version: str = "v2") -> dict[str, Any]:
    """`/api` (CORE) or `/apis` as an APIGroupDiscoveryList of apidiscovery.k8s.io/VERSION."""
    items = [_discovery_group(g, vs) for g, vs in routes.served_group_versions() if (g == "") == core]
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }
