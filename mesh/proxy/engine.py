"""The L7 engine: one accepted tunnel through the filter chain to an endpoint (Envoy's role).

`Engine.serve_connect` takes a CONNECT that reached the proxy (an HBONE tunnel at a waypoint) and:

1. finds the filter chain serving its target (`ProxyConfig.chain_for`: a Service VIP:port, or a
   pod IP for workload traffic); no chain → 503, nothing is forwarded;
2. refuses it at once (401, the client sees a reset) when the rbac filter's verdict is certain
   from the connection alone (`authz.early_decision`); else answers 200;
3. sniffs the first bytes: HTTP/1.1 or HTTP/2 (prior knowledge) goes through the HTTP filters,
   anything else is proxied as TCP under the network rbac filter;
4. HTTP, per request and in Envoy's order: jwt_authn (401 for a bad token, 403 for a wrong
   audience, a missing token passes), an endpoint is picked (503 `no healthy upstream` if none),
   rbac with the chain's and the endpoint's policies (403 `RBAC: access denied`), then the router
   forwards it over HTTP/1.1 on a pooled tunnel to the endpoint, adding Istio's request headers
   (x-forwarded-for, x-forwarded-proto, x-request-id, x-forwarded-client-cert) and answering
   with `server: istio-envoy`.

A sidecar uses the same engine for its two other listeners: `serve_plaintext` (inbound captured
on 15006: refused under STRICT mTLS, else the same chain with no peer identity) and
`serve_outbound` (the app's connections captured on 15001: a Service VIP or an HBONE-capable pod
goes over HBONE as the pod's own identity, anything else passes through as plain TCP).

Every request and every TCP connection writes one access-log line naming the decision and who
took it. Policy and JWT decisions are pure (`authz`, `jwt_authn`); this module is the shell.
"""

from __future__ import annotations

import functools
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Protocol

import trio

from mesh import tls
from mesh.contract import PROTOCOL_TCP
from mesh.hbone import splice
from mesh.hbone.splice import SpliceStats
from mesh.identity.spiffe import Identity
from mesh.policy import http as http_policy
from mesh.proxy import authz, jwt_authn
from mesh.proxy.access_log import RequestRecord, connection_line
from mesh.proxy.codec import serve_http, sniff
from mesh.proxy.config import Chain, Cluster, Endpoint, ProxyConfig
from mesh.proxy.http import HttpRequest, HttpResponse, local_reply
from mesh.proxy.http1 import BEFORE_HEADERS, UpstreamError
from mesh.proxy.metrics import RequestLabels, RequestMetrics
from mesh.proxy.upstream import UpstreamConnectError, Upstreams
from mesh.ztunnel.sockets import abort

log = logging.getLogger("mesh.proxy.engine")

POLICY_DENIED = 401  # HBONE status for a tunnel refused by policy
NO_ROUTE = 503
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class ConfigSource(Protocol):
    @property
    def current(self) -> ProxyConfig: ...


@dataclass(frozen=True)
class Tunnel:
    """An accepted CONNECT: who sent it (mTLS peer), from where, and its target."""

    src_ip: str
    src_port: int
    peer_identity: str | None
    peer_leaf: bytes | None  # DER of the peer's certificate (for x-forwarded-client-cert)
    target_ip: str
    target_port: int
    #: The original client as the sender wrote it in `forwarded: for=`: logged only. Policy and
    #: x-forwarded-for use the connection's own peer address, src_ip (any mesh peer could write it).
    client_addr: str | None = None

    @property
    def src(self) -> str:
        return f"{self.src_ip}:{self.src_port}"

    @property
    def target(self) -> str:
        return f"{self.target_ip}:{self.target_port}"


class Engine:
    """The filter chains and router of one proxy; `component` names it in logs ("waypoint")."""

    def __init__(
        self,
        config: ConfigSource,
        upstreams: Upstreams,
        *,
        component: str,
        own_identity: str,
        log_line: Callable[[str], None],
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        sniff_timeout: float = 1.0,
    ) -> None:
        self.config = config
        self.upstreams = upstreams
        self.component = component
        self.own_identity = own_identity
        self.log_line = log_line
        self.rng = rng or random.Random()
        self.clock = clock
        self.sniff_timeout = sniff_timeout
        #: Set while the pod drains: each response then ends its connection, so clients reconnect
        #: (to another replica) before this one goes away, as Envoy's drain does.
        self.draining = False
        self.metrics = RequestMetrics()
        #: Istio's `reporter` label: a waypoint reports as itself, a sidecar's inbound as the destination.
        self.reporter = "waypoint" if component == "waypoint" else "destination"

    # --- tunnel ---------------------------------------------------------------------------------

    async def serve_connect(self, tunnel: Tunnel, respond, stream: trio.abc.HalfCloseableStream) -> None:
        started = time.monotonic()
        config = self.config.current
        chain = config.chain_for(tunnel.target_ip, tunnel.target_port)
        if chain is None:
            self._connection_log(tunnel, None, "deny", None, None, "no filter chain serves this target", started)
            await respond(NO_ROUTE)
            return
        cluster = config.clusters.get(chain.cluster)
        verdict = self._early(config, chain, cluster, tunnel)
        if verdict is not None:
            self._connection_log(
                tunnel, chain, "deny", f"{self.component} rbac (L4)", verdict.policy, verdict.reason, started
            )
            await respond(POLICY_DENIED)
            return
        await respond(200)
        try:
            prefix, is_http = await sniff(stream, timeout=self.sniff_timeout)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if is_http:
            await serve_http(stream, _Handler(self, config, chain, tunnel), initial=prefix)
        else:
            await self._proxy_tcp(config, chain, cluster, tunnel, stream, prefix, started)

    async def serve_plaintext(self, stream: trio.SocketStream, src: tuple[str, int], target: tuple[str, int]) -> None:
        """A plaintext connection captured on a sidecar's 15006 (no peer identity)."""
        config = self.config.current
        tunnel = Tunnel(src[0], src[1], None, None, target[0], target[1])
        if config.mtls_for(target[1]) == "STRICT":
            self._connection_log(
                tunnel,
                None,
                "deny",
                f"{self.component} peer_authentication",
                None,
                "STRICT mTLS: plaintext refused",
                time.monotonic(),
            )
            abort(stream)
            return

        async def respond(status: int, headers=()) -> None:
            if status != 200:
                abort(stream)

        try:
            await self.serve_connect(tunnel, respond, stream)
        finally:
            await trio.aclose_forcefully(stream)

    async def serve_outbound(self, stream: trio.SocketStream, src: tuple[str, int], target: tuple[str, int]) -> None:
        """An app connection captured on a sidecar's 15001: to its destination, as TCP."""
        started = time.monotonic()
        config = self.config.current
        tunnel = Tunnel(src[0], src[1], self.own_identity, None, target[0], target[1])
        chain = config.outbound_chain_for(*target)
        # Outbound there is no policy to decide: every outcome is logged as allowed.
        log = functools.partial(
            self._connection_log, tunnel, chain, "allow", None, None, None, started, direction="outbound"
        )
        endpoint: Endpoint | None
        if chain is None:
            endpoint = Endpoint(target[0], target[1], True, "", "", PROTOCOL_TCP, ())  # PassthroughCluster
        else:
            endpoint = self.pick(config.clusters.get(chain.cluster))
            if endpoint is None:
                log(error="no healthy upstream")
                abort(stream)
                return
        port = endpoint.port or target[1]
        stats = SpliceStats()
        error = None
        try:
            upstream = await self.upstreams.open(endpoint, port, _tunnel_headers(tunnel))
        except UpstreamConnectError as exc:
            log(endpoint=endpoint, error=exc.reason)
            abort(stream)
            return
        try:
            await splice(stream, upstream, stats)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            error = f"connection reset: {exc}"
        finally:
            await trio.aclose_forcefully(upstream)
            await trio.aclose_forcefully(stream)
        log(endpoint=endpoint, stats=stats, error=error)

    def _early(
        self, config: ProxyConfig, chain: Chain, cluster: Cluster | None, tunnel: Tunnel
    ) -> authz.Verdict | None:
        """A denial every endpoint's policy set agrees on, or None."""
        endpoints: list[Endpoint | None] = [e for e in (cluster.endpoints if cluster else ()) if e.healthy] or [None]
        verdicts = [authz.early_decision(_views(config, chain, e, tunnel, _connection_view(tunnel))) for e in endpoints]
        if all(v is not None for v in verdicts):
            return verdicts[0]
        return None

    def pick(self, cluster: Cluster | None) -> Endpoint | None:
        healthy = [e for e in (cluster.endpoints if cluster else ()) if e.healthy]
        return self.rng.choice(healthy) if healthy else None

    # --- TCP ------------------------------------------------------------------------------------

    async def _proxy_tcp(
        self,
        config: ProxyConfig,
        chain: Chain,
        cluster: Cluster | None,
        tunnel: Tunnel,
        stream: trio.abc.HalfCloseableStream,
        prefix: bytes,
        started: float,
    ) -> None:
        endpoint = self.pick(cluster)
        if endpoint is None:
            self._connection_log(tunnel, chain, "allow", None, None, None, started, error="no healthy upstream")
            await trio.aclose_forcefully(stream)
            return
        verdict = authz.tcp_decision(_views(config, chain, endpoint, tunnel, _connection_view(tunnel)))
        if not verdict.allowed:
            self._connection_log(
                tunnel,
                chain,
                "deny",
                f"{self.component} rbac (TCP)",
                verdict.policy,
                verdict.reason,
                started,
                endpoint=endpoint,
            )
            await trio.aclose_forcefully(stream)
            return
        port = endpoint.port or tunnel.target_port
        stats = SpliceStats()
        error = None
        try:
            upstream = await self.upstreams.open(endpoint, port, _tunnel_headers(tunnel))
        except UpstreamConnectError as exc:
            self._connection_log(
                tunnel, chain, "allow", None, verdict.policy, None, started, endpoint=endpoint, error=exc.reason
            )
            await trio.aclose_forcefully(stream)
            return
        try:
            await upstream.send_all(prefix)
            stats.bytes_sent += len(prefix)
            await splice(stream, upstream, stats)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            error = f"connection reset: {exc}"
        finally:
            await trio.aclose_forcefully(upstream)
        self._connection_log(
            tunnel,
            chain,
            "allow",
            f"{self.component} rbac (TCP)" if verdict.policy else None,
            verdict.policy,
            None,
            started,
            endpoint=endpoint,
            stats=stats,
            error=error,
        )

    def _connection_log(
        self,
        tunnel: Tunnel,
        chain: Chain | None,
        decision: str,
        decided_by: str | None,
        policy: str | None,
        reason: str | None,
        started: float,
        *,
        endpoint: Endpoint | None = None,
        stats: SpliceStats | None = None,
        error: str | None = None,
        direction: str = "inbound",
    ) -> None:
        if decision == "allow" and error is None:
            self.metrics.record_tcp(
                self.reporter if direction == "inbound" else "source",
                tunnel.peer_identity or "unknown",
                endpoint.workload if endpoint else "unknown",
            )
        self.log_line(
            connection_line(
                direction=direction,
                component=self.component,
                src_addr=tunnel.client_addr or tunnel.src,
                src_identity=tunnel.peer_identity,
                target=tunnel.target,
                chain=chain.name if chain else None,
                decision=decision,
                decided_by=decided_by,
                policy=policy,
                reason=reason,
                dst_addr=f"{endpoint.ip}:{endpoint.port or tunnel.target_port}" if endpoint else None,
                dst_workload=endpoint.workload if endpoint else None,
                bytes_recv=stats.bytes_recv if stats else 0,
                bytes_sent=stats.bytes_sent if stats else 0,
                duration_ms=(time.monotonic() - started) * 1000,
                error=error,
            )
        )


