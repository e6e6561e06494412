"""JWT authentication of one HTTP request, as Envoy's `jwt_authn` filter does it with the config
istiod generates from RequestAuthentication (see docs/l7-jwt.md).

Pure: the filter's JSON config and the request's headers in, a `JwtOutcome` out. The outcome says
whether the request goes on (`status` None) or is answered 401/403, and on success which request
headers change (the token removed, payload and claim headers added) and who the caller is
(`claims`, `principal` = `<iss>/<sub>`), which the L7 authorization (`mesh.policy.http`) uses next.

What Istio's config means, in short: a request without any token passes with no identity; a token
that is present must verify against the provider of its issuer, or the request is refused. The
requirement tree (`requires_any`, `requires_all`, `allow_missing`, ...) is evaluated the way
Envoy's verifiers run it, so messages match Envoy's for the same request.

Keys: RSA (RS*/PS*), EC (ES*) and Ed25519 (EdDSA) verified with PyJWT's algorithm objects, chosen
from the token's `alg` AND the key's `kty`, never from the token alone; HMAC is never verified, so
neither `alg: none` nor an HS256 token signed with a public key can pass. The lab's proxies do not
fetch JWKS themselves: a provider with `remote_jwks` (istiod's sign that it could not resolve the
`jwksUri`) fails every token with "Jwks remote fetch is failed".

This module is the filter: its config (providers, rules) and the request flow. One token's checks
and Envoy's status strings are in `jwt_token`, the JWKS and algorithm choice in `jwt_keys`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import unquote

from mesh.istiod.jwt import istio_requirement

from .jwt_keys import VerificationKey, parse_jwks
from .jwt_token import (
    JWKS_FETCH_FAILED,
    JWKS_NO_VALID_KEYS,
    JWT_AUDIENCE_NOT_ALLOWED,
    JWT_EXPIRED,
    JWT_MISSING,
    JWT_NOT_YET_VALID,
    JWT_UNKNOWN_ISSUER,
    OK,
    ParsedJwt,
    audiences_allowed,
    claim_header_value,
    parse_jwt,
    verify_signature,
)

DEFAULT_HEADER = ("authorization", "Bearer ")
DEFAULT_PARAM = "access_token"
DEFAULT_CLOCK_SKEW_SECONDS = 60
MAX_REALM_PATH_LENGTH = 256
DETAIL_PREFIX = "jwt_authn_access_denied"
_JWT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Provider:
    """One `JwtProvider` of the filter config. `jwks` None: the keys could not be had (fetch failed)."""

    name: str
    issuer: str = ""
    audiences: tuple[str, ...] = ()
    jwks: Mapping[str, Any] | None = None
    from_headers: tuple[tuple[str, str], ...] = ()  # (header name, value prefix)
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    forward: bool = False
    forward_payload_header: str | None = None
    claim_to_headers: tuple[tuple[str, str], ...] = ()  # (header name, claim name)
    payload_in_metadata: str = ""
    clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS
    keys: tuple[VerificationKey, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Parsed once, as Envoy does when it loads the config, not per request.
        object.__setattr__(self, "keys", None if self.jwks is None else parse_jwks(self.jwks))

    def locations(self) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...]]:
        """(headers, params, cookies) to look in: the configured ones, or Envoy's defaults."""
        if self.from_headers or self.from_params or self.from_cookies:
            headers = tuple((name.lower(), prefix) for name, prefix in self.from_headers)
            return headers, self.from_params, self.from_cookies
        return (DEFAULT_HEADER,), (DEFAULT_PARAM,), ()


@dataclass(frozen=True)
class JwtAuthnFilter:
    """The whole filter: providers in config order, (path prefix, requirement) rules."""

    providers: tuple[Provider, ...]
    rules: tuple[tuple[str, Mapping[str, Any]], ...]
    bypass_cors_preflight: bool = True


def _typed_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    return config.get("typed_config", config) if "providers" not in config else config


