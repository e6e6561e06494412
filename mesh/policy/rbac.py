"""ztunnel's L4 authorization (`src/rbac.rs`, `state.rs assert_rbac`) over `Authorization` dicts.

The destination ztunnel runs this for every inbound connection, HBONE (with the peer's SPIFFE
identity) and plaintext (identity None). Policies are the JSON form `mesh.policy.ztunnel` makes.
Order: dry-run policies only report; any matching DENY denies; no ALLOW policy allows; a matching
ALLOW allows; otherwise deny. Reasons use ztunnel's own wording, so logs read like ztunnel's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

SPIFFE_PREFIX = "spiffe://"


@dataclass(frozen=True)
class Identity:
    """A SPIFFE identity as ztunnel parses it: exactly spiffe://TD/ns/NS/sa/SA."""

    trust_domain: str
    namespace: str
    service_account: str

    @classmethod
    def parse(cls, uri: str) -> Identity:
        parts = uri[len(SPIFFE_PREFIX):].split("/") if uri.startswith(SPIFFE_PREFIX) else []
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise ValueError(f"not a SPIFFE workload identity: {uri!r}")
        return cls(parts[0], parts[2], parts[4])

    def __str__(self) -> str:
        return f"{SPIFFE_PREFIX}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


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


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policy: str | None  # "ns/name" of the deciding policy
    reason: str
    dry_run_matches: tuple[str, ...] = ()  # "ns/name" of dry-run policies that matched


NO_ALLOW_POLICIES = "no allow policies, allow"
NOT_ALLOWED = "allow policies exist, but none allowed"


def key(authorization: Mapping[str, Any]) -> str:
    return f"{authorization['namespace']}/{authorization['name']}"


def string_matches(match: Mapping[str, Any], value: str) -> bool:
    """StringMatch: {"exact"}, {"prefix"}, {"suffix"} or {"presence": {}} (non-empty)."""
    if "exact" in match:
        return value == match["exact"]
    if "prefix" in match:
        return value.startswith(match["prefix"])
    if "suffix" in match:
        return value.endswith(match["suffix"])
    if "presence" in match:
        return value != ""
    raise ValueError(f"not a StringMatch: {match!r}")


def _principal_matches(match: Mapping[str, Any], identity: str) -> bool:
    # Policies hold principals without "spiffe://"; no identity ("") never matches, even presence.
    return identity.startswith(SPIFFE_PREFIX) and string_matches(match, identity[len(SPIFFE_PREFIX):])


def _ip_in(cidr: str, ip: str) -> bool:
    network = ipaddress.ip_network(cidr, strict=False)
    address = ipaddress.ip_address(ip)
    return address.version == network.version and address in network


def _field_matches(match: Mapping[str, Any], field: str, predicate: Callable[[Any], bool]) -> bool:
    """Any positive value must match (if there are any) and no negative value may match."""
    positive = match.get(field) or []
    negative = match.get("not" + field[0].upper() + field[1:]) or []
    return (not positive or any(map(predicate, positive))) and not any(map(predicate, negative))


_FIELDS = (
    "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts", "principals",
    "notPrincipals", "sourceIps", "notSourceIps", "destinationIps", "notDestinationIps",
    "destinationPorts", "notDestinationPorts",
)


def _match_matches(match: Mapping[str, Any], conn: Connection) -> bool:
    peer = Identity.parse(conn.src_identity) if conn.src_identity else None
    namespace = peer.namespace if peer else ""
    return (
        _field_matches(match, "destinationIps", lambda cidr: _ip_in(cidr, conn.dst_ip))
        and _field_matches(match, "sourceIps", lambda cidr: _ip_in(cidr, conn.src_ip))
        and _field_matches(match, "destinationPorts", lambda port: port == conn.dst_port)
        and _field_matches(match, "serviceAccounts", lambda sa: peer is not None
                           and (sa["namespace"], sa["serviceAccount"]) == (peer.namespace, peer.service_account))
        and _field_matches(match, "principals", lambda m: _principal_matches(m, conn.src_identity or ""))
        and _field_matches(match, "namespaces", lambda m: string_matches(m, namespace))
    )


def _clause_matches(clause: Mapping[str, Any], conn: Connection) -> bool:
    matches = clause.get("matches") or []
    if not matches:
        return True  # an empty clause matches, as in rbac.rs
    # An empty match (no field set) is skipped: it never matches.
    return any(any(m.get(f) for f in _FIELDS) and _match_matches(m, conn) for m in matches)


def matches(authorization: Mapping[str, Any], conn: Connection) -> bool:
    """Any rule, all of its clauses, any match of a clause. No rules: never matches."""
    return any(all(_clause_matches(clause, conn) for clause in rule.get("clauses") or [])
               for rule in authorization.get("rules") or [])


def evaluate(conn: Connection, policies: Iterable[Mapping[str, Any]]) -> Decision:
    """ztunnel's decision for `conn` under the policies that apply to the destination workload."""
    policies = list(policies)
    dry_run_matches = tuple(key(p) for p in policies if p.get("dryRun") and matches(p, conn))
    enforced = [p for p in policies if not p.get("dryRun")]
    for policy in enforced:
        if policy["action"] == "DENY" and matches(policy, conn):
            return Decision(False, key(policy), f"explicitly denied by: {key(policy)}", dry_run_matches)
    allows = [p for p in enforced if p["action"] == "ALLOW"]
    if not allows:
        return Decision(True, None, NO_ALLOW_POLICIES, dry_run_matches)
    for policy in allows:
        if matches(policy, conn):
            return Decision(True, key(policy), f"allowed by: {key(policy)}", dry_run_matches)
    return Decision(False, None, NOT_ALLOWED, dry_run_matches)


def policies_for(
    workload_ns: str,
    workload_policy_names: Iterable[str],
    all_authorizations: Iterable[Mapping[str, Any]],
    root_namespace: str = "istio-system",
) -> list[Mapping[str, Any]]:
    """The policies ztunnel checks for a workload: NAMESPACE ones of its namespace, then GLOBAL
    ones, then its own selector policies ("ns/name" from Workload.authorization_policies).

    ztunnel keys global policies by their scope alone, so `root_namespace` does not take part:
    istiod already gave root-namespace policies the GLOBAL scope. A name with no policy behind
    it is skipped, as ztunnel does while istiod's push is in flight.
    """
    del root_namespace  # kept for callers that think in istiod's terms; see the docstring
    by_key = {key(a): a for a in all_authorizations}
    ordered = sorted(by_key.values(), key=key)
    picked = [a for a in ordered if a["scope"] == "NAMESPACE" and a["namespace"] == workload_ns]
    picked += [a for a in ordered if a["scope"] == "GLOBAL"]
    picked += [by_key[name] for name in workload_policy_names if name in by_key]
    unique: dict[str, Mapping[str, Any]] = {}
    for policy in picked:
        unique.setdefault(key(policy), policy)
    return list(unique.values())
