"""ztunnel's `Authorization` resource (WDS) as typed, frozen objects.

istiod builds and sends the JSON form (`mesh.policy.ztunnel`, `mesh.policy.peerauth`); ztunnel
turns each received resource into these types once, where it arrives (`Authorization.from_xds`, as
ztunnel's `TryFrom` conversions do), so a malformed policy is refused (NACKed) on arrival with the
bad field named, instead of failing a connection later. `mesh.policy.rbac` evaluates them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

STRING_MATCH_KINDS = ("exact", "prefix", "suffix", "presence")  # checked in this order

# Authorization.scope: which workloads a policy applies to (the third by name, from the workload).
GLOBAL = "GLOBAL"
NAMESPACE = "NAMESPACE"
WORKLOAD_SELECTOR = "WORKLOAD_SELECTOR"
# Authorization.action
ALLOW = "ALLOW"
DENY = "DENY"


class InvalidAuthorization(ValueError):
    """A received Authorization that cannot be understood; the message names the field."""


def _items(raw: Mapping[str, Any], name: str, path: str, convert: Callable[[Any, str], T]) -> tuple[T, ...]:
    """`raw[name]` (absent or null: empty) as a tuple, each item converted."""
    values = raw.get(name)
    where = f"{path}.{name}" if path else name
    if values is None:
        return ()
    if not isinstance(values, list | tuple):
        raise InvalidAuthorization(f"{where}: must be a list, got {values!r}")
    return tuple(convert(value, f"{where}[{i}]") for i, value in enumerate(values))


def _mapping(raw: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidAuthorization(f"{path}: must be an object, got {raw!r}")
    return raw


def _string(raw: Any, path: str) -> str:
    if not isinstance(raw, str):
        raise InvalidAuthorization(f"{path}: must be a string, got {raw!r}")
    return raw


@dataclass(frozen=True)
class StringMatch:
    """`{"exact"|"prefix"|"suffix": value}` or `{"presence": {}}` (any non-empty value)."""

    kind: str
    value: str = ""

    @classmethod
    def from_xds(cls, raw: Any, path: str = "match") -> StringMatch:
        raw = _mapping(raw, path)
        kind = next((k for k in STRING_MATCH_KINDS if k in raw), None)
        if kind is None:
            raise InvalidAuthorization(f"{path}: not a StringMatch: {dict(raw)!r}")
        return cls(kind, "" if kind == "presence" else _string(raw[kind], f"{path}.{kind}"))

    def matches(self, value: str) -> bool:
        if self.kind == "exact":
            return value == self.value
        if self.kind == "prefix":
            return value.startswith(self.value)
        if self.kind == "suffix":
            return value.endswith(self.value)
        return value != ""


@dataclass(frozen=True)
class ServiceAccountMatch:
    namespace: str
    service_account: str

    @classmethod
    def from_xds(cls, raw: Any, path: str) -> ServiceAccountMatch:
        raw = _mapping(raw, path)
        try:
            return cls(
                _string(raw["namespace"], f"{path}.namespace"), _string(raw["serviceAccount"], f"{path}.serviceAccount")
            )
        except KeyError as e:
            raise InvalidAuthorization(f"{path}.{e.args[0]}: required") from None


def _network(raw: Any, path: str) -> IpNetwork:
    """ "ip/len" (a bare IP is a host prefix); host bits are ignored, as ztunnel's IpNet."""
    try:
        return ipaddress.ip_network(_string(raw, path), strict=False)
    except ValueError:
        raise InvalidAuthorization(f"{path}: not an IP network: {raw!r}") from None


def _port(raw: Any, path: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidAuthorization(f"{path}: must be a port number, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Match:
    """One RbacMatch: every field it sets must hold (a `not_` field: must not). Field names are
    ztunnel's; the JSON spells them in camelCase."""

    namespaces: tuple[StringMatch, ...] = ()
    not_namespaces: tuple[StringMatch, ...] = ()
    service_accounts: tuple[ServiceAccountMatch, ...] = ()
    not_service_accounts: tuple[ServiceAccountMatch, ...] = ()
    principals: tuple[StringMatch, ...] = ()
    not_principals: tuple[StringMatch, ...] = ()
    source_ips: tuple[IpNetwork, ...] = ()
    not_source_ips: tuple[IpNetwork, ...] = ()
    destination_ips: tuple[IpNetwork, ...] = ()
    not_destination_ips: tuple[IpNetwork, ...] = ()
    destination_ports: tuple[int, ...] = ()
    not_destination_ports: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        """No field set: ztunnel skips such a match, so it never matches."""
        return not any(getattr(self, f.name) for f in fields(self))

    @classmethod
    def from_xds(cls, raw: Any, path: str) -> Match:
        raw = _mapping(raw, path)
        kwargs: dict[str, Any] = {}
        for name, json_name, convert in _MATCH_FIELDS:
            kwargs[name] = _items(raw, json_name, path, convert)
            kwargs["not_" + name] = _items(raw, "not" + json_name[0].upper() + json_name[1:], path, convert)
        return cls(**kwargs)


_MATCH_FIELDS: tuple[tuple[str, str, Callable[[Any, str], Any]], ...] = (
    ("namespaces", "namespaces", StringMatch.from_xds),
    ("service_accounts", "serviceAccounts", ServiceAccountMatch.from_xds),
    ("principals", "principals", StringMatch.from_xds),
    ("source_ips", "sourceIps", _network),
    ("destination_ips", "destinationIps", _network),
    ("destination_ports", "destinationPorts", _port),
)


@dataclass(frozen=True)
class Clause:
    """Matches when any of its matches does; with no match at all, always."""

    matches: tuple[Match, ...] = ()

    @classmethod
    def from_xds(cls, raw: Any, path: str) -> Clause:
        return cls(_items(_mapping(raw, path), "matches", path, Match.from_xds))


@dataclass(frozen=True)
class Rule:
    """Matches when all of its clauses do (no clause: always)."""

    clauses: tuple[Clause, ...] = ()

    @classmethod
    def from_xds(cls, raw: Any, path: str) -> Rule:
        return cls(_items(_mapping(raw, path), "clauses", path, Clause.from_xds))


@dataclass(frozen=True)
class Authorization:
    """One L4 policy as ztunnel holds it; `raw` is the resource as istiod sent it (config_dump)."""

    name: str
    namespace: str
    scope: str  # GLOBAL, NAMESPACE or WORKLOAD_SELECTOR
    action: str  # ALLOW or DENY
    rules: tuple[Rule, ...] = ()
    dry_run: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_xds(cls, raw: Any) -> Authorization:
        """The typed policy; InvalidAuthorization naming the first bad field otherwise."""
        raw = _mapping(raw, "authorization")
        required: dict[str, str] = {}
        for name in ("name", "namespace", "action", "scope"):
            if name not in raw:
                raise InvalidAuthorization(f"authorization without {name!r}")
            required[name] = _string(raw[name], name)
        dry_run = raw.get("dryRun")
        if dry_run is not None and not isinstance(dry_run, bool):
            raise InvalidAuthorization(f"dryRun: must be a boolean, got {dry_run!r}")
        return cls(**required, rules=_items(raw, "rules", "", Rule.from_xds), dry_run=bool(dry_run), raw=raw)


AuthorizationLike = Authorization | Mapping[str, Any]


def typed(policy: AuthorizationLike) -> Authorization:
    """`policy` as an Authorization: converted if it is the JSON form, passed through if typed."""
    return policy if isinstance(policy, Authorization) else Authorization.from_xds(policy)
