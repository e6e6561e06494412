"""Validation and parsing of PeerAuthentication (mTLS modes, port-level mTLS) and
RequestAuthentication (JWT rules), and the durations they carry."""

import json

import pytest

from mesh.policy.model import (
    JwtHeader,
    JwtRule,
    PeerAuthentication,
    RequestAuthentication,
    Selector,
    TargetRef,
    parse,
    validate,
    warnings,
)
from mesh.policy.validation import parse_duration
from tests.unit.policy_helpers import peer, request_authn

# --- PeerAuthentication --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"])
def test_peer_authentication_modes(mode):
    assert validate(peer({"mtls": {"mode": mode}})) == []
    assert parse(peer({"mtls": {"mode": mode}})).mode == mode


def test_port_level_mtls_rules():
    selector = {"matchLabels": {"app": "a"}}
    assert (
        validate(peer({"selector": selector, "portLevelMtls": {8080: {"mode": "DISABLE"}, "9090": {"mode": "STRICT"}}}))
        == []
    )
    assert validate(peer({"portLevelMtls": {8080: {"mode": "DISABLE"}}})) == [
        ("spec.portLevelMtls", "mesh/namespace peer authentication cannot have port level mTLS")
    ]
    assert validate(peer({"selector": selector, "portLevelMtls": {}})) == [
        ("spec.portLevelMtls", "port level mTLS, if defined, must have at least one element")
    ]
    for port in (0, 65536, "http"):
        assert validate(peer({"selector": selector, "portLevelMtls": {port: {"mode": "STRICT"}}})) == [
            (f'spec.portLevelMtls["{port}"]', f'port must be between 1-65535, got "{port}"')
        ]


def test_parse_peer_authentication():
    pa = parse(
        peer(
            {
                "selector": {"matchLabels": {"app": "a"}},
                "mtls": {"mode": "STRICT"},
                "portLevelMtls": {"9090": {"mode": "PERMISSIVE"}, 8080: {}},
            },
            created="2024-01-01T00:00:00Z",
        )
    )
    assert pa == PeerAuthentication(
        name="pa",
        namespace="ns",
        selector=Selector((("app", "a"),)),
        mode="STRICT",
        port_level_mtls=((8080, "UNSET"), (9090, "PERMISSIVE")),
        creation_timestamp="2024-01-01T00:00:00Z",
    )
    assert parse(peer({})).mode == "UNSET"


# --- RequestAuthentication -----------------------------------------------------------------------

JWKS = json.dumps({"keys": [{"kty": "RSA", "e": "AQAB", "n": "xyz", "kid": "k"}]})


@pytest.mark.parametrize(
    "rule, expected",
    [
        ({"issuer": "iss", "jwksUri": "https://example.com/jwks.json"}, []),
        ({"jwksUri": "https://example.com/jwks.json"}, []),  # istiod: issuer OR jwksUri
        ({"issuer": "iss", "jwks": JWKS}, []),
        ({"issuer": "iss"}, []),
        ({"audiences": ["a"]}, [("spec.jwtRules[0]", "issuer or jwksUri must be non-empty string")]),
        (
            {"issuer": ""},
            [
                ("spec.jwtRules[0].issuer", "must not be empty"),
                ("spec.jwtRules[0]", "issuer or jwksUri must be non-empty string"),
            ],
        ),
        (
            {"issuer": "iss", "jwks": JWKS, "jwksUri": "https://x/j"},
            [("spec.jwtRules[0]", "only one of jwks or jwksUri can be set")],
        ),
        (
            {"issuer": "iss", "jwksUri": "ftp://x/j"},
            [("spec.jwtRules[0].jwksUri", 'URI scheme "ftp" is not supported: must be http or https')],
        ),
        (
            {"issuer": "iss", "jwks": "{not json"},
            [
                (
                    "spec.jwtRules[0].jwks",
                    "jwks parse error: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
                )
            ],
        ),
        (
            {"issuer": "iss", "jwks": "{}"},
            [("spec.jwtRules[0].jwks", 'jwks parse error: want a JWK ("kty") or a JWK set ("keys")')],
        ),
        ({"issuer": "iss", "audiences": ["a", ""]}, [("spec.jwtRules[0].audiences[1]", "empty value not allowed")]),
        (
            {"issuer": "iss", "fromHeaders": [{"name": ""}]},
            [("spec.jwtRules[0].fromHeaders[0].name", "location header name must be non-empty string")],
        ),
        ({"issuer": "iss", "fromParams": [""]}, [("spec.jwtRules[0].fromParams[0]", "empty value not allowed")]),
        ({"issuer": "iss", "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}]}, []),
        (
            {"issuer": "iss", "outputClaimToHeaders": [{"header": "x sub", "claim": "sub"}]},
            [("spec.jwtRules[0].outputClaimToHeaders[0].header", 'invalid header name "x sub"')],
        ),
        (
            {"issuer": "iss", "outputClaimToHeaders": [{"header": "x-sub"}]},
            [("spec.jwtRules[0].outputClaimToHeaders[0]", "header and claim must be non-empty strings")],
        ),
        ({"issuer": "iss", "timeout": "5s"}, []),
        (
            {"issuer": "iss", "timeout": "500us"},
            [("spec.jwtRules[0].timeout", '"500us" must be a valid duration greater than 1ms')],
        ),
        (
            {"issuer": "iss", "timeout": "soon"},
            [("spec.jwtRules[0].timeout", '"soon" must be a valid duration greater than 1ms')],
        ),
    ],
)
def test_jwt_rules(rule, expected):
    assert validate(request_authn({"jwtRules": [rule]})) == expected


def test_parse_request_authentication():
    ra = parse(
        request_authn(
            {
                "targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "w"},
                "jwtRules": [
                    {
                        "issuer": "iss",
                        "audiences": ["a"],
                        "jwks_uri": "https://x/j",
                        "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}],
                        "fromParams": ["token"],
                        "forwardOriginalToken": True,
                        "outputPayloadToHeader": "x-payload",
                        "timeout": "1m30s",
                    }
                ],
            }
        )
    )
    assert ra == RequestAuthentication(
        name="ra",
        namespace="ns",
        target_refs=(TargetRef("Gateway", "w", "gateway.networking.k8s.io"),),
        jwt_rules=(
            JwtRule(
                issuer="iss",
                audiences=("a",),
                jwks_uri="https://x/j",
                from_headers=(JwtHeader("x-jwt", "Bearer "),),
                from_params=("token",),
                forward_original_token=True,
                output_payload_to_header="x-payload",
                timeout_seconds=90.0,
            ),
        ),
    )


def test_private_jwks_keys_warn():
    private = json.dumps({"keys": [{"kty": "RSA", "n": "x", "e": "AQAB", "d": "secret"}]})
    assert warnings(request_authn({"jwtRules": [{"issuer": "i", "jwks": private}]})) == [
        (
            "spec.jwtRules[0].jwks",
            "jwks key at index 0 contains private key material; only public keys are used for verification",
        )
    ]


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("5s", 5.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("", None),
        ("5", None),
        ("s", None),
        ("1x", None),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds
