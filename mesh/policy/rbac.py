"""ztunnel's L4 authorization (`src/rbac.rs`, `state.rs assert_rbac`) over typed `Authorization`s.

The destination ztunnel runs this for every inbound connection, HBONE (with the peer's SPIFFE
identity) and plaintext (identity None). Policies are `mesh.policy.authorization.Authorization`s,
as ztunnel's state holds them; the JSON form `mesh.policy.ztunnel` makes is accepted too and
converted on entry, so istiod-side code and tests can pass what istiod would send.
Order: dry-run policies only report; any matching DENY denies; no ALLOW policy allows; a matching
ALLOW allows; otherwise deny. Reasons use ztunnel's own wording, so logs read like ztunnel's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from mesh.identity.spiffe import SCHEME, Identity
from mesh.policy.authorization import (
    ALLOW,
    DENY,
    GLOBAL,
    NAMESPACE,
    Authorization,
    AuthorizationLike,
    Clause,
    IpNetwork,
    Match,
    StringMatch,
    typed,
)

__all__ = [
    "Authorization",
    "Connection",
    "Decision",
    "Identity",
    "NO_ALLOW_POLICIES",
    "NOT_ALLOWED",
    "evaluate",
    "key",
    "matches",
    "policies_for",
    "string_matches",
]

T = TypeVar("T")
A = TypeVar("A", Authorization, Mapping[str, Any])
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Connection:
    """What ztunnel knows of an inbound connection. dst_namespace is for logs; policy selection
    happens before evaluation (see policies_for)."""

    src_ip: str
    src_identity: str | None  # "spiffe://td/ns/NS/sa/SA"; None for plaintext (port 15006)
    dst_ip: str
    dst_port: int
    dst_namespace: str = ""

    def __post_init__(self) -> None:
        if self.src_identity is not None:
            Identity.parse(self.src_identity)  # refuse what ztunnel could never have accepted

    @cached_property
    def peer(self) -> Identity | None:
        return Identity.parse(self.src_identity) if self.src_identity else None

    @cached_property
    def src_address(self) -> IpAddress:
        return ipaddress.ip_address(self.src_ip)

    @cached_property
    def dst_address(self) -> IpAddress:
        return ipaddress.ip_address(self.dst_ip)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policy: str | None  # "ns/name" of the deciding policy
    reason: str
    dry_run_matches: tuple[str, ...] = ()  # "ns/name" of dry-run policies that matched


NO_ALLOW_POLICIES = "no allow policies, allow"
NOT_ALLOWED = "allow policies exist, but none allowed"


def key(authorization: AuthorizationLike) -> str:
    if isinstance(authorization, Authorization):
        return authorization.key
    return f"{authorization['namespace']}/{authorization['name']}"


def string_matches(match: StringMatch | Mapping[str, Any], value: str) -> bool:
    """StringMatch: {"exact"}, {"prefix"}, {"suffix"} or {"presence": {}} (non-empty)."""
    return (match if isinstance(match, StringMatch) else StringMatch.from_xds(match)).matches(value)


def _principal_matches(match: StringMatch, identity: str) -> bool:
    # Policies hold principals without "spiffe://"; no identity ("") never matches, even presence.
    return identity.startswith(SCHEME) and match.matches(identity[len(SCHEME) :])


def _ip_in(network: IpNetwork, address: IpAddress) -> bool:
    return address.version == network.version and address in network


def _field_matches(positive: tuple[T, ...], negative: tuple[T, ...], predicate: Callable[[T], bool]) -> bool:
    """Any positive value must match (if there are any) and no negative value may match."""
    return (not positive or any(map(predicate, positive))) and not any(map(predicate, negative))


def _match_matches(m: Match, conn: Connection) -> bool:
    peer = conn.peer
    namespace = peer.namespace if peer else ""
    return (
        _field_matches(m.destination_ips, m.not_destination_ips, lambda net: _ip_in(net, conn.dst_address))
        and _field_matches(m.source_ips, m.not_source_ips, lambda net: _ip_in(net, conn.src_address))
        and _field_matches(m.destination_ports, m.not_destination_ports, lambda port: port == conn.dst_port)
        and _field_matches(
            m.service_accounts,
            m.not_service_accounts,
            lambda sa: (
                peer is not None and (sa.namespace, sa.service_account) == (peer.namespace, peer.service_account)
            ),
        )
        and _field_matches(m.principals, m.not_principals, lambda p: _principal_matches(p, conn.src_identity or ""))
        and _field_matches(m.namespaces, m.not_namespaces, lambda s: s.matches(namespace))
    )


def _clause_matches(clause: Clause, conn: Connection) -> bool:
    if not clause.matches:
        return True  # an empty clause matches, as in rbac.rs
    # An empty match (no field set) is skipped: it never matches.
    return any(not m.empty and _match_matches(m, conn) for m in clause.matches)


def matches(authorization: AuthorizationLike, conn: Connection) -> bool:
    """Any rule, all of its clauses, any match of a clause. No rules: never matches."""
    return any(all(_clause_matches(clause, conn) for clause in rule.clauses) for rule in typed(authorization).rules)


def evaluate(conn: Connection, policies: Iterable[AuthorizationLike]) -> Decision:
    """ztunnel's decision for `conn` under the policies that apply to the destination workload."""
    checked = [typed(p) for p in policies]
    dry_run_matches = tuple(p.key for p in checked if p.dry_run and matches(p, conn))
    enforced = [p for p in checked if not p.dry_run]
    for policy in enforced:
        if policy.action == DENY and matches(policy, conn):
            return Decision(False, policy.key, f"explicitly denied by: {policy.key}", dry_run_matches)
    allows = [p for p in enforced if p.action == ALLOW]
    if not allows:
        return Decision(True, None, NO_ALLOW_POLICIES, dry_run_matches)
    for policy in allows:
        if matches(policy, conn):
            return Decision(True, policy.key, f"allowed by: {policy.key}", dry_run_matches)
    return Decision(False, None, NOT_ALLOWED, dry_run_matches)


def _scope_and_namespace(authorization: AuthorizationLike) -> tuple[str, str]:
    if isinstance(authorization, Authorization):
        return authorization.scope, authorization.namespace
    return authorization["scope"], authorization["namespace"]


def policies_for(
    workload_ns: str,
    workload_policy_names: Iterable[str],
    all_authorizations: Iterable[A],
    root_namespace: str = "istio-system",
) -> list[A]:
    """The policies ztunnel checks for a workload: NAMESPACE ones of its namespace, then GLOBAL
    ones, then its own selector policies ("ns/name" from Workload.authorization_policies).

    ztunnel keys global policies by their scope alone, so `root_namespace` does not take part:
    istiod already gave root-namespace policies the GLOBAL scope. A name with no policy behind
    it is skipped, as ztunnel does while istiod's push is in flight. The policies come back as
    given (typed or JSON).
    """
    del root_namespace  # kept for callers that think in istiod's terms; see the docstring
    by_key = {key(a): a for a in all_authorizations}
    ordered = sorted(by_key.values(), key=key)
    picked = [a for a in ordered if _scope_and_namespace(a) == (NAMESPACE, workload_ns)]
    picked += [a for a in ordered if _scope_and_namespace(a)[0] == GLOBAL]
    picked += [by_key[name] for name in workload_policy_names if name in by_key]
    unique: dict[str, A] = {}
    for policy in picked:
        unique.setdefault(key(policy), policy)
    return list(unique.values())
