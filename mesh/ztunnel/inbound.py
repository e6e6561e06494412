"""The inbound HBONE proxy, port 15008 in every enrolled pod (ztunnel `src/proxy/inbound.rs`).

Peers dial `podIP:15008` directly (the redirection leaves 15008 alone). Each connection:

1. TLS 1.3 as the pod's workload certificate (fetched now if needed), ALPN h2, a client
   certificate chained to the mesh root is required, and its trust domain must be ours. A
   plaintext client or another CA's certificate fails here and is dropped;
2. every CONNECT stream on it is checked (docs/ambient-facts.md §1.4): `:authority` must be this pod's IP (400
   otherwise), not one of ztunnel's own ports (503), and allowed by L4 policy for the peer's
   SPIFFE identity (401 when denied);
3. the app is dialled at podIP:port from inside the pod, with the client's IP as source
   (IP_TRANSPARENT): 503 if that fails, else 200 and the stream is spliced to it.

One access-log line per CONNECT; `dst.addr` is podIP:15008 and `dst.hbone_addr` the target.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import trio

from mesh import tls
from mesh.hbone import (
    BAD_REQUEST,
    CONNECTED,
    POLICY_DENIED,
    UPSTREAM_FAILED,
    ConnectRequest,
    HboneStream,
    serve_hbone,
    splice,
)
from mesh.hbone.tlsstream import TlsStream
from mesh.ztunnel import metrics
from mesh.ztunnel.proxy import (
    DRAINED,
    IpMismatch,
    PodListener,
    PolicyRejection,
    ProxyError,
    ProxyInputs,
    SelfCall,
    TlsFailed,
    baggage_of,
    closing_upstream,
    outcome_of,
)
from mesh.ztunnel.rbac import assert_rbac
from mesh.ztunnel.resources import Service, Workload
from mesh.ztunnel.sockets import abort, format_addr
from mesh.ztunnel.state import ProxyState


@dataclass(frozen=True)
class InboundConnection:
    """An accepted connection into the pod: who dialled, where it landed, as whom (an HBONE
    connection is authenticated; a plaintext one, on 15006, has no identity)."""

    src_ip: str
    src_port: int
    dst_ip: str  # the pod IP the TCP connection landed on
    dst_port: int
    identity: str | None  # the peer's SPIFFE identity

    @property
    def src(self) -> str:
        return format_addr((self.src_ip, self.src_port))

    @property
    def dst(self) -> str:
        return format_addr((self.dst_ip, self.dst_port))


def check_target(conn: InboundConnection, request: ConnectRequest, illegal_ports: frozenset[int]) -> None:
    """The CONNECT's target must be this pod (IpMismatch → 400) and not ztunnel itself (SelfCall → 503)."""
    ip = request.authority.ip
    if ip is None or str(ip) != conn.dst_ip:
        raise IpMismatch(conn.dst_ip, request.authority.host)
    if request.authority.port in illegal_ports:
        raise SelfCall()


def guess_inbound_service(state: ProxyState, local: Workload, port: int, for_host: str | None) -> Service | None:
    """The Service a connection to `local`:`port` was for (ztunnel `guess_inbound_service`): the one
    the client named in `forwarded: host=`, else one whose (endpoint) target port is `port`."""
    services = state.services_of(local)
    for svc in services:
        if for_host and svc.hostname == for_host:
            return svc
    for svc in services:
        endpoint_ports = local.services.get(svc.key, {})
        for service_port, target in svc.ports.items():
            if target == port or endpoint_ports.get(service_port) == port:
                return svc
    return None


