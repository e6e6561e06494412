"""Validation and parsing of AuthorizationPolicy, PeerAuthentication, RequestAuthentication."""

import copy
import json

import pytest

from mesh.policy.model import (
    AuthorizationPolicy,
    Condition,
    InvalidPolicy,
    JwtHeader,
    JwtRule,
    Operation,
    PeerAuthentication,
    RequestAuthentication,
    Rule,
    Selector,
    Source,
    TargetRef,
    parse,
    parse_as,
    validate,
    warnings,
)
from mesh.policy.validation import parse_duration


def authz(spec, version="v1", **metadata):
    return {
        "apiVersion": f"security.istio.io/{version}",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "ns", **metadata},
        "spec": spec,
    }


def peer(spec, name="pa", namespace="ns", created=None):
    metadata = {"name": name, "namespace": namespace}
    if created:
        metadata["creationTimestamp"] = created
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": metadata, "spec": spec}


def request_authn(spec):
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "ra", "namespace": "ns"},
        "spec": spec,
    }


def with_source(**source):
    return authz({"rules": [{"from": [{"source": source}]}]})


def with_operation(**operation):
    return authz({"rules": [{"to": [{"operation": operation}]}]})


def with_when(**condition):
    return authz({"rules": [{"when": [condition]}]})


SOURCE = "spec.rules[0].from[0].source"
OPERATION = "spec.rules[0].to[0].operation"
WHEN = "spec.rules[0].when[0]"


# --- object header -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_minimal_objects_of_every_kind_are_valid(version):
    for obj in (authz({}, version), peer({}), request_authn({})):
        obj["apiVersion"] = f"security.istio.io/{version}"
        assert validate(obj) == []


def test_missing_spec_is_an_empty_spec():
    obj = authz({})
    del obj["spec"]
    assert validate(obj) == []
    assert parse(obj).rules == ()


@pytest.mark.parametrize(
    "obj, expected",
    [
        (
            {**authz({}), "apiVersion": "security.istio.io/v1alpha1"},
            (
                "apiVersion",
                'unsupported apiVersion "security.istio.io/v1alpha1": '
                "must be security.istio.io/v1 or security.istio.io/v1beta1",
            ),
        ),
        (
            {**authz({}), "kind": "Sidecar"},
            (
                "kind",
                'unsupported kind "Sidecar": must be one of AuthorizationPolicy, PeerAuthentication, '
                "RequestAuthentication",
            ),
        ),
        ({**authz({}), "metadata": {"namespace": "ns"}}, ("metadata.name", "must be set")),
        (
            {**authz({}), "metadata": {"name": "Bad_Name"}},
            ("metadata.name", 'invalid name "Bad_Name": must be a lowercase RFC 1123 subdomain'),
        ),
        (
            {**authz({}), "metadata": {"name": "p", "namespace": "a.b"}},
            ("metadata.namespace", 'invalid namespace "a.b": must be a lowercase RFC 1123 label'),
        ),
        ({**authz({}), "extra": 1}, ("extra", 'unknown field "extra"')),
        ({**authz({}), "metadata": None}, ("metadata", "must be an object with a name")),
    ],
)
def test_header_problems(obj, expected):
    assert expected in validate(obj)


def test_not_a_mapping():
    assert validate(["x"]) == [("", "must be an object, got list")]


# --- shape: unknown fields, types, enums ------------------------------------------------------


