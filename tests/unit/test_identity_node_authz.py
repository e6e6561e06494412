import pytest

from mesh.identity.caller import Caller
from mesh.identity.node_authz import CLIENT_MESSAGE, NotAuthorized, authorize, parse_trusted_node_accounts
from mesh.identity.spiffe import Identity


def pod(namespace, name, uid, sa, node, phase="Running"):
    spec = {"nodeName": node} if node else {}
    if sa is not None:
        spec["serviceAccountName"] = sa
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
        "spec": spec,
        "status": {"phase": phase},
    }


PODS = [
    pod("istio-system", "ztunnel-a", "uid-za", "ztunnel", "node-a"),
    pod("istio-system", "ztunnel-b", "uid-zb", "ztunnel", "node-b"),
    pod("default", "sleep-1", "uid-s1", "sleep", "node-a"),
    pod("default", "httpbin-1", "uid-h1", "httpbin", "node-b"),
    pod("default", "legacy-1", "uid-l1", "legacy", "node-a", phase="Failed"),
    pod("default", "starting-1", "uid-st", "starting", "node-a", phase="Pending"),
    pod("default", "plain-1", "uid-p1", None, "node-a"),  # no serviceAccountName: "default"
    pod("other", "sleep-1", "uid-o1", "sleep", "node-b"),
]

ZTUNNEL_A = Caller("ztunnel-a", "uid-za", "istio-system", "ztunnel")
SLEEP_CALLER = Caller("sleep-1", "uid-s1", "default", "sleep")


def ident(ns, sa, td="cluster.local"):
    return Identity(td, ns, sa)


def refused(caller, requested, pods=PODS, **kw):
    with pytest.raises(NotAuthorized) as e:
        authorize(caller, requested, pods, **kw)
    assert e.value.client_message == CLIENT_MESSAGE == "request impersonation authentication failure"
    return e.value.reason


def test_without_impersonation_the_caller_gets_its_own_identity():
    assert authorize(SLEEP_CALLER, None, []) == ident("default", "sleep")


def test_asking_for_ones_own_identity_needs_no_node_check():
    # not a trusted node account, no pods known: still fine, it is not impersonation
    assert authorize(SLEEP_CALLER, ident("default", "sleep"), []) == ident("default", "sleep")


def test_ztunnel_gets_identities_of_pods_on_its_node():
    assert authorize(ZTUNNEL_A, ident("default", "sleep"), PODS) == ident("default", "sleep")


def test_ztunnel_is_refused_identities_running_only_on_other_nodes():
    reason = refused(ZTUNNEL_A, ident("default", "httpbin"))
    assert reason == 'no instances of "default/httpbin" found on node "node-a"'


def test_the_namespace_of_the_requested_identity_matters():
    # other/sleep runs on node-b only, although default/sleep is on node-a
    assert "other/sleep" in refused(ZTUNNEL_A, ident("other", "sleep"))


def test_only_trusted_node_accounts_may_impersonate():
    reason = refused(SLEEP_CALLER, ident("default", "plain-1"))
    assert "default/sleep" in reason and "not allowed to impersonate" in reason


def test_the_trusted_list_is_configurable():
    trusted = {"default/sleep"}
    assert authorize(SLEEP_CALLER, ident("default", "default"), PODS, trusted_node_accounts=trusted) == ident(
        "default", "default"
    )
    assert "not allowed" in refused(ZTUNNEL_A, ident("default", "sleep"), trusted_node_accounts=trusted)


def test_the_caller_pod_must_exist():
    ghost = Caller("ztunnel-gone", "uid-x", "istio-system", "ztunnel")
    assert refused(ghost, ident("default", "sleep")) == "pod istio-system/ztunnel-gone not found"


def test_the_caller_pod_uid_must_match_the_token():
    stale = Caller("ztunnel-a", "uid-old", "istio-system", "ztunnel")
    assert refused(stale, ident("default", "sleep")) == "pod found, but UID does not match: uid-za vs uid-old"


def test_the_caller_pod_service_account_must_match_the_token():
    pods = PODS + [pod("istio-system", "impostor", "uid-i", "default", "node-a")]
    caller = Caller("impostor", "uid-i", "istio-system", "ztunnel")
    assert (
        refused(caller, ident("default", "sleep"), pods)
        == "pod found, but ServiceAccount does not match: default vs ztunnel"
    )


def test_failed_pods_do_not_count_but_pending_ones_do():
    assert 'no instances of "default/legacy"' in refused(ZTUNNEL_A, ident("default", "legacy"))
    assert authorize(ZTUNNEL_A, ident("default", "starting"), PODS) == ident("default", "starting")


def test_a_pod_without_service_account_name_runs_as_default():
    assert authorize(ZTUNNEL_A, ident("default", "default"), PODS) == ident("default", "default")


def test_an_unscheduled_caller_pod_gets_nothing():
    pods = [pod("istio-system", "ztunnel-x", "uid-x", "ztunnel", None), pod("default", "sleep-1", "u", "sleep", None)]
    caller = Caller("ztunnel-x", "uid-x", "istio-system", "ztunnel")
    assert refused(caller, ident("default", "sleep"), pods) == 'no instances of "default/sleep" found on node ""'


def test_the_node_comes_from_the_pod_not_the_token():
    lying = Caller("ztunnel-a", "uid-za", "istio-system", "ztunnel", node="node-b")
    assert "node-a" in refused(lying, ident("default", "httpbin"))


def test_another_trust_domain_is_impersonation_checked_by_namespace_and_account():
    # istiod checks only ns/sa against the node; the trust domain is whatever was asked for
    assert authorize(ZTUNNEL_A, ident("default", "sleep", "example.org"), PODS) == ident(
        "default", "sleep", "example.org"
    )
    assert "not allowed" in refused(SLEEP_CALLER, ident("default", "sleep", "example.org"))


def test_pods_may_be_any_iterable():
    assert authorize(ZTUNNEL_A, ident("default", "sleep"), iter(PODS)) == ident("default", "sleep")


def test_parse_trusted_node_accounts():
    assert parse_trusted_node_accounts("istio-system/ztunnel, kube-system/agent,") == {
        "istio-system/ztunnel",
        "kube-system/agent",
    }
    for bad in ("ztunnel", "istio-system/", "/ztunnel", "a/b/c"):
        with pytest.raises(ValueError):
            parse_trusted_node_accounts(bad)


def test_caller_identity():
    caller = Caller("ztunnel-abc", "5f1c-uid", "istio-system", "ztunnel")
    assert caller.identity() == Identity("cluster.local", "istio-system", "ztunnel")
    assert caller.identity("example.org").trust_domain == "example.org"
