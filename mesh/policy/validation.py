"""Validation of Istio security policies given as Kubernetes dicts.

`validate` says what the API server (CRD schema) and istiod's validating webhook would refuse, as
(field path, problem) pairs; `warnings` what they accept but warn about. The checks follow
istio/api's CRD schemas and istiod's `pkg/config/validation`, so a policy the lab accepts is one a
real cluster accepts, and one it refuses is refused for the same reason.

The API server's structural checks (types, unknown fields, enums, metadata) are in
`mesh.policy.schema`; this module holds the webhook's value checks, `validate` (both, in the order
a cluster runs them) and `warnings`. The constants are re-exported from here.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Callable
from urllib.parse import urlsplit

from mesh.policy.schema import (
    ACTIONS,
    API_VERSIONS,
    AUTHORIZATION_POLICY,
    GROUP,
    KINDS,
    MTLS_MODES,
    OPERATION_FIELDS,
    PEER_AUTHENTICATION,
    REQUEST_AUTHENTICATION,
    SOURCE_FIELDS,
    SPECS,
    Problem,
    check_header,
    check_shape,
    negated,
    port_number,
    type_name,
)

__all__ = [
    "ACTIONS",
    "API_VERSIONS",
    "AUTHORIZATION_POLICY",
    "DRY_RUN_ANNOTATION",
    "GROUP",
    "KINDS",
    "MTLS_MODES",
    "OPERATION_FIELDS",
    "PEER_AUTHENTICATION",
    "REQUEST_AUTHENTICATION",
    "SOURCE_FIELDS",
    "TARGET_REF_KINDS",
    "WHEN_KEYS",
    "WHEN_MAP_KEYS",
    "Problem",
    "ip_problem",
    "parse_duration",
    "port_problem",
    "validate",
    "warnings",
    "when_key_problem",
]

DRY_RUN_ANNOTATION = "istio.io/dry-run"

# targetRef kinds istiod accepts, as (canonical group, kind); "" is the core group.
TARGET_REF_KINDS = (
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
)

# `when` keys istiod knows (pkg/config/security ValidateAttribute); bracketed ones are prefixes.
WHEN_KEYS = (
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.serviceAccount",
    "source.principal",
    "source.trustDomain",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
)
WHEN_MAP_KEYS = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")


# ---------------------------------------------------------------------------------------------
# Value checks shared by several fields

_HEADER_NAME = re.compile(r"^[-_A-Za-z0-9]+$")
_PATH_LITERAL = re.compile(r"^[a-zA-Z0-9\-._~%!$&'()+,;:@=]+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def port_problem(value: str) -> str | None:
    if port_number(value) is None:
        return f'invalid port "{value}": must be an integer string in 0..65535'
    return None


def ip_problem(value: str) -> str | None:
    """Go's netip rules: a CIDR if it has a slash, else a bare address (no leading zeros)."""
    if "/" not in value:
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            return f'invalid IP address "{value}"'
    address, _, bits = value.partition("/")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return f'invalid CIDR "{value}"'
    valid_bits = bits.isascii() and bits.isdigit() and (bits == "0" or not bits.startswith("0"))
    if "%" in address or not valid_bits or int(bits) > parsed.max_prefixlen:
        return f'invalid CIDR "{value}"'
    return None


def _service_account_problem(value: str) -> str | None:
    if "*" in value:
        return f'wildcard not allowed in service account "{value}"'
    if value.count("/") > 1 or value.startswith("/") or value.endswith("/"):
        return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found \"{value}\""
    if len(value) > 320:
        return "value cannot exceed 320 characters"
    return None


def _wildcard_problem(value: str) -> str | None:
    count = value.count("*")
    if count > 1:
        return f'at most one wildcard is allowed, found "{value}"'
    if count == 1 and value != "*" and not value.startswith("*") and not value.endswith("*"):
        return f'wildcard is only allowed at the start or end, found "{value}"'
    return None


def _trust_domain_problem(value: str) -> str | None:
    if "/" in value:
        return f"trust domain must not contain '/', found \"{value}\""
    return _wildcard_problem(value)


