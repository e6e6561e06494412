"""The L7 authorization a waypoint or sidecar applies to one HTTP request.

This is what Envoy's RBAC filters do with the config istiod generates for AuthorizationPolicy
(`pilot/pkg/security/authz/model`): every field of the API, matched the way Istio's generators
build Envoy matchers. Order is CUSTOM, then DENY, then ALLOW; AUDIT never decides; dry-run
policies only report. A deny is 403 with body "RBAC: access denied".

Authentication happens before this: `src_identity` is the peer certificate's SPIFFE URI (at a
waypoint, the original client's), `jwt_claims` the payload of a JWT that RequestAuthentication
verified (None when the request carried none). A bad token was already answered with 401.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from mesh.identity.spiffe import SCHEME
from mesh.policy.model import AuthorizationPolicy, Condition, Operation, Rule, Source, parse_as

DENIED_STATUS = 403
DENIED_BODY = "RBAC: access denied"
SPIFFE_PREFIX = SCHEME


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # the request target: path, optionally with ?query
    host: str  # :authority (Host), as sent, port included if the client sent one
    src_ip: str  # the downstream peer's address (`source.ip`, `ipBlocks`)
    dst_ip: str
    dst_port: int
    src_identity: str | None = None  # SPIFFE URI of the client; None for plaintext
    headers: tuple[tuple[str, str], ...] = ()
    jwt_claims: Mapping[str, Any] | None = None  # verified JWT payload; None without a token
    remote_ip: str | None = None  # the original client per X-Forwarded-For (`remote.ip`); default src_ip
    sni: str = ""

    def header(self, name: str) -> str | None:
        """All values of a header joined with ",", as Envoy's header matcher sees them."""
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return ",".join(values) if values else None


@dataclass(frozen=True)
class HttpDecision:
    allowed: bool
    status: int | None  # None when allowed (the request goes on), 403 when denied
    body: str
    policy: str | None  # "ns/name" of the deciding policy
    reason: str  # Envoy's response code details for a deny
    dry_run_matches: tuple[str, ...] = field(default=())


# --- string matching as Istio builds Envoy StringMatchers ---------------------------------------


def _string(pattern: str, value: str | None, *, ignore_case: bool = False, star_is_presence: bool = False) -> bool:
    """Istio's StringMatcher: `*` is any non-empty value, `*x` suffix, `x*` prefix, else exact."""
    if value is None:
        return False
    if pattern == "*":
        return star_is_presence or value != ""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _header_match(pattern: str, value: str | None) -> bool:
    """A header matcher: `*` means present (even empty), otherwise as _string."""
    return _string(pattern, value, star_is_presence=True)


def _principal_match(pattern: str, identity: str | None) -> bool:
    """`principals`/`source.principal`: the pattern with "spiffe://" put in front."""
    if not identity:
        return False
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return identity.startswith(SPIFFE_PREFIX) and identity.endswith(pattern[1:])
    if pattern.endswith("*"):
        return identity.startswith(SPIFFE_PREFIX + pattern[:-1])
    return identity == SPIFFE_PREFIX + pattern


def _namespace_match(pattern: str, identity: str | None) -> bool:
    regex = ".*/ns/" + ".*".join(re.escape(part) for part in pattern.split("*")) + "/.*"
    return identity is not None and re.fullmatch(regex, identity) is not None


def _service_account_match(pattern: str, identity: str | None, policy_namespace: str) -> bool:
    namespace, slash, account = pattern.partition("/")
    if not slash:
        namespace, account = policy_namespace, pattern
    regex = f"spiffe://.+/ns/{re.escape(namespace)}/(.+/|)sa/{re.escape(account)}(/.+)?"
    return identity is not None and re.fullmatch(regex, identity) is not None


def _trust_domain_match(pattern: str, identity: str | None) -> bool:
    if identity is None:
        return False
    if pattern == "*":
        return identity.startswith(SPIFFE_PREFIX)
    if "*" not in pattern:
        return identity.startswith(f"{SPIFFE_PREFIX}{pattern}/")
    before, _, after = pattern.partition("*")
    return re.fullmatch(f"spiffe://{re.escape(before)}[^/]*{re.escape(after)}/.*", identity) is not None


def _ip_match(cidr: str, ip: str | None) -> bool:
    if ip is None:
        return False
    network = ipaddress.ip_network(cidr, strict=False)
    address = ipaddress.ip_address(ip)
    return address.version == network.version and address in network


# --- JWT claims ------------------------------------------------------------------------------------


def _claim_strings(claims: Mapping[str, Any] | None, path: list[str]) -> list[str]:
    """A claim's string value(s): a string, or the strings of a list (Envoy's list-or-value)."""
    value: Any = claims
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return []
        value = value[key]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def claim_path(key: str) -> list[str]:
    """`request.auth.claims[a][b]` -> ["a", "b"]; a single bracket keeps dots: [a.b] -> ["a.b"]."""
    return re.findall(r"\[([^\[\]]*)\]", key[len("request.auth.claims") :])


