"""ztunnel's L4 evaluator over Authorization dicts (cases mirror ztunnel's own rbac.rs tests)."""

import pytest

from mesh.identity.spiffe import Identity as SpiffeIdentity
from mesh.identity.spiffe import InvalidIdentity
from mesh.policy.rbac import (
    NO_ALLOW_POLICIES,
    NOT_ALLOWED,
    Connection,
    Decision,
    Identity,
    evaluate,
    matches,
    policies_for,
    string_matches,
)

PLAINTEXT = Connection("127.0.0.1", None, "127.0.0.2", 8080)
TLS = Connection("127.0.0.1", "spiffe://td/ns/namespace/sa/account", "127.0.0.2", 8080)
TLS_ALT = Connection("127.0.0.3", "spiffe://td-alt/ns/ns-alt/sa/sa-alt", "127.0.0.4", 9090)


def policy(rules, action="ALLOW", name="p", namespace="namespace", scope="NAMESPACE", dry_run=False):
    return {"name": name, "namespace": namespace, "scope": scope, "action": action, "rules": rules, "dryRun": dry_run}


def one_match(match, **kw):
    return policy([{"clauses": [{"matches": [match]}]}], **kw)


# --- identities -----------------------------------------------------------------------------------


def test_identity_parse():
    assert Identity is SpiffeIdentity  # one Identity for the mesh
    assert Identity.parse("spiffe://cluster.local/ns/a/sa/b") == Identity("cluster.local", "a", "b")
    assert str(Identity("td", "a", "b")) == "spiffe://td/ns/a/sa/b"


def test_empty_identity_segments_are_accepted_as_ztunnel_accepts_them():
    conn = Connection("10.0.0.1", "spiffe://td/ns//sa/x", "10.0.0.2", 80)
    assert matches(one_match({"namespaces": [{"exact": ""}]}), conn)
    assert not matches(one_match({"namespaces": [{"presence": {}}]}), conn)


@pytest.mark.parametrize(
    "uri",
    [
        "cluster.local/ns/a/sa/b",
        "spiffe://td/ns/a/sa",
        "spiffe://td/ns/a/sa/b/c",
        "spiffe://td/namespace/a/sa/b",
        "spiffe://td/ns/a/serviceaccount/b",
    ],
)
def test_connection_refuses_non_workload_identities(uri):
    with pytest.raises(InvalidIdentity, match="invalid SPIFFE identity"):
        Connection("10.0.0.1", uri, "10.0.0.2", 80)


# --- string matches ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "match, value, expected",
    [
        ({"exact": "foo"}, "foo", True),
        ({"exact": "foo"}, "not", False),
        ({"exact": "foo"}, "", False),
        ({"prefix": "foo"}, "foobar", True),
        ({"prefix": "foo"}, "notfoo", False),
        ({"prefix": "foo"}, "", False),
        ({"suffix": "foo"}, "barfoo", True),
        ({"suffix": "foo"}, "foonot", False),
        ({"suffix": "foo"}, "", False),
        ({"presence": {}}, "foo", True),
        ({"presence": {}}, "", False),
    ],
)
def test_string_matches(match, value, expected):
    assert string_matches(match, value) is expected


def test_malformed_string_match_is_an_error():
    with pytest.raises(ValueError, match="not a StringMatch"):
        string_matches({"regex": ".*"}, "x")


# --- every field and its not form -------------------------------------------------------------------


@pytest.mark.parametrize(
    "match, plaintext, tls, tls_alt",
    [
        ({"namespaces": [{"exact": "namespace"}]}, False, True, False),
        ({"notNamespaces": [{"exact": "namespace"}]}, True, False, True),
        ({"serviceAccounts": [{"namespace": "namespace", "serviceAccount": "account"}]}, False, True, False),
        ({"notServiceAccounts": [{"namespace": "namespace", "serviceAccount": "account"}]}, True, False, True),
        ({"principals": [{"exact": "td/ns/namespace/sa/account"}]}, False, True, False),
        ({"notPrincipals": [{"exact": "td/ns/namespace/sa/account"}]}, True, False, True),
        ({"principals": [{"presence": {}}]}, False, True, True),
        ({"notPrincipals": [{"presence": {}}]}, True, False, False),
        ({"principals": [{"suffix": "/sa/account"}]}, False, True, False),
        ({"principals": [{"prefix": "td-alt/"}]}, False, False, True),
        ({"namespaces": [{"presence": {}}]}, False, True, True),
        ({"notNamespaces": [{"prefix": "ns-"}]}, True, True, False),
        ({"sourceIps": ["127.0.0.1/32"]}, True, True, False),
        ({"notSourceIps": ["127.0.0.1/32"]}, False, False, True),
        ({"destinationIps": ["127.0.0.2/32"]}, True, True, False),
        ({"notDestinationIps": ["127.0.0.2/32"]}, False, False, True),
        ({"destinationIps": ["127.0.0.1/24"]}, True, True, True),
        ({"destinationPorts": [8080]}, True, True, False),
        ({"notDestinationPorts": [8080]}, False, False, True),
    ],
)
def test_each_field(match, plaintext, tls, tls_alt):
    pol = one_match(match)
    assert (matches(pol, PLAINTEXT), matches(pol, TLS), matches(pol, TLS_ALT)) == (plaintext, tls, tls_alt)


