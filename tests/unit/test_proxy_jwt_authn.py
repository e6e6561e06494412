"""The proxy's JWT authentication (mesh/proxy/jwt_authn.py, jwt_token.py, jwt_keys.py) with keys minted here;
see docs/l7-jwt.md."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mesh.istiod.jwt import istio_requirement
from mesh.proxy.jwt_authn import (
    JwtAuthnFilter,
    Provider,
    authenticate,
    filter_from_config,
    providers_from_filter_config,
)
from mesh.proxy.jwt_keys import parse_jwks
from mesh.proxy.jwt_token import (
    JWKS_FETCH_FAILED,
    JWKS_KID_ALG_MISMATCH,
    JWKS_NO_VALID_KEYS,
    JWT_AUDIENCE_NOT_ALLOWED,
    JWT_BAD_FORMAT,
    JWT_EXPIRED,
    JWT_HEADER_BAD_BASE64,
    JWT_HEADER_BAD_JSON,
    JWT_HEADER_UNSUPPORTED_ALG,
    JWT_NOT_YET_VALID,
    JWT_PAYLOAD_BAD_BASE64,
    JWT_PAYLOAD_BAD_JSON,
    JWT_UNKNOWN_ISSUER,
    JWT_VERIFICATION_FAILS,
)

REPO = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000
ISSUER = "issuer@lab.test"
OTHER_ISSUER = "other@lab.test"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PSS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def jwk(private_key, kid: str, **extra) -> dict:
    """The public JWK of a key minted here, as an identity provider would publish it."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        algorithm = pyjwt.algorithms.RSAAlgorithm
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        algorithm = pyjwt.algorithms.ECAlgorithm
    else:
        algorithm = pyjwt.algorithms.OKPAlgorithm
    return {**json.loads(algorithm.to_jwk(private_key.public_key())), "kid": kid, **extra}


JWKS = {"keys": [jwk(RSA_KEY, "rsa-1"), jwk(PSS_KEY, "pss-1"), jwk(EC_KEY, "ec-1"), jwk(ED_KEY, "ed-1")]}


def claims(**overrides) -> dict:
    return {"iss": ISSUER, "sub": "alice", "exp": NOW + 3600, "iat": NOW, **overrides}


def mint(payload: dict | None = None, *, key=RSA_KEY, alg: str = "RS256", kid: str | None = "rsa-1") -> str:
    headers = {"kid": kid} if kid is not None else {}
    return pyjwt.encode(payload if payload is not None else claims(), key, algorithm=alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict, payload: dict, signature: bytes = b"sig") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"


def provider(**overrides) -> Provider:
    fields = {"name": "origins-0", "issuer": ISSUER, "jwks": JWKS, "payload_in_metadata": ISSUER, **overrides}
    return Provider(**fields)


def run(providers, token: str | None = None, *, path: str = "/get", headers=(), method: str = "GET"):
    sent = list(headers) + ([("authorization", f"Bearer {token}")] if token is not None else [])
    return authenticate(
        providers, scheme="http", authority="httpbin:8000", path=path, headers=sent, now=NOW, method=method
    )


def assert_refused(outcome, message: str, status: int = 401) -> None:
    assert (outcome.status, outcome.body) == (status, message)
    assert outcome.claims is None and outcome.principal is None
    assert outcome.detail == "jwt_authn_access_denied{" + message.replace(" ", "_") + "}"


# --- accepted tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, alg, kid",
    [
        *((RSA_KEY, alg, "rsa-1") for alg in ("RS256", "RS384", "RS512")),
        *((PSS_KEY, alg, "pss-1") for alg in ("PS256", "PS384", "PS512")),
        (EC_KEY, "ES256", "ec-1"),
        (ED_KEY, "EdDSA", "ed-1"),
    ],
)
def test_valid_token_gives_claims_and_principal(key, alg, kid):
    outcome = run([provider()], mint(claims(aud="billing"), key=key, alg=alg, kid=kid))
    assert outcome.status is None
    assert outcome.principal == f"{ISSUER}/alice"
    assert outcome.claims["sub"] == "alice" and outcome.audiences == ("billing",)
    assert outcome.provider == "origins-0"
    assert outcome.request_headers_to_remove == ("authorization",)  # not forwarded by default
    assert outcome.request_headers == ()


