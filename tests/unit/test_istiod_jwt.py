"""istiod's RequestAuthentication → jwt_authn translation (mesh/istiod/jwt.py), its JWKS resolver
(mesh/istiod/jwks.py) and apply-time JWKS validation; see docs/l7-jwt.md."""

from __future__ import annotations

import ipaddress
import json
import logging
from functools import partial
from pathlib import Path

import h11
import jwt as pyjwt
import pytest
import trio
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from mesh.istiod.jwks import FetchError, JwksResolver, http_get, is_in_lab, load_mirror
from mesh.istiod.jwt import jwks_source, jwks_sources, jwt_authn_filter, ordered_rules
from mesh.policy.model import InvalidPolicy, RequestAuthentication, parse, parse_as, validate
from mesh.proxy.jwt_authn import JWKS_FETCH_FAILED, authenticate, filter_from_config

REPO = Path(__file__).resolve().parents[2]
ARTICLE_URL = "https://raw.githubusercontent.com/istio/istio/release-1.18/security/tools/jwt/samples/jwks.json"
MASTER_URL = "https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json"
SAMPLE_JWKS = (REPO / "mesh/istiod/jwks_mirror/istio-samples-jwks.json").read_text()
DEMO_JWT = (REPO / "topologies/article/demo.jwt").read_text().strip()
NOW = 1_700_000_000


def article_policy() -> RequestAuthentication:
    return parse_as(RequestAuthentication, yaml.safe_load((REPO / "topologies/article/jwt-policy.yaml").read_text()))


def request_authn(name: str, rules: list[dict], namespace: str = "apps") -> RequestAuthentication:
    return parse_as(
        RequestAuthentication,
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"jwtRules": rules},
        },
    )


def check(jwt_filter: dict | None, token: str | None, *, path: str = "/headers", headers=()):
    sent = list(headers) + ([("authorization", f"Bearer {token}")] if token else [])
    return authenticate(
        filter_from_config(jwt_filter["typed_config"]),
        scheme="http",
        authority="httpbin",
        path=path,
        headers=sent,
        now=NOW,
    )


# --- translation -------------------------------------------------------------------------------


def test_article_policy_becomes_istios_filter():
    resolver = JwksResolver()
    assert jwt_authn_filter([article_policy()], resolver.lookup) == {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "origins-0": {
                    "issuer": "testing@secure.istio.io",
                    "local_jwks": {"inline_string": SAMPLE_JWKS},
                    "payload_in_metadata": "testing@secure.istio.io",
                }
            },
            "rules": [
                {
                    "match": {"prefix": "/"},
                    "requires": {
                        "requires_any": {"requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]}
                    },
                }
            ],
            "bypass_cors_preflight": True,
        },
    }


def test_article_token_end_to_end():
    jwt_filter = jwt_authn_filter([article_policy()], JwksResolver().lookup)
    outcome = check(jwt_filter, DEMO_JWT)
    assert outcome.status is None
    assert outcome.principal == "testing@secure.istio.io/testing@secure.istio.io"
    assert check(jwt_filter, None).status is None  # no token: through, without identity
    bad = check(jwt_filter, "deadbeef")
    assert bad.status == 401 and bad.response_headers == (
        ("www-authenticate", 'Bearer realm="http://httpbin/headers", error="invalid_token"'),
    )


def test_no_jwt_rules_no_filter():
    assert jwt_authn_filter([], lambda url: None) is None
    assert jwt_authn_filter([request_authn("empty", [])], lambda url: None) is None


#: Each field of a RequestAuthentication rule, and what it becomes in the jwt_authn provider.
RULE_FIELDS = [
    ("issuer", "iss@lab", "issuer", "iss@lab"),
    ("jwks", SAMPLE_JWKS, "local_jwks", {"inline_string": SAMPLE_JWKS}),
    ("audiences", ["a", "b"], "audiences", ["a", "b"]),
    ("forwardOriginalToken", True, "forward", True),
    ("fromParams", ["t"], "from_params", ["t"]),
    ("fromCookies", ["session"], "from_cookies", ["session"]),
    ("outputPayloadToHeader", "x-payload", "forward_payload_header", "x-payload"),
    (
        "fromHeaders",
        [{"name": "x-jwt", "prefix": "Token "}, {"name": "x-raw"}],
        "from_headers",
        [{"name": "x-jwt", "value_prefix": "Token "}, {"name": "x-raw"}],
    ),
    (
        "outputClaimToHeaders",
        [{"header": "x-sub", "claim": "sub"}],
        "claim_to_headers",
        [{"header_name": "x-sub", "claim_name": "sub"}],
    ),
]