def _path_template_problem(path: str) -> str | None:
    """istiod's CheckValidPathTemplate: {*} and {**} operators, {**} last, pchar literals."""
    has_template = "{*}" in path or "{**}" in path
    seen_match_any = False
    for glob in path.strip("/").split("/"):
        if glob in ("{*}", "{**}"):
            if seen_match_any:
                return f'invalid path template "{path}": {{**}} is not the last operator'
            seen_match_any = glob == "{**}"
            continue
        if "{" in glob or "}" in glob:
            return f"invalid path template \"{path}\": contains '{{' or '}}' beyond a supported operator"
        if has_template and not _PATH_LITERAL.match(glob):
            return f'invalid path template "{path}": segment "{glob}" is not a valid literal'
    return None


def parse_duration(value: str) -> float | None:
    """Seconds from a Go duration string ("5s", "1m30s", "250ms"), None if it is not one."""
    if value == "0":
        return 0.0
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return total if position == len(value) and value else None


def _map_key_problem(key: str) -> str | None:
    opening = key.find("[")
    if key.endswith("]") and 0 < opening < len(key) - 2:
        return None
    return f"bad key ({key}): should have format a[b]"


def when_key_problem(key: str) -> str | None:
    """What istiod says of a `when` key it does not accept, or None."""
    if any(key.startswith(prefix) for prefix in WHEN_MAP_KEYS):
        return _map_key_problem(key)
    if key in WHEN_KEYS:
        return None
    if key == "destination.namespace":
        return f"attribute {key} is replaced by the metadata.namespace"
    if key.startswith("destination.labels"):
        return f"attribute {key} is replaced by the workload selector"
    if key in ("destination.name", "destination.user"):
        return f"deprecated attribute {key}: only supported in v1alpha1"
    return f"unknown attribute: {key}"


def _when_value_problem(key: str, value: str) -> str | None:
    if key in ("source.ip", "remote.ip", "destination.ip"):
        return ip_problem(value)
    if key == "destination.port":
        return port_problem(value)
    if key == "source.serviceAccount":
        return _service_account_problem(value)
    if key == "source.trustDomain":
        return _wildcard_problem(value)
    return None


# ---------------------------------------------------------------------------------------------
# Semantic checks (run once the shape is right, so they can trust types)


def _check_selector(selector: dict[str, Any] | None, path: str, out: list[Problem]) -> None:
    for key, value in ((selector or {}).get("matchLabels") or {}).items():
        sub = f'{path}.matchLabels["{key}"]'
        if key == "":
            out.append((sub, "key must not be empty"))
        if "*" in key or "*" in value:
            out.append((sub, "wildcard is not supported in selector"))
        if len(value) > 63:
            out.append((sub, "label value must be at most 63 characters"))


def _check_target_ref(ref: dict[str, Any], path: str, out: list[Problem]) -> None:
    if not ref.get("name"):
        out.append((f"{path}.name", "targetRef name must be set"))
    if not ref.get("kind"):
        out.append((f"{path}.kind", "targetRef kind must be set"))
    if ref.get("namespace"):
        out.append((f"{path}.namespace", "must not be set: cross namespace referencing is not supported"))
    group = ref.get("group") or "core"
    if ref.get("kind") and (group, ref["kind"]) not in TARGET_REF_KINDS:
        allowed = ", ".join(f"{g}/{k}" for g, k in TARGET_REF_KINDS)
        out.append((path, f"targetRef must be to one of {allowed} but was {ref.get('group', '')}/{ref['kind']}"))


def _check_attachment(spec: dict[str, Any], out: list[Problem]) -> None:
    if sum(spec.get(field) is not None for field in ("selector", "targetRef", "targetRefs")) > 1:
        out.append(("spec", "only one of selector, targetRef or targetRefs can be set"))
    _check_selector(spec.get("selector"), "spec.selector", out)
    if spec.get("targetRef") is not None:
        _check_target_ref(spec["targetRef"], "spec.targetRef", out)
    for i, ref in enumerate(spec.get("targetRefs") or []):
        _check_target_ref(ref, f"spec.targetRefs[{i}]", out)


def _check_values(
    values: list[str], path: str, out: list[Problem], check: Callable[[str], str | None] | None = None
) -> None:
    for i, value in enumerate(values):
        problem = "empty value not allowed" if value == "" else check(value) if check else None
        if problem:
            out.append((f"{path}[{i}]", problem))


_Check = Callable[[str], str | None]  # a value's problem, or None


def _with_negations(checks: dict[str, _Check]) -> dict[str, _Check]:
    """`checks`, each also under its field's `not` form (`ports` → `notPorts`)."""
    return {**checks, **{negated(field): check for field, check in checks.items()}}


#: The check each field's values get, beyond not being empty.
_SOURCE_CHECKS = _with_negations(
    {
        "ipBlocks": ip_problem,
        "remoteIpBlocks": ip_problem,
        "serviceAccounts": _service_account_problem,
        "trustDomains": _trust_domain_problem,
    }
)
_OPERATION_CHECKS = _with_negations({"ports": port_problem, "paths": _path_template_problem})


def _check_fields(
    item: dict[str, Any], fields: tuple[str, ...], checks: dict[str, _Check], path: str, out: list[Problem]
) -> None:
    """A source's or operation's fields: at least one set, and each one's values."""
    if not any(item.get(field) for field in fields):
        out.append((path, "must not be empty"))
    for field in fields:
        _check_values(item.get(field) or [], f"{path}.{field}", out, checks.get(field))


def _check_source(source: dict[str, Any], path: str, out: list[Problem]) -> None:
    identity = ("principals", "notPrincipals", "namespaces", "notNamespaces")
    if any(source.get(f) for f in identity) and any(source.get(f) for f in ("serviceAccounts", "notServiceAccounts")):
        out.append((path, "cannot set serviceAccounts with namespaces or principals"))
    _check_fields(source, SOURCE_FIELDS, _SOURCE_CHECKS, path, out)


def _check_condition(condition: dict[str, Any], path: str, out: list[Problem]) -> None:
    key = condition.get("key") or ""
    if not key:
        out.append((f"{path}.key", "must not be empty"))
        return
    key_problem = when_key_problem(key)
    if key_problem:
        out.append((f"{path}.key", key_problem))
        return
    if not condition.get("values") and not condition.get("notValues"):
        out.append((path, f"at least one of `values` or `notValues` must be set for key {key}"))
    for field in ("values", "notValues"):
        _check_values(condition.get(field) or [], f"{path}.{field}", out, lambda value: _when_value_problem(key, value))


def _check_rule(rule: dict[str, Any], path: str, out: list[Problem]) -> None:
    for field, inner in (("from", "source"), ("to", "operation")):
        items = rule.get(field)
        if items is not None and not items:
            out.append((f"{path}.{field}", "must not be empty"))
        for j, item in enumerate(items or []):
            sub = f"{path}.{field}[{j}].{inner}"
            if item.get(inner) is None:
                out.append((sub, "must be set"))
            elif inner == "source":
                _check_source(item[inner], sub, out)
            else:
                _check_fields(item[inner], OPERATION_FIELDS, _OPERATION_CHECKS, sub, out)
    for j, condition in enumerate(rule.get("when") or []):
        _check_condition(condition, f"{path}.when[{j}]", out)


_CUSTOM_UNSUPPORTED_SOURCE = (
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
)
_CUSTOM_UNSUPPORTED_KEYS = ("source.namespace", "source.serviceAccount", "source.trustDomain", "source.principal")


def _check_custom_rules(rules: list[dict[str, Any]], out: list[Problem]) -> None:
    for i, rule in enumerate(rules):
        for j, item in enumerate(rule.get("from") or []):
            for field in _CUSTOM_UNSUPPORTED_SOURCE:
                if (item.get("source") or {}).get(field):
                    out.append(
                        (f"spec.rules[{i}].from[{j}].source.{field}", "is currently not supported with CUSTOM action")
                    )
        for j, condition in enumerate(rule.get("when") or []):
            key = condition.get("key") or ""
            if key in _CUSTOM_UNSUPPORTED_KEYS or key.startswith("request.auth."):
                out.append((f"spec.rules[{i}].when[{j}].key", f"{key} is currently not supported with CUSTOM action"))