def _provider(name: str, spec: Mapping[str, Any]) -> Provider:
    if "remote_jwks" in spec:
        jwks: Mapping[str, Any] | None = None  # the lab's proxies never fetch: a fetch that failed
    else:
        inline = (spec.get("local_jwks") or {}).get("inline_string") or ""
        try:
            jwks = json.loads(inline) if inline else {}
        except ValueError:
            jwks = {}
        if not isinstance(jwks, dict):
            jwks = {}
    return Provider(
        name=name,
        issuer=spec.get("issuer") or "",
        audiences=tuple(spec.get("audiences") or ()),
        jwks=jwks,
        from_headers=tuple((h["name"], h.get("value_prefix") or "") for h in spec.get("from_headers") or ()),
        from_params=tuple(spec.get("from_params") or ()),
        from_cookies=tuple(spec.get("from_cookies") or ()),
        forward=bool(spec.get("forward")),
        forward_payload_header=spec.get("forward_payload_header") or None,
        claim_to_headers=tuple((c["header_name"], c["claim_name"]) for c in spec.get("claim_to_headers") or ()),
        payload_in_metadata=spec.get("payload_in_metadata") or "",
        clock_skew_seconds=int(spec.get("clock_skew_seconds") or DEFAULT_CLOCK_SKEW_SECONDS),
    )


def providers_from_filter_config(config: Mapping[str, Any]) -> list[Provider]:
    """The providers of a JwtAuthentication config (the typed_config, or the whole filter)."""
    return [_provider(name, spec) for name, spec in (_typed_config(config).get("providers") or {}).items()]


def filter_from_config(config: Mapping[str, Any]) -> JwtAuthnFilter:
    """The filter as configured: providers plus its rules (only prefix/path matches are used)."""
    typed = _typed_config(config)
    rules = []
    for rule in typed.get("rules") or ():
        match = rule.get("match") or {}
        prefix = match.get("prefix", match.get("path", "/"))
        rules.append((prefix, rule.get("requires") or {}))
    providers = tuple(providers_from_filter_config(typed))
    unknown = sorted(_named_providers([req for _, req in rules]) - {p.name for p in providers})
    if unknown:
        raise ValueError(f"Required provider {unknown} is not configured")
    return JwtAuthnFilter(
        providers=providers, rules=tuple(rules), bypass_cors_preflight=bool(typed.get("bypass_cors_preflight", False))
    )


def _named_providers(requirements: Iterable[Mapping[str, Any]]) -> set[str]:
    names: set[str] = set()
    for requirement in requirements:
        if "provider_name" in requirement:
            names.add(requirement["provider_name"])
        elif "provider_and_audiences" in requirement:
            names.add(requirement["provider_and_audiences"]["provider_name"])
        for group in ("requires_any", "requires_all"):
            if group in requirement:
                names |= _named_providers(requirement[group].get("requirements") or [])
    return names


# ---------------------------------------------------------------------------------------------
# One request


@dataclass(frozen=True)
class JwtOutcome:
    status: int | None  # None: the request goes on; else 401 or 403 (answered locally)
    body: str = ""
    response_headers: tuple[tuple[str, str], ...] = ()
    claims: Mapping[str, Any] | None = None  # the verified payload; None without a (valid) token
    principal: str | None = None  # `<iss>/<sub>`, Istio's request.auth.principal
    audiences: tuple[str, ...] = ()
    provider: str | None = None
    request_headers_to_remove: tuple[str, ...] = ()
    request_headers_to_add: tuple[tuple[str, str], ...] = ()
    path: str = ""  # the request target to forward (access_token removed unless forwarded)
    detail: str | None = None  # Envoy's response code details on a refusal
    request_headers: tuple[tuple[str, str], ...] = ()  # the headers to forward, changes applied


@dataclass
class _Location:
    token: str
    issuers: frozenset[str] | None  # None: any issuer may use this location
    kind: str  # "header", "param" or "cookie"
    name: str

    def issuer_allowed(self, issuer: str) -> bool:
        return self.issuers is None or issuer in self.issuers