def test_every_field_of_a_rule():
    rule = {field: value for field, value, _, _ in RULE_FIELDS}
    typed = jwt_authn_filter([request_authn("all", [rule])], lambda url: None)["typed_config"]
    provider = typed["providers"]["origins-0"]
    assert provider == {**{name: value for _, _, name, value in RULE_FIELDS}, "payload_in_metadata": "iss@lab"}


def test_provider_order_is_stable():
    policies = [
        request_authn("zeta", [{"issuer": "b@lab", "jwks": SAMPLE_JWKS}], namespace="apps"),
        request_authn("alpha", [{"issuer": "c@lab", "jwks": SAMPLE_JWKS}, {"issuer": "a@lab", "jwks": SAMPLE_JWKS}]),
        request_authn("beta", [{"issuer": "b@lab", "jwksUri": "http://keys.auth.svc/jwks"}], namespace="aaa"),
    ]
    assert [(r.issuer, r.jwks_uri) for r in ordered_rules(policies)] == [
        ("a@lab", ""),
        ("b@lab", "http://keys.auth.svc/jwks"),
        ("b@lab", ""),
        ("c@lab", ""),
    ]
    typed = jwt_authn_filter(policies, lambda url: None)["typed_config"]
    assert jwt_authn_filter(list(reversed(policies)), lambda url: None)["typed_config"] == typed
    assert list(typed["providers"]) == ["origins-0", "origins-1", "origins-2", "origins-3"]
    inner = [
        {"requires_any": {"requirements": [{"provider_name": f"origins-{i}"}, {"allow_missing": {}}]}} for i in range(4)
    ]
    assert typed["rules"][0]["requires"] == {
        "requires_any": {
            "requirements": [
                *({"provider_name": f"origins-{i}"} for i in range(4)),
                {"requires_all": {"requirements": inner}},
            ]
        }
    }


def test_unresolved_jwks_uri_gets_remote_jwks_and_fails_every_token():
    policy = request_authn("far", [{"issuer": "far@away", "jwksUri": "https://idp.example.com:8443/keys"}])
    jwt_filter = jwt_authn_filter([policy], JwksResolver().lookup)
    provider = jwt_filter["typed_config"]["providers"]["origins-0"]
    assert "local_jwks" not in provider
    assert provider["remote_jwks"] == {
        "http_uri": {
            "uri": "https://idp.example.com:8443/keys",
            "cluster": "outbound|8443||idp.example.com",
            "timeout": "5s",
        },
        "cache_duration": "300s",
    }
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = pyjwt.encode({"iss": "far@away", "sub": "x"}, key, algorithm="RS256")
    outcome = check(jwt_filter, token)
    assert (outcome.status, outcome.body) == (401, JWKS_FETCH_FAILED)
    assert check(jwt_filter, None).status is None


def test_issuer_only_rule_uses_openid_discovery():
    policy = request_authn("oidc", [{"issuer": "https://idp.auth.svc/"}, {"issuer": "x", "jwks": SAMPLE_JWKS}])
    assert jwks_source(policy.jwt_rules[0]) == "https://idp.auth.svc/.well-known/openid-configuration"
    assert jwks_sources([policy]) == ["https://idp.auth.svc/.well-known/openid-configuration"]


# --- the resolver ------------------------------------------------------------------------------


def test_mirror_answers_the_article_urls():
    resolver = JwksResolver()
    assert resolver.lookup(ARTICLE_URL) == SAMPLE_JWKS
    assert resolver.lookup(MASTER_URL) == SAMPLE_JWKS
    assert load_mirror() == {ARTICLE_URL: SAMPLE_JWKS, MASTER_URL: SAMPLE_JWKS}
    assert [key["kid"] for key in json.loads(SAMPLE_JWKS)["keys"]] == ["DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ"]


async def test_unknown_outside_url_is_unresolvable_and_warned_once(caplog):
    fetched = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return b"{}"

    resolver = JwksResolver(fetch=fetch)
    url = "https://login.example.com/jwks.json"
    with caplog.at_level(logging.WARNING, logger="istiod.jwks"):
        assert await resolver.refresh([url, ARTICLE_URL]) is False
        assert await resolver.refresh([url]) is False
    assert resolver.lookup(url) is None and fetched == []
    warnings = [r.getMessage() for r in caplog.records if url in r.getMessage()]
    assert len(warnings) == 1 and "Jwks remote fetch is failed" in warnings[0]


