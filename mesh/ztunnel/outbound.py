"""The outbound proxy, port 15001 in every enrolled pod (ztunnel `src/proxy/outbound.rs`).

The pod's redirection sends every TCP connection the app opens to 15001. For each one:

1. the original destination comes from SO_ORIGINAL_DST; the source workload is the pod this
   listener belongs to (waited for up to 5 s: docs/ambient-facts.md §4.4);
2. `build_request` (pure) decides where it really goes: a Service VIP is load-balanced over its
   Healthy endpoints (or sent to the service's waypoint), a pod IP goes to that pod (or its
   waypoint), anything unknown passes through as plain TCP;
3. an HBONE destination gets a CONNECT `:authority podIP:targetPort` on a pooled mTLS connection
   from the pod's netns to `podIP:15008`, whose certificate must carry one of the expected
   identities; a TCP destination gets a plain connection from the pod's netns (mark 0x539, so the
   redirection lets it out);
4. the two are spliced, then one access-log line is written.

When the CONNECT is refused (401 policy, 503) or the peer cannot be reached, the app's socket is
reset at once (curl exit 56, docs/ambient-facts.md §1.5). There is never a plaintext fallback.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import trio

from mesh import tls
from mesh.contract import HBONE_PORT
from mesh.hbone import HboneError, HbonePool, WorkloadKey, hbone_headers, splice
from mesh.hbone.tlsstream import TlsStream
from mesh.identity.spiffe import Identity
from mesh.ztunnel import metrics
from mesh.ztunnel.proxy import (
    DRAINED,
    ConnectionFailed,
    HbonePortUnreachable,
    HttpStatus,
    NoHealthyUpstream,
    NoValidDestination,
    PodListener,
    ProxyError,
    ProxyInputs,
    SelfCall,
    TlsFailed,
    UnknownWaypoint,
    baggage_of,
    closing_upstream,
    outcome_of,
)
from mesh.ztunnel.resources import HBONE, TCP, Service, Workload
from mesh.ztunnel.sockets import Address, abort, close_now, format_addr, guarded, original_dst
from mesh.ztunnel.state import ProxyState, Rng, Upstream

log = logging.getLogger("mesh.ztunnel.outbound")


@dataclass(frozen=True)
class Request:
    """Where one outbound connection goes (ztunnel's outbound `Request`)."""

    protocol: str  # HBONE or TCP
    source: Workload
    #: The next hop: a pod's ip:15008 for HBONE, the upstream itself for TCP.
    actual_destination: Address
    #: HBONE only: the CONNECT :authority ("podIP:targetPort", or the original VIP:port via a waypoint).
    hbone_target: str | None = None
    #: The workload at the next hop (the waypoint when there is one); None for passthrough.
    destination_workload: Workload | None = None
    #: The Service the client addressed, if any (reported even when a waypoint is in between).
    destination_service: Service | None = None
    #: Identities the next hop's certificate may carry.
    upstream_sans: tuple[str, ...] = field(default=())


def build_request(
    state: ProxyState, source: Workload, target: Address, *, hbone_port: int = HBONE_PORT, rng: Rng = random.choice
) -> Request:
    """Decide where a connection from `source` to `target` goes (ztunnel `build_request`). Pure.

    Raises NoHealthyUpstream (a known service without a usable endpoint), UnknownWaypoint, or
    NoValidDestination; a target nobody knows is a plain TCP passthrough.
    """
    ip, port = target
    service = state.find_service_by_vip(ip, source.namespace)
    if service is not None and service.waypoint is not None:
        waypoint = state.resolve_waypoint(service.waypoint, source, rng)
        if waypoint is None:
            raise UnknownWaypoint(f"waypoint {service.waypoint.destination or service.waypoint.address} not found")
        return _via_waypoint(source, target, waypoint, service)

    upstream = state.find_upstream(source, ip, port, rng)
    if upstream is None:
        if service is not None:
            raise NoHealthyUpstream(format_addr(target))
        return Request(TCP, source, target)

    # A pod addressed directly goes through its own waypoint, unless we are that waypoint.
    wl = upstream.workload
    if service is None and wl.waypoint is not None and source.uid not in state.waypoint_members(wl.waypoint):
        waypoint = state.resolve_waypoint(wl.waypoint, source, rng)
        if waypoint is None:
            raise UnknownWaypoint(f"waypoint {wl.waypoint.destination or wl.waypoint.address} not found")
        return _via_waypoint(source, target, waypoint, None)

    upstream_ip = wl.pick_ip(ip)
    if upstream_ip is None:
        raise NoValidDestination(wl.name)
    if wl.protocol == HBONE:
        return Request(
            HBONE,
            source,
            (upstream_ip, hbone_port),
            f"{upstream_ip}:{upstream.port}",
            wl,
            upstream.service,
            upstream.sans,
        )
    return Request(TCP, source, (upstream_ip, upstream.port), None, wl, upstream.service, upstream.sans)


def _via_waypoint(source: Workload, target: Address, waypoint: Upstream, service: Service | None) -> Request:
    """HBONE to the waypoint's pod, asking it for the original target (`:authority` = VIP:port)."""
    return Request(
        HBONE, source, (waypoint.ip, waypoint.port), format_addr(target), waypoint.workload, service, waypoint.sans
    )


def request_labels(req: Request) -> metrics.TrafficLabels:
    """The metric labels of an outbound connection (ztunnel `conn_metrics_from_request`)."""
    mtls = req.protocol == HBONE
    return metrics.TrafficLabels.build(
        metrics.SOURCE,
        source=req.source,
        source_identity=req.source.identity if mtls else None,
        destination=req.destination_workload,
        service=req.destination_service,
        mtls=mtls,
    )


def connect_headers(req: Request, client: Address) -> list[tuple[str, str]]:
    """baggage, forwarded and traceparent, as ztunnel's `create_hbone_request`."""
    return hbone_headers(
        source=format_addr(client),
        service_host=req.destination_service.hostname if req.destination_service else None,
        baggage=baggage_of(req.source),
    )


class Outbound(PodListener):
    """One pod's 15001 listener and its HBONE connection pool."""

    what = "outbound"

    def __init__(self, pi: ProxyInputs, listener: trio.SocketListener) -> None:
        super().__init__(pi, listener)
        self.pool: HbonePool | None = None

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            # Every pod gets its own pool (ztunnel: "every workload (inpod mode) gets its own connpool").
            self.pool = HbonePool(nursery, self._connect, connect_timeout=self.pi.config.connect_timeout)
            try:
                task_status.started()
                handler = guarded(self.accept, self.what, log)
                await trio.serve_listeners(handler, [self.listener], handler_nursery=nursery)
            finally:
                with trio.CancelScope(shield=True):
                    await self.pool.aclose()

    async def handle(self, app: trio.SocketStream, client: Address) -> None:
        pi = self.pi
        target = original_dst(app.socket)
        try:
            if target[1] in pi.config.illegal_ports and target[0].startswith("127."):
                raise SelfCall()
            source = await pi.local.get_workload()
            req = build_request(pi.state.state, source, target, hbone_port=pi.config.inbound_port)
        except ProxyError as exc:
            pi.early_deny(format_addr(client), format_addr(target), "outbound", exc)
            abort(app)
            return

        result = metrics.ConnectionResult(
            pi.metrics,
            pi.log,
            labels=request_labels(req),
            src=format_addr(client),
            dst=format_addr(req.actual_destination),
            hbone_target=req.hbone_target,
            original_dst=format_addr(target),
            src_workload=source.name,
            dst_workload=req.destination_workload.name if req.destination_workload else None,
            pod=pi.pod,
            protocol=req.protocol,
        )
        outcome = DRAINED  # what the log says if we are cancelled (pod removed, shutdown)
        try:
            try:
                upstream = await (self._open_hbone(req, client) if req.protocol == HBONE else self._open_tcp(req))
            except ProxyError as exc:
                outcome = outcome_of(exc)
                abort(app)
                return
            async with closing_upstream(upstream, app):  # a reset on either side: pass it on
                await splice(app, upstream, result.stats)
            outcome = metrics.Outcome()
        finally:
            await close_now(app)
            result.record(outcome)

    async def _open_hbone(self, req: Request, client: Address) -> trio.abc.HalfCloseableStream:
        key = WorkloadKey(
            src_id=req.source.identity,
            src=client[0],
            dst_ids=req.upstream_sans,
            dst=format_addr(req.actual_destination),
        )
        pool = self.pool
        assert pool is not None  # `run` creates the pool before it serves the listener
        assert req.hbone_target is not None  # `build_request` sets it on every HBONE request
        try:
            return await pool.open_stream(key, req.hbone_target, connect_headers(req, client))
        except HboneError as exc:
            raise HttpStatus(exc.status) from exc
        except ProxyError:
            raise
        except trio.TooSlowError as exc:
            raise HbonePortUnreachable("deadline has elapsed") from exc
        except (trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionFailed(exc) from exc

    async def _open_tcp(self, req: Request) -> trio.SocketStream:
        try:
            return await self.pi.netns.connect(req.actual_destination, timeout=self.pi.config.connect_timeout)
        except trio.TooSlowError as exc:
            raise ConnectionFailed("deadline has elapsed") from exc
        except OSError as exc:
            raise ConnectionFailed(exc) from exc

    async def _connect(self, key: WorkloadKey) -> trio.abc.Stream:
        """A new pooled connection: TCP from the pod's netns to the peer's 15008, mTLS as the pod,
        and the peer's certificate checked against the identities the key expects."""
        cert = await self.pi.local.fetch_certificate()
        host, _, port = key.dst.rpartition(":")
        try:
            tcp = await self.pi.netns.connect((host.strip("[]"), int(port)), timeout=self.pi.config.connect_timeout)
        except trio.TooSlowError as exc:
            raise HbonePortUnreachable("deadline has elapsed") from exc
        except OSError as exc:
            raise ConnectionFailed(exc) from exc
        stream = TlsStream(tcp, cert.client_context(), server_hostname=None)
        try:
            await stream.do_handshake()
            tls.check_peer(stream, [Identity.parse(i) for i in key.dst_ids])
        except (trio.BrokenResourceError, tls.PeerRejected) as exc:
            await trio.aclose_forcefully(stream)
            raise TlsFailed(exc) from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream
