"""istiod's translation of AuthorizationPolicy and PeerAuthentication for ztunnel."""

import pytest

from mesh.policy import peerauth, rbac
from mesh.policy.ztunnel import (
    STATIC_STRICT,
    EffectiveMtls,
    ZtunnelTranslation,
    effective_mtls_mode,
    explain_mtls,
    selects,
    string_match,
    to_ztunnel,
    workload_policy_keys,
)
from tests.unit.policy_helpers import authz, peer

HTTP_ALLOW = (
    "ztunnel does not support HTTP attributes (found: {}). In ambient mode you must use a waypoint "
    "proxy to enforce HTTP rules. Within an ALLOW policy, rules matching HTTP attributes are omitted. "
    "This will be more restrictive than requested."
)
HTTP_DENY_MIXED = (
    "ztunnel does not support HTTP attributes (found: {}). In ambient mode you must use a waypoint "
    "proxy to enforce HTTP rules. DENY policy with HTTP attributes is enforced without the HTTP "
    "rules. This will be more restrictive than requested."
)
HTTP_DENY_NO_EFFECT = (
    "ztunnel does not support HTTP attributes (found: {}). In ambient mode you must use a "
    "waypoint proxy to enforce HTTP rules. After omitting unsupported HTTP attributes, this DENY "
    "policy has no enforceable rules at ztunnel and will have no effect. Deploy a waypoint proxy "
    "and use a targetRef to enforce this policy."
)

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"


def rules_of(spec, **kw):
    return to_ztunnel(authz(spec, **kw)).authorization["rules"]


def only_match(spec):
    """The single Match of a one-rule, one-clause translation."""
    [rule] = rules_of(spec)
    [clause] = rule["clauses"]
    [match] = clause["matches"]
    return match


def conn(identity=SLEEP, port=80, src="10.244.0.5", dst="10.244.1.7"):
    return rbac.Connection(src, identity, dst, port, "ns")


# --- string matches ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("*", {"presence": {}}),
        ("*.example", {"suffix": ".example"}),
        ("prod-*", {"prefix": "prod-"}),
        ("exact", {"exact": "exact"}),
        ("a*b", {"exact": "a*b"}),
    ],
)
def test_string_match_forms(value, expected):
    assert string_match(value) == expected


# --- field by field ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, match",
    [
        ({"principals": ["td/ns/a/sa/b", "td/*"]}, {"principals": [{"exact": "td/ns/a/sa/b"}, {"prefix": "td/"}]}),
        ({"notPrincipals": ["*"]}, {"notPrincipals": [{"presence": {}}]}),
        ({"namespaces": ["prod-*"]}, {"namespaces": [{"prefix": "prod-"}]}),
        ({"notNamespaces": ["*-test"]}, {"notNamespaces": [{"suffix": "-test"}]}),
        (
            {"serviceAccounts": ["other/sa1", "sa2"]},
            {
                "serviceAccounts": [
                    {"namespace": "other", "serviceAccount": "sa1"},
                    {"namespace": "ns", "serviceAccount": "sa2"},
                ]
            },
        ),
        ({"notServiceAccounts": ["sa"]}, {"notServiceAccounts": [{"namespace": "ns", "serviceAccount": "sa"}]}),
        (
            {"ipBlocks": ["10.0.0.0/8", "10.1.2.3", "2001:db8::/32"]},
            {"sourceIps": ["10.0.0.0/8", "10.1.2.3/32", "2001:db8::/32"]},
        ),
        ({"notIpBlocks": ["10.0.0.1/24", "::1"]}, {"notSourceIps": ["10.0.0.1/24", "::1/128"]}),
    ],
)
def test_source_fields(source, match):
    assert only_match({"rules": [{"from": [{"source": source}]}]}) == match


@pytest.mark.parametrize(
    "operation, match",
    [
        ({"ports": ["80", "8080"]}, {"destinationPorts": [80, 8080]}),
        ({"notPorts": ["22"]}, {"notDestinationPorts": [22]}),
    ],
)
def test_operation_ports(operation, match):
    assert only_match({"rules": [{"to": [{"operation": operation}]}]}) == match


