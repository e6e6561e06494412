"""The proxy's RBAC filters: what Envoy's network and HTTP rbac filters decide (pure).

- `request_decision`: an HTTP request, with every AuthorizationPolicy field (`mesh.policy.http`).
- `tcp_decision`: a connection the proxy does not parse as HTTP. Envoy's network rbac filter
  knows no HTTP attributes, so istiod builds it as it builds ztunnel's policy: an ALLOW rule
  naming an HTTP attribute is dropped (fail closed), a DENY rule keeps its L4 parts
  (`mesh.policy.ztunnel`, evaluated by `mesh.policy.rbac`).
- `early_decision`: what can be decided when a tunnel arrives, before its first byte, from the
  connection alone. It denies only when every request on the connection would be denied: a
  DENY rule with no HTTP attribute matches, or ALLOW policies exist and each of their rules
  already fails on its L4 attributes. A denied tunnel is refused with 401, as ztunnel refuses
  one (so a client sees a reset, curl exit 56); everything else is left to the request.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

from mesh.policy import http, rbac
from mesh.policy.model import AuthorizationPolicy, Operation, Rule, Source
from mesh.policy.ztunnel import L4_WHEN_KEYS, to_ztunnel

_L7_SOURCE_FIELDS = ("request_principals", "not_request_principals", "remote_ip_blocks", "not_remote_ip_blocks")
_L7_OPERATION_FIELDS = ("hosts", "not_hosts", "methods", "not_methods", "paths", "not_paths")


@dataclass(frozen=True)
class Verdict:
    """One decision of the proxy, with who decided and why (for the access log)."""

    allowed: bool
    policy: str | None  # the deciding policy ("ns/name"), or the ALLOW policies none of which matched
    reason: str
    audit: tuple[str, ...] = ()  # AUDIT policies that matched (logged only)


@dataclass(frozen=True)
class Connection:
    src_ip: str
    src_identity: str | None
    dst_ip: str
    dst_port: int


def _enforced(policies: Iterable[AuthorizationPolicy]) -> list[AuthorizationPolicy]:
    return [p for p in policies if not p.dry_run]


def _allow_names(policies: Iterable[AuthorizationPolicy]) -> str | None:
    names = [p.key for p in policies if p.action == "ALLOW"]
    return ",".join(names) or None


def _has_l7(rule: Rule) -> bool:
    return (any(getattr(s, f) for s in rule.from_ for f in _L7_SOURCE_FIELDS)
            or any(getattr(o, f) for o in rule.to for f in _L7_OPERATION_FIELDS)
            or any(c.key not in L4_WHEN_KEYS for c in rule.when))


def _relaxed(rule: Rule) -> Rule:
    """The rule without its HTTP attributes: it matches at least every request the rule matches.
    A `from`/`to` entry left empty by that would match anything, so its whole clause is dropped."""
    sources = tuple(dataclasses.replace(s, **{f: () for f in _L7_SOURCE_FIELDS}) for s in rule.from_)
    operations = tuple(dataclasses.replace(o, **{f: () for f in _L7_OPERATION_FIELDS}) for o in rule.to)
    from_ = () if any(s == Source() for s in sources) else sources
    to = () if any(o == Operation() for o in operations) else operations
    when = tuple(c for c in rule.when if c.key in L4_WHEN_KEYS)
    return Rule(from_, to, when)


def _as_request(conn: Connection) -> http.Request:
    return http.Request(method="", path="/", host="", src_ip=conn.src_ip, dst_ip=conn.dst_ip,
                        dst_port=conn.dst_port, src_identity=conn.src_identity)


def _rule_matches(rule: Rule, conn: Connection, namespace: str) -> bool:
    return http.rule_matches(rule, _as_request(conn), namespace)


def early_decision(conn: Connection, policies: Iterable[AuthorizationPolicy]) -> Verdict | None:
    """A denial certain from the connection alone, or None (decide per request)."""
    enforced = [p for p in _enforced(policies) if p.action in ("ALLOW", "DENY")]
    for policy in (p for p in enforced if p.action == "DENY"):
        for rule in policy.rules:
            if not _has_l7(rule) and _rule_matches(rule, conn, policy.namespace):
                return Verdict(False, policy.key, f"explicitly denied by: {policy.key}")
    allows = [p for p in enforced if p.action == "ALLOW"]
    if not allows:
        return None
    for policy in allows:
        if any(_rule_matches(_relaxed(rule), conn, policy.namespace) for rule in policy.rules):
            return None
    return Verdict(False, _allow_names(allows), "allow policies exist, but none allowed")


def request_decision(request: http.Request, policies: Iterable[AuthorizationPolicy]) -> Verdict:
    """Envoy's HTTP rbac filter: CUSTOM, DENY, then ALLOW; AUDIT only reported."""
    policies = list(policies)
    audit = tuple(p.key for p in _enforced(policies) if p.action == "AUDIT" and http.matching_rule(p, request) is not None)
    decision = http.evaluate(request, [p for p in policies if p.action != "AUDIT"])
    policy = decision.policy
    if not decision.allowed and policy is None:
        policy = _allow_names(_enforced(policies))
    return Verdict(decision.allowed, policy, decision.reason, audit)


def tcp_decision(conn: Connection, policies: Iterable[AuthorizationPolicy]) -> Verdict:
    """Envoy's network rbac filter: the policies' L4 translation, HTTP rules failing closed."""
    translated = [t.authorization for t in (to_ztunnel(p, dry_run_enabled=True) for p in policies)
                  if t.authorization is not None]
    decision = rbac.evaluate(rbac.Connection(src_ip=conn.src_ip, src_identity=conn.src_identity, dst_ip=conn.dst_ip,
                                             dst_port=conn.dst_port, dst_namespace=""), translated)
    policy = decision.policy
    if not decision.allowed and policy is None:
        policy = ",".join(rbac.key(t) for t in translated if t["action"] == "ALLOW" and not t.get("dryRun")) or None
    return Verdict(decision.allowed, policy, decision.reason)


__all__ = ["Connection", "Verdict", "early_decision", "request_decision", "tcp_decision"]