def _check_authorization_policy(spec: dict[str, Any], out: list[Problem]) -> None:
    _check_attachment(spec, out)
    action = spec.get("action") or "ALLOW"
    rules = spec.get("rules")
    if action == "CUSTOM":
        if not rules:
            out.append(
                (
                    "spec.rules",
                    "CUSTOM action without `rules` is meaningless as it will never be "
                    "triggered, add an empty rule `{}` if you want it be triggered for every request",
                )
            )
        elif not (spec.get("provider") or {}).get("name"):
            out.append(("spec.provider.name", "must not be empty with action CUSTOM"))
        _check_custom_rules(rules or [], out)
    elif spec.get("provider") is not None:
        out.append(("spec.provider", f"must not be set with non CUSTOM action, found {action}"))
    if action == "DENY" and not rules:
        out.append(
            (
                "spec.rules",
                "DENY action without `rules` is meaningless as it will never be "
                "triggered, add an empty rule `{}` if you want it be triggered for every request",
            )
        )
    for i, rule in enumerate(rules or []):
        _check_rule(rule, f"spec.rules[{i}]", out)


def _check_peer_authentication(spec: dict[str, Any], out: list[Problem]) -> None:
    _check_selector(spec.get("selector"), "spec.selector", out)
    port_level = spec.get("portLevelMtls")
    if port_level is not None and not port_level:
        out.append(("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element"))
    if port_level and not ((spec.get("selector") or {}).get("matchLabels")):
        out.append(("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS"))


def _jwks_problem(jwks: str) -> str | None:
    try:
        document = json.loads(jwks)
    except ValueError as error:
        return f"jwks parse error: {error}"
    keys = document.get("keys", [document]) if isinstance(document, dict) else None
    if not isinstance(keys, list) or not all(isinstance(key, dict) and "kty" in key for key in keys):
        return 'jwks parse error: want a JWK ("kty") or a JWK set ("keys")'
    if not keys:
        return "jwks parse error: the key set has no key"
    for i, key in enumerate(keys):
        members = _JWK_PUBLIC_MEMBERS.get(key["kty"])
        if members is None:
            return f'jwks parse error: key at index {i}: unsupported kty "{key["kty"]}"'
        missing = [member for member in members if not isinstance(key.get(member), str) or not key[member]]
        if missing:
            return f'jwks parse error: key at index {i} ({key["kty"]}) has no "{missing[0]}"'
    return None


# The members a JWK of each type needs before it can verify anything (RFC 7518 §6).
_JWK_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x"), "oct": ("k",)}


def _check_jwt_rule(rule: dict[str, Any], path: str, out: list[Problem]) -> None:
    jwks_uri = rule.get("jwksUri") or rule.get("jwks_uri") or ""
    if "issuer" in rule and rule["issuer"] == "":
        out.append((f"{path}.issuer", "must not be empty"))
    if not rule.get("issuer") and not jwks_uri:
        out.append((path, "issuer or jwksUri must be non-empty string"))
    if sum(rule.get(field) is not None for field in ("jwks", "jwksUri", "jwks_uri")) > 1:
        out.append((path, "only one of jwks or jwksUri can be set"))
    for field in ("jwksUri", "jwks_uri"):
        uri = rule.get(field)
        if uri is None:
            continue
        scheme = urlsplit(uri).scheme
        if scheme not in ("http", "https"):
            out.append((f"{path}.{field}", f'URI scheme "{scheme}" is not supported: must be http or https'))
        if not 0 < len(uri) <= 2048:
            out.append((f"{path}.{field}", "must be 1 to 2048 characters"))
    if rule.get("jwks"):
        problem = _jwks_problem(rule["jwks"])
        if problem:
            out.append((f"{path}.jwks", problem))
    _check_values(rule.get("audiences") or [], f"{path}.audiences", out)
    _check_values(rule.get("fromParams") or [], f"{path}.fromParams", out)
    _check_values(rule.get("fromCookies") or [], f"{path}.fromCookies", out)
    _check_values(rule.get("spaceDelimitedClaims") or [], f"{path}.spaceDelimitedClaims", out)
    for i, header in enumerate(rule.get("fromHeaders") or []):
        if not header.get("name"):
            out.append((f"{path}.fromHeaders[{i}].name", "location header name must be non-empty string"))
    for i, output in enumerate(rule.get("outputClaimToHeaders") or []):
        sub = f"{path}.outputClaimToHeaders[{i}]"
        if not output.get("header") or not output.get("claim"):
            out.append((sub, "header and claim must be non-empty strings"))
        elif not _HEADER_NAME.match(output["header"]):
            out.append((f"{sub}.header", f'invalid header name "{output["header"]}"'))
    if rule.get("timeout") is not None:
        seconds = parse_duration(rule["timeout"])
        if seconds is None or seconds < 1e-3:
            out.append((f"{path}.timeout", f'"{rule["timeout"]}" must be a valid duration greater than 1ms'))


