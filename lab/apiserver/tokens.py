"""The lab's ServiceAccount tokens: labd issues and reviews them, as the kube-apiserver does
(istiod asks for a review through the lab API, as it sends Kubernetes a TokenReview).

The claims are those of a Kubernetes bound (projected) token, so a token printed from the lab reads
like one from a cluster. Expiry and not-before are checked with Kubernetes' one-minute leeway, and
the rejection reasons use the API server's wording.

Keys: Ed25519 (EdDSA) by default, because it is generated in microseconds and the token is
only ever verified by our own code; RSA (RS256, what clusters use) and P-256 (ES256) keys load too.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://kubernetes.default.svc.cluster.local"
CA_AUDIENCE = "istio-ca"  # the audience ztunnel's token is projected for, and istiod requires
DEFAULT_TOKEN_TTL = timedelta(hours=1)
LEEWAY = timedelta(minutes=1)  # Kubernetes' validator tolerates this much clock skew
_SUB_PREFIX = "system:serviceaccount:"


class InvalidToken(Exception):
    """The token does not authenticate anyone; `reason` says why (for the log, not the client)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TokenUser:
    """Who a reviewed token belongs to (a TokenReview's `status.user`): its pod and service account.

    `node` is the token's own node claim when present (Kubernetes ≥ 1.30 adds one).
    """

    pod_name: str
    pod_uid: str
    namespace: str
    service_account: str
    node: str | None = None


class TokenVerifier:
    """Reviews tokens with the issuer's public key only (what istiod needs)."""

    def __init__(self, public_key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        self._public_key = public_key
        self._algorithm = _algorithm_for(public_key)

    @classmethod
    def from_pem(cls, public_pem: str | bytes) -> TokenVerifier:
        data = public_pem.encode() if isinstance(public_pem, str) else public_pem
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, (ed25519.Ed25519PublicKey, rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise ValueError(f"unsupported token key type {type(key).__name__}")  # as _algorithm_for says
        return cls(key)

    def review(self, token: str, audience: str = CA_AUDIENCE, now: datetime | None = None) -> TokenUser:
        """The user a valid token names; InvalidToken for a bad signature, expiry, audience or shape."""
        now = _utc(now)
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=[self._algorithm],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise InvalidToken("invalid signature: the token was not signed by the lab's API server") from None
        except jwt.InvalidTokenError as e:
            raise InvalidToken(f"malformed token: {e}") from None
        _check_times(claims, now)
        _check_issuer_and_audience(claims, audience)
        return _caller_from(claims)


class TokenIssuer:
    """Holds the signing key; issues tokens and can review them itself."""

    def __init__(self, key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        self._key = key
        self._algorithm = _algorithm_for(key.public_key())
        self._kid = _key_id(key.public_key())
        self._verifier = TokenVerifier(key.public_key())

    @classmethod
    def generate(cls) -> TokenIssuer:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, key_pem: str | bytes) -> TokenIssuer:
        data = key_pem.encode() if isinstance(key_pem, str) else key_pem
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise ValueError(f"unsupported token signing key type {type(key).__name__}")
        return cls(key)

    def to_pem(self) -> str:
        """The signing key (unencrypted PKCS#8): store it with mode 0600."""
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def public_key_pem(self) -> str:
        """What a verifier needs (the API server's service-account public key)."""
        return (
            self._key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def verifier(self) -> TokenVerifier:
        return self._verifier

    def issue(
        self,
        namespace: str,
        service_account: str,
        pod_name: str,
        pod_uid: str,
        audience: str = CA_AUDIENCE,
        ttl: timedelta = DEFAULT_TOKEN_TTL,
        node: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """A token bound to one pod, as the kubelet projects into `/var/run/secrets/tokens/`."""
        now = _utc(now)
        issued = int(now.timestamp())
        kube: dict[str, Any] = {
            "namespace": namespace,
            "pod": {"name": pod_name, "uid": pod_uid},
            "serviceaccount": {"name": service_account},
        }
        if node:
            kube["node"] = {"name": node}
        claims = {
            "aud": [audience],
            "exp": issued + int(ttl.total_seconds()),
            "iat": issued,
            "iss": ISSUER,
            "kubernetes.io": kube,
            "nbf": issued,
            "sub": f"{_SUB_PREFIX}{namespace}:{service_account}",
        }
        return jwt.encode(claims, self._key, algorithm=self._algorithm, headers={"kid": self._kid})

    def review(self, token: str, audience: str = CA_AUDIENCE, now: datetime | None = None) -> TokenUser:
        return self._verifier.review(token, audience, now)


def _check_times(claims: dict, now: datetime) -> None:
    for name in ("exp", "iat", "nbf"):
        if not isinstance(claims.get(name), (int, float)):
            raise InvalidToken(f"malformed token: claim {name!r} missing or not a number")
    t = now.timestamp()
    leeway = LEEWAY.total_seconds()
    if t > claims["exp"] + leeway:
        raise InvalidToken("service account token has expired")
    if t < claims["nbf"] - leeway:
        raise InvalidToken("service account token is not valid yet")
    if t < claims["iat"] - leeway:
        raise InvalidToken("service account token is issued in the future")


def _check_issuer_and_audience(claims: dict, audience: str) -> None:
    if claims.get("iss") != ISSUER:
        raise InvalidToken(f"token issuer {claims.get('iss')!r} is not {ISSUER!r}")
    aud = claims.get("aud")
    auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in auds:
        raise InvalidToken(f"token audiences {auds} is invalid for the target audiences [{audience!r}]")


def _caller_from(claims: dict) -> TokenUser:
    kube = claims.get("kubernetes.io")
    sub = claims.get("sub")
    if not isinstance(kube, dict) or not isinstance(sub, str) or not sub.startswith(_SUB_PREFIX):
        raise InvalidToken("malformed token: not a service account token")
    namespace = kube.get("namespace")
    service_account = (kube.get("serviceaccount") or {}).get("name")
    if not namespace or not service_account or sub != f"{_SUB_PREFIX}{namespace}:{service_account}":
        raise InvalidToken(f"malformed token: subject {sub!r} does not match its kubernetes.io claims")
    pod = kube.get("pod") or {}
    if not pod.get("name") or not pod.get("uid"):
        raise InvalidToken("token is not bound to a pod")
    return TokenUser(
        pod_name=pod["name"],
        pod_uid=pod["uid"],
        namespace=namespace,
        service_account=service_account,
        node=(kube.get("node") or {}).get("name"),
    )


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


def _algorithm_for(public_key) -> str:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError(f"unsupported token key type {type(public_key).__name__}")


def _key_id(public_key) -> str:
    """Kubernetes' `kid`: unpadded base64url of the SHA-256 of the DER public key."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
