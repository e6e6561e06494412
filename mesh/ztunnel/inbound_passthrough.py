"""The inbound plaintext proxy, port 15006 in every enrolled pod (ztunnel `src/proxy/inbound_passthrough.rs`).

TCP arriving at an enrolled pod from outside the mesh (a client without ztunnel, a node) is
redirected here. ztunnel still enforces L4 policy on it, with no identity (docs/ambient-facts.md §1.8): a policy
that needs a principal denies it, and so does STRICT PeerAuthentication's static policy. Denied
connections are simply closed. Allowed ones are dialled to their original destination from inside
the pod with the client's IP as source, and spliced.
"""

from __future__ import annotations

import trio

from mesh.hbone import splice
from mesh.ztunnel import metrics
from mesh.ztunnel.inbound import InboundConnection, inbound_result
from mesh.ztunnel.proxy import DRAINED, PodListener, ProxyError, SelfCall, closing_upstream, outcome_of
from mesh.ztunnel.rbac import assert_rbac
from mesh.ztunnel.sockets import abort, original_dst


class InboundPassthrough(PodListener):
    """One pod's 15006 listener."""

    what = "inbound plaintext"

    async def handle(self, client: trio.SocketStream, peer: tuple[str, int]) -> None:
        pi = self.pi
        target = original_dst(client.socket)
        conn = InboundConnection(peer[0], peer[1], target[0], target[1], None)  # plaintext: no identity
        try:
            if target[1] in pi.config.illegal_ports:
                raise SelfCall()
            local = await pi.local.get_workload()
        except ProxyError as exc:
            pi.early_deny(conn.src, conn.dst, "inbound", exc)
            abort(client)
            return

        state = pi.state.state
        result = inbound_result(pi, conn, local, target[1])
        outcome = DRAINED
        try:
            try:
                assert_rbac(state, local, src_ip=conn.src_ip, src_identity=None, dst_ip=target[0], dst_port=target[1])
                upstream = await pi.connect_app(target, conn.src_ip)
            except ProxyError as exc:
                outcome = outcome_of(exc)
                abort(client)
                return
            async with closing_upstream(upstream, client, upstream):
                await splice(client, upstream, result.stats)
            outcome = metrics.Outcome()
        finally:
            await trio.aclose_forcefully(client)
            result.record(outcome)