def _check_request_authentication(spec: dict[str, Any], out: list[Problem]) -> None:
    _check_attachment(spec, out)
    for i, rule in enumerate(spec.get("jwtRules") or []):
        _check_jwt_rule(rule, f"spec.jwtRules[{i}]", out)


_SEMANTIC_CHECKS = {
    AUTHORIZATION_POLICY: _check_authorization_policy,
    PEER_AUTHENTICATION: _check_peer_authentication,
    REQUEST_AUTHENTICATION: _check_request_authentication,
}


def validate(obj: Any) -> list[Problem]:
    """Every reason the API server or istiod's webhook would refuse `obj`; empty if valid.

    Type and unknown-field problems are reported first and alone: the semantic checks need the
    shape to be right, as they do in Kubernetes (schema validation runs before the webhook).
    """
    if not isinstance(obj, dict):
        return [("", f"must be an object, got {type_name(obj)}")]
    out: list[Problem] = []
    check_header(obj, out)
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    kind = obj.get("kind")
    schema = SPECS.get(kind) if isinstance(kind, str) else None
    if schema is not None:
        check_shape(spec, schema, "spec", out)
    if out or schema is None:
        return out
    _SEMANTIC_CHECKS[obj["kind"]](spec, out)
    return out


# ---------------------------------------------------------------------------------------------
# Warnings: accepted, but probably not what the author meant

_HTTP_ONLY_DENY_WARNING = (
    "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use "
    "of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port"
)
_TCP_SOURCE_FIELDS = (
    "principals",
    "notPrincipals",
    "ipBlocks",
    "notIpBlocks",
    "namespaces",
    "notNamespaces",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
)


def warnings(obj: dict[str, Any]) -> list[Problem]:
    """istiod's validation warnings for a valid object, plus the lab's own hints (marked so)."""
    spec = obj.get("spec") or {}
    out: list[Problem] = []
    selector = spec.get("selector")
    if selector is not None and not selector.get("matchLabels"):
        out.append(("spec.selector", "workload selector specified without labels"))
    if obj.get("kind") == AUTHORIZATION_POLICY and spec.get("action") == "CUSTOM":
        out.append(
            (
                "spec.action",
                f'lab hint: the lab\'s mesh config defines no ext_authz provider, so '
                f'CUSTOM policies are not supported: at a waypoint or sidecar this one denies every request '
                f'it matches (provider "{(spec.get("provider") or {}).get("name", "")}" is unknown), and '
                f'ztunnel ignores it',
            )
        )
    if obj.get("kind") == AUTHORIZATION_POLICY:
        for i, rule in enumerate(spec.get("rules") or []):
            sources = [item["source"] for item in rule.get("from") or []]
            operations = [item["operation"] for item in rule.get("to") or []]
            tcp_from = any(source.get(f) is not None for source in sources for f in _TCP_SOURCE_FIELDS)
            tcp_to = any(op.get(f) is not None for op in operations for f in ("ports", "notPorts"))
            http_only = (sources and not operations and not tcp_from) or (operations and not tcp_to)
            if http_only and spec.get("action") == "DENY":
                out.append((f"spec.rules[{i}]", _HTTP_ONLY_DENY_WARNING))
            for j, source in enumerate(sources):
                for field in ("principals", "notPrincipals"):
                    for k, value in enumerate(source.get(field) or []):
                        if value.startswith("spiffe://"):
                            out.append(
                                (
                                    f"spec.rules[{i}].from[{j}].source.{field}[{k}]",
                                    'lab hint: principals are written without "spiffe://", so this value never matches',
                                )
                            )
    if obj.get("kind") == REQUEST_AUTHENTICATION:
        for i, rule in enumerate(spec.get("jwtRules") or []):
            if rule.get("jwks") and _jwks_problem(rule["jwks"]) is None:
                document = json.loads(rule["jwks"])
                for k, key in enumerate(document.get("keys", [document])):
                    if "d" in key or key.get("kty") == "oct":
                        out.append(
                            (
                                f"spec.jwtRules[{i}].jwks",
                                f"jwks key at index {k} contains private key "
                                "material; only public keys are used for verification",
                            )
                        )
    return out
