"""istiod's translation of AuthorizationPolicy into ztunnel's `Authorization` (WDS), as JSON.

Mirrors `pilot/pkg/serviceregistry/ambient/authorization.go` (convertAuthorizationPolicy,
handleRule) and the workload attachment of `workloads.go`. ztunnel only sees L4: an ALLOW rule
that names an HTTP attribute is dropped whole (so it can never allow: fail closed), a DENY rule
keeps only its L4 parts, CUSTOM/AUDIT and targetRef policies are not sent at all.

Output shape (ztunnel field names, JSON): {"name", "namespace", "scope", "action",
"rules": [{"clauses": [{"matches": [Match]}]}], "dryRun"}; empty Match fields are omitted.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from mesh.policy.authorization import GLOBAL, NAMESPACE, WORKLOAD_SELECTOR
from mesh.policy.model import (
    AuthorizationPolicy,
    Condition,
    Operation,
    PeerAuthentication,
    Rule,
    Source,
    field_values,
    parse_as,
)
from mesh.policy.peerauth import STATIC_STRICT, EffectiveMtls, effective_mtls_mode, explain_mtls, workload_keys
from mesh.policy.schema import negated, with_negations

__all__ = [
    "ZtunnelTranslation",
    "to_ztunnel",
    "selects",
    "workload_policy_keys",
    "string_match",
    "STATIC_STRICT",
    "EffectiveMtls",
    "effective_mtls_mode",
    "explain_mtls",
]

L4_WHEN_KEYS = ("source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port")

HTTP_RULE_FORMAT = (
    "ztunnel does not support HTTP attributes (found: {found}). "
    "In ambient mode you must use a waypoint proxy to enforce HTTP rules. {detail}"
)
HTTP_ALLOW_DETAIL = (
    "Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested."
)
HTTP_DENY_MIXED_DETAIL = (
    "DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested."
)
HTTP_DENY_NO_EFFECT_DETAIL = (
    "After omitting unsupported HTTP attributes, this DENY policy has no "
    "enforceable rules at ztunnel and will have no effect. Deploy a waypoint "
    "proxy and use a targetRef to enforce this policy."
)


@dataclass(frozen=True)
class ZtunnelTranslation:
    authorization: dict[str, Any] | None  # None: nothing is sent to ztunnel
    status_message: str | None  # what istiod writes in the policy's status, if anything


def string_match(value: str) -> dict[str, Any]:
    """`*` is presence, `*x` a suffix, `x*` a prefix, anything else exact."""
    if value == "*":
        return {"presence": {}}
    if value.startswith("*"):
        return {"suffix": value[1:]}
    if value.endswith("*"):
        return {"prefix": value[:-1]}
    return {"exact": value}


def _string_matches(values: Iterable[str]) -> list[dict[str, Any]]:
    return [string_match(v) for v in values]


def _cidrs(values: Iterable[str]) -> list[str]:
    """Addresses as "ip/len"; a bare IP is a host prefix. Unparseable values are skipped."""
    result = []
    for value in values:
        address, _, bits = value.partition("/")
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            continue
        result.append(f"{parsed}/{bits or parsed.max_prefixlen}")
    return result


def _ports(values: Iterable[str]) -> list[int]:
    return [int(v) for v in values if v.isascii() and v.isdigit() and int(v) <= 65535]


def _service_accounts(values: Iterable[str], policy_namespace: str) -> list[dict[str, Any]]:
    """`ns/sa`, or a bare `sa` meaning the policy's own namespace."""
    result = []
    for value in values:
        namespace, slash, account = value.partition("/")
        if not slash:
            namespace, account = policy_namespace, value
        result.append({"namespace": namespace, "serviceAccount": account})
    return result