def test_token_without_kid_tries_every_key():
    outcome = run([provider()], mint(key=EC_KEY, alg="ES256", kid=None))
    assert outcome.status is None and outcome.principal == f"{ISSUER}/alice"


def test_no_token_goes_on_without_identity():
    outcome = run([provider()], None, headers=[("x-other", "1")])
    assert outcome.status is None and outcome.claims is None and outcome.principal is None
    assert outcome.request_headers == (("x-other", "1"),) and outcome.path == "/get"


def test_no_providers_always_go_on():
    outcome = run([], "deadbeef")
    assert outcome.status is None and outcome.claims is None


def test_clock_skew_of_60_seconds():
    assert run([provider()], mint(claims(exp=NOW - 59))).status is None
    assert run([provider()], mint(claims(nbf=NOW + 59))).status is None


# --- refused tokens ----------------------------------------------------------------------------


def test_expired():
    outcome = run([provider()], mint(claims(exp=NOW - 61)))
    assert_refused(outcome, JWT_EXPIRED)
    assert outcome.response_headers == (
        ("www-authenticate", 'Bearer realm="http://httpbin:8000/get", error="invalid_token"'),
    )


def test_not_yet_valid():
    assert_refused(run([provider()], mint(claims(nbf=NOW + 61))), JWT_NOT_YET_VALID)


def test_wrong_issuer():
    assert_refused(run([provider()], mint(claims(iss="someone@else"))), JWT_UNKNOWN_ISSUER)


def test_wrong_key_same_kid():
    assert_refused(run([provider()], mint(key=OTHER_RSA_KEY)), JWT_VERIFICATION_FAILS)


def test_unknown_kid():
    assert_refused(run([provider()], mint(kid="not-there")), JWKS_KID_ALG_MISMATCH)


def test_alg_none_is_refused_while_parsing():
    unsigned = pyjwt.encode(claims(), None, algorithm="none")  # "header.payload." : two sections
    assert_refused(run([provider()], unsigned), JWT_BAD_FORMAT)
    token = hand_made({"alg": "none"}, claims(), b"anything")
    assert_refused(run([provider()], token), JWT_HEADER_UNSUPPORTED_ALG)


