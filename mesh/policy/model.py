"""Istio security policies in parsed form: frozen dataclasses made from valid Kubernetes dicts.

`parse` validates first (see `mesh.policy.validation`, re-exported here as `validate` and
`warnings`) and refuses an invalid object with every problem at once, so the rest of the mesh
only ever handles policies a real cluster would have admitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar, Union

from mesh.policy.validation import (
    AUTHORIZATION_POLICY,
    DRY_RUN_ANNOTATION,
    OPERATION_FIELDS,
    PEER_AUTHENTICATION,
    REQUEST_AUTHENTICATION,
    SOURCE_FIELDS,
    Problem,
    parse_duration,
    validate,
    warnings,
)

__all__ = [
    "validate",
    "warnings",
    "Problem",
    "InvalidPolicy",
    "parse",
    "parse_as",
    "parse_bool",
    "Policy",
    "Namespaced",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "RequestAuthentication",
    "Selector",
    "TargetRef",
    "Rule",
    "Source",
    "Operation",
    "Condition",
    "JwtRule",
    "JwtHeader",
    "ClaimToHeader",
]


class InvalidPolicy(ValueError):
    """An object `validate` refuses; `problems` holds its (field path, problem) pairs."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{path}: {problem}" if path else problem for path, problem in problems))


@dataclass(frozen=True)
class Selector:
    """A workload selector; an empty one (no labels) is kept, as istiod treats it differently."""

    match_labels: tuple[tuple[str, str], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels)


@dataclass(frozen=True)
class TargetRef:
    kind: str
    name: str
    group: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class Source:
    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()
    trust_domains: tuple[str, ...] = ()
    not_trust_domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class Condition:
    key: str
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """One rule: matches when one `from`, one `to` and every `when` match (absent = any)."""

    from_: tuple[Source, ...] = ()
    to: tuple[Operation, ...] = ()
    when: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Namespaced:
    """What every policy has: a name in a namespace, and `key` ("ns/name") to refer to it by."""

    name: str
    namespace: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class AuthorizationPolicy(Namespaced):
    action: str = "ALLOW"
    selector: Selector | None = None
    target_refs: tuple[TargetRef, ...] = ()
    provider: str | None = None
    rules: tuple[Rule, ...] = ()
    dry_run: bool = False


@dataclass(frozen=True)
class PeerAuthentication(Namespaced):
    selector: Selector | None = None
    mode: str = "UNSET"
    port_level_mtls: tuple[tuple[int, str], ...] = ()  # (port, mode), sorted by port
    creation_timestamp: str = ""  # RFC 3339; the oldest policy wins a tie, as in istiod


@dataclass(frozen=True)
class JwtHeader:
    name: str
    prefix: str = ""


@dataclass(frozen=True)
class ClaimToHeader:
    header: str
    claim: str


@dataclass(frozen=True)
class JwtRule:
    issuer: str = ""
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks: str = ""
    from_headers: tuple[JwtHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    forward_original_token: bool = False
    output_payload_to_header: str = ""
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()
    space_delimited_claims: tuple[str, ...] = ()
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class RequestAuthentication(Namespaced):
    selector: Selector | None = None
    target_refs: tuple[TargetRef, ...] = ()
    jwt_rules: tuple[JwtRule, ...] = ()


Policy = Union[AuthorizationPolicy, PeerAuthentication, RequestAuthentication]
P = TypeVar("P", AuthorizationPolicy, PeerAuthentication, RequestAuthentication)


# ---------------------------------------------------------------------------------------------
# Parsing


def _strings(d: Mapping[str, Any], field: str) -> tuple[str, ...]:
    return tuple(d.get(field) or ())


def _snake(field: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), field)


def _selector(spec: Mapping[str, Any]) -> Selector | None:
    if spec.get("selector") is None:
        return None
    return Selector(tuple(sorted((spec["selector"].get("matchLabels") or {}).items())))


def _target_refs(spec: Mapping[str, Any]) -> tuple[TargetRef, ...]:
    refs = ([spec["targetRef"]] if spec.get("targetRef") else []) + list(spec.get("targetRefs") or [])
    return tuple(
        TargetRef(kind=r["kind"], name=r["name"], group=r.get("group") or "", namespace=r.get("namespace") or "")
        for r in refs
    )