@pytest.mark.parametrize(
    "obj, expected",
    [
        (authz({"rule": []}), ("spec.rule", 'unknown field "rule"')),
        (with_source(principal=["a"]), (f"{SOURCE}.principal", 'unknown field "principal"')),
        (with_operation(port=["80"]), (f"{OPERATION}.port", 'unknown field "port"')),
        (with_when(key="source.ip", value=["1.2.3.4"]), (f"{WHEN}.value", 'unknown field "value"')),
        (
            authz({"rules": [{"from": [{"source": {"principals": ["a"]}, "extra": 1}]}]}),
            ("spec.rules[0].from[0].extra", 'unknown field "extra"'),
        ),
        (with_operation(ports=[8080]), (f"{OPERATION}.ports[0]", 'must be a string, got integer (quote it: "8080")')),
        (with_source(principals="a"), (f"{SOURCE}.principals", "must be a list, got string")),
        (authz({"rules": {"from": []}}), ("spec.rules", "must be a list, got object")),
        (authz({"rules": [None]}), ("spec.rules[0]", "must not be null")),
        (
            authz({"action": "REJECT"}),
            ("spec.action", 'unsupported value "REJECT": must be one of ALLOW, DENY, AUDIT, CUSTOM'),
        ),
        (
            authz({"selector": {"matchLabels": {"version": 1}}}),
            ('spec.selector.matchLabels["version"]', 'must be a string, got integer (quote it: "1")'),
        ),
        (authz({"selector": {"labels": {}}}), ("spec.selector.labels", 'unknown field "labels"')),
        (
            authz({"targetRefs": [{"kind": "Gateway", "name": "w"}] * 17}),
            ("spec.targetRefs", "must have at most 16 items"),
        ),
        (
            with_source(serviceAccounts=[f"sa{i}" for i in range(17)]),
            (f"{SOURCE}.serviceAccounts", "must have at most 16 items"),
        ),
        (
            peer({"mtls": {"mode": "OFF"}}),
            ("spec.mtls.mode", 'unsupported value "OFF": must be one of UNSET, DISABLE, PERMISSIVE, STRICT'),
        ),
        (
            request_authn({"jwtRules": [{"issuer": "i", "forwardOriginalToken": "yes"}]}),
            ("spec.jwtRules[0].forwardOriginalToken", "must be a boolean, got string"),
        ),
        (
            request_authn({"jwtRules": [{"issuer": "i", "jwksURI": "https://x"}]}),
            ("spec.jwtRules[0].jwksURI", 'unknown field "jwksURI"'),
        ),
    ],
)
def test_shape_problems(obj, expected):
    assert expected in validate(obj)


def test_shape_problems_are_reported_alone():
    obj = authz({"action": "DENY", "rules": [{"from": [{"source": {"ipBlocks": ["bad"], "x": 1}}]}]})
    assert validate(obj) == [(f"{SOURCE}.x", 'unknown field "x"')]


def test_null_fields_are_absent():
    assert validate(authz({"selector": None, "rules": [{"from": None, "to": None, "when": None}]})) == []


# --- AuthorizationPolicy: source ---------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("principals", "td/ns/a/sa/b"),
        ("notPrincipals", "td/ns/a/sa/b"),
        ("requestPrincipals", "iss/sub"),
        ("notRequestPrincipals", "iss/sub"),
        ("namespaces", "a"),
        ("notNamespaces", "a"),
        ("serviceAccounts", "ns/sa"),
        ("notServiceAccounts", "sa"),
        ("ipBlocks", "10.0.0.0/8"),
        ("notIpBlocks", "10.0.0.1"),
        ("remoteIpBlocks", "10.0.0.0/8"),
        ("notRemoteIpBlocks", "::1"),
        ("trustDomains", "td"),
        ("notTrustDomains", "*.td"),
    ],
)
def test_every_source_field_accepts_a_value_and_refuses_an_empty_string(field, value):
    assert validate(with_source(**{field: [value]})) == []
    assert validate(with_source(**{field: [value, ""]})) == [(f"{SOURCE}.{field}[1]", "empty value not allowed")]


@pytest.mark.parametrize("value", ["10.0.0.0/8", "10.0.0.1", "10.0.0.1/24", "0.0.0.0/0", "2001:db8::/32", "::1"])
def test_valid_ip_blocks(value):
    assert validate(with_source(ipBlocks=[value])) == []


@pytest.mark.parametrize(
    "value, problem",
    [
        ("10.0.0.0/33", 'invalid CIDR "10.0.0.0/33"'),
        ("10.0.0.0/", 'invalid CIDR "10.0.0.0/"'),
        ("10.0.0.0/08", 'invalid CIDR "10.0.0.0/08"'),
        ("10.0.0/8", 'invalid CIDR "10.0.0/8"'),
        ("2001:db8::/129", 'invalid CIDR "2001:db8::/129"'),
        ("fe80::1%eth0/64", 'invalid CIDR "fe80::1%eth0/64"'),
        ("10.0.0.256", 'invalid IP address "10.0.0.256"'),
        ("010.0.0.1", 'invalid IP address "010.0.0.1"'),
        ("example.com", 'invalid IP address "example.com"'),
    ],
)
@pytest.mark.parametrize("field", ["ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"])
def test_invalid_ip_blocks(field, value, problem):
    obj = with_source(**{field: ["10.0.0.0/8", value]})
    assert validate(obj) == [(f"{SOURCE}.{field}[1]", problem)]


