"""The waypoint pod's process (`python -m mesh.proxy proxy waypoint`, the `istio-proxy` container).

It terminates HBONE on 0.0.0.0:15008 (TLS 1.3, ALPN h2, a client certificate of our trust
domain required, as Envoy's `connect_terminate` listener), and hands every CONNECT to the engine
with the client's identity from the certificate and its address from `forwarded: for=`. It
dials endpoints with HBONE from its own pod, as itself. Ready (15021) once its certificate is
issued and istiod's config has arrived; until then ztunnels do not send it traffic (its
endpoint is not Healthy), and a waypoint without a ready endpoint fails closed at the source.
"""
from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from dataclasses import dataclass

import trio

from mesh import tls
from mesh.hbone import ConnectRequest, HboneStream, serve_hbone
from mesh.hbone.tlsstream import TlsStream
from mesh.proxy.agent import AgentSettings, ProxyAgent
from mesh.proxy.engine import Engine, Tunnel
from mesh.proxy.upstream import Upstreams
from mesh.ztunnel.admin import Readiness, json_response, serve_http, text_response
from mesh.ztunnel.sockets import serve_guarded

log = logging.getLogger("mesh.waypoint")

HBONE_PORT = 15008
HANDSHAKE_TIMEOUT = 10.0
#: After SIGTERM the waypoint keeps serving this long (Envoy's drain, Istio's terminationDrainDuration,
#: shortened: the lab's grace period is at most 5 s), so connections routed to it before its removal
#: from the mesh reached every ztunnel still complete.
DRAIN_SECONDS = 2.0


@dataclass(frozen=True)
class WaypointSettings:
    agent: AgentSettings
    pod_ip: str
    hbone_addr: tuple[str, int] = ("0.0.0.0", HBONE_PORT)
    admin_addr: tuple[str, int] | None = ("127.0.0.1", 15000)
    readiness_addr: tuple[str, int] | None = ("0.0.0.0", 15021)
    metrics_addr: tuple[str, int] | None = ("0.0.0.0", 15020)

    @classmethod
    def from_env(cls, env: dict[str, str]) -> WaypointSettings:
        namespace = env["LAB_POD_NAMESPACE"]
        trust_domain = env.get("TRUST_DOMAIN", "cluster.local")
        sa = env.get("LAB_SERVICE_ACCOUNT") or "default"
        return cls(agent=AgentSettings(
            api_socket=env["LAB_API_SOCKET"], token_file=env["LAB_SA_TOKEN_FILE"],
            istiod_address=env.get("ISTIOD_ADDRESS", "istiod.istio-system.svc:15012"), namespace=namespace,
            name=env.get("GATEWAY_NAME") or sa, identity=f"spiffe://{trust_domain}/ns/{namespace}/sa/{sa}",
            node=env.get("LAB_NODE_NAME", ""), trust_domain=trust_domain), pod_ip=env.get("LAB_POD_IP", ""))


def print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Waypoint:
    """The waypoint core, usable in-process (tests give it other ports)."""

    def __init__(self, settings: WaypointSettings, *, log_line=print_line) -> None:
        self.settings = settings
        self.agent = ProxyAgent(settings.agent)
        self.readiness = Readiness(["certificate", "config"])
        self.log_line = log_line
        self.engine: Engine | None = None
        self.ports: dict[str, int] = {}

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        async with trio.open_nursery() as nursery:
            for name, address, routes in (
                    ("readiness", s.readiness_addr, {"/healthz/ready": self.readiness.route}),
                    ("metrics", s.metrics_addr, {"/stats/prometheus": self._metrics, "/metrics": self._metrics}),
                    ("admin", s.admin_addr, {"/config_dump": lambda: json_response(self.agent.config_dump()),
                                             "/ready": self.readiness.route})):
                if address is not None:
                    self.ports[name] = await nursery.start(serve_http, address, routes)
            await nursery.start(self.agent.run)
            upstreams = Upstreams(nursery, self.agent.certificate, s.pod_ip)
            self.engine = Engine(self.agent, upstreams, component="waypoint", own_identity=s.agent.identity,
                                 log_line=self.log_line)
            await self.agent.certificate()
            self.readiness.done("certificate")
            await self.agent.wait_synced()
            self.readiness.done("config")
            listener = (await trio.open_tcp_listeners(s.hbone_addr[1], host=s.hbone_addr[0]))[0]
            self.ports["hbone"] = listener.socket.getsockname()[1]
            await nursery.start(functools.partial(serve_guarded, listener, self.serve_connection, "hbone", log))
            log.info("waypoint %s/%s serving HBONE on %s:%d as %s", s.agent.namespace, s.agent.name,
                     s.hbone_addr[0], self.ports["hbone"], s.agent.identity)
            task_status.started(self)

    def _metrics(self):
        e = self.engine
        text = (f"# TYPE istio_requests_total counter\nistio_requests_total{{reporter=\"waypoint\"}} "
                f"{e.requests if e else 0}\n# TYPE istio_requests_denied_total counter\n"
                f"istio_requests_denied_total{{reporter=\"waypoint\"}} {e.denied if e else 0}\n")
        return text_response(text, content_type="text/plain; version=0.0.4")

    async def serve_connection(self, tcp: trio.SocketStream) -> None:
        """mTLS as the waypoint, then CONNECT streams until the peer closes."""
        try:
            src_ip, src_port = tcp.socket.getpeername()[:2]
        except OSError:
            await trio.aclose_forcefully(tcp)
            return
        cert = await self.agent.certificate()
        stream = TlsStream(tcp, cert.server_context(), server_side=True)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await stream.do_handshake()
            tls.check_trust_domain(stream, cert.identity.trust_domain)
            peer = str(tls.peer_identities(stream)[0])
            leaf = tls.peer_leaf_der(stream)
        except (trio.BrokenResourceError, trio.TooSlowError, tls.PeerRejected, IndexError) as exc:
            log.warning("dropped a connection from %s:%d: TLS failed: %s", src_ip, src_port, exc or "timeout")
            await trio.aclose_forcefully(stream)
            return

        async def handle(request: ConnectRequest, respond, tunnel: HboneStream) -> None:
            target = request.authority
            await self.engine.serve_connect(Tunnel(
                src_ip=src_ip, src_port=src_port, peer_identity=peer, peer_leaf=leaf,
                target_ip=str(target.ip) if target.ip is not None else target.host, target_port=target.port,
                client_addr=request.forwarded_for), respond, tunnel)

        await serve_hbone(stream, handle)


async def amain(env: dict[str, str] | None = None) -> None:
    env = dict(os.environ) if env is None else env
    waypoint = Waypoint(WaypointSettings.from_env(env))
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(waypoint.run)
            drain = float(env.get("TERMINATION_DRAIN_DURATION_SECONDS", DRAIN_SECONDS))
            async for signum in signals:
                log.info("received %s: draining for %.1fs, then exiting", signal.Signals(signum).name, drain)
                with trio.move_on_after(drain):
                    await signals.__anext__()  # a second signal ends the drain at once
                nursery.cancel_scope.cancel()
                break