def _match(**fields: list[Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value}


#: The source and operation fields only a waypoint can enforce (no Match field can say "trust
#: domain" without widening).
_HTTP_OPERATION_FIELDS = with_negations("hosts", "methods", "paths")
_HTTP_SOURCE_FIELDS = with_negations("remoteIpBlocks", "requestPrincipals", "trustDomains")


def _http_fields(item: Source | Operation, fields: tuple[str, ...]) -> set[str]:
    return {field for field in fields if field_values(item, field)}


def _source_match(src: Source, policy_namespace: str) -> dict[str, Any]:
    return _match(
        sourceIps=_cidrs(src.ip_blocks),
        notSourceIps=_cidrs(src.not_ip_blocks),
        namespaces=_string_matches(src.namespaces),
        notNamespaces=_string_matches(src.not_namespaces),
        serviceAccounts=_service_accounts(src.service_accounts, policy_namespace),
        notServiceAccounts=_service_accounts(src.not_service_accounts, policy_namespace),
        principals=_string_matches(src.principals),
        notPrincipals=_string_matches(src.not_principals),
    )


_WHEN_FIELDS: dict[str, tuple[str, Callable[[Iterable[str]], list[Any]]]] = {
    "source.namespace": ("namespaces", _string_matches),
    "source.principal": ("principals", _string_matches),
    "source.ip": ("sourceIps", _cidrs),
    "destination.port": ("destinationPorts", _ports),
    "destination.ip": ("destinationIps", _cidrs),
}


def _when_match(condition: Condition) -> dict[str, Any]:
    """An L4 `when` as a Match; any other key gives the empty Match (which never matches)."""
    if condition.key not in _WHEN_FIELDS:
        return {}
    field, convert = _WHEN_FIELDS[condition.key]
    return _match(**{field: convert(condition.values), negated(field): convert(condition.not_values)})


def _translate_rule(action: str, rule: Rule, policy_namespace: str) -> tuple[list[dict[str, Any]] | None, set[str]]:
    """The rule's clauses (to, from, then one per `when`) and the HTTP attributes it names.
    None for an ALLOW rule with HTTP attributes: it must never match."""
    http: set[str] = set()
    clauses = []
    if rule.to:
        for op in rule.to:
            http |= _http_fields(op, _HTTP_OPERATION_FIELDS)
        clauses.append(
            {
                "matches": [
                    _match(destinationPorts=_ports(op.ports), notDestinationPorts=_ports(op.not_ports))
                    for op in rule.to
                ]
            }
        )
    if rule.from_:
        for src in rule.from_:
            http |= _http_fields(src, _HTTP_SOURCE_FIELDS)
        clauses.append({"matches": [_source_match(src, policy_namespace) for src in rule.from_]})
    for condition in rule.when:
        if condition.key not in L4_WHEN_KEYS:
            http.add(condition.key)
        clauses.append({"matches": [_when_match(condition)]})
    if action == "ALLOW" and http:
        return None, http
    return clauses, http


def _has_effective_rules(rules: list[dict[str, Any]]) -> bool:
    """Whether some rule can fire at ztunnel: no clauses (matches all), or every clause has a
    non-empty match (empty matches are skipped by ztunnel)."""
    return any(all(any(match for match in clause["matches"]) for clause in rule["clauses"]) for rule in rules)


def scope(policy: AuthorizationPolicy, root_namespace: str = "istio-system") -> str:
    if policy.selector is not None:
        return WORKLOAD_SELECTOR
    return GLOBAL if policy.namespace == root_namespace else NAMESPACE


def to_ztunnel(
    policy_obj: dict[str, Any] | AuthorizationPolicy,
    root_namespace: str = "istio-system",
    *,
    dry_run_enabled: bool = False,
) -> ZtunnelTranslation:
    """What istiod sends ztunnel for one AuthorizationPolicy, and the status it reports.

    `dry_run_enabled` is istiod's AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY (default off: a
    dry-run policy is then not sent at all, and its status says why).
    """
    policy = parse_as(AuthorizationPolicy, policy_obj)
    if policy.dry_run and not dry_run_enabled:
        return ZtunnelTranslation(
            None,
            f'found policy "{policy.key}" using dry-run annotation, but support '
            "for ambient dry-run authorizationPolicies isn't enabled",
        )
    if policy.target_refs:
        return ZtunnelTranslation(None, None)  # enforced by a waypoint, never by ztunnel
    if policy.action not in ("ALLOW", "DENY"):
        return ZtunnelTranslation(None, f"ztunnel does not support the {policy.action} action")
    rules, http = [], set()
    for rule in policy.rules:
        clauses, found = _translate_rule(policy.action, rule, policy.namespace)
        if clauses is not None:
            rules.append({"clauses": clauses})
        http |= found
    authorization = {
        "name": policy.name,
        "namespace": policy.namespace,
        "scope": scope(policy, root_namespace),
        "action": policy.action,
        "rules": rules,
        "dryRun": policy.dry_run,
    }
    if not http:
        return ZtunnelTranslation(authorization, None)
    if policy.action == "ALLOW":
        detail = HTTP_ALLOW_DETAIL
    else:
        detail = HTTP_DENY_MIXED_DETAIL if _has_effective_rules(rules) else HTTP_DENY_NO_EFFECT_DETAIL
    return ZtunnelTranslation(authorization, HTTP_RULE_FORMAT.format(found=", ".join(sorted(http)), detail=detail))


def selects(
    policy_obj: dict[str, Any] | AuthorizationPolicy,
    pod_labels: Mapping[str, str],
    pod_namespace: str,
    root_namespace: str = "istio-system",
) -> bool:
    """Whether the policy is attached to a pod, as istiod's ambient index decides (whether
    ztunnel can enforce it is `to_ztunnel`'s business). targetRef policies attach to no pod
    (they are a waypoint's); a policy without selector to its whole namespace (root namespace:
    the mesh); a selector policy to the pods of its namespace (root: of every namespace) that
    carry all of its labels. A selector without labels selects nothing."""
    policy = parse_as(AuthorizationPolicy, policy_obj)
    if policy.target_refs or policy.namespace not in (pod_namespace, root_namespace):
        return False
    if policy.selector is None:
        return True
    return bool(policy.selector.match_labels) and policy.selector.matches(pod_labels)


def workload_policy_keys(
    policies: Iterable[dict[str, Any] | AuthorizationPolicy],
    peer_authns: Iterable[dict[str, Any] | PeerAuthentication],
    pod_labels: Mapping[str, str],
    pod_namespace: str,
    root_namespace: str = "istio-system",
    *,
    dry_run_enabled: bool = False,
) -> list[str]:
    """Workload.authorization_policies as istiod fills it: the sorted "ns/name" of the selector
    policies that select the pod and reach ztunnel, then the PeerAuthentication-derived ones."""
    keys = []
    for policy_obj in policies:
        policy = parse_as(AuthorizationPolicy, policy_obj)
        if policy.selector is None or not selects(policy, pod_labels, pod_namespace, root_namespace):
            continue
        if to_ztunnel(policy, root_namespace, dry_run_enabled=dry_run_enabled).authorization is not None:
            keys.append(policy.key)
    return sorted(keys) + workload_keys(peer_authns, pod_namespace, pod_labels, root_namespace)
