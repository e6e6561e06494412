from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from lab.apiserver.tokens import CA_AUDIENCE, ISSUER, InvalidToken, TokenIssuer, TokenUser, TokenVerifier

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
ZTUNNEL = TokenUser("ztunnel-abc", "5f1c-uid", "istio-system", "ztunnel")


@pytest.fixture(scope="module")
def key():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def issuer(key):
    return TokenIssuer(key)


def ztunnel_token(issuer, **kw):
    kw.setdefault("now", NOW)
    return issuer.issue("istio-system", "ztunnel", "ztunnel-abc", "5f1c-uid", **kw)


def claims(**overrides):
    base = {
        "aud": [CA_AUDIENCE],
        "exp": int(NOW.timestamp()) + 3600,
        "iat": int(NOW.timestamp()),
        "nbf": int(NOW.timestamp()),
        "iss": ISSUER,
        "sub": "system:serviceaccount:istio-system:ztunnel",
        "kubernetes.io": {
            "namespace": "istio-system",
            "pod": {"name": "ztunnel-abc", "uid": "5f1c-uid"},
            "serviceaccount": {"name": "ztunnel"},
        },
    }
    base.update(overrides)
    return base


def rejected(issuer, token, audience=CA_AUDIENCE, now=NOW):
    with pytest.raises(InvalidToken) as e:
        issuer.review(token, audience, now=now)
    return e.value.reason


def test_issue_then_review_names_the_pod(issuer):
    assert issuer.review(ztunnel_token(issuer), now=NOW) == ZTUNNEL


def test_claims_look_like_a_kubernetes_bound_token(issuer):
    token = ztunnel_token(issuer, ttl=timedelta(minutes=10), node="node-a")
    body = jwt.decode(token, options={"verify_signature": False})
    iat = int(NOW.timestamp())
    assert body == {
        "aud": ["istio-ca"],
        "iat": iat,
        "nbf": iat,
        "exp": iat + 600,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:istio-system:ztunnel",
        "kubernetes.io": {
            "namespace": "istio-system",
            "pod": {"name": "ztunnel-abc", "uid": "5f1c-uid"},
            "serviceaccount": {"name": "ztunnel"},
            "node": {"name": "node-a"},
        },
    }
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and len(header["kid"]) == 43


def test_node_claim_reaches_the_caller(issuer):
    assert issuer.review(ztunnel_token(issuer, node="node-a"), now=NOW).node == "node-a"


def test_wrong_audience(issuer):
    token = ztunnel_token(issuer, audience="kubernetes.default.svc")
    assert "audiences ['kubernetes.default.svc'] is invalid" in rejected(issuer, token)
    assert issuer.review(token, "kubernetes.default.svc", now=NOW) == ZTUNNEL


def test_expired(issuer):
    token = ztunnel_token(issuer, ttl=timedelta(hours=1))
    assert rejected(issuer, token, now=NOW + timedelta(hours=1, minutes=2)) == "service account token has expired"
    # Kubernetes tolerates one minute of clock skew
    assert issuer.review(token, now=NOW + timedelta(hours=1, seconds=30)) == ZTUNNEL


def test_not_yet_valid(issuer):
    token = ztunnel_token(issuer, now=NOW + timedelta(minutes=10))
    assert rejected(issuer, token) == "service account token is not valid yet"


def test_signed_by_another_key(issuer):
    other = TokenIssuer.generate()
    assert rejected(issuer, ztunnel_token(other)).startswith("invalid signature")


def test_tampered_payload(issuer, key):
    header, _, signature = ztunnel_token(issuer).split(".")
    forged = jwt.encode(claims(sub="system:serviceaccount:default:admin"), key, algorithm="EdDSA").split(".")[1]
    assert rejected(issuer, f"{header}.{forged}.{signature}").startswith("invalid signature")


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.e30."])
def test_malformed(issuer, token):
    assert rejected(issuer, token).startswith("malformed token")


def test_unsigned_token_is_refused(issuer):
    token = jwt.encode(claims(), None, algorithm="none")
    assert rejected(issuer, token).startswith("malformed token")


def test_wrong_issuer(issuer, key):
    token = jwt.encode(claims(iss="https://evil.example"), key, algorithm="EdDSA")
    assert "issuer" in rejected(issuer, token)


@pytest.mark.parametrize(
    "bad",
    [
        {"sub": "system:serviceaccount:default:admin"},  # sub disagrees with kubernetes.io
        {"sub": "alice"},
        {"kubernetes.io": "nope"},
        {"exp": "tomorrow"},
    ],
)
def test_inconsistent_claims(issuer, key, bad):
    assert rejected(issuer, jwt.encode(claims(**bad), key, algorithm="EdDSA")).startswith("malformed token")


def test_token_must_be_bound_to_a_pod(issuer, key):
    kube = {"namespace": "istio-system", "serviceaccount": {"name": "ztunnel"}}
    token = jwt.encode(claims(**{"kubernetes.io": kube}), key, algorithm="EdDSA")
    assert rejected(issuer, token) == "token is not bound to a pod"


def test_audience_may_be_a_plain_string(issuer, key):
    assert issuer.review(jwt.encode(claims(aud="istio-ca"), key, algorithm="EdDSA"), now=NOW) == ZTUNNEL


def test_the_key_persists(issuer):
    restored = TokenIssuer.from_pem(issuer.to_pem())
    assert issuer.review(ztunnel_token(restored), now=NOW) == ZTUNNEL


def test_a_verifier_needs_only_the_public_key(issuer):
    verifier = TokenVerifier.from_pem(issuer.public_key_pem())
    assert "PRIVATE" not in issuer.public_key_pem()
    assert verifier.review(ztunnel_token(issuer), now=NOW) == ZTUNNEL
    assert not hasattr(verifier, "issue")


def test_an_ecdsa_key_signs_es256():
    es = TokenIssuer(ec.generate_private_key(ec.SECP256R1()))
    token = ztunnel_token(es)
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert es.review(token, now=NOW) == ZTUNNEL


def test_review_uses_the_clock_by_default():
    live = TokenIssuer.generate()
    token = live.issue("default", "sleep", "sleep-1", "u1")
    assert live.review(token) == TokenUser("sleep-1", "u1", "default", "sleep")