def test_principals_never_carry_spiffe_prefix():
    assert not matches(one_match({"principals": [{"exact": "spiffe://td/ns/namespace/sa/account"}]}), TLS)


def test_namespace_and_service_account_come_from_the_peer_identity_not_the_destination():
    conn = Connection("10.0.0.1", "spiffe://td/ns/client-ns/sa/client", "10.0.0.2", 80, dst_namespace="server-ns")
    assert matches(one_match({"namespaces": [{"exact": "client-ns"}]}), conn)
    assert not matches(one_match({"namespaces": [{"exact": "server-ns"}]}), conn)
    assert matches(one_match({"serviceAccounts": [{"namespace": "client-ns", "serviceAccount": "client"}]}), conn)
    assert not matches(one_match({"serviceAccounts": [{"namespace": "server-ns", "serviceAccount": "client"}]}), conn)


def test_ipv6_and_family_mismatch():
    v6 = Connection("2001:db8::5", None, "2001:db8::9", 80)
    assert matches(one_match({"sourceIps": ["2001:db8::/32"]}), v6)
    assert not matches(one_match({"sourceIps": ["0.0.0.0/0"]}), v6)
    assert matches(one_match({"notSourceIps": ["0.0.0.0/0"]}), v6)


def test_fields_of_a_match_are_anded_and_values_ored():
    pol = one_match({"namespaces": [{"exact": "namespace"}, {"exact": "other"}], "destinationPorts": [8080]})
    assert matches(pol, TLS)
    assert not matches(pol, Connection("127.0.0.1", TLS.src_identity, "127.0.0.2", 80))
    both = one_match({"destinationPorts": [8080, 9090], "notDestinationPorts": [9090]})
    assert (matches(both, TLS), matches(both, TLS_ALT)) == (True, False)


# --- structure: rules, clauses, matches -------------------------------------------------------------


def test_nesting_matches_are_ored_clauses_anded():
    pol = policy(
        [
            {
                "clauses": [
                    {"matches": [{"namespaces": [{"exact": "a"}]}, {"namespaces": [{"exact": "b"}]}]},
                    {"matches": [{"destinationPorts": [80]}]},
                ]
            }
        ]
    )
    for ns, port, expected in (("a", 80, True), ("b", 80, True), ("bad", 80, False), ("b", 12345, False)):
        assert matches(pol, Connection("127.0.0.1", f"spiffe://td/ns/{ns}/sa/x", "127.0.0.2", port)) is expected


def test_rules_are_ored():
    pol = policy(
        [
            {"clauses": [{"matches": [{"namespaces": [{"exact": "a"}]}]}]},
            {"clauses": [{"matches": [{"namespaces": [{"exact": "b"}]}]}]},
        ]
    )
    for ns, expected in (("a", True), ("b", True), ("bad", False)):
        assert matches(pol, Connection("127.0.0.1", f"spiffe://td/ns/{ns}/sa/x", "127.0.0.2", 80)) is expected


def test_empty_structures():
    assert not matches(policy([]), PLAINTEXT)  # no rules: never
    assert matches(policy([{"clauses": []}]), PLAINTEXT)  # a rule without clauses: always
    assert matches(policy([{"clauses": [{"matches": []}]}]), PLAINTEXT)  # an empty clause: matches
    assert not matches(policy([{"clauses": [{"matches": [{}]}]}]), PLAINTEXT)  # an empty match: skipped
    assert matches(policy([{"clauses": [{"matches": [{}, {"destinationPorts": [8080]}]}]}]), PLAINTEXT)


# --- evaluation order ----------------------------------------------------------------------------------

ALLOW_TLS = one_match({"principals": [{"exact": "td/ns/namespace/sa/account"}]}, name="allow-tls")
DENY_ALT = one_match({"namespaces": [{"exact": "ns-alt"}]}, action="DENY", name="deny-alt")
DENY_ALL = policy([{"clauses": []}], action="DENY", name="deny-all")