@pytest.mark.parametrize(
    "key, values, match",
    [
        ("source.ip", ["10.0.0.0/8"], {"sourceIps": ["10.0.0.0/8"]}),
        ("source.namespace", ["a", "b*"], {"namespaces": [{"exact": "a"}, {"prefix": "b"}]}),
        ("source.principal", ["*"], {"principals": [{"presence": {}}]}),
        ("destination.ip", ["10.96.0.1"], {"destinationIps": ["10.96.0.1/32"]}),
        ("destination.port", ["8000"], {"destinationPorts": [8000]}),
    ],
)
def test_l4_when_keys(key, values, match):
    assert only_match({"rules": [{"when": [{"key": key, "values": values}]}]}) == match
    negated = {f"not{k[0].upper()}{k[1:]}": v for k, v in match.items()}
    assert only_match({"rules": [{"when": [{"key": key, "notValues": values}]}]}) == negated
    both = only_match({"rules": [{"when": [{"key": key, "values": values, "notValues": values}]}]})
    assert both == {**match, **negated}


def test_clause_order_is_to_from_then_one_per_when():
    [rule] = rules_of(
        {
            "rules": [
                {
                    "from": [{"source": {"namespaces": ["a"]}}, {"source": {"namespaces": ["b"]}}],
                    "to": [{"operation": {"ports": ["80"]}}],
                    "when": [
                        {"key": "source.ip", "values": ["10.0.0.0/8"]},
                        {"key": "destination.port", "values": ["80"]},
                    ],
                }
            ]
        }
    )
    assert rule == {
        "clauses": [
            {"matches": [{"destinationPorts": [80]}]},
            {"matches": [{"namespaces": [{"exact": "a"}]}, {"namespaces": [{"exact": "b"}]}]},
            {"matches": [{"sourceIps": ["10.0.0.0/8"]}]},
            {"matches": [{"destinationPorts": [80]}]},
        ]
    }


# --- whole policies ------------------------------------------------------------------------------


def test_full_authorization_shape():
    translation = to_ztunnel(authz({"action": "DENY", "rules": [{"from": [{"source": {"notPrincipals": ["*"]}}]}]}))
    assert translation == ZtunnelTranslation(
        {
            "name": "p",
            "namespace": "ns",
            "scope": "NAMESPACE",
            "action": "DENY",
            "rules": [{"clauses": [{"matches": [{"notPrincipals": [{"presence": {}}]}]}]}],
            "dryRun": False,
        },
        None,
    )


@pytest.mark.parametrize(
    "namespace, spec, scope",
    [
        ("istio-system", {}, "GLOBAL"),
        ("ns", {}, "NAMESPACE"),
        ("ns", {"selector": {"matchLabels": {"app": "a"}}}, "WORKLOAD_SELECTOR"),
        ("istio-system", {"selector": {"matchLabels": {"app": "a"}}}, "WORKLOAD_SELECTOR"),
        ("ns", {"selector": {}}, "WORKLOAD_SELECTOR"),
    ],
)
def test_scope(namespace, spec, scope):
    assert to_ztunnel(authz(spec, namespace=namespace)).authorization["scope"] == scope


def test_root_namespace_is_configurable():
    assert to_ztunnel(authz({}, namespace="mesh-root"), root_namespace="mesh-root").authorization["scope"] == "GLOBAL"
    assert (
        to_ztunnel(authz({}, namespace="istio-system"), root_namespace="mesh-root").authorization["scope"]
        == "NAMESPACE"
    )


def test_allow_without_rules_has_no_rules_and_allows_nothing():
    authorization = to_ztunnel(authz({})).authorization
    assert authorization["rules"] == []
    assert not rbac.evaluate(conn(), [authorization]).allowed


