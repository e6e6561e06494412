"""PeerAuthentication in ambient, as istiod turns it into ztunnel policy.

ztunnel has no mTLS mode switch: HBONE is always mutual TLS. What STRICT changes is that
plaintext (identity-less) connections are refused, and istiod expresses that as DENY policies:
the static `istio_converted_static_strict` one for a STRICT workload, and a converted
`converted_peer_authentication_<name>` one for port-level exceptions. DISABLE cannot turn mTLS
off in ambient, so it behaves as PERMISSIVE. Sources: istiod `ambient/authorization.go`
(convertedSelectorPeerAuthentications, convertPeerAuthentication) and `workloads.go`
(fetchPeerAuthentications).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from mesh.policy import rbac
from mesh.policy.authorization import DENY, WORKLOAD_SELECTOR
from mesh.policy.model import PeerAuthentication, parse_as

STATIC_STRICT_NAME = "istio_converted_static_strict"
CONVERTED_PREFIX = "converted_peer_authentication_"
DISABLE_NOTE = (
    "mTLS mode DISABLE is ignored in ambient (HBONE is always mutual TLS): plaintext is accepted as with PERMISSIVE"
)

_PRESENCE: dict[str, Any] = {"presence": {}}
_NO_IDENTITY: dict[str, Any] = {"notPrincipals": [_PRESENCE]}


def static_strict(root_namespace: str = "istio-system") -> dict[str, Any]:
    """The DENY-plaintext policy a STRICT workload references by name."""
    return {
        "name": STATIC_STRICT_NAME,
        "namespace": root_namespace,
        "scope": WORKLOAD_SELECTOR,
        "action": DENY,
        "rules": [{"clauses": [{"matches": [dict(_NO_IDENTITY)]}]}],
        "dryRun": False,
    }


STATIC_STRICT = static_strict()


@dataclass(frozen=True)
class EffectiveMtls:
    mode: str  # "STRICT" or "PERMISSIVE"
    policy: str | None  # "ns/name" of the PeerAuthentication that decided; None = the default
    note: str | None = None


#: PeerAuthentications as the API serves them, or parsed.
PeerAuthns = Iterable[Mapping[str, Any] | PeerAuthentication]


def _parsed(peer_authns: PeerAuthns) -> list[PeerAuthentication]:
    return [parse_as(PeerAuthentication, pa) for pa in peer_authns]


def _age(pa: PeerAuthentication) -> tuple[datetime, str]:
    """Oldest first; a missing timestamp counts as oldest (Go's zero time); then by name."""
    try:
        created = datetime.fromisoformat(pa.creation_timestamp.replace("Z", "+00:00"))
    except ValueError:
        created = datetime.min.replace(tzinfo=timezone.utc)
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return created, pa.name


def _oldest(candidates: list[PeerAuthentication]) -> PeerAuthentication | None:
    return min(candidates, key=_age, default=None)


def _has_labels(pa: PeerAuthentication) -> bool:
    return pa.selector is not None and bool(pa.selector.match_labels)


Levels = tuple[PeerAuthentication | None, PeerAuthentication | None, PeerAuthentication | None]


def _levels(peer_authns: PeerAuthns, namespace: str, pod_labels: Mapping[str, str], root_namespace: str) -> Levels:
    """The (mesh, namespace, workload) PeerAuthentication of a pod, the oldest of each level, among
    those bearing on it: its namespace's (selector-less or selecting it) and the root namespace's
    selector-less ones."""
    pas = [
        pa
        for pa in _parsed(peer_authns)
        if (pa.namespace == namespace and (pa.selector is None or pa.selector.matches(pod_labels)))
        or (pa.namespace == root_namespace and pa.selector is None)
    ]
    mesh = [pa for pa in pas if not _has_labels(pa) and pa.namespace == root_namespace]
    ns = [pa for pa in pas if not _has_labels(pa) and pa.namespace != root_namespace]
    workload = [pa for pa in pas if _has_labels(pa) and pa.namespace != root_namespace]
    return _oldest(mesh), _oldest(ns), _oldest(workload)


def explain_mtls(
    peer_authns: PeerAuthns, namespace: str, pod_labels: Mapping[str, str], root_namespace: str = "istio-system"
) -> EffectiveMtls:
    """The workload-level mode: workload beats namespace beats mesh; UNSET inherits."""
    mesh, ns, workload = _levels(peer_authns, namespace, pod_labels, root_namespace)
    decider = mesh
    if ns is not None and ns.mode != "UNSET":
        decider = ns
    if workload is not None and workload.mode != "UNSET":
        decider = workload
    if decider is None or decider.mode == "UNSET":
        return EffectiveMtls("PERMISSIVE", decider.key if decider else None)
    mode = "STRICT" if decider.mode == "STRICT" else "PERMISSIVE"
    return EffectiveMtls(mode, decider.key, DISABLE_NOTE if decider.mode == "DISABLE" else None)


def workload_keys(
    peer_authns: PeerAuthns, namespace: str, pod_labels: Mapping[str, str], root_namespace: str = "istio-system"
) -> list[str]:
    """The PeerAuthentication-derived names istiod puts in Workload.authorization_policies:
    the static STRICT policy and/or the workload's converted port-level policy."""
    mesh, ns, workload = _levels(peer_authns, namespace, pod_labels, root_namespace)
    strict = mesh is not None and mesh.mode == "STRICT"
    if ns is not None and ns.mode != "UNSET":
        strict = ns.mode == "STRICT"
    port_policy = ""
    if workload is not None:
        if workload.mode == "STRICT":
            strict = True
        elif workload.mode in ("PERMISSIVE", "DISABLE"):
            strict = False
        port_modes = [mode for _, mode in workload.port_level_mtls]
        converted = f"{workload.namespace}/{CONVERTED_PREFIX}{workload.name}"
        if port_modes and workload.mode == "STRICT":
            if any(mode in ("PERMISSIVE", "DISABLE") for mode in port_modes):
                port_policy, strict = converted, False  # the converted policy carries the strictness
        elif port_modes and workload.mode in ("PERMISSIVE", "DISABLE"):
            if "STRICT" in port_modes:
                port_policy = converted
        elif port_modes and strict:
            if "PERMISSIVE" in port_modes:  # istiod looks for PERMISSIVE only here, not DISABLE
                port_policy, strict = converted, False
        elif port_modes:
            if "STRICT" in port_modes:
                port_policy = converted
    keys = {f"{root_namespace}/{STATIC_STRICT_NAME}"} if strict else set()
    if port_policy:
        keys.add(port_policy)
    return sorted(keys)


def convert(
    pa: Mapping[str, Any] | PeerAuthentication, peer_authns: PeerAuthns, root_namespace: str = "istio-system"
) -> dict[str, Any] | None:
    """The DENY policy istiod derives from a workload PeerAuthentication with port-level mTLS,
    or None when it derives none. `peer_authns` supplies the namespace and mesh policies."""
    pa = parse_as(PeerAuthentication, pa)
    if pa.namespace == root_namespace or pa.selector is None or not pa.port_level_mtls:
        return None
    others = _parsed(peer_authns)
    ns = _oldest([o for o in others if o.namespace == pa.namespace and o.selector is None])
    mesh = _oldest([o for o in others if o.namespace == root_namespace and o.selector is None])
    ns_strict, mesh_strict = ns is not None and ns.mode == "STRICT", mesh is not None and mesh.mode == "STRICT"
    ns_unset = ns is None or ns.mode == "UNSET"

    clauses: list[dict[str, Any]] = []  # ANDed: one rule denying plaintext except on exempted ports
    rules: list[dict[str, Any]] = []  # ORed: one rule per STRICT port
    if pa.mode == "STRICT":
        clauses.append({"matches": [dict(_NO_IDENTITY)]})
    found_non_strict = False
    for port, mode in pa.port_level_mtls:
        if mode == "STRICT":
            if pa.mode == "STRICT" or (pa.mode == "UNSET" and ns_strict) or (ns_unset and mesh_strict):
                continue  # the parent policy already enforces it
            rules.append({"clauses": [{"matches": [{**_NO_IDENTITY, "destinationPorts": [port]}]}]})
        elif mode in ("PERMISSIVE", "DISABLE"):
            if pa.mode in ("PERMISSIVE", "DISABLE"):
                continue
            if pa.mode == "UNSET" and (
                (ns is not None and not ns_strict)
                or (ns is None and mesh is not None and not mesh_strict)
                or (ns is None and mesh is None)
            ):
                continue  # nothing strict to make an exception from
            found_non_strict = True
            clauses.append({"matches": [{"notDestinationPorts": [port]}]})
    if pa.mode == "STRICT" and not found_non_strict:
        return None  # plain STRICT: the static policy does it
    if not clauses and not rules:
        return None
    merge_strict = (mesh_strict and (ns_unset or ns_strict)) or ns_strict
    if merge_strict and found_non_strict:
        clauses.append({"matches": [dict(_NO_IDENTITY)]})
    if clauses:
        rules.append({"clauses": clauses})
    return {
        "name": CONVERTED_PREFIX + pa.name,
        "namespace": pa.namespace,
        "scope": WORKLOAD_SELECTOR,
        "action": DENY,
        "rules": rules,
        "dryRun": False,
    }


def derived_authorizations(peer_authns: PeerAuthns, root_namespace: str = "istio-system") -> list[dict[str, Any]]:
    """Every PeerAuthentication-derived Authorization istiod pushes: the static STRICT policy
    (whenever any PeerAuthentication exists) and each converted port-level policy."""
    pas = _parsed(peer_authns)
    converted = [convert(pa, pas, root_namespace) for pa in pas]
    static = [static_strict(root_namespace)] if pas else []
    return static + [c for c in converted if c is not None]


def effective_mtls_mode(
    peer_authns: PeerAuthns,
    namespace: str,
    pod_labels: Mapping[str, str],
    root_namespace: str = "istio-system",
    port: int | None = None,
) -> str:
    """ "STRICT" or "PERMISSIVE" for a pod; with `port`, for plaintext to that port, decided the
    way ztunnel decides it: by evaluating the derived policies the workload references."""
    pas = _parsed(peer_authns)
    if port is None:
        return explain_mtls(pas, namespace, pod_labels, root_namespace).mode
    by_key = {rbac.key(a): a for a in derived_authorizations(pas, root_namespace)}
    keys = workload_keys(pas, namespace, pod_labels, root_namespace)
    policies = [by_key[k] for k in keys if k in by_key]
    plaintext = rbac.Connection("0.0.0.0", None, "0.0.0.0", port, namespace)
    return "PERMISSIVE" if rbac.evaluate(plaintext, policies).allowed else "STRICT"