def _claim_match(pattern: str, claims: Mapping[str, Any] | None, path: list[str]) -> bool:
    return any(_string(pattern, value) for value in _claim_strings(claims, path))


def _request_principal_match(pattern: str, claims: Mapping[str, Any] | None) -> bool:
    """`requestPrincipals`/`request.auth.principal` ("iss/sub"): iss and sub are matched apart,
    split at the last "/" since issuers may be URLs; `*` parts match any non-empty value."""
    iss_value, sub_value = (claims or {}).get("iss"), (claims or {}).get("sub")
    if not isinstance(iss_value, str) or not isinstance(sub_value, str):
        return False
    iss, slash, sub = pattern.rpartition("/")
    if not slash:
        iss, sub = pattern, ""

    def anything(value: str) -> bool:
        return value != ""

    match_iss: Callable[[str], bool]
    match_sub: Callable[[str], bool]
    if pattern == "*":
        match_iss, match_sub = anything, anything
    elif pattern.startswith("*") and slash:
        match_iss = anything if iss == "*" else (lambda value: value.endswith(iss[1:]))
        match_sub = sub.__eq__
    elif pattern.startswith("*"):
        match_iss, match_sub = anything, (lambda value: value.endswith(pattern[1:]))
    elif pattern.endswith("*") and slash:
        match_iss = iss.__eq__
        match_sub = anything if sub == "*" else (lambda value: value.startswith(sub[:-1]))
    elif pattern.endswith("*"):
        match_iss, match_sub = (lambda value: value.startswith(pattern[:-1])), anything
    else:
        match_iss, match_sub = iss.__eq__, sub.__eq__
    return match_iss(iss_value) and match_sub(sub_value)


# --- paths ----------------------------------------------------------------------------------------

_PCHAR = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]"


def normalize_path(target: str) -> str:
    """The path Envoy matches: no query or fragment, dot segments removed (RFC 3986 5.2.4)."""
    path = re.split(r"[?#]", target, maxsplit=1)[0]
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    normalized = "/" + "/".join(output)
    if path.endswith(("/.", "/..")) and not normalized.endswith("/"):
        normalized += "/"
    return normalized


def _path_template_regex(template: str) -> str:
    """Envoy's uri_template: {*} one segment, {**} any number of segments."""
    parts = re.split(r"(\{\*\*\}|\{\*\})", template)
    return "".join(
        {"{*}": _PCHAR + "+", "{**}": r"[a-zA-Z0-9\-._~%!$&'()+,;:@=/]*"}.get(p, re.escape(p)) for p in parts
    )


def _path_match(pattern: str, path: str) -> bool:
    if "{*}" in pattern or "{**}" in pattern:
        return re.fullmatch(_path_template_regex(pattern), path) is not None
    return _string(pattern, path)


# --- rules ----------------------------------------------------------------------------------------


def _field(values: Iterable[str], not_values: Iterable[str], predicate: Callable[[str], bool]) -> bool:
    """Any value must match (if there are values), and no negative value may."""
    values, not_values = list(values), list(not_values)
    return (not values or any(map(predicate, values))) and not any(map(predicate, not_values))


def _port_match(port: str, actual: int) -> bool:
    return port.isdigit() and int(port) == actual


def _source_matches(src: Source, request: Request, policy_namespace: str) -> bool:
    identity, claims = request.src_identity, request.jwt_claims
    remote_ip = request.remote_ip or request.src_ip
    return all(
        (
            _field(src.principals, src.not_principals, lambda p: _principal_match(p, identity)),
            _field(src.request_principals, src.not_request_principals, lambda p: _request_principal_match(p, claims)),
            _field(src.namespaces, src.not_namespaces, lambda p: _namespace_match(p, identity)),
            _field(
                src.service_accounts,
                src.not_service_accounts,
                lambda p: _service_account_match(p, identity, policy_namespace),
            ),
            _field(src.ip_blocks, src.not_ip_blocks, lambda p: _ip_match(p, request.src_ip)),
            _field(src.remote_ip_blocks, src.not_remote_ip_blocks, lambda p: _ip_match(p, remote_ip)),
            _field(src.trust_domains, src.not_trust_domains, lambda p: _trust_domain_match(p, identity)),
        )
    )


def _operation_matches(op: Operation, request: Request) -> bool:
    path = normalize_path(request.path)
    return all(
        (
            _field(op.hosts, op.not_hosts, lambda p: _string(p, request.host, ignore_case=True, star_is_presence=True)),
            _field(op.ports, op.not_ports, lambda p: _port_match(p, request.dst_port)),
            _field(op.methods, op.not_methods, lambda p: _header_match(p, request.method)),
            _field(op.paths, op.not_paths, lambda p: _path_match(p, path)),
        )
    )


