"""Validation of an AuthorizationPolicy's rules field by field (source, operation, when) and of its
action, provider and attachment (selector, targetRefs)."""

import pytest

from mesh.policy.model import validate, warnings
from tests.unit.policy_helpers import OPERATION, SOURCE, WHEN, authz, with_operation, with_source, with_when

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