def test_hs256_signed_with_the_rsa_public_key_is_refused():
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header, payload = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()), b64(json.dumps(claims()).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"
    assert_refused(run([provider()], token), JWT_VERIFICATION_FAILS)
    # a key that names its alg is not even tried for another alg
    pinned = {"keys": [jwk(RSA_KEY, "rsa-1", alg="RS256")]}
    assert_refused(run([provider(jwks=pinned)], token), JWKS_KID_ALG_MISMATCH)


def test_an_ec_token_is_not_checked_with_an_rsa_key():
    token = mint(key=EC_KEY, alg="ES256", kid="rsa-1")
    assert_refused(run([provider()], token), JWT_VERIFICATION_FAILS)


def test_tampered_payload():
    header, _, signature = mint().split(".")
    forged = b64(json.dumps(claims(sub="admin")).encode())
    assert_refused(run([provider()], f"{header}.{forged}.{signature}"), JWT_VERIFICATION_FAILS)


@pytest.mark.parametrize(
    "token, message",
    [
        ("deadbeef", JWT_BAD_FORMAT),
        ("aaaa.bbbb", JWT_BAD_FORMAT),
        ("a.b.c.d", JWT_BAD_FORMAT),
        ("ab$d.e30.c2ln", JWT_HEADER_BAD_BASE64),
        (f"{b64(b'not json')}.e30.c2ln", JWT_HEADER_BAD_JSON),
        (f"{b64(b'[1]')}.e30.c2ln", JWT_HEADER_BAD_JSON),
        (f"{b64(b'{}')}.e30.c2ln", "Jwt header [alg] field is required and must be a string"),
        (f"{b64(json.dumps({'alg': 'RS256', 'kid': 7}).encode())}.e30.c2ln", "Jwt header [kid] field is not a string"),
        (f"{b64(json.dumps({'alg': 'RS256'}).encode())}.!!!.c2ln", JWT_PAYLOAD_BAD_BASE64),
        (f"{b64(json.dumps({'alg': 'RS256'}).encode())}.{b64(b'{nope')}.c2ln", JWT_PAYLOAD_BAD_JSON),
        (hand_made({"alg": "RS256"}, {"iss": 5}), "Jwt payload [iss] field is not a string"),
        (hand_made({"alg": "RS256"}, {"iss": ISSUER, "exp": "soon"}), "Jwt payload [exp] field is not an integer"),
        (
            hand_made({"alg": "RS256"}, {"iss": ISSUER, "aud": [1]}),
            "Jwt payload [aud] field is not a string or string list",
        ),
        (
            f"{b64(json.dumps({'alg': 'RS256'}).encode())}.{b64(b'{}')}.***",
            "Jwt signature is an invalid Base64url encoded",
        ),
    ],
)
def test_malformed_tokens(token, message):
    outcome = run([provider()], token)
    assert_refused(outcome, message)
    assert outcome.response_headers[0][1].endswith(', error="invalid_token"')


def test_audience_not_allowed_is_403():
    outcome = run([provider(audiences=("billing",))], mint(claims(aud=["shipping"])))
    assert_refused(outcome, JWT_AUDIENCE_NOT_ALLOWED, status=403)
    assert_refused(run([provider(audiences=("billing",))], mint()), JWT_AUDIENCE_NOT_ALLOWED, status=403)


def test_audiences_compare_without_scheme_and_trailing_slash():
    outcome = run([provider(audiences=("https://billing.example/",))], mint(claims(aud="billing.example")))
    assert outcome.status is None and outcome.audiences == ("billing.example",)


def test_empty_audiences_accept_any():
    assert run([provider()], mint(claims(aud=["whatever"]))).status is None


def test_realm_uses_the_original_path_cut_at_256_characters():
    path = "/" + "a" * 300
    outcome = run([provider()], "deadbeef", path=path)
    assert outcome.response_headers[0][1] == f'Bearer realm="http://httpbin:8000{path[:256]}", error="invalid_token"'


def test_unresolved_jwks_fails_every_token():
    assert_refused(run([provider(jwks=None)], mint()), JWKS_FETCH_FAILED)
    assert run([provider(jwks=None)], None).status is None  # still no token, no problem


def test_jwks_without_usable_keys():
    unusable = {"keys": [{"kty": "RSA", "kid": "rsa-1", "n": "AQAB"}, {"kty": "XYZ"}, "junk"]}
    assert parse_jwks(unusable) == ()
    assert_refused(run([provider(jwks=unusable)], mint()), JWKS_NO_VALID_KEYS)
    assert_refused(run([provider(jwks={})], mint()), JWKS_NO_VALID_KEYS)


# --- where the token is, and what is forwarded -------------------------------------------------


def test_access_token_query_parameter_is_accepted_and_removed():
    outcome = run([provider()], None, path=f"/get?a=1&access_token={mint()}&b=2")
    assert outcome.status is None and outcome.principal == f"{ISSUER}/alice"
    assert outcome.path == "/get?a=1&b=2"
    assert run([provider()], None, path=f"/get?access_token={mint()}").path == "/get"


def test_access_token_is_kept_when_forwarded():
    path = f"/get?access_token={mint()}"
    assert run([provider(forward=True)], None, path=path).path == path


def test_bearer_prefix_is_case_sensitive_and_extra_spaces_are_skipped():
    outcome = run([provider()], None, headers=[("authorization", f"Bearer    {mint()}")])
    assert outcome.principal == f"{ISSUER}/alice"
    outcome = run([provider()], None, headers=[("authorization", f"bearer {mint()}")])
    assert outcome.status is None and outcome.principal is None  # not found: as if no token


def test_custom_from_headers_replace_the_defaults():
    custom = provider(from_headers=(("X-Jwt-Assertion", "Token "),))
    outcome = run([custom], None, headers=[("x-jwt-assertion", f"Token {mint()}")])
    assert outcome.principal == f"{ISSUER}/alice"
    assert outcome.request_headers_to_remove == ("x-jwt-assertion",)
    # Authorization is no longer looked at: a bad token there is not even seen
    assert run([custom], "deadbeef").status is None
    assert run([custom], None, path="/get?access_token=deadbeef").status is None


def test_custom_from_params_replace_the_defaults():
    custom = provider(from_params=("token",))
    outcome = run([custom], None, path=f"/get?token={mint()}")
    assert outcome.principal == f"{ISSUER}/alice" and outcome.path == "/get"
    assert run([custom], "deadbeef").status is None


def test_forward_original_token_keeps_the_header():
    token = mint()
    outcome = run([provider(forward=True)], token)
    assert outcome.status is None and outcome.request_headers_to_remove == ()
    assert ("authorization", f"Bearer {token}") in outcome.request_headers


def test_output_payload_to_header():
    token = mint()
    outcome = run([provider(forward_payload_header="x-jwt-payload")], token, headers=[("x-jwt-payload", "forged")])
    value = dict(outcome.request_headers)["x-jwt-payload"]
    assert value == token.split(".")[1] and "=" not in value
    assert json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))) == claims()
    assert ("x-jwt-payload", "forged") not in outcome.request_headers  # a client's copy is dropped
    assert "x-jwt-payload" in outcome.request_headers_to_remove
    assert ("x-jwt-payload", value) in outcome.request_headers_to_add