def test_no_policies_allows():
    assert evaluate(TLS, []) == Decision(True, None, NO_ALLOW_POLICIES)


def test_no_allow_policy_allows_unless_denied():
    assert evaluate(TLS, [DENY_ALT]) == Decision(True, None, "no allow policies, allow")
    assert evaluate(TLS_ALT, [DENY_ALT]) == Decision(
        False, "namespace/deny-alt", "explicitly denied by: namespace/deny-alt"
    )


def test_allow_policy_must_match():
    assert evaluate(TLS, [ALLOW_TLS]) == Decision(True, "namespace/allow-tls", "allowed by: namespace/allow-tls")
    assert evaluate(TLS_ALT, [ALLOW_TLS]) == Decision(False, None, "allow policies exist, but none allowed")
    assert evaluate(PLAINTEXT, [ALLOW_TLS]).reason == NOT_ALLOWED


def test_deny_wins_over_allow_whatever_the_order():
    assert evaluate(TLS, [ALLOW_TLS, DENY_ALL]) == Decision(
        False, "namespace/deny-all", "explicitly denied by: namespace/deny-all"
    )
    assert evaluate(TLS, [DENY_ALL, ALLOW_TLS]).policy == "namespace/deny-all"


def test_first_matching_deny_decides():
    deny_tls = one_match({"destinationPorts": [8080]}, action="DENY", name="deny-port")
    assert evaluate(TLS, [DENY_ALT, deny_tls, DENY_ALL]).policy == "namespace/deny-port"


def test_allow_policy_with_no_rules_denies_everything():
    allow_nothing = policy([], name="allow-nothing")
    assert evaluate(TLS, [allow_nothing]) == Decision(False, None, NOT_ALLOWED)


def test_dry_run_policies_never_decide_but_are_reported():
    dry_deny = {**DENY_ALL, "name": "dry-deny", "dryRun": True}
    dry_allow = {**ALLOW_TLS, "name": "dry-allow", "dryRun": True}
    assert evaluate(TLS, [dry_deny]) == Decision(True, None, NO_ALLOW_POLICIES, ("namespace/dry-deny",))
    # a dry-run ALLOW does not make "allow policies exist": the default allow stands
    assert evaluate(TLS_ALT, [dry_allow]) == Decision(True, None, NO_ALLOW_POLICIES)
    assert evaluate(TLS, [dry_allow, ALLOW_TLS]).dry_run_matches == ("namespace/dry-allow",)
    assert evaluate(TLS_ALT, [dry_deny, ALLOW_TLS]) == Decision(False, None, NOT_ALLOWED, ("namespace/dry-deny",))


# --- plaintext and identity ------------------------------------------------------------------------------


def test_plaintext_only_matches_negative_identity_fields():
    for field in ("principals", "namespaces"):
        assert not matches(one_match({field: [{"presence": {}}]}), PLAINTEXT)
        assert matches(one_match({"not" + field[0].upper() + field[1:]: [{"presence": {}}]}), PLAINTEXT)
    assert not matches(one_match({"serviceAccounts": [{"namespace": "", "serviceAccount": ""}]}), PLAINTEXT)


# --- which policies a workload gets ------------------------------------------------------------------------


def test_policies_for():
    everything = [
        policy([], name="z-ns", namespace="app"),
        policy([], name="a-ns", namespace="app"),
        policy([], name="other-ns", namespace="other"),
        policy([], name="mesh", namespace="istio-system", scope="GLOBAL"),
        policy([], name="root-ns-only", namespace="istio-system", scope="NAMESPACE"),
        policy([], name="mine", namespace="app", scope="WORKLOAD_SELECTOR"),
        policy([], name="not-mine", namespace="app", scope="WORKLOAD_SELECTOR"),
        policy([], name="istio_converted_static_strict", namespace="istio-system", scope="WORKLOAD_SELECTOR"),
    ]
    picked = policies_for("app", ["app/mine", "istio-system/istio_converted_static_strict", "app/unknown"], everything)
    assert [f"{p['namespace']}/{p['name']}" for p in picked] == [
        "app/a-ns",
        "app/z-ns",
        "istio-system/mesh",
        "app/mine",
        "istio-system/istio_converted_static_strict",
    ]


def test_policies_for_has_no_duplicates():
    ns_policy = policy([], name="a", namespace="app")
    assert policies_for("app", ["app/a"], [ns_policy]) == [ns_policy]
