"""L4 authorization at the destination (ztunnel `state.rs assert_rbac`, `src/rbac.rs`).

The destination ztunnel decides for every inbound connection: on 15008 with the peer's SPIFFE
identity from the mTLS handshake, on 15006 with none (so STRICT's static DENY-without-identity
policy refuses plaintext, facts §5.7). The policies are the destination workload's namespace
policies, the global ones and its selector policies; evaluation is `mesh.policy.rbac.evaluate`.
"""
from __future__ import annotations

import logging

from mesh.policy import rbac
from mesh.ztunnel.proxy import PolicyRejection
from mesh.ztunnel.state import ProxyState, Workload

log = logging.getLogger("mesh.ztunnel.rbac")


def assert_rbac(state: ProxyState, destination: Workload, *, src_ip: str, src_identity: str | None,
                dst_ip: str, dst_port: int) -> rbac.Decision:
    """The decision for one connection to `destination`; raises PolicyRejection when denied."""
    conn = rbac.Connection(src_ip=src_ip, src_identity=src_identity, dst_ip=dst_ip, dst_port=dst_port,
                           dst_namespace=destination.namespace)
    policies = state.policies_for(destination)
    decision = rbac.evaluate(conn, policies)
    for name in decision.dry_run_matches:
        log.info("dry-run policy %s matched %s -> %s:%d", name, src_identity or src_ip, dst_ip, dst_port)
    if not decision.allowed:
        # A DENY names itself; "none allowed" names the ALLOW policies that were not satisfied.
        deciding = decision.policy or ",".join(
            rbac.key(p) for p in policies if p["action"] == "ALLOW" and not p.get("dryRun"))
        raise PolicyRejection(decision.reason, deciding or None)
    return decision