def test_output_claim_to_headers():
    payload = claims(group="admins", level=3, ratio=0.5, active=True, org={"team": "blue"}, roles=["a"])
    mapping = (
        ("x-group", "group"),
        ("x-level", "level"),
        ("x-ratio", "ratio"),
        ("x-active", "active"),
        ("x-team", "org.team"),
        ("x-org", "org"),
        ("x-roles", "roles"),
        ("x-missing", "missing"),
    )
    outcome = run([provider(claim_to_headers=mapping)], mint(payload))
    assert outcome.request_headers_to_add == (
        ("x-group", "admins"),
        ("x-level", "3"),
        ("x-ratio", "0.500000"),
        ("x-active", "true"),
        ("x-team", "blue"),
    )


def test_header_changes_only_on_success():
    outcome = run([provider(forward_payload_header="x-jwt-payload")], "deadbeef")
    assert outcome.request_headers_to_add == () and outcome.request_headers_to_remove == ()


# --- several providers, several tokens ---------------------------------------------------------


def two_providers() -> list[Provider]:
    other_jwks = {"keys": [jwk(OTHER_RSA_KEY, "other-1")]}
    return [
        provider(),
        provider(name="origins-1", issuer=OTHER_ISSUER, jwks=other_jwks, payload_in_metadata=OTHER_ISSUER),
    ]


def test_token_is_checked_by_the_provider_of_its_issuer():
    token = mint(claims(iss=OTHER_ISSUER, sub="bob"), key=OTHER_RSA_KEY, kid="other-1")
    outcome = run(two_providers(), token)
    assert outcome.status is None and outcome.principal == f"{OTHER_ISSUER}/bob" and outcome.provider == "origins-1"
    assert run(two_providers(), mint()).provider == "origins-0"


def test_several_providers_unknown_issuer_and_bad_signature():
    assert_refused(run(two_providers(), mint(claims(iss="nobody"))), JWT_UNKNOWN_ISSUER)
    # Claims origins-1's issuer, signed with another key: origins-1 fails it ("Jwt verification
    # fails"), but with Istio's requirement for two providers the answer is the first failing
    # {origins-0 or allow_missing} group's, where origins-1's issuer is not configured.
    token = mint(claims(iss=OTHER_ISSUER), key=RSA_KEY, kid="other-1")
    assert_refused(run(two_providers(), token), JWT_UNKNOWN_ISSUER)
    assert_refused(run(two_providers()[1:], token), JWT_VERIFICATION_FAILS)


def test_several_tokens_with_a_provider_requirement_must_all_be_valid():
    strict = filter_from_config(
        {
            "providers": {"origins-0": {"issuer": ISSUER, "local_jwks": {"inline_string": json.dumps(JWKS)}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "origins-0"}}],
        }
    )
    assert_refused(run(strict, mint(), path="/get?access_token=deadbeef"), JWT_BAD_FORMAT)


def test_several_tokens_under_allow_missing_the_last_one_checked_decides():
    # Envoy checks the query parameter first and the Authorization header last.
    assert run([provider()], mint(), path="/get?access_token=deadbeef").status is None
    assert_refused(run([provider()], "deadbeef", path=f"/get?access_token={mint()}"), JWT_BAD_FORMAT)


