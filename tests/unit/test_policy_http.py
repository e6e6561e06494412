"""The L7 evaluator of waypoints and sidecars: every AuthorizationPolicy field on HTTP requests."""

import pytest

from mesh.policy.http import HttpDecision, Request, claim_path, evaluate, normalize_path
from mesh.policy.schema import negated

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
CLAIMS = {
    "iss": "https://issuer.example/",
    "sub": "alice",
    "aud": ["api", "web"],
    "azp": "cli",
    "groups": ["dev", "ops"],
    "nested": {"role": "admin"},
    "level": 3,
}


def request(**overrides):
    base = dict(
        method="GET",
        path="/ip",
        host="httpbin.default:8000",
        src_ip="10.244.0.5",
        dst_ip="10.244.1.7",
        dst_port=80,
        src_identity=SLEEP,
    )
    return Request(**{**base, **overrides})


def authz(spec, name="p", namespace="default", annotations=None):
    metadata = {"name": name, "namespace": namespace, **({"annotations": annotations} if annotations else {})}
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": metadata, "spec": spec}


def allow(rule, **kw):
    return authz({"rules": [rule]}, **kw)


def allowed(rule, req):
    return evaluate(req, [allow(rule)]).allowed


def source(**fields):
    return {"from": [{"source": fields}]}


def operation(**fields):
    return {"to": [{"operation": fields}]}


def when(key, values=None, not_values=None):
    condition = {"key": key}
    if values is not None:
        condition["values"] = values
    if not_values is not None:
        condition["notValues"] = not_values
    return {"when": [condition]}


# --- order and outcomes ------------------------------------------------------------------------------


def test_no_policy_allows():
    assert evaluate(request(), []) == HttpDecision(True, None, "", None, "no ALLOW policy applies")


def test_allow_and_its_default_deny():
    policy = allow(operation(paths=["/ip"]))
    assert evaluate(request(), [policy]) == HttpDecision(
        True, None, "", "default/p", "allowed by ns[default]-policy[p]-rule[0]"
    )
    assert evaluate(request(path="/headers"), [policy]) == HttpDecision(
        False, 403, "RBAC: access denied", None, "rbac_access_denied_matched_policy[none]"
    )


def test_deny_before_allow_and_names_the_rule():
    deny = authz({"action": "DENY", "rules": [operation(paths=["/x"]), operation(methods=["GET"])]}, name="d")
    decision = evaluate(request(), [allow({}), deny])
    assert decision == HttpDecision(
        False,
        403,
        "RBAC: access denied",
        "default/d",
        "rbac_access_denied_matched_policy[ns[default]-policy[d]-rule[1]]",
    )


def test_allow_without_rules_allows_nothing_and_empty_rule_allows_all():
    assert not evaluate(request(), [authz({})]).allowed
    assert evaluate(request(), [authz({"rules": [{}]})]).allowed


def test_audit_never_decides():
    audit = authz({"action": "AUDIT", "rules": [{}]})
    assert evaluate(request(), [audit]).reason == "no ALLOW policy applies"


def test_custom_comes_first_and_denies_without_a_provider():
    custom = authz({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [operation(paths=["/ip"])]}, name="c")
    deny = authz({"action": "DENY", "rules": [{}]}, name="d")
    assert evaluate(request(), [deny, custom]) == HttpDecision(
        False,
        403,
        "RBAC: access denied",
        "default/c",
        'ext_authz provider "ext" is not defined: default/c denies what it matches',
    )
    assert evaluate(request(path="/other"), [custom]).allowed  # CUSTOM does not match: no say
    calls = []
    assert not evaluate(request(), [custom], ext_authz=lambda p, r: calls.append(p) or False).allowed
    assert evaluate(request(), [custom], ext_authz=lambda p, r: True).allowed
    assert evaluate(request(), [custom, deny], ext_authz=lambda p, r: True).policy == "default/d"
    assert calls == ["ext"]


def test_dry_run_policies_report_but_never_decide():
    dry = {"istio.io/dry-run": "true"}
    dry_deny = authz({"action": "DENY", "rules": [{}]}, name="dry-deny", annotations=dry)
    dry_allow = authz({"rules": [operation(paths=["/nope"])]}, name="dry-allow", annotations=dry)
    decision = evaluate(request(), [dry_deny, dry_allow])
    assert (decision.allowed, decision.reason, decision.dry_run_matches) == (
        True,
        "no ALLOW policy applies",
        ("default/dry-deny",),
    )


# --- operation fields ------------------------------------------------------------------------------------


#: The request attribute each operation field looks at.
OPERATION_ATTRIBUTE = {"paths": "path", "methods": "method", "hosts": "host"}