@dataclass
class _Request:
    """The request as the filter mutates it; `log` records changes to report them at the end."""

    headers: list[tuple[str, str]]
    path: str
    log: list[tuple[str, str, str]] = field(default_factory=list)
    payloads: dict[str, tuple[Provider, ParsedJwt]] = field(default_factory=dict)

    def remove(self, name: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k != name]
        self.log.append(("remove", name, ""))

    def add(self, name: str, value: str) -> None:
        self.headers.append((name, value))
        self.log.append(("add", name, value))

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def remove_param(self, name: str) -> None:
        target, mark, query = self.path.partition("?")
        if not mark:
            return
        kept = [pair for pair in query.split("&") if pair and unquote(pair.partition("=")[0]) != name]
        self.path = target + ("?" + "&".join(kept) if kept else "")


def _query_params(path: str) -> dict[str, str]:
    first: dict[str, str] = {}
    for pair in path.partition("?")[2].split("&"):
        if pair:
            key, _, value = pair.partition("=")
            first.setdefault(unquote(key), unquote(value))
    return first


def _cookies(request: _Request) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in request.values("cookie"):
        for item in header.split(";"):
            key, eq, value = item.strip().partition("=")
            if eq and key not in found:
                found[key] = value.strip('"')
    return found


def _strip_to_token(value: str, start: int) -> str:
    """From `start`, skip to the first character a JWT can have and keep the rest (Envoy's way)."""
    for index in range(start, len(value)):
        if value[index] in _JWT_CHARS:
            return value[index:]
    return value


def _with_issuer(issuers: frozenset[str] | None, issuer: str) -> frozenset[str] | None:
    """A location's allowed issuers plus a provider's; None (any issuer) once one has no issuer."""
    return None if issuers is None or not issuer else issuers | {issuer}


def _extract(providers: Sequence[Provider], request: _Request) -> list[_Location]:
    """Tokens at the providers' locations: headers (by name+prefix), then params, then cookies."""
    header_specs: dict[tuple[str, str], frozenset[str] | None] = {}
    param_specs: dict[str, frozenset[str] | None] = {}
    cookie_specs: dict[str, frozenset[str] | None] = {}
    for provider in providers:
        headers, params, cookies = provider.locations()
        for spec in headers:
            header_specs[spec] = _with_issuer(header_specs.get(spec, frozenset()), provider.issuer)
        for name in params:
            param_specs[name] = _with_issuer(param_specs.get(name, frozenset()), provider.issuer)
        for name in cookies:
            cookie_specs[name] = _with_issuer(cookie_specs.get(name, frozenset()), provider.issuer)

    tokens: list[_Location] = []
    for name, prefix in sorted(header_specs, key=lambda spec: spec[0] + spec[1]):
        for value in request.values(name):
            if prefix:
                position = value.find(prefix)
                if position < 0:
                    continue
                value = _strip_to_token(value, position + len(prefix))
            tokens.append(_Location(value, header_specs[name, prefix], "header", name))
    query = _query_params(request.path) if param_specs else {}
    tokens += [
        _Location(query[name], param_specs[name], "param", name) for name in sorted(param_specs) if name in query
    ]
    request_cookies = _cookies(request) if cookie_specs else {}
    tokens += [
        _Location(request_cookies[name], cookie_specs[name], "cookie", name)
        for name in sorted(cookie_specs)
        if name in request_cookies
    ]
    return tokens