def inbound_result(
    pi: ProxyInputs,
    conn: InboundConnection,
    local: Workload,
    port: int,
    *,
    hbone_target: str | None = None,
    forwarded_host: str | None = None,
) -> metrics.ConnectionResult:
    """The telemetry of a connection into the pod, either path: its source found by IP, the Service
    it was for guessed from the target port, mTLS when the peer proved an identity."""
    state = pi.state.state
    source = state.find_workload_by_ip(conn.src_ip)
    service = guess_inbound_service(state, local, port, forwarded_host)
    mtls = conn.identity is not None
    return metrics.ConnectionResult(
        pi.metrics,
        pi.log,
        labels=metrics.TrafficLabels.build(
            metrics.DESTINATION,
            source=source,
            source_identity=conn.identity,
            destination=local,
            service=service,
            mtls=mtls,
        ),
        src=conn.src,
        dst=conn.dst,
        hbone_target=hbone_target,
        original_dst=service.hostname if service else None,
        src_workload=source.name if source else None,
        dst_workload=local.name,
        pod=pi.pod,
        protocol="HBONE" if mtls else "TCP",
    )


def response_baggage(local: Workload) -> tuple[tuple[str, str], ...]:
    """The 200's `baggage`, describing the destination workload (ENABLE_RESPONSE_BAGGAGE)."""
    return (("baggage", baggage_of(local)),)


def _status_of(error: ProxyError) -> int:
    if isinstance(error, IpMismatch):
        return BAD_REQUEST
    if isinstance(error, PolicyRejection):
        return POLICY_DENIED
    return UPSTREAM_FAILED


class Inbound(PodListener):
    """One pod's 15008 listener."""

    what = "inbound"

    async def handle(self, tcp: trio.SocketStream, client: tuple[str, int]) -> None:
        """mTLS, then HBONE until the peer closes the connection."""
        pi = self.pi
        src_ip, src_port = client
        dst_ip, dst_port = tcp.socket.getsockname()[:2]
        src, dst = format_addr((src_ip, src_port)), format_addr((dst_ip, dst_port))
        try:
            cert = await pi.local.fetch_certificate()  # ztunnel picks it per accepted connection, too
        except ProxyError as exc:
            pi.early_deny(src, dst, "inbound", exc)
            abort(tcp)
            return
        stream = TlsStream(tcp, cert.server_context(), server_side=True)
        try:
            with trio.fail_after(pi.config.handshake_timeout):
                await stream.do_handshake()
            tls.check_trust_domain(stream, cert.identity.trust_domain)
            peer = tls.peer_identities(stream)[0]
        except (trio.BrokenResourceError, trio.TooSlowError, tls.PeerRejected, IndexError) as exc:
            pi.early_deny(src, dst, "inbound", TlsFailed(str(exc) or "handshake timed out"))
            await trio.aclose_forcefully(stream)
            return
        conn = InboundConnection(src_ip, src_port, dst_ip, dst_port, str(peer))
        await serve_hbone(stream, functools.partial(self.serve_connect, conn))

    async def serve_connect(
        self, conn: InboundConnection, request: ConnectRequest, respond, stream: HboneStream
    ) -> None:
        """One CONNECT: validate, authorize, dial the app, answer, splice."""
        pi = self.pi
        try:
            local = await pi.local.get_workload()
            check_target(conn, request, pi.config.illegal_ports)
        except ProxyError as exc:
            pi.early_deny(conn.src, conn.dst, "inbound", exc)
            await respond(_status_of(exc))
            return

        state = pi.state.state
        target = (conn.dst_ip, request.authority.port)
        result = inbound_result(
            pi, conn, local, target[1], hbone_target=str(request.authority), forwarded_host=request.forwarded_host
        )
        outcome = DRAINED
        try:
            try:
                assert_rbac(
                    state, local, src_ip=conn.src_ip, src_identity=conn.identity, dst_ip=target[0], dst_port=target[1]
                )
                upstream = await pi.connect_app(target, conn.src_ip)
            except ProxyError as exc:
                outcome = outcome_of(exc)
                await respond(_status_of(exc))
                return
            async with closing_upstream(upstream, upstream):  # the client broke off: reset the app too
                # 200 only now that the app accepted the connection (docs/ambient-facts.md §1.4).
                await respond(CONNECTED, response_baggage(local))
                await splice(stream, upstream, result.stats)
            outcome = metrics.Outcome()
        finally:
            result.record(outcome)