@pytest.mark.parametrize(
    "field, pattern, value, expected",
    [
        ("paths", "/ip", "/ip", True),
        ("paths", "/ip", "/ip/", False),
        ("paths", "/ip", "/IP", False),
        ("paths", "/ip", "/ip?x=1", True),
        ("paths", "/ip", "/a/../ip", True),
        ("paths", "/ip", "/./ip#frag", True),
        ("paths", "/api/*", "/api/v1/x", True),
        ("paths", "/api/*", "/apix", False),
        ("paths", "*.json", "/a/b.json", True),
        ("paths", "*", "/anything", True),
        ("paths", "/foo/{*}", "/foo/bar", True),
        ("paths", "/foo/{*}", "/foo/bar/baz", False),
        ("paths", "/foo/{**}", "/foo/bar/baz", True),
        ("paths", "/foo/{**}", "/foo/", True),
        ("paths", "/foo/{*}/bar/{**}", "/foo/x/bar/y/z", True),
        ("paths", "/foo/{*}/bar/{**}", "/foo/x/y/bar/z", False),
        ("methods", "GET", "GET", True),
        ("methods", "GET", "get", False),
        ("methods", "POST", "GET", False),
        ("methods", "*", "GET", True),
        ("methods", "P*", "PUT", True),
        ("hosts", "httpbin.default", "httpbin.default", True),
        ("hosts", "httpbin.default", "HTTPBIN.Default", True),
        ("hosts", "httpbin.default", "httpbin.default:8000", False),  # Istio does not strip ports: use "host:*" too
        ("hosts", "httpbin.default:*", "httpbin.default:8000", True),
        ("hosts", "*.default", "httpbin.default", True),
        ("hosts", "*.DEFAULT", "httpbin.default", True),
        ("hosts", "*", "x", True),
    ],
)
def test_operation_fields_and_their_negations(field, pattern, value, expected):
    req = request(**{OPERATION_ATTRIBUTE[field]: value})
    assert allowed(operation(**{field: [pattern]}), req) is expected
    assert allowed(operation(**{negated(field): [pattern]}), req) is not expected


def test_ports():
    assert allowed(operation(ports=["80", "8080"]), request(dst_port=8080))
    assert not allowed(operation(ports=["80"]), request(dst_port=8080))
    assert not allowed(operation(notPorts=["8080"]), request(dst_port=8080))


def test_operation_fields_are_anded_and_operations_ored():
    rule = {"to": [{"operation": {"paths": ["/ip"], "methods": ["POST"]}}, {"operation": {"paths": ["/get"]}}]}
    assert not allowed(rule, request())
    assert allowed(rule, request(method="POST"))
    assert allowed(rule, request(path="/get"))


# --- source fields --------------------------------------------------------------------------------------


#: The `when` key that means the same as each source field.
SOURCE_KEY = {
    "principals": "source.principal",
    "namespaces": "source.namespace",
    "serviceAccounts": "source.serviceAccount",
    "trustDomains": "source.trustDomain",
    "requestPrincipals": "request.auth.principal",
}
ANONYMOUS = request(src_identity=None)
WITH_TOKEN = request(jwt_claims=CLAIMS)


def check_source_field(field, pattern, req, expected, **policy):
    """The field, its `when` key and its negation, in a policy (`policy`: its metadata) on `req`."""
    for rule, matches in (
        (source(**{field: [pattern]}), expected),
        (when(SOURCE_KEY[field], [pattern]), expected),
        (source(**{negated(field): [pattern]}), not expected),
    ):
        assert evaluate(req, [allow(rule, **policy)]).allowed is matches


@pytest.mark.parametrize(
    "field, pattern, req, expected",
    [
        ("principals", "cluster.local/ns/default/sa/sleep", request(), True),
        ("principals", "cluster.local/ns/default/sa/sleep", ANONYMOUS, False),
        ("principals", "spiffe://cluster.local/ns/default/sa/sleep", request(), False),
        ("principals", "*", request(), True),
        ("principals", "*", ANONYMOUS, False),
        ("principals", "cluster.local/ns/default/*", request(), True),
        ("principals", "*/sa/sleep", request(), True),
        ("principals", "*/sa/other", request(), False),
        ("namespaces", "default", request(), True),
        ("namespaces", "def*", request(), True),
        ("namespaces", "*ult", request(), True),
        ("namespaces", "other", request(), False),
        ("namespaces", "*", request(), True),
        ("namespaces", "sa", request(), False),
        ("trustDomains", "cluster.local", request(), True),
        ("trustDomains", "cluster", request(), False),
        ("trustDomains", "*", request(), True),
        ("trustDomains", "*.local", request(), True),
        ("trustDomains", "cluster.*", request(), True),
        ("trustDomains", "other.*", request(), False),
        ("requestPrincipals", "*", WITH_TOKEN, True),
        ("requestPrincipals", "https://issuer.example//alice", WITH_TOKEN, True),
        ("requestPrincipals", "https://issuer.example/alice", WITH_TOKEN, False),
        ("requestPrincipals", "https://issuer.example//*", WITH_TOKEN, True),
        ("requestPrincipals", "*/alice", WITH_TOKEN, True),
        ("requestPrincipals", "*example//alice", WITH_TOKEN, True),
        ("requestPrincipals", "*ice", WITH_TOKEN, True),
        ("requestPrincipals", "other/*", WITH_TOKEN, False),
        ("requestPrincipals", "https://issuer.example/", WITH_TOKEN, False),
        # as in istiod: split at the last "/", so iss must be "https:/"
        ("requestPrincipals", "https://issuer*", WITH_TOKEN, False),
    ],
)
def test_source_fields_their_when_keys_and_negations(field, pattern, req, expected):
    check_source_field(field, pattern, req, expected)