class _Run:
    """One request through the requirement tree, with Envoy's order and short-circuits."""

    def __init__(self, jwt_filter: JwtAuthnFilter, request: _Request, now: float):
        self.filter = jwt_filter
        self.by_name = {provider.name: provider for provider in jwt_filter.providers}
        self.request = request
        self.now = int(now)

    def find_by_issuer(self, issuer: str) -> Provider | None:
        for wanted in (issuer, ""):
            for provider in self.filter.providers:
                if provider.issuer == wanted:
                    return provider
        return None

    def sanitize(self, providers: Iterable[Provider]) -> None:
        """Drop client-sent copies of the headers a provider writes, so they cannot be forged."""
        for provider in providers:
            names = ([provider.forward_payload_header] if provider.forward_payload_header else []) + [
                header for header, _ in provider.claim_to_headers
            ]
            for name in names:
                if self.request.values(name.lower()):
                    self.request.remove(name.lower())

    def requirement(self, requirement: Mapping[str, Any]) -> str:
        if "provider_name" in requirement:
            return self.provider(self.by_name[requirement["provider_name"]], None)
        if "provider_and_audiences" in requirement:
            spec = requirement["provider_and_audiences"]
            return self.provider(self.by_name[spec["provider_name"]], tuple(spec.get("audiences") or ()))
        if "requires_any" in requirement:
            return self.any(requirement["requires_any"].get("requirements") or [])
        if "requires_all" in requirement:
            for child in requirement["requires_all"].get("requirements") or []:
                status = self.requirement(child)
                if status != OK:
                    return status
            return OK
        if "allow_missing" in requirement:
            return self.tokens_of([], allow_failed=False)  # no providers named here: nothing to check
        return OK  # allow_missing_or_failed, or no requirement at all

    def any(self, children: Sequence[Mapping[str, Any]]) -> str:
        """Regular children in order, the bypass one (allow_missing[_or_failed]) last."""
        regular = [c for c in children if "allow_missing" not in c and "allow_missing_or_failed" not in c]
        bypass = next(
            (c for c in children if "allow_missing_or_failed" in c),
            next((c for c in children if "allow_missing" in c), None),
        )
        status = OK
        for child in regular:
            status = self.requirement(child)
            if status == OK:
                return OK
        if bypass is not None:
            used = [
                self.by_name[c.get("provider_name") or c["provider_and_audiences"]["provider_name"]]
                for c in regular
                if "provider_name" in c or "provider_and_audiences" in c
            ]
            status = self.tokens_of(used, allow_failed="allow_missing_or_failed" in bypass)
        return status

    def provider(self, provider: Provider, audiences: tuple[str, ...] | None) -> str:
        """A provider requirement: it needs a token, and every token it finds must verify."""
        self.sanitize([provider])
        tokens = _extract([provider], self.request)
        if not tokens:
            return JWT_MISSING
        status = OK
        while tokens and status == OK:
            status = self.verify(tokens.pop(), provider, audiences)
        return status

    def tokens_of(self, providers: Sequence[Provider], *, allow_failed: bool) -> str:
        """allow_missing / allow_missing_or_failed: no token is fine; each token is checked
        against the provider of its issuer, and the last one checked decides."""
        self.sanitize(providers)
        tokens = _extract(providers, self.request)
        status = OK
        while tokens:
            status = self.verify(tokens.pop(), None, None)
        return OK if allow_failed else status

    def verify(self, location: _Location, provider: Provider | None, audiences: tuple[str, ...] | None) -> str:
        jwt = parse_jwt(location.token)
        if isinstance(jwt, str):
            return jwt
        if not location.issuer_allowed(jwt.iss):
            return JWT_UNKNOWN_ISSUER
        provider = provider or self.find_by_issuer(jwt.iss)
        if provider is None:
            return JWT_UNKNOWN_ISSUER
        skew = provider.clock_skew_seconds if provider.clock_skew_seconds > 0 else DEFAULT_CLOCK_SKEW_SECONDS
        if self.now + skew < jwt.nbf:
            return JWT_NOT_YET_VALID
        if jwt.exp and self.now > jwt.exp + skew:
            return JWT_EXPIRED
        if not audiences_allowed(provider.audiences if audiences is None else audiences, jwt.audiences):
            return JWT_AUDIENCE_NOT_ALLOWED
        if provider.keys is None:
            return JWKS_FETCH_FAILED
        if not provider.keys:
            return JWKS_NO_VALID_KEYS
        status = verify_signature(jwt, provider.keys)
        if status == OK:
            self.accept(location, provider, jwt)
        return status

    def accept(self, location: _Location, provider: Provider, jwt: ParsedJwt) -> None:
        if provider.forward_payload_header:
            self.request.add(provider.forward_payload_header.lower(), jwt.payload_base64url)
        for header, claim in provider.claim_to_headers:
            value = claim_header_value(jwt.payload, claim)
            if value:
                self.request.add(header.lower(), value)
        if not provider.forward:
            if location.kind == "header":
                self.request.remove(location.name)
            elif location.kind == "param":
                self.request.remove_param(location.name)
        self.request.payloads[provider.payload_in_metadata or provider.name] = (provider, jwt)


