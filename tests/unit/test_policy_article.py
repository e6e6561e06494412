"""The seed article's policies, verbatim, through every stage: validation, istiod's translation,
ztunnel's L4 decision and the waypoint's L7 decision."""

import json
import pathlib

import yaml

from mesh.policy import http, model, rbac, ztunnel

REAL_ISSUER = "testing@secure.istio.io"
OBFUSCATED_ISSUER = "[email\u00a0protected]"
ARTICLE = pathlib.Path(__file__).resolve().parents[2] / "topologies" / "article"
DEMO_JWT_CLAIMS = {"exp": 4685989700, "foo": "bar", "iat": 1532389700, "iss": REAL_ISSUER, "sub": REAL_ISSUER}

SLEEP = "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"
ROGUE = "spiffe://cluster.local/ns/ambient-apps/sa/rogue-sa"
HTTPBIN_LABELS = {"app": "httpbin-ambient", "version": "v1"}


def _article(name):
    return yaml.safe_load((ARTICLE / name).read_text())


def l4_policy():
    return _article("l4-policy.yaml")


def jwt_and_l7_policies():
    return [_article("jwt-policy.yaml"), _article("l7-authz-policy.yaml")]


def as_printed(obj):
    """The policy as the article's page prints it: its e-mail obfuscation stands for the issuer
    (topologies/article/README.md)."""
    return json.loads(json.dumps(obj, ensure_ascii=False).replace(REAL_ISSUER, OBFUSCATED_ISSUER))


def to_httpbin(identity):
    return rbac.Connection("10.244.0.9", identity, "10.244.1.4", 80, "ambient-apps")


# --- l4-policy.yaml ----------------------------------------------------------------------------------


def test_l4_policy_is_valid():
    assert model.validate(l4_policy()) == []
    assert model.warnings(l4_policy()) == []


def test_l4_policy_translates_to_a_workload_policy():
    assert ztunnel.to_ztunnel(l4_policy()) == ztunnel.ZtunnelTranslation(
        {
            "name": "require-sleep-identity",
            "namespace": "ambient-apps",
            "scope": "WORKLOAD_SELECTOR",
            "action": "ALLOW",
            "rules": [
                {
                    "clauses": [
                        {"matches": [{"principals": [{"exact": "cluster.local/ns/ambient-apps/sa/sleep-ambient"}]}]}
                    ]
                }
            ],
            "dryRun": False,
        },
        None,
    )
    assert ztunnel.workload_policy_keys([l4_policy()], [], HTTPBIN_LABELS, "ambient-apps") == [
        "ambient-apps/require-sleep-identity"
    ]
    assert ztunnel.workload_policy_keys([l4_policy()], [], {"app": "sleep-ambient"}, "ambient-apps") == []


def test_l4_policy_allows_sleep_and_denies_the_rogue_client_at_ztunnel():
    authorization = ztunnel.to_ztunnel(l4_policy()).authorization
    policies = rbac.policies_for("ambient-apps", ["ambient-apps/require-sleep-identity"], [authorization])
    assert rbac.evaluate(to_httpbin(SLEEP), policies) == rbac.Decision(
        True, "ambient-apps/require-sleep-identity", "allowed by: ambient-apps/require-sleep-identity"
    )
    assert rbac.evaluate(to_httpbin(ROGUE), policies) == rbac.Decision(
        False, None, "allow policies exist, but none allowed"
    )
    assert not rbac.evaluate(to_httpbin(None), policies).allowed  # plaintext from outside the mesh


def test_l4_policy_does_not_touch_other_workloads():
    authorization = ztunnel.to_ztunnel(l4_policy()).authorization
    sleep_policies = rbac.policies_for("ambient-apps", [], [authorization])
    assert rbac.evaluate(to_httpbin(ROGUE), sleep_policies).allowed


# --- jwt-policy.yaml + l7-authz-policy.yaml ---------------------------------------------------------


def test_jwt_and_l7_policies_are_valid():
    for obj in jwt_and_l7_policies():
        assert model.validate(obj) == []
        assert model.warnings(obj) == []
    request_authn, policy = (model.parse(obj) for obj in jwt_and_l7_policies())
    assert request_authn.jwt_rules == (
        model.JwtRule(
            issuer=REAL_ISSUER,
            jwks_uri="https://raw.githubusercontent.com/istio/istio/release-1.18/security/tools/jwt/samples/jwks.json",
        ),
    )
    assert policy.rules[0].when == (model.Condition("request.auth.claims[iss]", (REAL_ISSUER,)),)


def test_l7_policy_at_ztunnel_fails_closed_with_istiods_status():
    _, policy = jwt_and_l7_policies()
    translation = ztunnel.to_ztunnel(policy)
    assert translation.authorization["rules"] == []
    assert translation.status_message == (
        "ztunnel does not support HTTP attributes (found: paths, request.auth.claims[iss]). In ambient mode you "
        "must use a waypoint proxy to enforce HTTP rules. Within an ALLOW policy, rules matching HTTP attributes "
        "are omitted. This will be more restrictive than requested."
    )
    # Were ztunnel to enforce it (current Istio, selector policy), even sleep would be refused:
    # the article's flow relies on the waypoint, not ztunnel, enforcing this policy.
    assert rbac.evaluate(to_httpbin(SLEEP), [translation.authorization]) == rbac.Decision(
        False, None, "allow policies exist, but none allowed"
    )


def waypoint_request(path, identity=SLEEP, claims=None):
    return http.Request(
        method="GET",
        path=path,
        host="httpbin-ambient.ambient-apps:8000",
        src_ip="10.244.0.9",
        dst_ip="10.244.1.4",
        dst_port=80,
        src_identity=identity,
        jwt_claims=claims,
    )


def test_article_l7_calls_at_the_waypoint():
    _, policy = jwt_and_l7_policies()
    headers_with_token = http.evaluate(waypoint_request("/headers", claims=DEMO_JWT_CLAIMS), [policy])
    ip_without_token = http.evaluate(waypoint_request("/ip"), [policy])
    ip_with_token = http.evaluate(waypoint_request("/ip", claims=DEMO_JWT_CLAIMS), [policy])
    assert (headers_with_token.status, headers_with_token.body) == (403, "RBAC: access denied")
    assert (ip_without_token.status, ip_without_token.body) == (403, "RBAC: access denied")
    assert ip_with_token.allowed and ip_with_token.policy == "ambient-apps/allow-ip-path-with-jwt"


def test_rogue_client_is_refused_by_the_waypoint_even_with_a_token():
    _, policy = jwt_and_l7_policies()
    decision = http.evaluate(waypoint_request("/ip", ROGUE, DEMO_JWT_CLAIMS), [policy])
    assert decision.status == 403


def test_obfuscated_issuer_taken_literally_refuses_the_real_token():
    _, policy = jwt_and_l7_policies()
    printed = as_printed(policy)
    assert model.validate(printed) == []
    assert http.evaluate(waypoint_request("/ip", claims=DEMO_JWT_CLAIMS), [printed]).status == 403