def _condition_predicate(key: str, request: Request, policy_namespace: str) -> Callable[[str], bool]:
    identity, claims = request.src_identity, request.jwt_claims
    simple: dict[str, Callable[[str], bool]] = {
        "source.ip": lambda v: _ip_match(v, request.src_ip),
        "remote.ip": lambda v: _ip_match(v, request.remote_ip or request.src_ip),
        "source.namespace": lambda v: _namespace_match(v, identity),
        "source.principal": lambda v: _principal_match(v, identity),
        "source.serviceAccount": lambda v: _service_account_match(v, identity, policy_namespace),
        "source.trustDomain": lambda v: _trust_domain_match(v, identity),
        "request.auth.principal": lambda v: _request_principal_match(v, claims),
        "request.auth.audiences": lambda v: _claim_match(v, claims, ["aud"]),
        "request.auth.presenter": lambda v: _claim_match(v, claims, ["azp"]),
        "destination.ip": lambda v: _ip_match(v, request.dst_ip),
        "destination.port": lambda v: _port_match(v, request.dst_port),
        "connection.sni": lambda v: _string(v, request.sni),
    }
    if key in simple:
        return simple[key]
    if key.startswith("request.headers["):
        name = key[len("request.headers[") : -1]
        return lambda v: _header_match(v, request.header(name))
    if key.startswith("request.auth.claims["):
        path = claim_path(key)
        return lambda v: _claim_match(v, claims, path)
    return lambda v: False  # experimental Envoy metadata: the lab has none


def _condition_matches(condition: Condition, request: Request, policy_namespace: str) -> bool:
    predicate = _condition_predicate(condition.key, request, policy_namespace)
    return _field(condition.values, condition.not_values, predicate)


def rule_matches(rule: Rule, request: Request, policy_namespace: str) -> bool:
    """One `from` (if any), one `to` (if any) and every `when`. An empty rule matches all."""
    return (
        (not rule.from_ or any(_source_matches(s, request, policy_namespace) for s in rule.from_))
        and (not rule.to or any(_operation_matches(o, request) for o in rule.to))
        and all(_condition_matches(c, request, policy_namespace) for c in rule.when)
    )


def matching_rule(policy: AuthorizationPolicy, request: Request) -> int | None:
    """Index of the first rule of `policy` matching `request`; None (also with no rules)."""
    for index, rule in enumerate(policy.rules):
        if rule_matches(rule, request, policy.namespace):
            return index
    return None


# --- the decision ---------------------------------------------------------------------------------


def _envoy_policy_id(policy: AuthorizationPolicy, rule: int) -> str:
    return f"ns[{policy.namespace}]-policy[{policy.name}]-rule[{rule}]"


def _deny(policy: AuthorizationPolicy | None, reason: str, dry_run: tuple[str, ...]) -> HttpDecision:
    return HttpDecision(False, DENIED_STATUS, DENIED_BODY, policy.key if policy else None, reason, dry_run)


ExtAuthz = Callable[[str, Request], bool]


def evaluate(
    request: Request, policies: Iterable[dict[str, Any] | AuthorizationPolicy], *, ext_authz: ExtAuthz | None = None
) -> HttpDecision:
    """The decision for `request` under the policies that apply to the proxy serving it.

    A matching CUSTOM policy asks `ext_authz(provider, request)`; without one, the provider is
    unknown to the mesh config and istiod makes such a policy deny what it matches.
    """
    return evaluate_views([(request, policies)], ext_authz=ext_authz)


def evaluate_views(
    views: Iterable[tuple[Request, Iterable[dict[str, Any] | AuthorizationPolicy]]],
    *,
    ext_authz: ExtAuthz | None = None,
) -> HttpDecision:
    """`evaluate` where each group of policies sees its own view of the request: at a waypoint a
    workload's selector policies see the workload's ip:port, targetRefs policies the Service's."""
    pairs = [(request, parse_as(AuthorizationPolicy, p)) for request, policies in views for p in policies]
    dry_run = tuple(p.key for r, p in pairs if p.dry_run and p.action != "AUDIT" and matching_rule(p, r) is not None)
    enforced = [(r, p) for r, p in pairs if not p.dry_run]
    for request, policy in ((r, p) for r, p in enforced if p.action == "CUSTOM"):
        if matching_rule(policy, request) is None:
            continue
        if ext_authz is None:
            return _deny(
                policy,
                f'ext_authz provider "{policy.provider}" is not defined: {policy.key} denies what it matches',
                dry_run,
            )
        if not ext_authz(policy.provider or "", request):
            return _deny(policy, f"ext_authz_denied by provider {policy.provider}", dry_run)
    for request, policy in ((r, p) for r, p in enforced if p.action == "DENY"):
        rule = matching_rule(policy, request)
        if rule is not None:
            return _deny(policy, f"rbac_access_denied_matched_policy[{_envoy_policy_id(policy, rule)}]", dry_run)
    allows = [(r, p) for r, p in enforced if p.action == "ALLOW"]
    if not allows:
        return HttpDecision(True, None, "", None, "no ALLOW policy applies", dry_run)
    for request, policy in allows:
        rule = matching_rule(policy, request)
        if rule is not None:
            return HttpDecision(True, None, "", policy.key, f"allowed by {_envoy_policy_id(policy, rule)}", dry_run)
    return _deny(None, "rbac_access_denied_matched_policy[none]", dry_run)
