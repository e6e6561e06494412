"""L4 authorization at the destination (ztunnel `state.rs assert_rbac`, `src/rbac.rs`).

The destination ztunnel decides for every inbound connection: on 15008 with the peer's SPIFFE
identity from the mTLS handshake, on 15006 with none (so STRICT's static DENY-without-identity
policy refuses plaintext, docs/mesh-internals.md). The policies are the destination workload's
namespace policies, the global ones and its selector policies; evaluation is
`mesh.policy.rbac.evaluate`.

A connection from the waypoint that serves the destination (the workload's own, or one of its
Services') was already authorized there, with the original client's identity and every HTTP
rule: the lab follows the article's waypoint model (Istio 1.18-1.21), where ztunnel then skips
its own check (docs/waypoints.md). Traffic that does not come through the waypoint is checked
here as usual, so an ALLOW policy with HTTP rules still fails closed for it.
"""

from __future__ import annotations

import logging

from mesh.policy import rbac
from mesh.policy.authorization import ALLOW
from mesh.ztunnel.proxy import PolicyRejection
from mesh.ztunnel.resources import GatewayAddress, Workload
from mesh.ztunnel.state import ProxyState

log = logging.getLogger("mesh.ztunnel.rbac")


def serving_waypoints(state: ProxyState, destination: Workload) -> list[GatewayAddress]:
    """The waypoints in front of `destination`: its own and its Services'."""
    found = [destination.waypoint] if destination.waypoint else []
    found += [svc.waypoint for svc in state.services_of(destination) if svc.waypoint]
    return found


def waypoint_identities(state: ProxyState, destination: Workload) -> set[str]:
    """The identities of the pods of every waypoint serving `destination`: pods behind the
    waypoint's Service that run as the ServiceAccount istiod made for that waypoint (named after
    its Gateway). A pod that merely carries the waypoint's label, as any pod may, is not one."""
    identities = set()
    for gateway in serving_waypoints(state, destination):
        namespace, _, host = (gateway.destination or "").partition("/")
        name = host.split(".", 1)[0]
        for uid in state.waypoint_members(gateway):
            wl = state.workloads.get(uid)
            if wl is not None and (wl.namespace, wl.service_account) == (namespace, name):
                identities.add(wl.identity)
    return identities


WAYPOINT_ENFORCED = "enforced by the waypoint"


def assert_rbac(
    state: ProxyState, destination: Workload, *, src_ip: str, src_identity: str | None, dst_ip: str, dst_port: int
) -> rbac.Decision:
    """The decision for one connection to `destination`; raises PolicyRejection when denied."""
    if src_identity is not None and src_identity in waypoint_identities(state, destination):
        return rbac.Decision(True, None, WAYPOINT_ENFORCED)
    conn = rbac.Connection(
        src_ip=src_ip, src_identity=src_identity, dst_ip=dst_ip, dst_port=dst_port, dst_namespace=destination.namespace
    )
    policies = state.policies_for(destination)
    decision = rbac.evaluate(conn, policies)
    for name in decision.dry_run_matches:
        log.info("dry-run policy %s matched %s -> %s:%d", name, src_identity or src_ip, dst_ip, dst_port)
    if not decision.allowed:
        # A DENY names itself; "none allowed" names the ALLOW policies that were not satisfied.
        deciding = decision.policy or ",".join(p.key for p in policies if p.action == ALLOW and not p.dry_run)
        raise PolicyRejection(decision.reason, deciding or None)
    return decision
