"""The ztunnel process: what `python -m mesh.ztunnel` runs (ztunnel `src/app.rs`).

`Ztunnel` is the core, usable in-process: it takes a `ControlPlane` (the mesh root, certificates,
the config stream) and runs, in one nursery,

- the readiness (15021), metrics (15020) and admin (15000) servers, in the node netns;
- the root certificate, fetched first (readiness waits for it);
- the certificate manager (`identity.SecretManager`);
- the config stream (`xds.XdsClient`) into the shared state;
- the ZDS client and the pods' proxies (`inpod.WorkloadProxyManager`).

In production the control plane is `IstiodControlPlane`: the root from the ConfigMap
`istio-system/istio-ca-root-cert` through the lab API (retried until it exists), and istiod's
CreateCertificate and Subscribe (`mesh.istiod.client`: TLS + JSON lines on 15012, istiod's chain and
identity checked), authenticated by the ServiceAccount token in LAB_SA_TOKEN_FILE (re-read for every
call: projected tokens rotate). Tests plug in a fake with a local CA (`mesh.ztunnel.testing`).

SIGTERM or SIGINT cancel everything: the pods' listeners close at once and the process exits.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, Protocol

import trio

from lab.client import AsyncLabClient
from lab.client.contract import ENV_API_SOCKET, ENV_SA_TOKEN_FILE
from lab.client.process import open_nursery_until_signalled
from mesh.istiod import client as istiod
from mesh.istiod.channel import istiod_identity
from mesh.ztunnel.admin import Readiness, json_response, serve_http, text_response
from mesh.ztunnel.config import ROOT_CONFIGMAP, ROOT_CONFIGMAP_KEY, Config, split_host_port
from mesh.ztunnel.identity import SecretManager
from mesh.ztunnel.inpod import ProxyFactory, WorkloadProxyManager
from mesh.ztunnel.metrics import CONTENT_TYPE, Metrics
from mesh.ztunnel.proxy import Log
from mesh.ztunnel.state import StateHandle
from mesh.ztunnel.xds import XdsClient

log = logging.getLogger("mesh.ztunnel")

ROOT_RETRY = 1.0


class ControlPlane(Protocol):
    """Where ztunnel's trust and config come from."""

    async def root_cert(self) -> str:
        """The mesh root (PEM); may wait until it exists."""

    async def create_certificate(self, root_pem: str, csr_pem: str, identity: str) -> list[str]:
        """Have `csr_pem` signed for `identity`; the chain, leaf first."""

    def subscribe(self, root_pem: str, known: dict[str, dict[str, str]]) -> AsyncGenerator[dict[str, Any], None]:
        """One config stream: the pushed messages until it ends."""


class IstiodControlPlane:
    """The real one: the lab API for the root, istiod for certificates and config."""

    def __init__(self, config: Config, api: AsyncLabClient, token_file: str) -> None:
        self.config = config
        self.api = api
        self.token_file = token_file
        self.address = split_host_port(config.istiod_address)
        self.istiod = istiod_identity(config.trust_domain)  # istiod's certificate must carry it
        self.version: str | None = None

    def token(self) -> str:
        with open(self.token_file) as f:
            return f.read().strip()

    async def root_cert(self) -> str:
        return await istiod.mesh_root(self.api, retry=ROOT_RETRY, location=(*ROOT_CONFIGMAP, ROOT_CONFIGMAP_KEY))

    async def create_certificate(self, root_pem: str, csr_pem: str, identity: str) -> list[str]:
        return await istiod.create_certificate(
            self.address,
            root_pem,
            self.token(),
            csr_pem,
            impersonated=identity,
            validity=self.config.cert_validity,
            server_identity=self.istiod,
        )

    def subscribe(self, root_pem: str, known: dict[str, dict[str, str]]) -> AsyncGenerator[dict[str, Any], None]:
        return self._subscribe(root_pem, known)

    async def _subscribe(self, root_pem: str, known: dict[str, dict[str, str]]) -> AsyncGenerator[dict[str, Any], None]:
        if self.version is None:  # reported to istiod: env, else this pod's image tag (mesh.istiod.client)
            self.version = await istiod.own_version(self.api, os.environ, "istio-proxy")
        async with aclosing(
            istiod.subscribe(
                self.address,
                root_pem,
                self.token(),
                self.config.node_name,
                known,
                server_identity=self.istiod,
                version=self.version,
            )
        ) as messages:
            async for message in messages:
                yield message


def print_line(line: str) -> None:
    """The access log goes to stdout, one line per connection."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Ztunnel:
    """One node's ztunnel; `await nursery.start(zt.run)` returns once it serves (not yet ready)."""

    def __init__(self, config: Config, control_plane: ControlPlane, *, log: Log = print_line) -> None:
        self.config = config
        self.control_plane = control_plane
        self.state = StateHandle()
        self.metrics = Metrics()
        self.readiness = Readiness(["root", "config", "pods"])
        self.secrets = SecretManager(self._create_certificate, "")
        self.xds = XdsClient(
            self.state,
            lambda known: control_plane.subscribe(self.secrets.root_pem, known),
            on_synced=lambda: self.readiness.done("config"),
        )
        factory = ProxyFactory(config, self.state, self.secrets, self.metrics, log)
        self.pods = WorkloadProxyManager(factory, config.zds_path, on_snapshot=lambda: self.readiness.done("pods"))
        #: The bound ports of the node-netns servers (useful when a test asked for port 0).
        self.ports: dict[str, int] = {}

    async def _create_certificate(self, csr_pem: str, identity: str) -> list[str]:
        return await self.control_plane.create_certificate(self.secrets.root_pem, csr_pem, identity)

    async def run(self, *, task_status: trio.TaskStatus[Ztunnel] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        async with trio.open_nursery() as nursery:
            servers = (
                ("readiness", cfg.readiness_addr, {"/healthz/ready": self.readiness.route}),
                ("metrics", cfg.metrics_addr, {"/metrics": self._metrics, "/stats/prometheus": self._metrics}),
                (
                    "admin",
                    cfg.admin_addr,
                    {"/config_dump": lambda: json_response(self.config_dump()), "/healthz/ready": self.readiness.route},
                ),
            )
            for name, address, routes in servers:
                if address is not None:
                    self.ports[name] = await nursery.start(serve_http, address, routes)
            self.secrets.root_pem = await self.control_plane.root_cert()
            self.readiness.done("root")
            await nursery.start(self.secrets.run)
            nursery.start_soon(self.xds.run)
            await nursery.start(self.pods.run)
            log.info("ztunnel running on node %s (ZDS %s)", cfg.node_name, cfg.zds_path)
            task_status.started(self)

    def _metrics(self):
        return text_response(self.metrics.render(), content_type=CONTENT_TYPE)

    def config_dump(self) -> dict[str, Any]:
        """ztunnel's /config_dump: the config state, certificates, pods and their connections."""
        connections: dict[str, dict[str, list]] = {}
        for conn in sorted(self.metrics.live.values(), key=lambda c: c.id):
            per_pod = connections.setdefault(conn.pod, {"inbound": [], "outbound": []})
            per_pod["outbound" if conn.outbound else "inbound"].append(conn.dump())
        cfg = self.config
        return {
            **self.state.state.dump(),
            "certificates": self.secrets.dump(),
            "workloadState": self.pods.dump(),
            "connections": connections,
            "xds": self.xds.dump(),
            "ready": self.readiness.ready,
            "config": {
                "nodeName": cfg.node_name,
                "clusterId": cfg.cluster_id,
                "trustDomain": cfg.trust_domain,
                "xdsAddress": cfg.istiod_address,
                "caAddress": cfg.istiod_address,
                "secretTtl": cfg.cert_validity,
                "zdsPath": cfg.zds_path,
                "inpodMark": cfg.inpod_mark,
                "outboundPort": cfg.outbound_port,
                "inboundPlaintextPort": cfg.inbound_plaintext_port,
                "inboundPort": cfg.inbound_port,
            },
        }


async def amain(env: dict[str, str] | None = None) -> None:
    env = dict(os.environ) if env is None else env
    config = Config.from_env(env)
    control_plane = IstiodControlPlane(config, AsyncLabClient(env[ENV_API_SOCKET]), env[ENV_SA_TOKEN_FILE])
    async with open_nursery_until_signalled(
        lambda sig: log.info("received %s: closing listeners and exiting", sig.name)
    ) as nursery:
        await nursery.start(Ztunnel(config, control_plane).run)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    trio.run(amain)
