"""L4 policy at the destination: which policies apply, and what a denial names."""

from __future__ import annotations

import pytest

from mesh.ztunnel.proxy import PolicyRejection
from mesh.ztunnel.rbac import assert_rbac
from mesh.ztunnel.state import ProxyState
from mesh.ztunnel.testing import address_push, authorization, authorization_push, workload

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
ROGUE = "spiffe://cluster.local/ns/default/sa/rogue"


def state_with(*policies, attached=()) -> tuple[ProxyState, object]:
    state = ProxyState()
    state.apply(address_push(workload("httpbin-1", "10.244.1.7", policies=list(attached))))
    state.apply(authorization_push(*policies))
    return state, state.find_workload_by_ip("10.244.1.7")


def check(state, wl, identity):
    return assert_rbac(state, wl, src_ip="10.244.1.5", src_identity=identity, dst_ip="10.244.1.7", dst_port=80)


def test_no_policy_allows_everyone_even_plaintext():
    state, wl = state_with()
    assert check(state, wl, None).allowed and check(state, wl, ROGUE).allowed


def test_explicit_deny_names_the_policy():
    state, wl = state_with(
        authorization("deny-rogue", "default", "DENY", ["cluster.local/ns/default/sa/rogue"]),
        attached=["default/deny-rogue"],
    )
    assert check(state, wl, SLEEP).allowed
    with pytest.raises(PolicyRejection) as err:
        check(state, wl, ROGUE)
    assert str(err.value) == "connection closed due to policy rejection: explicitly denied by: default/deny-rogue"
    assert err.value.policy == "default/deny-rogue"


def test_none_allowed_names_the_allow_policies_that_applied():
    state, wl = state_with(
        authorization("only-sleep", "default", "ALLOW", ["cluster.local/ns/default/sa/sleep"]),
        authorization("ns-allow", "default", "ALLOW", ["cluster.local/ns/default/sa/other"], scope="NAMESPACE"),
        attached=["default/only-sleep"],
    )
    assert check(state, wl, SLEEP).allowed
    with pytest.raises(PolicyRejection) as err:
        check(state, wl, ROGUE)
    assert str(err.value).endswith("allow policies exist, but none allowed")
    assert err.value.policy == "default/ns-allow,default/only-sleep"
    with pytest.raises(PolicyRejection):
        check(state, wl, None)  # plaintext has no principal to match


def test_policies_of_other_workloads_do_not_apply():
    state, wl = state_with(authorization("deny-all", "default", "DENY", ["cluster.local/ns/default/sa/rogue"]))
    assert check(state, wl, ROGUE).allowed  # defined but not attached to this workload