def test_brief_example_path_and_message():
    obj = with_source(ipBlocks=["10.0.0.0/8", "10.0.0.0/33"])
    assert validate(obj) == [("spec.rules[0].from[0].source.ipBlocks[1]", 'invalid CIDR "10.0.0.0/33"')]


def test_principals_with_spiffe_prefix_are_valid_as_in_istiod_but_get_a_hint():
    obj = with_source(principals=["spiffe://cluster.local/ns/a/sa/b"])
    assert validate(obj) == []
    assert warnings(obj) == [
        (f"{SOURCE}.principals[0]", 'lab hint: principals are written without "spiffe://", so this value never matches')
    ]


@pytest.mark.parametrize(
    "value, problem",
    [
        ("ns/*", 'wildcard not allowed in service account "ns/*"'),
        ("a/b/c", "expected format 'serviceAccount' or 'namespace/serviceAccount', found \"a/b/c\""),
        ("/sa", "expected format 'serviceAccount' or 'namespace/serviceAccount', found \"/sa\""),
        ("ns/", "expected format 'serviceAccount' or 'namespace/serviceAccount', found \"ns/\""),
        ("x" * 321, "value cannot exceed 320 characters"),
    ],
)
@pytest.mark.parametrize("field", ["serviceAccounts", "notServiceAccounts"])
def test_invalid_service_accounts(field, value, problem):
    assert validate(with_source(**{field: [value]})) == [(f"{SOURCE}.{field}[0]", problem)]


@pytest.mark.parametrize("identity_field", ["principals", "notPrincipals", "namespaces", "notNamespaces"])
def test_service_accounts_exclude_principals_and_namespaces(identity_field):
    obj = with_source(serviceAccounts=["sa"], **{identity_field: ["x"]})
    assert validate(obj) == [(SOURCE, "cannot set serviceAccounts with namespaces or principals")]


@pytest.mark.parametrize(
    "value, problem",
    [
        ("td", None),
        ("*", None),
        ("*.td", None),
        ("td.*", None),
        ("a*b", 'wildcard is only allowed at the start or end, found "a*b"'),
        ("*a*", 'at most one wildcard is allowed, found "*a*"'),
        ("td/x", "trust domain must not contain '/', found \"td/x\""),
    ],
)
def test_trust_domains(value, problem):
    expected = [(f"{SOURCE}.trustDomains[0]", problem)] if problem else []
    assert validate(with_source(trustDomains=[value])) == expected


def test_empty_source_and_missing_source():
    assert validate(with_source()) == [(SOURCE, "must not be empty")]
    obj = authz({"rules": [{"from": [{}]}]})
    assert validate(obj) == [(SOURCE, "must be set")]
    assert validate(authz({"rules": [{"from": []}]})) == [("spec.rules[0].from", "must not be empty")]


# --- AuthorizationPolicy: operation ------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"]
)
def test_every_operation_field_accepts_a_value_and_refuses_an_empty_string(field):
    value = "8080" if "orts" in field else "/x" if "aths" in field else "GET"
    assert validate(with_operation(**{field: [value]})) == []
    assert validate(with_operation(**{field: [""]})) == [(f"{OPERATION}.{field}[0]", "empty value not allowed")]


@pytest.mark.parametrize(
    "port, ok",
    [
        ("80", True),
        ("1", True),
        ("65535", True),
        ("0", True),  # istiod's ParseUint accepts 0
        ("65536", False),
        ("-1", False),
        ("+80", False),
        ("http", False),
        ("8080 ", False),
        ("٣", False),
    ],
)
@pytest.mark.parametrize("field", ["ports", "notPorts"])
def test_ports(field, port, ok):
    expected = (
        [] if ok else [(f"{OPERATION}.{field}[0]", f'invalid port "{port}": must be an integer string in 0..65535')]
    )
    assert validate(with_operation(**{field: [port]})) == expected