def test_empty_rule_has_no_clauses_and_matches_everything():
    authorization = to_ztunnel(authz({"rules": [{}]})).authorization
    assert authorization["rules"] == [{"clauses": []}]
    assert rbac.evaluate(conn(identity=None), [authorization]).allowed


@pytest.mark.parametrize("action", ["CUSTOM", "AUDIT"])
def test_custom_and_audit_are_not_sent(action):
    spec = {"action": action, "rules": [{}]}
    if action == "CUSTOM":
        spec["provider"] = {"name": "ext-authz"}
    assert to_ztunnel(authz(spec)) == ZtunnelTranslation(None, f"ztunnel does not support the {action} action")


@pytest.mark.parametrize(
    "attachment",
    [
        {"targetRef": {"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}},
        {"targetRefs": [{"kind": "Service", "name": "httpbin"}]},
    ],
)
def test_target_ref_policies_are_not_sent(attachment):
    assert to_ztunnel(authz({**attachment, "action": "DENY", "rules": [{}]})) == ZtunnelTranslation(None, None)


def test_dry_run_is_off_unless_enabled():
    policy = authz({"action": "DENY", "rules": [{}]}, annotations={"istio.io/dry-run": "true"})
    assert to_ztunnel(policy) == ZtunnelTranslation(
        None,
        'found policy "ns/p" using dry-run annotation, but support '
        "for ambient dry-run authorizationPolicies isn't enabled",
    )
    assert to_ztunnel(policy, dry_run_enabled=True).authorization["dryRun"] is True


# --- HTTP attributes -------------------------------------------------------------------------------


def _with_negations(fields: dict) -> list[tuple[str, list[str]]]:
    """Each field with its values, then its `not` form (`hosts`, `notHosts`)."""
    return [(f, values) for field, values in fields.items() for f in (field, f"not{field[0].upper()}{field[1:]}")]


# Every attribute only a waypoint can see: each operation and source field (and its negation), and when keys.
HTTP_RULES = [
    *(
        ({"to": [{"operation": {f: v}}]}, f)
        for f, v in _with_negations({"hosts": ["h"], "methods": ["GET"], "paths": ["/ip"]})
    ),
    *(
        ({"from": [{"source": {f: v}}]}, f)
        for f, v in _with_negations({"requestPrincipals": ["*"], "remoteIpBlocks": ["1.2.3.4"], "trustDomains": ["td"]})
    ),
    *(
        ({"when": [{"key": key, "values": ["x"]}]}, key)
        for key in ("request.auth.claims[iss]", "request.headers[x-user]", "source.serviceAccount", "connection.sni")
    ),
]


@pytest.mark.parametrize("rule, attribute", HTTP_RULES)
def test_allow_rules_with_http_attributes_are_dropped_and_fail_closed(rule, attribute):
    translation = to_ztunnel(authz({"rules": [rule]}))
    assert translation.authorization["rules"] == []
    assert translation.status_message == HTTP_ALLOW.format(attribute)
    assert not rbac.evaluate(conn(), [translation.authorization]).allowed


def test_only_the_http_rules_of_an_allow_policy_are_dropped():
    translation = to_ztunnel(
        authz(
            {
                "rules": [
                    {
                        "from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}],
                        "to": [{"operation": {"methods": ["GET"], "paths": ["/ip"]}}],
                    },
                    {"from": [{"source": {"namespaces": ["ops"]}}]},
                ]
            }
        )
    )
    assert translation.authorization["rules"] == [{"clauses": [{"matches": [{"namespaces": [{"exact": "ops"}]}]}]}]
    assert translation.status_message == HTTP_ALLOW.format("methods, paths")
    assert not rbac.evaluate(conn(), [translation.authorization]).allowed
    assert rbac.evaluate(conn("spiffe://cluster.local/ns/ops/sa/x"), [translation.authorization]).allowed


def test_found_attributes_are_sorted_and_unique_across_rules():
    translation = to_ztunnel(
        authz(
            {
                "rules": [
                    {"to": [{"operation": {"paths": ["/a"], "methods": ["GET"]}}]},
                    {
                        "to": [{"operation": {"paths": ["/b"]}}],
                        "when": [{"key": "request.auth.claims[iss]", "values": ["i"]}],
                    },
                ]
            }
        )
    )
    assert translation.status_message == HTTP_ALLOW.format("methods, paths, request.auth.claims[iss]")


def test_deny_keeps_the_l4_part_of_a_mixed_rule():
    translation = to_ztunnel(
        authz({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"], "ports": ["8080"]}}]}]})
    )
    assert translation.authorization["rules"] == [{"clauses": [{"matches": [{"destinationPorts": [8080]}]}]}]
    assert translation.status_message == HTTP_DENY_MIXED.format("paths")
    assert not rbac.evaluate(conn(port=8080), [translation.authorization]).allowed  # more restrictive
    assert rbac.evaluate(conn(port=80), [translation.authorization]).allowed


@pytest.mark.parametrize("rule, attribute", HTTP_RULES)
def test_deny_with_only_http_attributes_has_no_effect(rule, attribute):
    translation = to_ztunnel(authz({"action": "DENY", "rules": [rule]}))
    assert translation.status_message == HTTP_DENY_NO_EFFECT.format(attribute)
    [translated] = translation.authorization["rules"]
    assert translated["clauses"][0]["matches"] == [{}]  # an empty match: skipped by ztunnel
    assert rbac.evaluate(conn(), [translation.authorization]).allowed


def test_deny_with_http_when_and_l4_from_never_fires():
    # The HTTP `when` becomes an empty match, so its clause (and the rule) can never match.
    translation = to_ztunnel(
        authz(
            {
                "action": "DENY",
                "rules": [
                    {
                        "from": [{"source": {"namespaces": ["default"]}}],
                        "when": [{"key": "request.headers[x]", "values": ["1"]}],
                    }
                ],
            }
        )
    )
    assert translation.status_message == HTTP_DENY_NO_EFFECT.format("request.headers[x]")
    assert rbac.evaluate(conn(), [translation.authorization]).allowed


# --- which workloads a policy applies to ---------------------------------------------------------


@pytest.mark.parametrize(
    "namespace, spec, labels, pod_namespace, expected",
    [
        ("ns", {"selector": {"matchLabels": {"app": "a"}}}, {"app": "a", "version": "v1"}, "ns", True),
        (
            "ns",
            {"selector": {"matchLabels": {"app": "a", "version": "v2"}}},
            {"app": "a", "version": "v1"},
            "ns",
            False,
        ),
        ("ns", {"selector": {"matchLabels": {"app": "a"}}}, {"app": "a"}, "other", False),
        ("istio-system", {"selector": {"matchLabels": {"app": "a"}}}, {"app": "a"}, "other", True),
        ("ns", {}, {}, "ns", True),
        ("ns", {}, {}, "other", False),
        ("istio-system", {}, {}, "other", True),
        ("ns", {"selector": {}}, {"app": "a"}, "ns", False),
        ("ns", {"targetRefs": [{"kind": "Service", "name": "a"}]}, {"app": "a"}, "ns", False),
    ],
)
def test_selects(namespace, spec, labels, pod_namespace, expected):
    assert selects(authz(spec, namespace=namespace), labels, pod_namespace) is expected


def test_workload_policy_keys():
    policies = [
        authz({"selector": {"matchLabels": {"app": "a"}}}, name="b-allow"),
        authz({"selector": {"matchLabels": {"app": "a"}}, "action": "AUDIT", "rules": [{}]}, name="audit"),
        authz({"selector": {"matchLabels": {"app": "x"}}}, name="other"),
        authz({}, name="namespace-wide"),
        authz({"selector": {"matchLabels": {"app": "a"}}}, namespace="istio-system", name="a-mesh"),
    ]
    strict = peer({"mtls": {"mode": "STRICT"}}, namespace="istio-system")
    assert workload_policy_keys(policies, [strict], {"app": "a"}, "ns") == [
        "istio-system/a-mesh",
        "ns/b-allow",
        "istio-system/istio_converted_static_strict",
    ]


# --- PeerAuthentication ----------------------------------------------------------------------------


def mode(m):
    return {"mtls": {"mode": m}}


APP = {"selector": {"matchLabels": {"app": "a"}}}


def test_static_strict_policy():
    assert STATIC_STRICT == {
        "name": "istio_converted_static_strict",
        "namespace": "istio-system",
        "scope": "WORKLOAD_SELECTOR",
        "action": "DENY",
        "rules": [{"clauses": [{"matches": [{"notPrincipals": [{"presence": {}}]}]}]}],
        "dryRun": False,
    }
    plaintext = rbac.evaluate(conn(identity=None), [STATIC_STRICT])
    assert plaintext == rbac.Decision(
        False,
        "istio-system/istio_converted_static_strict",
        "explicitly denied by: istio-system/istio_converted_static_strict",
    )
    assert rbac.evaluate(conn(), [STATIC_STRICT]).allowed


@pytest.mark.parametrize(
    "policies, expected",
    [
        ([], EffectiveMtls("PERMISSIVE", None)),
        ([peer(mode("STRICT"), namespace="istio-system")], EffectiveMtls("STRICT", "istio-system/pa")),
        ([peer(mode("UNSET"), namespace="istio-system")], EffectiveMtls("PERMISSIVE", "istio-system/pa")),
        (
            [peer(mode("STRICT"), namespace="istio-system"), peer(mode("PERMISSIVE"), name="ns-pa")],
            EffectiveMtls("PERMISSIVE", "ns/ns-pa"),
        ),
        (
            [peer(mode("STRICT"), namespace="istio-system"), peer(mode("UNSET"), name="ns-pa")],
            EffectiveMtls("STRICT", "istio-system/pa"),
        ),
        (
            [peer(mode("PERMISSIVE"), name="ns-pa"), peer({**APP, **mode("STRICT")}, name="wl")],
            EffectiveMtls("STRICT", "ns/wl"),
        ),
        (
            [peer(mode("STRICT"), name="ns-pa"), peer({**APP, **mode("UNSET")}, name="wl")],
            EffectiveMtls("STRICT", "ns/ns-pa"),
        ),
        (
            [peer(mode("STRICT"), name="ns-pa"), peer({**APP, **mode("DISABLE")}, name="wl")],
            EffectiveMtls("PERMISSIVE", "ns/wl", peerauth.DISABLE_NOTE),
        ),
        (
            [peer(mode("DISABLE"), namespace="istio-system")],
            EffectiveMtls("PERMISSIVE", "istio-system/pa", peerauth.DISABLE_NOTE),
        ),
        # another namespace's policy and a root-namespace selector policy do not apply
        ([peer(mode("STRICT"), namespace="other")], EffectiveMtls("PERMISSIVE", None)),
        ([peer({**APP, **mode("STRICT")}, namespace="istio-system")], EffectiveMtls("PERMISSIVE", None)),
        ([peer({"selector": {"matchLabels": {"app": "b"}}, **mode("STRICT")})], EffectiveMtls("PERMISSIVE", None)),
    ],
)
def test_effective_mtls(policies, expected):
    assert explain_mtls(policies, "ns", {"app": "a"}) == expected
    assert effective_mtls_mode(policies, "ns", {"app": "a"}) == expected.mode


def test_oldest_policy_of_a_level_wins():
    newer = peer(mode("PERMISSIVE"), name="newer", created="2024-06-01T00:00:00Z")
    older = peer(mode("STRICT"), name="older", created="2024-01-01T00:00:00Z")
    assert explain_mtls([newer, older], "ns", {}) == EffectiveMtls("STRICT", "ns/older")


@pytest.mark.parametrize(
    "policies, keys",
    [
        ([], []),
        ([peer(mode("STRICT"))], ["istio-system/istio_converted_static_strict"]),
        ([peer(mode("PERMISSIVE"))], []),
        (
            [peer({**APP, **mode("STRICT"), "portLevelMtls": {8080: {"mode": "PERMISSIVE"}}})],
            ["ns/converted_peer_authentication_pa"],
        ),
        (
            [peer({**APP, **mode("PERMISSIVE"), "portLevelMtls": {8080: {"mode": "STRICT"}}})],
            ["ns/converted_peer_authentication_pa"],
        ),
        (
            [peer(mode("STRICT"), name="ns-pa"), peer({**APP, "portLevelMtls": {8080: {"mode": "PERMISSIVE"}}})],
            ["ns/converted_peer_authentication_pa"],
        ),
    ],
)
def test_workload_keys(policies, keys):
    assert peerauth.workload_keys(policies, "ns", {"app": "a"}) == keys


def test_converted_port_exception_under_strict():
    pa = peer({**APP, **mode("STRICT"), "portLevelMtls": {9090: {"mode": "DISABLE"}, 8080: {"mode": "PERMISSIVE"}}})
    assert peerauth.convert(pa, [pa]) == {
        "name": "converted_peer_authentication_pa",
        "namespace": "ns",
        "scope": "WORKLOAD_SELECTOR",
        "action": "DENY",
        "rules": [
            {
                "clauses": [
                    {"matches": [{"notPrincipals": [{"presence": {}}]}]},
                    {"matches": [{"notDestinationPorts": [8080]}]},
                    {"matches": [{"notDestinationPorts": [9090]}]},
                ]
            }
        ],
        "dryRun": False,
    }
    for port, expected in ((8080, "PERMISSIVE"), (9090, "PERMISSIVE"), (80, "STRICT")):
        assert effective_mtls_mode([pa], "ns", {"app": "a"}, port=port) == expected


def test_converted_strict_port_under_permissive():
    pa = peer({**APP, **mode("PERMISSIVE"), "portLevelMtls": {8080: {"mode": "STRICT"}}})
    assert peerauth.convert(pa, [pa])["rules"] == [
        {"clauses": [{"matches": [{"notPrincipals": [{"presence": {}}], "destinationPorts": [8080]}]}]}
    ]
    assert effective_mtls_mode([pa], "ns", {"app": "a"}, port=8080) == "STRICT"
    assert effective_mtls_mode([pa], "ns", {"app": "a"}, port=80) == "PERMISSIVE"


def test_namespace_strict_with_workload_port_exception_merges_strictness():
    ns_pa = peer(mode("STRICT"), name="ns-pa")
    wl = peer({**APP, "portLevelMtls": {8080: {"mode": "PERMISSIVE"}}})
    assert peerauth.convert(wl, [ns_pa, wl])["rules"] == [
        {
            "clauses": [
                {"matches": [{"notDestinationPorts": [8080]}]},
                {"matches": [{"notPrincipals": [{"presence": {}}]}]},
            ]
        }
    ]
    assert effective_mtls_mode([ns_pa, wl], "ns", {"app": "a"}, port=8080) == "PERMISSIVE"
    assert effective_mtls_mode([ns_pa, wl], "ns", {"app": "a"}, port=80) == "STRICT"


def test_plain_strict_workload_needs_no_converted_policy():
    assert peerauth.convert(peer({**APP, **mode("STRICT"), "portLevelMtls": {8080: {"mode": "STRICT"}}}), []) is None
    assert peerauth.convert(peer(mode("STRICT")), []) is None


def test_derived_authorizations():
    pa = peer({**APP, **mode("STRICT"), "portLevelMtls": {8080: {"mode": "PERMISSIVE"}}})
    derived = peerauth.derived_authorizations([pa])
    assert [rbac.key(a) for a in derived] == [
        "istio-system/istio_converted_static_strict",
        "ns/converted_peer_authentication_pa",
    ]
    assert peerauth.derived_authorizations([]) == []