@pytest.mark.parametrize(
    "url, inside",
    [
        ("http://keys.auth.svc.cluster.local:8080/jwks", True),
        ("http://keys.auth.svc/jwks", True),
        ("http://keys/jwks", True),
        ("http://10.96.0.12/jwks", True),
        ("https://10.244.1.7:8443/jwks", True),
        ("https://raw.githubusercontent.com/x", False),
        ("http://8.8.8.8/jwks", False),
        ("http://keys.auth/jwks", False),
        ("not a url", False),
    ],
)
def test_in_lab_urls(url, inside):
    assert is_in_lab(url) is inside


class JwksServer:
    """A tiny HTTP/1.1 server on 127.0.0.1 standing in for a JWKS service inside the lab."""

    def __init__(self):
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.requests: list[h11.Request] = []
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                self.requests.append(event)
            elif isinstance(event, h11.EndOfMessage):
                break
        status, body = self.routes.get(self.requests[-1].target.decode(), (404, b"not found"))
        await stream.send_all(
            connection.send(
                h11.Response(
                    status_code=status,
                    headers=[("Content-Length", str(len(body))), ("Content-Type", "application/json")],
                )
            )
        )
        await stream.send_all(connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage()))
        await stream.aclose()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def jwks_server(nursery):
    server = JwksServer()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    server.port = listeners[0].socket.getsockname()[1]
    return server


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


async def test_in_lab_url_is_fetched_and_cached(jwks_server):
    jwks_server.routes["/keys"] = (200, SAMPLE_JWKS.encode())
    resolver = JwksResolver(lab_networks=LOOPBACK)
    url = jwks_server.url("/keys")
    assert resolver.lookup(url) is None
    assert await resolver.refresh([url]) is True
    assert resolver.lookup(url) == SAMPLE_JWKS
    assert await resolver.refresh([url]) is False and len(jwks_server.requests) == 1  # cached
    assert await resolver.refresh([url], refetch=True) is False and len(jwks_server.requests) == 2
    request = jwks_server.requests[0]
    assert (request.method, request.target) == (b"GET", b"/keys")
    assert (b"host", f"127.0.0.1:{jwks_server.port}".encode()) in request.headers
    # and the translation now inlines it
    policy = request_authn("lab", [{"issuer": "testing@secure.istio.io", "jwksUri": url}])
    assert check(jwt_authn_filter([policy], resolver.lookup), DEMO_JWT).status is None


async def test_failed_in_lab_fetch_stays_unresolved(jwks_server, caplog):
    jwks_server.routes["/broken"] = (500, b"oops")
    resolver = JwksResolver(lab_networks=LOOPBACK)
    with caplog.at_level(logging.WARNING, logger="istiod.jwks"):
        assert await resolver.refresh([jwks_server.url("/broken")]) is False
    assert resolver.lookup(jwks_server.url("/broken")) is None
    assert any("status 500" in r.getMessage() for r in caplog.records)
    with pytest.raises(FetchError):
        await http_get("http://127.0.0.1:1/jwks", timeout=2)


async def test_openid_discovery_inside_the_lab(jwks_server):
    jwks_server.routes["/.well-known/openid-configuration"] = (
        200,
        json.dumps({"issuer": "x", "jwks_uri": jwks_server.url("/keys")}).encode(),
    )
    jwks_server.routes["/keys"] = (200, SAMPLE_JWKS.encode())
    resolver = JwksResolver(lab_networks=LOOPBACK)
    discovery = jwks_server.url("/.well-known/openid-configuration")
    assert await resolver.refresh([discovery]) is True
    assert resolver.lookup(discovery) == SAMPLE_JWKS


# --- apply-time validation of inline jwks ------------------------------------------------------


@pytest.mark.parametrize(
    "jwks, problem",
    [
        ({"keys": []}, "jwks parse error: the key set has no key"),
        ({"keys": [{"kty": "RSA", "e": "AQAB"}]}, 'jwks parse error: key at index 0 (RSA) has no "n"'),
        ({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA"}]}, 'jwks parse error: key at index 0 (EC) has no "y"'),
        ({"keys": [{"kty": "ABC"}]}, 'jwks parse error: key at index 0: unsupported kty "ABC"'),
    ],
)
def test_jwks_without_a_usable_key_is_refused_at_apply(jwks, problem):
    obj = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "r"},
        "spec": {"jwtRules": [{"issuer": "i", "jwks": json.dumps(jwks)}]},
    }
    assert validate(obj) == [("spec.jwtRules[0].jwks", problem)]
    with pytest.raises(InvalidPolicy):
        parse(obj)


def test_sample_jwks_is_valid_inline():
    obj = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "r"},
        "spec": {"jwtRules": [{"issuer": "i", "jwks": SAMPLE_JWKS}]},
    }
    assert validate(obj) == []