@pytest.mark.parametrize(
    "path, ok",
    [
        ("/ip", True),
        ("/api/*", True),
        ("*", True),
        ("/foo/{*}", True),
        ("/foo/{**}", True),
        ("/foo/{*}/bar/{**}", True),
        ("/{**}/foo/{*}", False),
        ("/foo/{*}.txt", False),
        ("/foo/{x}", False),
        ("/*/baz/{*}", False),
    ],
)
def test_path_templates(path, ok):
    problems = validate(with_operation(paths=[path]))
    assert (problems == []) is ok, problems


def test_empty_operation_and_missing_operation():
    assert validate(with_operation()) == [(OPERATION, "must not be empty")]
    assert validate(authz({"rules": [{"to": [{}]}]})) == [(OPERATION, "must be set")]
    assert validate(authz({"rules": [{"to": []}]})) == [("spec.rules[0].to", "must not be empty")]


# --- AuthorizationPolicy: when -----------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("source.ip", "10.0.0.0/8"),
        ("remote.ip", "10.0.0.1"),
        ("source.namespace", "ns"),
        ("source.serviceAccount", "ns/sa"),
        ("source.principal", "td/ns/a/sa/b"),
        ("source.trustDomain", "td"),
        ("request.auth.principal", "iss/sub"),
        ("request.auth.audiences", "aud"),
        ("request.auth.presenter", "azp"),
        ("request.auth.claims[iss]", "iss"),
        ("request.auth.claims[nested][key]", "v"),
        ("request.headers[x-token]", "t"),
        ("destination.ip", "10.0.0.1"),
        ("destination.port", "8080"),
        ("connection.sni", "a.example"),
        ("experimental.envoy.filters.network.mysql_proxy[db.table]", "[update]"),
    ],
)
def test_known_when_keys(key, value):
    assert validate(with_when(key=key, values=[value])) == []
    assert validate(with_when(key=key, notValues=[value])) == []


@pytest.mark.parametrize(
    "key, problem",
    [
        ("source.user", "unknown attribute: source.user"),
        ("request.method", "unknown attribute: request.method"),
        ("request.headers", "bad key (request.headers): should have format a[b]"),
        ("request.auth.claims[]", "bad key (request.auth.claims[]): should have format a[b]"),
        ("destination.namespace", "attribute destination.namespace is replaced by the metadata.namespace"),
        ("destination.labels[app]", "attribute destination.labels[app] is replaced by the workload selector"),
        ("destination.name", "deprecated attribute destination.name: only supported in v1alpha1"),
    ],
)
def test_unknown_when_keys(key, problem):
    assert validate(with_when(key=key, values=["x"])) == [(f"{WHEN}.key", problem)]


@pytest.mark.parametrize(
    "key, value, problem",
    [
        ("source.ip", "10.0.0.0/33", 'invalid CIDR "10.0.0.0/33"'),
        ("destination.ip", "nope", 'invalid IP address "nope"'),
        ("destination.port", "99999", 'invalid port "99999": must be an integer string in 0..65535'),
        (
            "source.serviceAccount",
            "a/b/c",
            "expected format 'serviceAccount' or 'namespace/serviceAccount', found \"a/b/c\"",
        ),
        ("source.trustDomain", "a*b", 'wildcard is only allowed at the start or end, found "a*b"'),
        ("source.namespace", "", "empty value not allowed"),
    ],
)
def test_when_values(key, value, problem):
    assert validate(with_when(key=key, notValues=[value])) == [(f"{WHEN}.notValues[0]", problem)]


def test_when_needs_a_key_and_some_values():
    assert validate(with_when(values=["x"])) == [(f"{WHEN}.key", "must not be empty")]
    assert validate(with_when(key="source.ip")) == [
        (WHEN, "at least one of `values` or `notValues` must be set for key source.ip")
    ]


# --- AuthorizationPolicy: action, provider, attachment -----------------------------------------


def test_custom_needs_a_provider_and_rules():
    assert validate(authz({"action": "CUSTOM", "rules": [{}]})) == [
        ("spec.provider.name", "must not be empty with action CUSTOM")
    ]
    assert validate(authz({"action": "CUSTOM", "provider": {"name": "ext"}})) == [
        (
            "spec.rules",
            "CUSTOM action without `rules` is meaningless as it will never be triggered, "
            "add an empty rule `{}` if you want it be triggered for every request",
        )
    ]
    assert validate(authz({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]})) == []


def test_custom_refuses_identity_fields():
    obj = authz(
        {
            "action": "CUSTOM",
            "provider": {"name": "ext"},
            "rules": [
                {
                    "from": [{"source": {"principals": ["a"], "ipBlocks": ["10.0.0.0/8"]}}],
                    "when": [{"key": "request.auth.claims[iss]", "values": ["x"]}],
                }
            ],
        }
    )
    assert validate(obj) == [
        (f"{SOURCE}.principals", "is currently not supported with CUSTOM action"),
        (f"{WHEN}.key", "request.auth.claims[iss] is currently not supported with CUSTOM action"),
    ]


def test_provider_only_with_custom():
    assert validate(authz({"action": "DENY", "provider": {"name": "ext"}, "rules": [{}]})) == [
        ("spec.provider", "must not be set with non CUSTOM action, found DENY")
    ]


def test_deny_needs_rules():
    problem = (
        "spec.rules",
        "DENY action without `rules` is meaningless as it will never be triggered, "
        "add an empty rule `{}` if you want it be triggered for every request",
    )
    assert validate(authz({"action": "DENY"})) == [problem]
    assert validate(authz({"action": "DENY", "rules": []})) == [problem]
    assert validate(authz({"action": "DENY", "rules": [{}]})) == []


def test_allow_and_audit_without_rules_are_valid():
    assert validate(authz({"action": "ALLOW"})) == []
    assert validate(authz({"action": "AUDIT", "rules": [{}]})) == []


@pytest.mark.parametrize(
    "spec",
    [
        {
            "selector": {"matchLabels": {"app": "a"}},
            "targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "w"},
        },
        {"selector": {"matchLabels": {"app": "a"}}, "targetRefs": [{"kind": "Service", "name": "s"}]},
        {"targetRef": {"kind": "Service", "name": "s"}, "targetRefs": [{"kind": "Service", "name": "s"}]},
    ],
)
def test_one_attachment_only(spec):
    assert validate(authz(spec)) == [("spec", "only one of selector, targetRef or targetRefs can be set")]