def _changes(log: Sequence[tuple[str, str, str]]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The header log as (names to remove from the original, headers to append after that)."""
    removed: list[str] = []
    added: list[tuple[str, str]] = []
    for action, name, value in log:
        if action == "remove":
            added = [(n, v) for n, v in added if n != name]
            if name not in removed:
                removed.append(name)
        else:
            added.append((name, value))
    return tuple(removed), tuple(added)


def _denied(status: str, scheme: str, authority: str, path: str, request: _Request) -> JwtOutcome:
    code = 403 if status == JWT_AUDIENCE_NOT_ALLOWED else 401
    realm = f'Bearer realm="{scheme}://{authority}{path[:MAX_REALM_PATH_LENGTH]}"'
    if status != JWT_MISSING:
        realm += ', error="invalid_token"'
    detail = DETAIL_PREFIX + "{" + re.sub(r"\s", "_", status) + "}"  # no spaces: it goes to access logs
    return JwtOutcome(
        status=code, body=status, response_headers=(("www-authenticate", realm),), path=path, detail=detail
    )


def _is_cors_preflight(method: str, headers: Sequence[tuple[str, str]]) -> bool:
    present = {name for name, value in headers if value}
    return method == "OPTIONS" and "origin" in present and "access-control-request-method" in present


def authenticate(
    providers: Sequence[Provider] | JwtAuthnFilter,
    *,
    scheme: str,
    authority: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    now: float,
    method: str = "GET",
) -> JwtOutcome:
    """Authenticate one request. `providers` as a plain list means Istio's requirement over them;
    `headers` have lower-case names; `path` is the request target, query included."""
    jwt_filter = (
        providers
        if isinstance(providers, JwtAuthnFilter)
        else JwtAuthnFilter(
            providers=tuple(providers),
            rules=(("/", istio_requirement([p.name for p in providers])),) if providers else (),
        )
    )
    headers = [(name.lower(), value) for name, value in headers]
    passed = JwtOutcome(status=None, path=path, request_headers=tuple(headers))
    if jwt_filter.bypass_cors_preflight and _is_cors_preflight(method, headers):
        return passed
    requirement = next((req for prefix, req in jwt_filter.rules if path.startswith(prefix)), None)
    if requirement is None:
        return passed
    request = _Request(headers=list(headers), path=path)
    status = _Run(jwt_filter, request, now).requirement(requirement)
    if status != OK:
        return _denied(status, scheme, authority, path, request)
    removed, added = _changes(request.log)
    # Istio's request.auth.* come from the first provider (in config order) with a verified payload.
    verified = next(
        (
            request.payloads[key]
            for key in (p.payload_in_metadata or p.name for p in jwt_filter.providers)
            if key in request.payloads
        ),
        None,
    )
    claims = principal = provider_name = None
    audiences: tuple[str, ...] = ()
    if verified is not None:
        provider, jwt = verified
        claims, provider_name, audiences = dict(jwt.payload), provider.name, jwt.audiences
        principal = f"{jwt.iss}/{jwt.sub}" if jwt.iss and jwt.sub else None
    return JwtOutcome(
        status=None,
        claims=claims,
        principal=principal,
        audiences=audiences,
        provider=provider_name,
        request_headers_to_remove=removed,
        request_headers_to_add=added,
        path=request.path,
        request_headers=tuple(request.headers),
    )
