"""One JWT, parsed and checked the way Envoy's jwt_verify_lib does, with its status strings.

Apart from the request flow (`jwt_authn`): these are pure functions of one token (and a provider's
keys), and the status strings they return are the messages Envoy answers with, which the filter
and its tests compare against.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .jwt_keys import VerificationKey, algorithm_for, b64url_decode

# Status strings: the messages Envoy answers with (google jwt_verify_lib's status strings).
OK = "OK"
JWT_MISSING = "Jwt is missing"
JWT_NOT_YET_VALID = "Jwt not yet valid"
JWT_EXPIRED = "Jwt is expired"
JWT_BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
JWT_HEADER_BAD_BASE64 = "Jwt header is an invalid Base64url encoded"
JWT_HEADER_BAD_JSON = "Jwt header is an invalid JSON"
JWT_HEADER_BAD_ALG = "Jwt header [alg] field is required and must be a string"
JWT_HEADER_UNSUPPORTED_ALG = "Jwt header [alg] is not supported"
JWT_HEADER_BAD_KID = "Jwt header [kid] field is not a string"
JWT_PAYLOAD_BAD_BASE64 = "Jwt payload is an invalid Base64url encoded"
JWT_PAYLOAD_BAD_JSON = "Jwt payload is an invalid JSON"
JWT_SIGNATURE_BAD_BASE64 = "Jwt signature is an invalid Base64url encoded"
JWT_UNKNOWN_ISSUER = "Jwt issuer is not configured"
JWT_AUDIENCE_NOT_ALLOWED = "Audiences in Jwt are not allowed"
JWT_VERIFICATION_FAILS = "Jwt verification fails"
JWKS_NO_VALID_KEYS = "Jwks doesn't have any valid public key"
JWKS_KID_ALG_MISMATCH = "Jwks doesn't have key to match kid or alg from Jwt"
JWKS_FETCH_FAILED = "Jwks remote fetch is failed"

# Algorithms Envoy's parser accepts; anything else (e.g. "none") is refused while parsing.
SUPPORTED_ALGS = frozenset(
    {
        "ES256",
        "ES384",
        "ES512",
        "HS256",
        "HS384",
        "HS512",
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "EdDSA",
    }
)
_UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class ParsedJwt:
    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    payload_base64url: str
    signed_data: bytes
    signature: bytes
    alg: str
    kid: str
    iss: str
    sub: str
    nbf: int
    exp: int
    audiences: tuple[str, ...]


def _json_object(segment: str, bad_base64: str, bad_json: str) -> dict[str, Any] | str:
    """A token segment's JSON object, or the status string saying what is wrong with it."""
    raw = b64url_decode(segment)
    if raw is None:
        return bad_base64
    try:
        value = json.loads(raw)
    except ValueError:
        return bad_json
    return value if isinstance(value, dict) else bad_json


def _time_claim(payload: Mapping[str, Any], name: str) -> int | str:
    value = payload.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"Jwt payload [{name}] field is not an integer"
    if value < 0 or value > _UINT64_MAX:
        return f"Jwt payload [{name}] field is not a positive 64 bit integer"
    return int(value)


def parse_jwt(token: str) -> ParsedJwt | str:
    """The token's parts, or the status string of the first problem, in Envoy's order of checks."""
    parts = [part for part in token.split(".") if part]
    if len(parts) != 3:
        return JWT_BAD_FORMAT
    header = _json_object(parts[0], JWT_HEADER_BAD_BASE64, JWT_HEADER_BAD_JSON)
    if isinstance(header, str):
        return header
    alg = header.get("alg")
    if not isinstance(alg, str):
        return JWT_HEADER_BAD_ALG
    if alg not in SUPPORTED_ALGS:
        return JWT_HEADER_UNSUPPORTED_ALG
    kid = header.get("kid", "")
    if not isinstance(kid, str):
        return JWT_HEADER_BAD_KID
    payload = _json_object(parts[1], JWT_PAYLOAD_BAD_BASE64, JWT_PAYLOAD_BAD_JSON)
    if isinstance(payload, str):
        return payload
    for name in ("iss", "sub"):
        if not isinstance(payload.get(name, ""), str):
            return f"Jwt payload [{name}] field is not a string"
    times: dict[str, int] = {}
    for name in ("iat", "nbf", "exp"):
        value = _time_claim(payload, name)
        if isinstance(value, str):
            return value
        times[name] = value
    if not isinstance(payload.get("jti", ""), str):
        return "Jwt payload [jti] field is not a string"
    aud = payload.get("aud", [])
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        return "Jwt payload [aud] field is not a string or string list"
    signature = b64url_decode(parts[2])
    if signature is None:
        return JWT_SIGNATURE_BAD_BASE64
    return ParsedJwt(
        header=header,
        payload=payload,
        payload_base64url=parts[1],
        signed_data=f"{parts[0]}.{parts[1]}".encode(),
        signature=signature,
        alg=alg,
        kid=kid,
        iss=payload.get("iss", ""),
        sub=payload.get("sub", ""),
        nbf=times["nbf"],
        exp=times["exp"],
        audiences=tuple(audiences),
    )


def _sanitize_audience(audience: str) -> str:
    """Envoy compares audiences without an http(s):// prefix and a trailing slash."""
    for prefix in ("http://", "https://"):
        if audience.startswith(prefix):
            audience = audience[len(prefix) :]
            break
    return audience[:-1] if audience.endswith("/") else audience


def audiences_allowed(allowed: Iterable[str], token_audiences: Iterable[str]) -> bool:
    allowed_set = {_sanitize_audience(a) for a in allowed}
    return not allowed_set or any(_sanitize_audience(a) in allowed_set for a in token_audiences)


def verify_signature(jwt: ParsedJwt, keys: Sequence[VerificationKey]) -> str:
    """Try every key that fits the token's kid and alg; which message on failure is Envoy's."""
    kid_alg_matched = False
    for key in keys:
        if jwt.kid and key.kid and key.kid != jwt.kid:
            continue
        if key.alg and key.alg != jwt.alg:
            continue
        kid_alg_matched = True
        algorithm = algorithm_for(jwt.alg, key.kty)
        if algorithm is not None and key.public_key is not None:
            try:
                if algorithm.verify(jwt.signed_data, key.public_key, jwt.signature):
                    return OK
            except (ValueError, TypeError):
                pass
    return JWT_VERIFICATION_FAILS if kid_alg_matched else JWKS_KID_ALG_MISMATCH


def claim_header_value(payload: Mapping[str, Any], claim: str) -> str:
    """Claim `claim` (a dotted path) as `claim_to_headers` writes it; "" if absent or not a scalar."""
    value: Any = payload
    for part in claim.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return ""
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        if 0 <= value < 2**64 and float(value).is_integer():
            return str(int(value))
        return f"{float(value):f}"
    return ""  # objects and lists are not copied into headers
