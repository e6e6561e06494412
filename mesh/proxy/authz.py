"""The proxy's RBAC filters: what Envoy's network and HTTP rbac filters decide (pure).

- `request_decision`: an HTTP request, with every AuthorizationPolicy field (`mesh.policy.http`).
- `tcp_decision`: a connection the proxy does not parse as HTTP. Envoy's network rbac filter
  knows no HTTP attributes, so istiod builds it for TCP: an ALLOW rule naming an HTTP attribute
  never matches (fail closed), a DENY rule is matched on its L4 parts alone (pilot's authz
  `builder.go`, `forTCP`). targetRefs policies count too.
- `early_decision`: what can be decided when a tunnel arrives, before its first byte, from the
  connection alone. It denies only when every request on the connection would be denied: a
  DENY rule with no HTTP attribute matches, or ALLOW policies exist and each of their rules
  already fails on its L4 attributes. A denied tunnel is refused with 401, as ztunnel refuses
  one (so a client sees a reset, curl exit 56); everything else is left to the request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable, TypeVar

from mesh.policy import http
from mesh.policy.model import AuthorizationPolicy, Operation, Rule, Source
from mesh.policy.ztunnel import L4_WHEN_KEYS

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
    names = sorted({p.key for p in policies if p.action == "ALLOW"})
    return ",".join(names) or None


def _has_l7(rule: Rule) -> bool:
    return (
        any(getattr(s, f) for s in rule.from_ for f in _L7_SOURCE_FIELDS)
        or any(getattr(o, f) for o in rule.to for f in _L7_OPERATION_FIELDS)
        or any(c.key not in L4_WHEN_KEYS for c in rule.when)
    )


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
    return http.Request(
        method="",
        path="/",
        host="",
        src_ip=conn.src_ip,
        dst_ip=conn.dst_ip,
        dst_port=conn.dst_port,
        src_identity=conn.src_identity,
    )


def _rule_matches(rule: Rule, conn: Connection, namespace: str) -> bool:
    return http.rule_matches(rule, _as_request(conn), namespace)


Views = Iterable[tuple[Connection, Iterable[AuthorizationPolicy]]]
RequestViews = Iterable[tuple[http.Request, Iterable[AuthorizationPolicy]]]


_V = TypeVar("_V")


def _flatten(views: Iterable[tuple[_V, Iterable[AuthorizationPolicy]]]) -> list[tuple[_V, AuthorizationPolicy]]:
    """(view, policy) pairs: each policy judged on its own view of the destination (a selector
    policy sees the workload's ip:port, a targetRefs policy the Service's VIP:port)."""
    return [(view, p) for view, policies in views for p in _enforced(policies)]


def early_decision(views: Views) -> Verdict | None:
    """A denial certain from the connection alone, or None (decide per request)."""
    pairs = [(conn, p) for conn, p in _flatten(views) if p.action in ("ALLOW", "DENY")]
    for conn, policy in pairs:
        if policy.action == "DENY" and any(
            not _has_l7(rule) and _rule_matches(rule, conn, policy.namespace) for rule in policy.rules
        ):
            return Verdict(False, policy.key, f"explicitly denied by: {policy.key}")
    allows = [(conn, p) for conn, p in pairs if p.action == "ALLOW"]
    if not allows:
        return None
    for conn, policy in allows:
        if any(_rule_matches(_relaxed(rule), conn, policy.namespace) for rule in policy.rules):
            return None
    return Verdict(False, _allow_names(p for _, p in allows), "allow policies exist, but none allowed")


def request_decision(views: RequestViews) -> Verdict:
    """Envoy's HTTP rbac filter: CUSTOM (no ext_authz provider exists: a match denies), DENY, then
    ALLOW (`mesh.policy.http`); AUDIT only reported."""
    views = [(request, list(policies)) for request, policies in views]
    audit = tuple(p.key for r, p in _flatten(views) if p.action == "AUDIT" and http.matching_rule(p, r) is not None)
    decision = http.evaluate_views([(r, [p for p in ps if p.action != "AUDIT"]) for r, ps in views])
    policy = decision.policy
    if not decision.allowed and policy is None:
        policy = _allow_names(p for _, p in _flatten(views))
    return Verdict(decision.allowed, policy, decision.reason, audit)


def tcp_decision(views: Views) -> Verdict:
    """Envoy's network rbac filter as istiod builds it for TCP: a CUSTOM or DENY rule matches on
    its L4 attributes alone (its HTTP ones dropped: wider, so more is denied), an ALLOW rule that
    names an HTTP attribute never matches (fail closed); targetRefs policies included."""
    pairs = _flatten(views)
    for conn, policy in pairs:
        if policy.action in ("CUSTOM", "DENY") and any(
            _rule_matches(_relaxed(rule), conn, policy.namespace) for rule in policy.rules
        ):
            return Verdict(False, policy.key, f"explicitly denied by: {policy.key}")
    allows = [(conn, p) for conn, p in pairs if p.action == "ALLOW"]
    if not allows:
        return Verdict(True, None, "no allow policies, allow")
    for conn, policy in allows:
        if any(not _has_l7(rule) and _rule_matches(rule, conn, policy.namespace) for rule in policy.rules):
            return Verdict(True, policy.key, f"allowed by: {policy.key}")
    return Verdict(False, _allow_names(p for _, p in allows), "allow policies exist, but none allowed")
