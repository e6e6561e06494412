"""JWKS for the proxy's jwt_authn filter: which keys of a set Envoy keeps, and which PyJWT
algorithm may verify a token with one.

Apart from the token checks (`jwt_token`) and the request flow (`jwt_authn`): keys are parsed once,
when a provider is configured, and this is the one place that decides which key types and
algorithms can ever verify anything (never HMAC, never the token's `alg` alone).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, RSAPSSAlgorithm
from jwt.exceptions import InvalidKeyError

_HASH = {"256": RSAAlgorithm.SHA256, "384": RSAAlgorithm.SHA384, "512": RSAAlgorithm.SHA512}
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


@dataclass(frozen=True)
class VerificationKey:
    """One usable JWK: its public key object (None for an HMAC key, which is never used)."""

    kty: str
    kid: str = ""
    alg: str = ""
    public_key: Any = None


def b64url_decode(text: object) -> bytes | None:
    """base64url as JWTs and JWKs carry it (padding optional); None if `text` is not that."""
    if not isinstance(text, str) or not _BASE64URL.match(text) or len(text.rstrip("=")) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return None


def _rsa_key(jwk: Mapping[str, Any], alg: str) -> Any:
    if alg and alg[:2] not in ("RS", "PS"):
        return None
    n, e = b64url_decode(jwk.get("n")), b64url_decode(jwk.get("e"))
    if not n or not e or int.from_bytes(e, "big") not in (3, 65537):
        return None
    try:
        return rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    except ValueError:
        return None


def _ec_key(jwk: Mapping[str, Any], alg: str) -> Any:
    crv = jwk.get("crv", "")
    if (alg and not alg.startswith("ES")) or not isinstance(crv, str):
        return None
    if alg and crv and _EC_CURVES.get(alg) != crv:
        return None
    curve = crv or _EC_CURVES.get(alg, "P-256")
    if curve not in _EC_CURVES.values() or not isinstance(jwk.get("x"), str) or not isinstance(jwk.get("y"), str):
        return None
    try:
        return ECAlgorithm.from_jwk({"kty": "EC", "crv": curve, "x": jwk["x"], "y": jwk["y"]})
    except (InvalidKeyError, ValueError, binascii.Error):
        return None


def _okp_key(jwk: Mapping[str, Any], alg: str) -> Any:
    if (alg and alg != "EdDSA") or jwk.get("crv") != "Ed25519" or not isinstance(jwk.get("x"), str):
        return None
    try:
        return OKPAlgorithm.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]})
    except (InvalidKeyError, ValueError, binascii.Error):
        return None


def _verification_key(jwk: Mapping[str, Any]) -> VerificationKey | None:
    kty = jwk.get("kty")
    if not isinstance(kty, str):
        return None
    raw_kid, raw_alg = jwk.get("kid"), jwk.get("alg")
    kid = raw_kid if isinstance(raw_kid, str) else ""
    alg = raw_alg if isinstance(raw_alg, str) else ""
    if kty == "oct":
        usable = (not alg or alg in ("HS256", "HS384", "HS512")) and b64url_decode(jwk.get("k")) is not None
        return VerificationKey(kty, kid, alg, None) if usable else None
    build = {"RSA": _rsa_key, "EC": _ec_key, "OKP": _okp_key}.get(kty)
    public_key = build(jwk, alg) if build else None
    return VerificationKey(kty, kid, alg, public_key) if public_key is not None else None


def parse_jwks(jwks: Mapping[str, Any]) -> tuple[VerificationKey, ...]:
    """The usable keys of a JWK set; empty when it has none (then every token fails)."""
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        return ()
    parsed = (_verification_key(jwk) for jwk in keys if isinstance(jwk, Mapping))
    return tuple(key for key in parsed if key is not None)


def algorithm_for(alg: str, kty: str) -> Any:
    """The PyJWT algorithm for a token `alg` on a key of type `kty`, or None if they do not pair."""
    if kty == "RSA" and alg[:2] == "RS":
        return RSAAlgorithm(_HASH[alg[2:]])
    if kty == "RSA" and alg[:2] == "PS":
        return RSAPSSAlgorithm(_HASH[alg[2:]])
    if kty == "EC" and alg[:2] == "ES":
        return ECAlgorithm(_HASH[alg[2:]])
    if kty == "OKP" and alg == "EdDSA":
        return OKPAlgorithm()
    return None  # HMAC, and any alg that does not fit the key type: never verified