def parse_bool(value: str) -> bool | None:
    """Go's strconv.ParseBool, which istiod uses for the dry-run annotation."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def field_values(item: Source | Operation, field: str) -> tuple[str, ...]:
    """A source's or operation's values for `field`, named as in the CRD (`notPaths`)."""
    values: tuple[str, ...] = getattr(item, _snake(field))
    return values


def _parse_rule(rule: Mapping[str, Any]) -> Rule:
    return Rule(
        from_=tuple(
            Source(**{_snake(f): _strings(item["source"], f) for f in SOURCE_FIELDS}) for item in rule.get("from") or ()
        ),
        to=tuple(
            Operation(**{_snake(f): _strings(item["operation"], f) for f in OPERATION_FIELDS})
            for item in rule.get("to") or ()
        ),
        when=tuple(
            Condition(c["key"], _strings(c, "values"), _strings(c, "notValues")) for c in rule.get("when") or ()
        ),
    )


def _parse_authorization_policy(
    name: str, namespace: str, metadata: Mapping[str, Any], spec: Mapping[str, Any]
) -> AuthorizationPolicy:
    dry_run = parse_bool((metadata.get("annotations") or {}).get(DRY_RUN_ANNOTATION) or "")
    return AuthorizationPolicy(
        name=name,
        namespace=namespace,
        action=spec.get("action") or "ALLOW",
        selector=_selector(spec),
        target_refs=_target_refs(spec),
        provider=(spec.get("provider") or {}).get("name"),
        rules=tuple(_parse_rule(rule) for rule in spec.get("rules") or ()),
        dry_run=bool(dry_run),
    )


def _parse_peer_authentication(
    name: str, namespace: str, metadata: Mapping[str, Any], spec: Mapping[str, Any]
) -> PeerAuthentication:
    ports = spec.get("portLevelMtls") or {}
    return PeerAuthentication(
        name=name,
        namespace=namespace,
        selector=_selector(spec),
        mode=(spec.get("mtls") or {}).get("mode") or "UNSET",
        port_level_mtls=tuple(sorted((int(port), (mtls or {}).get("mode") or "UNSET") for port, mtls in ports.items())),
        creation_timestamp=str(metadata.get("creationTimestamp") or ""),
    )


def _parse_jwt_rule(rule: Mapping[str, Any]) -> JwtRule:
    timeout = rule.get("timeout")
    return JwtRule(
        issuer=rule.get("issuer") or "",
        audiences=_strings(rule, "audiences"),
        jwks_uri=rule.get("jwksUri") or rule.get("jwks_uri") or "",
        jwks=rule.get("jwks") or "",
        from_headers=tuple(JwtHeader(h["name"], h.get("prefix") or "") for h in rule.get("fromHeaders") or ()),
        from_params=_strings(rule, "fromParams"),
        from_cookies=_strings(rule, "fromCookies"),
        forward_original_token=bool(rule.get("forwardOriginalToken")),
        output_payload_to_header=rule.get("outputPayloadToHeader") or "",
        output_claim_to_headers=tuple(
            ClaimToHeader(o["header"], o["claim"]) for o in rule.get("outputClaimToHeaders") or ()
        ),
        space_delimited_claims=_strings(rule, "spaceDelimitedClaims"),
        timeout_seconds=parse_duration(timeout) if timeout is not None else None,
    )


def _parse_request_authentication(
    name: str, namespace: str, metadata: Mapping[str, Any], spec: Mapping[str, Any]
) -> RequestAuthentication:
    return RequestAuthentication(
        name=name,
        namespace=namespace,
        selector=_selector(spec),
        target_refs=_target_refs(spec),
        jwt_rules=tuple(_parse_jwt_rule(rule) for rule in spec.get("jwtRules") or ()),
    )


#: kind → (name, namespace, metadata, spec) → the frozen policy, without validation.
_PARSERS: dict[str, Callable[[str, str, Mapping[str, Any], Mapping[str, Any]], Policy]] = {
    AUTHORIZATION_POLICY: _parse_authorization_policy,
    PEER_AUTHENTICATION: _parse_peer_authentication,
    REQUEST_AUTHENTICATION: _parse_request_authentication,
}


def parse(obj: Any) -> Policy:
    """The frozen form of a valid object; raises InvalidPolicy with every problem otherwise.

    A missing metadata.namespace means "default", as the API server defaults it.
    """
    problems = validate(obj)
    if problems:
        raise InvalidPolicy(problems)
    metadata = obj["metadata"]
    return _PARSERS[obj["kind"]](
        metadata["name"], metadata.get("namespace") or "default", metadata, obj.get("spec") or {}
    )


def parse_as(cls: type[P], obj: Mapping[str, Any] | P) -> P:
    """`obj` as a `cls`: parsed if it is a dict, passed through if it already is one."""
    if isinstance(obj, cls):
        return obj
    parsed = parse(obj)
    if not isinstance(parsed, cls):
        raise TypeError(f"expected a {cls.__name__}, got a {type(parsed).__name__}")
    return parsed