def _views(config: ProxyConfig, chain: Chain, endpoint: Endpoint | None, tunnel: Tunnel, make):
    """Each policy group with its view of the destination: the chain's (targetRefs) policies see
    the tunnel's target (a Service VIP:port), the endpoint's own (selector) policies see the
    workload's ip:port, as the ztunnel they were written for would."""
    views = [(make(tunnel.target_ip, tunnel.target_port), config.policies_named(tuple(chain.policies)))]
    if endpoint is not None and endpoint.policies:
        views.append((make(endpoint.ip, endpoint.port or tunnel.target_port), config.policies_named(endpoint.policies)))
    return views


def _connection_view(tunnel: Tunnel):
    return lambda ip, port: authz.Connection(tunnel.src_ip, tunnel.peer_identity, ip, port)


def _tunnel_headers(tunnel: Tunnel) -> list[tuple[str, str]]:
    return [("forwarded", f'for="{tunnel.client_addr or tunnel.src}"')]


class _Handler:
    """The HTTP filter chain of one tunnel: called once per request by the codec."""

    config: ProxyConfig  # set by `_use`, with the chain of it that serves the tunnel

    def __init__(self, engine: Engine, config: ProxyConfig, chain: Chain, tunnel: Tunnel) -> None:
        self.engine = engine
        self.tunnel = tunnel
        self._use(config, chain)

    def _use(self, config: ProxyConfig, chain: Chain) -> None:
        self.config, self.chain = config, chain
        self.providers: jwt_authn.JwtAuthnFilter | list[jwt_authn.Provider] = (
            jwt_authn.filter_from_config(chain.jwt_config) if chain.jwt_config else []
        )
        self.cluster = config.clusters.get(chain.cluster)

    def _refresh(self) -> bool:
        """Every request sees the newest config (a kept-alive connection must not keep old policy
        or endpoints); False when its target is no longer served."""
        config = self.engine.config.current
        if config is not self.config:
            chain = config.chain_for(self.tunnel.target_ip, self.tunnel.target_port)
            if chain is None:
                return False
            self._use(config, chain)
        return True

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        engine, tunnel = self.engine, self.tunnel
        started = time.monotonic()
        record = RequestRecord(
            method=request.method,
            path=request.target,
            protocol=f"HTTP/{request.version}",
            authority=request.authority,
            src_addr=tunnel.client_addr or tunnel.src,
            src_identity=tunnel.peer_identity,
            component=engine.component,
            chain=self.chain.name,
            user_agent=request.header("user-agent"),
            bytes_received=len(request.body),
        )
        response = await self._filter(request, record)
        record.status = response.status
        record.bytes_sent = len(response.body)
        took = (time.monotonic() - started) * 1000
        engine.log_line(record.line(took))
        workload = record.dst_workload or "unknown/unknown"
        engine.metrics.record_request(
            RequestLabels(
                engine.reporter,
                tunnel.peer_identity or "unknown",
                record.dst_identity or "unknown",
                workload.partition("/")[2],
                workload.partition("/")[0],
                str(response.status),
                record.flags,
            ),
            took,
        )
        return response

    async def _filter(self, request: HttpRequest, record: RequestRecord) -> HttpResponse:
        engine, tunnel = self.engine, self.tunnel
        if not self._refresh():
            record.flags, record.reason = "NR", "no filter chain serves this target any more"
            return _local(NO_ROUTE, "no route")
        record.chain = self.chain.name
        # 1. jwt_authn
        outcome = jwt_authn.authenticate(
            self.providers,
            scheme=request.scheme or "http",
            authority=request.authority,
            path=request.target,
            headers=request.headers,
            now=engine.clock(),
            method=request.method,
        )
        record.request_principal = outcome.principal
        if outcome.status is not None:
            record.decision, record.decided_by, record.reason = "deny", f"{engine.component} jwt_authn", outcome.detail
            record.flags = "-"
            return _local(outcome.status, outcome.body, list(outcome.response_headers))
        # 2. the endpoint (the router's choice comes first: the policies are the endpoint's own)
        endpoint = engine.pick(self.cluster)
        if endpoint is None:
            record.flags, record.decision = "UH", "allow"
            return _local(503, "no healthy upstream")
        record.dst_addr = f"{endpoint.ip}:{endpoint.port or tunnel.target_port}"
        record.dst_workload, record.dst_identity = endpoint.workload, endpoint.identity

        # 3. rbac
        def view(ip: str, port: int) -> http_policy.Request:
            # The headers as jwt_authn left them: a client cannot forge its output headers.
            return http_policy.Request(
                method=request.method,
                path=outcome.path or request.target,
                host=request.authority,
                src_ip=tunnel.src_ip,
                dst_ip=ip,
                dst_port=port,
                src_identity=tunnel.peer_identity,
                headers=tuple(outcome.request_headers),
                jwt_claims=outcome.claims,
            )

        verdict = authz.request_decision(_views(self.config, self.chain, endpoint, tunnel, view))
        record.audit = verdict.audit
        record.policy, record.reason = verdict.policy, verdict.reason
        if not verdict.allowed:
            record.decision, record.decided_by = "deny", f"{engine.component} rbac"
            return _local(http_policy.DENIED_STATUS, http_policy.DENIED_BODY)
        if verdict.policy:
            record.decided_by = f"{engine.component} rbac"
        # 4. router
        upstream_request = self._upstream_request(request, outcome)
        record.request_id = upstream_request.header("x-request-id")
        return await self._forward(upstream_request, endpoint, record)

    def _upstream_request(self, request: HttpRequest, outcome: jwt_authn.JwtOutcome) -> HttpRequest:
        """The request as the router sends it: the token handled as jwt_authn said, and Istio's
        x-forwarded-for / -proto, x-request-id and x-forwarded-client-cert (APPEND_FORWARD)."""
        tunnel = self.tunnel
        replaced = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-client-cert"}
        headers = [(k, v) for k, v in outcome.request_headers if k not in replaced]  # jwt_authn's changes made
        xff = request.header("x-forwarded-for")
        headers.append(("x-forwarded-for", f"{xff}, {tunnel.src_ip}" if xff else tunnel.src_ip))
        headers.append(("x-forwarded-proto", request.scheme or "http"))
        if request.header("x-request-id") is None:
            headers.append(("x-request-id", str(uuid.uuid4())))
        if tunnel.peer_leaf is not None:  # APPEND_FORWARD; without mTLS a client's own XFCC is dropped
            headers.append(
                (
                    "x-forwarded-client-cert",
                    tls.xfcc(
                        Identity.parse(self.engine.own_identity),
                        tunnel.peer_leaf,
                        request.header("x-forwarded-client-cert"),
                    ),
                )
            )
        return HttpRequest(
            method=request.method,
            target=outcome.path or request.target,
            authority=request.authority,
            scheme=request.scheme,
            headers=headers,
            body=request.body,
            version="1.1",
        )

    async def _forward(self, request: HttpRequest, endpoint: Endpoint, record: RequestRecord) -> HttpResponse:
        engine, tunnel = self.engine, self.tunnel
        port = endpoint.port or tunnel.target_port
        sent = time.monotonic()
        for attempt in (1, 2):
            try:
                client, reused = await engine.upstreams.http_client(endpoint, port)
            except UpstreamConnectError as exc:
                record.flags = "UF"
                return _local(503, BEFORE_HEADERS + exc.reason)
            try:
                response = await client.request(request)
            except UpstreamError as exc:
                await trio.aclose_forcefully(client.stream)
                if (
                    reused
                    and attempt == 1
                    and exc.status == 503
                    and not exc.response_started
                    and request.method in IDEMPOTENT
                ):
                    continue  # a kept-alive connection the app had closed: one fresh try, never twice a POST
                record.flags = "UC"
                return _local(exc.status, exc.reason)
            await engine.upstreams.release(endpoint, port, client)
            headers = [(k, v) for k, v in response.headers if k not in ("server",)]
            headers.append(("x-envoy-upstream-service-time", str(int((time.monotonic() - sent) * 1000))))
            headers.append(("server", "istio-envoy"))
            return HttpResponse(response.status, headers, response.body, close=engine.draining)
        raise AssertionError("unreachable")


def _local(status: int, body: str, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    return local_reply(status, body, headers or [])
