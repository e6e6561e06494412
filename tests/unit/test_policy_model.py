"""Validation and parsing of AuthorizationPolicy, PeerAuthentication, RequestAuthentication: the
object header and shape, parsing an AuthorizationPolicy, warnings. Rules field by field:
test_policy_model_rules.py; PeerAuthentication and RequestAuthentication: test_policy_model_authn.py."""

import copy

import pytest

from mesh.policy.model import (
    AuthorizationPolicy,
    Condition,
    InvalidPolicy,
    Operation,
    PeerAuthentication,
    Rule,
    Selector,
    Source,
    TargetRef,
    parse,
    parse_as,
    validate,
    warnings,
)
from tests.unit.policy_helpers import (
    OPERATION,
    SOURCE,
    WHEN,
    authz,
    peer,
    request_authn,
    with_operation,
    with_source,
    with_when,
)

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