@pytest.mark.parametrize("pattern", ["default", "def*", "*ult", "other", "*", "sa"])
def test_namespaces_need_an_identity(pattern):
    assert not allowed(source(namespaces=[pattern]), ANONYMOUS)


@pytest.mark.parametrize(
    "pattern, policy_namespace, expected",
    [
        ("default/sleep", "x", True),
        ("sleep", "default", True),
        ("sleep", "other", False),
        ("default/slee", "x", False),
        ("default/sleep-2", "x", False),
    ],
)
def test_service_accounts_a_bare_one_in_the_policys_namespace(pattern, policy_namespace, expected):
    check_source_field("serviceAccounts", pattern, request(), expected, namespace=policy_namespace)


def test_ip_blocks_use_the_peer_and_remote_ip_blocks_the_original_client():
    req = request(src_ip="10.244.0.5", remote_ip="203.0.113.9")
    assert allowed(source(ipBlocks=["10.244.0.0/16"]), req)
    assert not allowed(source(notIpBlocks=["10.244.0.5"]), req)
    assert allowed(source(remoteIpBlocks=["203.0.113.0/24"]), req)
    assert not allowed(source(notRemoteIpBlocks=["203.0.113.9"]), req)
    assert allowed(source(remoteIpBlocks=["10.244.0.5"]), request())  # no X-Forwarded-For: the peer
    assert allowed(when("source.ip", ["10.244.0.0/16"]), req) and allowed(when("remote.ip", ["203.0.113.9"]), req)


def test_request_principals_without_a_token():
    assert not allowed(source(requestPrincipals=["*"]), request())
    assert allowed(source(notRequestPrincipals=["*"]), request())


# --- when -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, values, expected",
    [
        ("request.auth.claims[sub]", ["alice"], True),
        ("request.auth.claims[sub]", ["bob"], False),
        ("request.auth.claims[groups]", ["ops"], True),
        ("request.auth.claims[groups]", ["o*"], True),
        ("request.auth.claims[groups]", ["admin"], False),
        ("request.auth.claims[nested][role]", ["admin"], True),
        ("request.auth.claims[level]", ["3"], False),  # not a string
        ("request.auth.claims[missing]", ["*"], False),
        ("request.auth.audiences", ["web"], True),
        ("request.auth.audiences", ["other"], False),
        ("request.auth.presenter", ["cli"], True),
        ("request.headers[X-User]", ["bob"], True),
        ("request.headers[x-user]", ["b*"], True),
        ("request.headers[x-user]", ["*"], True),
        ("request.headers[x-missing]", ["*"], False),
        ("request.headers[x-multi]", ["a,b"], True),
        ("destination.port", ["80"], True),
        ("destination.port", ["8080"], False),
        ("destination.ip", ["10.244.1.0/24"], True),
        ("connection.sni", ["outbound_.80_._.httpbin*"], True),
        ("experimental.envoy.filters.network.mysql_proxy[db.table]", ["[update]"], False),
    ],
)
def test_when_keys(key, values, expected):
    req = request(
        jwt_claims=CLAIMS,
        headers=(("x-user", "bob"), ("x-multi", "a"), ("X-Multi", "b")),
        sni="outbound_.80_._.httpbin.default.svc.cluster.local",
    )
    assert allowed(when(key, values), req) is expected
    assert allowed(when(key, not_values=values), req) is not expected


def test_when_conditions_are_anded():
    rule = {
        "when": [
            {"key": "request.auth.claims[sub]", "values": ["alice"]},
            {"key": "request.headers[x-user]", "values": ["bob"]},
        ]
    }
    assert allowed(rule, request(jwt_claims=CLAIMS, headers=(("x-user", "bob"),)))
    assert not allowed(rule, request(jwt_claims=CLAIMS))


def test_claims_without_a_token():
    assert not allowed(when("request.auth.claims[iss]", ["*"]), request())
    assert allowed(when("request.auth.claims[iss]", not_values=["x"]), request())


def test_claim_path():
    assert claim_path("request.auth.claims[iss]") == ["iss"]
    assert claim_path("request.auth.claims[a][b]") == ["a", "b"]
    assert claim_path("request.auth.claims[a.b]") == ["a.b"]


@pytest.mark.parametrize(
    "target, path",
    [("/a/b?x=1", "/a/b"), ("/a/./b/../c", "/a/c"), ("/a/..", "/"), ("/../a", "/a"), ("/a/b/.", "/a/b/"), ("/", "/")],
)
def test_normalize_path(target, path):
    assert normalize_path(target) == path