@pytest.mark.parametrize(
    "ref, problem",
    [
        ({"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "w"}, None),
        ({"kind": "GatewayClass", "group": "gateway.networking.k8s.io", "name": "istio-waypoint"}, None),
        ({"kind": "Service", "name": "s"}, None),
        ({"kind": "Service", "group": "core", "name": "s"}, None),
        ({"kind": "ServiceEntry", "group": "networking.istio.io", "name": "se"}, None),
        (
            {"kind": "Gateway", "group": "gateway.networking.k8s.io"},
            ("spec.targetRefs[0].name", "targetRef name must be set"),
        ),
        (
            {"kind": "Service", "name": "s", "namespace": "other"},
            ("spec.targetRefs[0].namespace", "must not be set: cross namespace referencing is not supported"),
        ),
        (
            {"kind": "Deployment", "group": "apps", "name": "d"},
            (
                "spec.targetRefs[0]",
                "targetRef must be to one of core/Service, networking.istio.io/ServiceEntry, "
                "gateway.networking.k8s.io/Gateway, gateway.networking.k8s.io/GatewayClass but was apps/Deployment",
            ),
        ),
    ],
)
def test_target_refs(ref, problem):
    assert validate(authz({"targetRefs": [ref]})) == ([problem] if problem else [])


@pytest.mark.parametrize(
    "labels, problem",
    [
        ({"": "x"}, "key must not be empty"),
        ({"app": "a*"}, "wildcard is not supported in selector"),
        ({"ap*": "a"}, "wildcard is not supported in selector"),
        ({"app": "x" * 64}, "label value must be at most 63 characters"),
    ],
)
def test_selector_labels(labels, problem):
    key = next(iter(labels))
    assert validate(authz({"selector": {"matchLabels": labels}})) == [(f'spec.selector.matchLabels["{key}"]', problem)]


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


# --- parsing AuthorizationPolicy ---------------------------------------------------------------------


def test_parse_full_authorization_policy():
    obj = authz(
        {
            "selector": {"matchLabels": {"app": "a", "version": "v1"}},
            "action": "DENY",
            "rules": [
                {
                    "from": [
                        {
                            "source": {
                                "principals": ["td/ns/a/sa/b"],
                                "notNamespaces": ["x"],
                                "ipBlocks": ["10.0.0.0/8"],
                                "requestPrincipals": ["iss/sub"],
                                "notRemoteIpBlocks": ["1.2.3.4"],
                            }
                        }
                    ],
                    "to": [{"operation": {"hosts": ["h"], "ports": ["80"], "notMethods": ["POST"], "paths": ["/x*"]}}],
                    "when": [{"key": "request.headers[x]", "values": ["1"], "notValues": ["2"]}],
                },
                {},
            ],
        },
        annotations={"istio.io/dry-run": "true"},
    )
    assert parse(obj) == AuthorizationPolicy(
        name="p",
        namespace="ns",
        action="DENY",
        selector=Selector((("app", "a"), ("version", "v1"))),
        dry_run=True,
        rules=(
            Rule(
                from_=(
                    Source(
                        principals=("td/ns/a/sa/b",),
                        not_namespaces=("x",),
                        ip_blocks=("10.0.0.0/8",),
                        request_principals=("iss/sub",),
                        not_remote_ip_blocks=("1.2.3.4",),
                    ),
                ),
                to=(Operation(hosts=("h",), ports=("80",), not_methods=("POST",), paths=("/x*",)),),
                when=(Condition("request.headers[x]", ("1",), ("2",)),),
            ),
            Rule(),
        ),
    )
    assert parse(obj).key == "ns/p"


@pytest.mark.parametrize(
    "annotation, dry_run",
    [("true", True), ("1", True), ("True", True), ("false", False), ("yes", False), ("", False), (None, False)],
)
def test_dry_run_annotation_follows_go_parse_bool(annotation, dry_run):
    annotations = {} if annotation is None else {"istio.io/dry-run": annotation}
    assert parse(authz({}, annotations=annotations)).dry_run is dry_run


def test_parse_defaults():
    obj = authz(
        {"targetRef": {"kind": "Service", "name": "s"}, "action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]}
    )
    del obj["metadata"]["namespace"]
    policy = parse(obj)
    assert (policy.namespace, policy.selector, policy.target_refs, policy.provider) == (
        "default",
        None,
        (TargetRef("Service", "s"),),
        "ext",
    )
    assert parse(authz({"selector": {}})).selector == Selector(())


def test_parse_refuses_invalid_objects_with_every_problem():
    with pytest.raises(InvalidPolicy) as error:
        parse(authz({"action": "DENY"}))
    assert error.value.problems == validate(authz({"action": "DENY"}))
    assert str(error.value).startswith("spec.rules: DENY action without `rules`")


def test_parse_as():
    policy = parse(authz({}))
    assert parse_as(AuthorizationPolicy, policy) is policy
    assert parse_as(AuthorizationPolicy, authz({})) == policy
    with pytest.raises(TypeError, match="expected a PeerAuthentication, got a AuthorizationPolicy"):
        parse_as(PeerAuthentication, authz({}))


def test_validate_does_not_mutate():
    obj = with_source(principals=["a"])
    before = copy.deepcopy(obj)
    validate(obj), warnings(obj), parse(obj)
    assert obj == before


# --- warnings ----------------------------------------------------------------------------------------


def test_deny_with_only_http_attributes_warns():
    http_only = authz({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]})
    with_port = authz({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"], "ports": ["80"]}}]}]})
    assert warnings(http_only) == [
        (
            "spec.rules[0]",
            "configured AuthorizationPolicy will deny all traffic to TCP ports "
            "under its scope due to the use of only HTTP attributes in a DENY rule; it is "
            "recommended to explicitly specify the port",
        )
    ]
    assert warnings(with_port) == []


def test_selector_without_labels_warns():
    assert warnings(authz({"selector": {}})) == [("spec.selector", "workload selector specified without labels")]
    assert warnings(peer({"selector": {"matchLabels": {}}})) == [
        ("spec.selector", "workload selector specified without labels")
    ]
