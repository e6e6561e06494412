"""istiod's translation of RequestAuthentication into Envoy's `jwt_authn` filter (pure).

The shape follows istiod's policy applier (see docs/l7-jwt.md): every JWT rule of every policy
that applies to a proxy becomes one provider `origins-<i>`, and the requirement lets a request
without a token through while a request with a token needs a valid one. Keys are inlined
(`local_jwks`): the rule's own `jwks`, or what istiod resolved for its `jwksUri` (`jwks_for`, see
`mesh.istiod.jwks`). When that is unknown, the provider gets `remote_jwks` instead, which the lab's
proxies (`mesh.proxy.jwt_authn`) treat as a JWKS fetch that failed: every token is refused with
"Jwks remote fetch is failed", and never accepted.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence
from urllib.parse import urlsplit

from mesh.contract import JWT_AUTHN_FILTER, JWT_AUTHN_TYPE_URL
from mesh.policy.model import JwtRule, RequestAuthentication

OPENID_DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
JWKS_FETCH_TIMEOUT = "5s"
REMOTE_JWKS_CACHE_DURATION = "300s"


def jwks_source(rule: JwtRule) -> str:
    """The URL istiod reads a rule's keys from: `jwksUri`, else the issuer's OpenID discovery."""
    return rule.jwks_uri or rule.issuer.rstrip("/") + OPENID_DISCOVERY_SUFFIX


def jwks_sources(request_authns: Iterable[RequestAuthentication]) -> list[str]:
    """Every URL the translation of these policies needs resolved (rules with inline jwks need none)."""
    return sorted({jwks_source(rule) for policy in request_authns for rule in policy.jwt_rules if not rule.jwks})


def ordered_rules(request_authns: Iterable[RequestAuthentication]) -> list[JwtRule]:
    """Rules in provider order: policies by namespace/name, rule index, then (stably) by issuer as
    istiod sorts them, so the same policies always give the same `origins-<i>` names."""
    policies = sorted(request_authns, key=lambda policy: (policy.namespace, policy.name))
    rules = [rule for policy in policies for rule in policy.jwt_rules]
    return sorted(rules, key=lambda rule: rule.issuer)


def istio_requirement(provider_names: Sequence[str]) -> dict[str, Any]:
    """The requirement istiod builds: any one provider, or every token valid (allow_missing).
    The proxies build the same one for a filter given without rules (`mesh.proxy.jwt_authn`)."""

    def provider_or_missing(name: str) -> dict[str, Any]:
        return {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}

    if len(provider_names) == 1:
        return provider_or_missing(provider_names[0])
    inner = [provider_or_missing(name) for name in provider_names]
    return {
        "requires_any": {
            "requirements": [{"provider_name": name} for name in provider_names]
            + [{"requires_all": {"requirements": inner}}]
        }
    }


def _unresolved_jwks(uri: str) -> dict[str, Any]:
    """`remote_jwks` for a URL istiod could not read; the cluster is named as istiod would name it."""
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {
        "http_uri": {"uri": uri, "cluster": f"outbound|{port}||{parts.hostname or ''}", "timeout": JWKS_FETCH_TIMEOUT},
        "cache_duration": REMOTE_JWKS_CACHE_DURATION,
    }


def jwt_provider(rule: JwtRule, jwks_for: Callable[[str], str | None]) -> dict[str, Any]:
    """One `JwtProvider`, default (empty/false) fields left out as protobuf JSON leaves them out."""
    provider: dict[str, Any] = {"issuer": rule.issuer}
    if rule.audiences:
        provider["audiences"] = list(rule.audiences)
    jwks = rule.jwks or jwks_for(jwks_source(rule))
    if jwks is None:
        provider["remote_jwks"] = _unresolved_jwks(jwks_source(rule))
    else:
        provider["local_jwks"] = {"inline_string": jwks}
    if rule.forward_original_token:
        provider["forward"] = True
    if rule.from_headers:
        provider["from_headers"] = [
            {"name": h.name, **({"value_prefix": h.prefix} if h.prefix else {})} for h in rule.from_headers
        ]
    if rule.from_params:
        provider["from_params"] = list(rule.from_params)
    if rule.from_cookies:
        provider["from_cookies"] = list(rule.from_cookies)
    if rule.output_payload_to_header:
        provider["forward_payload_header"] = rule.output_payload_to_header
    if rule.output_claim_to_headers:
        provider["claim_to_headers"] = [
            {"header_name": c.header, "claim_name": c.claim} for c in rule.output_claim_to_headers
        ]
    provider["payload_in_metadata"] = rule.issuer
    return provider


def jwt_authn_filter(
    request_authns: list[RequestAuthentication], jwks_for: Callable[[str], str | None]
) -> dict[str, Any] | None:
    """The `envoy.filters.http.jwt_authn` HTTP filter for a proxy these policies apply to, or None
    when they have no JWT rule (then istiod adds no filter). `jwks_for(url)` is what istiod knows
    of a URL now (`JwksResolver.lookup`); it is never asked to fetch, so this stays pure."""
    rules = ordered_rules(request_authns)
    if not rules:
        return None
    names = [f"origins-{index}" for index in range(len(rules))]
    return {
        "name": JWT_AUTHN_FILTER,
        "typed_config": {
            "@type": JWT_AUTHN_TYPE_URL,
            "providers": {name: jwt_provider(rule, jwks_for) for name, rule in zip(names, rules)},
            "rules": [{"match": {"prefix": "/"}, "requires": istio_requirement(names)}],
            "bypass_cors_preflight": True,
        },
    }
