"""ztunnel's Authorization as typed objects: converted once on arrival, bad fields named."""

import ipaddress

import pytest

from mesh.policy import rbac
from mesh.policy.authorization import (
    Authorization,
    Clause,
    InvalidAuthorization,
    Match,
    Rule,
    ServiceAccountMatch,
    StringMatch,
    typed,
)

RAW = {
    "name": "p",
    "namespace": "ns",
    "scope": "NAMESPACE",
    "action": "ALLOW",
    "dryRun": True,
    "rules": [
        {
            "clauses": [
                {
                    "matches": [
                        {
                            "namespaces": [{"exact": "a"}],
                            "notPrincipals": [{"presence": {}}],
                            "serviceAccounts": [{"namespace": "a", "serviceAccount": "b"}],
                            "sourceIps": ["10.0.0.1"],
                            "notDestinationIps": ["10.1.0.0/16"],
                            "destinationPorts": [80],
                        }
                    ]
                }
            ]
        }
    ],
}


def test_from_xds_gives_the_typed_tree():
    policy = Authorization.from_xds(RAW)
    assert (policy.key, policy.scope, policy.action, policy.dry_run) == ("ns/p", "NAMESPACE", "ALLOW", True)
    assert policy.rules == (
        Rule(
            (
                Clause(
                    (
                        Match(
                            namespaces=(StringMatch("exact", "a"),),
                            not_principals=(StringMatch("presence"),),
                            service_accounts=(ServiceAccountMatch("a", "b"),),
                            source_ips=(ipaddress.ip_network("10.0.0.1/32"),),
                            not_destination_ips=(ipaddress.ip_network("10.1.0.0/16"),),
                            destination_ports=(80,),
                        ),
                    )
                ),
            )
        ),
    )
    assert policy.raw is RAW
    assert typed(policy) is policy and typed(RAW) == policy


def test_absent_and_null_lists_are_empty():
    policy = Authorization.from_xds(
        {
            "name": "p",
            "namespace": "ns",
            "scope": "GLOBAL",
            "action": "DENY",
            "rules": [{"clauses": [{"matches": [{"sourceIps": None}]}]}],
        }
    )
    assert policy.dry_run is False and policy.rules[0].clauses[0].matches[0].empty


@pytest.mark.parametrize(
    "change, named",
    [
        ({"action": None}, "action"),
        ({"rules": {"clauses": []}}, "rules"),
        (
            {"rules": [{"clauses": [{"matches": [{"sourceIps": ["not-an-ip"]}]}]}]},
            "rules[0].clauses[0].matches[0].sourceIps[0]",
        ),
        (
            {"rules": [{"clauses": [{"matches": [{"principals": [{"regex": ".*"}]}]}]}]},
            "principals[0]: not a StringMatch",
        ),
        ({"rules": [{"clauses": [{"matches": [{"destinationPorts": ["80"]}]}]}]}, "destinationPorts[0]"),
        (
            {"rules": [{"clauses": [{"matches": [{"serviceAccounts": [{"namespace": "a"}]}]}]}]},
            "serviceAccount: required",
        ),
        ({"dryRun": "yes"}, "dryRun"),
    ],
)
def test_a_bad_field_is_named(change, named):
    with pytest.raises(InvalidAuthorization) as e:
        Authorization.from_xds({**RAW, **change})
    assert named in str(e.value)


def test_a_missing_field_is_named():
    with pytest.raises(InvalidAuthorization, match="authorization without 'scope'"):
        Authorization.from_xds({"name": "p", "namespace": "ns", "action": "ALLOW"})


def test_rbac_takes_typed_and_json_policies_alike():
    conn = rbac.Connection("10.0.0.1", "spiffe://td/ns/a/sa/b", "10.0.0.2", 80)
    raw = {**RAW, "dryRun": False}
    assert rbac.evaluate(conn, [raw]) == rbac.evaluate(conn, [Authorization.from_xds(raw)])
    assert rbac.policies_for("ns", [], [Authorization.from_xds(raw)])[0].key == "ns/p"
    assert rbac.key(raw) == rbac.key(typed(raw)) == "ns/p"