def test_cors_preflight_bypasses_authentication():
    preflight = [("origin", "http://x"), ("access-control-request-method", "GET")]
    assert run([provider()], "deadbeef", headers=preflight, method="OPTIONS").status is None
    assert run([provider()], "deadbeef", headers=preflight, method="GET").status == 401


# --- the filter config as istiod writes it -----------------------------------------------------


def test_config_round_trip_and_remote_jwks_marker():
    config = {
        "providers": {
            "origins-0": {
                "issuer": ISSUER,
                "audiences": ["billing"],
                "local_jwks": {"inline_string": json.dumps(JWKS)},
                "forward": True,
                "from_headers": [{"name": "x-token", "value_prefix": "Bearer "}],
                "from_params": ["t"],
                "forward_payload_header": "x-payload",
                "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}],
                "payload_in_metadata": ISSUER,
            },
            "origins-1": {"issuer": OTHER_ISSUER, "remote_jwks": {"http_uri": {"uri": "https://x/jwks"}}},
            "origins-2": {"issuer": "bad@lab", "local_jwks": {"inline_string": "{not json"}},
        },
        "rules": [{"match": {"prefix": "/"}, "requires": istio_requirement(["origins-0", "origins-1", "origins-2"])}],
        "bypass_cors_preflight": True,
    }
    whole_filter = {"name": "envoy.filters.http.jwt_authn", "typed_config": config}
    first, second, third = providers_from_filter_config(whole_filter)
    assert first == Provider(
        name="origins-0",
        issuer=ISSUER,
        audiences=("billing",),
        jwks=JWKS,
        forward=True,
        from_headers=(("x-token", "Bearer "),),
        from_params=("t",),
        forward_payload_header="x-payload",
        claim_to_headers=(("x-sub", "sub"),),
        payload_in_metadata=ISSUER,
    )
    assert second.jwks is None and second.keys is None
    assert third.jwks == {} and third.keys == ()
    jwt_filter = filter_from_config(config)
    assert isinstance(jwt_filter, JwtAuthnFilter) and jwt_filter.bypass_cors_preflight
    assert_refused(run([second], mint(claims(iss=OTHER_ISSUER))), JWKS_FETCH_FAILED)
    assert_refused(run([third], mint(claims(iss="bad@lab"))), JWKS_NO_VALID_KEYS)
    outcome = run(jwt_filter, None, headers=[("x-token", f"Bearer {mint(claims(aud='billing'))}")])
    assert outcome.principal == f"{ISSUER}/alice" and ("x-sub", "alice") in outcome.request_headers_to_add


def test_config_naming_an_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="not configured"):
        filter_from_config(
            {"providers": {}, "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "origins-0"}}]}
        )


def test_rules_match_by_path_prefix():
    config = {
        "providers": {"p": {"issuer": ISSUER, "local_jwks": {"inline_string": json.dumps(JWKS)}}},
        "rules": [{"match": {"prefix": "/api"}, "requires": {"provider_name": "p"}}],
    }
    jwt_filter = filter_from_config(config)
    assert run(jwt_filter, None, path="/public").status is None
    missing = run(jwt_filter, None, path="/api/x")
    assert (missing.status, missing.body) == (401, "Jwt is missing")
    assert missing.response_headers == (("www-authenticate", 'Bearer realm="http://httpbin:8000/api/x"'),)


# --- the article's token -----------------------------------------------------------------------


def test_article_demo_jwt_verifies_against_istio_sample_jwks():
    jwks = json.loads((REPO / "mesh/istiod/jwks_mirror/istio-samples-jwks.json").read_text())
    token = (REPO / "topologies/article/demo.jwt").read_text().strip()
    article = provider(issuer="testing@secure.istio.io", jwks=jwks, payload_in_metadata="testing@secure.istio.io")
    outcome = run([article], token)
    assert outcome.status is None
    assert outcome.principal == "testing@secure.istio.io/testing@secure.istio.io"
    assert outcome.claims["foo"] == "bar"
    assert_refused(run([provider()], token), JWT_UNKNOWN_ISSUER)
