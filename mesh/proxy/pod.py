"""The L7 proxy as a pod's process: what a waypoint pod and a sidecar container share.

`ProxyPod` runs, in one nursery: the agent (`agent.ProxyAgent`: root, the pod's certificate,
istiod's config), readiness on 0.0.0.0:15021 (`/healthz/ready`: certificate issued and config
synced), Istio's request metrics on 15020 (and 15090 for a sidecar: Envoy's own port), the admin
`/config_dump` on 127.0.0.1:15000, and the HBONE listener on 0.0.0.0:15008 (TLS 1.3, ALPN h2, a
client certificate of our trust domain required, as Envoy's `connect_terminate`), whose CONNECT
streams go to `engine.Engine.serve_connect` with the client's identity and address.
A placement (`mesh.waypoint`, `mesh.sidecar`) adds its own listeners through `extra_listeners`.

On SIGTERM the pod keeps serving for the drain time (Envoy's drain; Istio's
`terminationDrainDuration`), so connections routed to it before its removal reached every
ztunnel still complete, then exits.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from dataclasses import dataclass
from typing import Awaitable, Callable

import trio

from lab.client.contract import (
    ENV_API_SOCKET,
    ENV_NODE_NAME,
    ENV_POD_IP,
    ENV_POD_NAMESPACE,
    ENV_SA_TOKEN_FILE,
    ENV_SERVICE_ACCOUNT,
)
from lab.client.process import open_nursery_until_signalled
from mesh import tls
from mesh.contract import (
    ADMIN_PORT,
    ENV_ISTIOD_ADDRESS,
    ENV_TRUST_DOMAIN,
    HBONE_PORT,
    ISTIOD_ADDRESS,
    METRICS_PORT,
    READINESS_PORT,
)
from mesh.hbone import ConnectRequest, HboneStream, serve_hbone
from mesh.hbone.tlsstream import TlsStream
from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN
from mesh.proxy.agent import AgentSettings, ProxyAgent
from mesh.proxy.engine import Engine, Tunnel
from mesh.proxy.upstream import Upstreams
from mesh.ztunnel.admin import Readiness, json_response, serve_http, text_response
from mesh.ztunnel.sockets import serve_guarded

log = logging.getLogger("mesh.proxy.pod")

HANDSHAKE_TIMEOUT = 10.0
DRAIN_SECONDS = 2.0  # shortened from Istio's 5 s default: the lab's grace period is at most 5 s

Address = tuple[str, int]


@dataclass(frozen=True)
class PodSettings:
    agent: AgentSettings
    pod_ip: str
    component: str  # "waypoint" or "sidecar"
    hbone_addr: Address = ("0.0.0.0", HBONE_PORT)
    admin_addr: Address | None = ("127.0.0.1", ADMIN_PORT)
    readiness_addr: Address | None = ("0.0.0.0", READINESS_PORT)
    metrics_addrs: tuple[Address, ...] = (("0.0.0.0", METRICS_PORT),)
    local_source: str | None = None  # the source a sidecar uses to reach its own app

    @classmethod
    def from_env(cls, env: dict[str, str], *, component: str, name: str, **overrides) -> PodSettings:
        namespace = env[ENV_POD_NAMESPACE]
        trust_domain = env.get(ENV_TRUST_DOMAIN, DEFAULT_TRUST_DOMAIN)
        sa = env.get(ENV_SERVICE_ACCOUNT) or "default"
        return cls(
            agent=AgentSettings(
                api_socket=env[ENV_API_SOCKET],
                token_file=env[ENV_SA_TOKEN_FILE],
                istiod_address=env.get(ENV_ISTIOD_ADDRESS, ISTIOD_ADDRESS),
                namespace=namespace,
                name=name,
                identity=f"spiffe://{trust_domain}/ns/{namespace}/sa/{sa}",
                node=env.get(ENV_NODE_NAME, ""),
                trust_domain=trust_domain,
            ),
            pod_ip=env.get(ENV_POD_IP, ""),
            component=component,
            **overrides,
        )


def print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


ExtraListener = Callable[["ProxyPod", trio.Nursery], Awaitable[None]]


class ProxyPod:
    """The proxy pod core, usable in-process (tests give it other ports)."""

    def __init__(
        self,
        settings: PodSettings,
        *,
        extra_listeners: tuple[ExtraListener, ...] = (),
        log_line: Callable[[str], None] = print_line,
    ) -> None:
        self.settings = settings
        self.agent = ProxyAgent(settings.agent)
        self.readiness = Readiness(["certificate", "config"])
        self.log_line = log_line
        self.extra_listeners = extra_listeners
        self.engine: Engine | None = None
        self.ports: dict[str, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[ProxyPod] = trio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        async with trio.open_nursery() as nursery:
            servers = [
                ("readiness", s.readiness_addr, {"/healthz/ready": self.readiness.route}),
                (
                    "admin",
                    s.admin_addr,
                    {"/config_dump": lambda: json_response(self.agent.config_dump()), "/ready": self.readiness.route},
                ),
            ]
            servers += [
                (f"metrics{i}", address, {"/stats/prometheus": self._metrics, "/metrics": self._metrics})
                for i, address in enumerate(s.metrics_addrs)
            ]
            for name, address, routes in servers:
                if address is not None:
                    self.ports[name] = await nursery.start(serve_http, address, routes)
            await nursery.start(self.agent.run)
            upstreams = Upstreams(nursery, self.agent.certificate, s.pod_ip, local_source=s.local_source)
            self.engine = Engine(
                self.agent, upstreams, component=s.component, own_identity=s.agent.identity, log_line=self.log_line
            )
            await self.agent.certificate()
            self.readiness.done("certificate")
            await self.agent.wait_synced()
            self.readiness.done("config")
            listener = (await trio.open_tcp_listeners(s.hbone_addr[1], host=s.hbone_addr[0]))[0]
            self.ports["hbone"] = listener.socket.getsockname()[1]
            await nursery.start(functools.partial(serve_guarded, listener, self.serve_hbone_connection, "hbone", log))
            for extra in self.extra_listeners:
                await extra(self, nursery)
            log.info("%s %s/%s serving as %s", s.component, s.agent.namespace, s.agent.name, s.agent.identity)
            task_status.started(self)

    def _metrics(self):
        text = self.engine.metrics.render() if self.engine else ""
        return text_response(text, content_type="text/plain; version=0.0.4")

    async def serve_hbone_connection(self, tcp: trio.SocketStream) -> None:
        """mTLS as the pod, then CONNECT streams until the peer closes."""
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
            engine = self.engine
            assert engine is not None  # `run` creates the engine before it serves HBONE
            await engine.serve_connect(
                Tunnel(
                    src_ip=src_ip,
                    src_port=src_port,
                    peer_identity=peer,
                    peer_leaf=leaf,
                    target_ip=str(target.ip) if target.ip is not None else target.host,
                    target_port=target.port,
                    client_addr=request.forwarded_for,
                ),
                respond,
                tunnel,
            )

        await serve_hbone(stream, handle)


async def run_until_signalled(pod: ProxyPod, env: dict[str, str]) -> None:
    """Run `pod`; on SIGTERM/SIGINT drain (a second signal cuts it short), then exit."""
    drain = float(env.get("TERMINATION_DRAIN_DURATION_SECONDS", DRAIN_SECONDS))

    def start_draining(sig: signal.Signals) -> None:
        log.info("received %s: draining for %.1fs, then exiting", sig.name, drain)
        if pod.engine is not None:
            pod.engine.draining = True

    async with open_nursery_until_signalled(start_draining, drain=drain) as nursery:
        await nursery.start(pod.run)


def environment() -> dict[str, str]:
    return dict(os.environ)
