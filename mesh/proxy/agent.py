"""The proxy's agent (pilot-agent's role in an Istio proxy pod): trust, identity and config.

- the mesh root, from the ConfigMap `istio-system/istio-ca-root-cert` (as ztunnel reads it);
- the pod's own certificate: a CSR for the pod's SPIFFE identity signed by istiod's CA, the pod's
  ServiceAccount token as credential (no impersonation: a proxy pod is its own workload), renewed
  at half-life by `mesh.ztunnel.identity.SecretManager`;
- the config stream: a Subscribe for Envoy's types with this proxy's name, reconnecting with
  backoff as ztunnel does (`mesh.istiod.client.keep_streaming`) and keeping the last good
  configuration while istiod is away (`ProxyConfig.build` refusing an update keeps the previous
  one, as an Envoy NACK does).

`current` is what the engine reads for every new tunnel; `ready` gates the readiness probe.
"""

from __future__ import annotations

import base64
import logging
import os
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import trio

from lab.client import AsyncLabClient
from mesh.contract import CLUSTER, LISTENER, PROXY_TYPES, ROUTE_CONFIGURATION, SYNCED, TYPE_URL_PREFIX
from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN
from mesh.istiod import client as istiod
from mesh.istiod.channel import istiod_identity
from mesh.istiod.proxyconfig import proxy_id
from mesh.proxy.config import InvalidConfig, ProxyConfig
from mesh.ztunnel.config import split_host_port
from mesh.ztunnel.identity import SecretManager, WorkloadCertificate

log = logging.getLogger("mesh.proxy.agent")

ROOT_RETRY = 1.0
SECRET_TYPE_URL = TYPE_URL_PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"


@dataclass(frozen=True)
class AgentSettings:
    api_socket: str
    token_file: str
    istiod_address: str
    namespace: str
    name: str  # the proxy's name on the config stream: the Gateway's, for a waypoint
    identity: str  # spiffe://td/ns/NS/sa/SA of the pod
    node: str = ""
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    cert_validity: int = 86400
    version: str | None = None  # reported to istiod; None: istiod.own_version (env, image tag, default)


class ProxyAgent:
    """Run with `await nursery.start(agent.run)`; it returns once the root is known."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.api = AsyncLabClient(settings.api_socket)
        self.address = split_host_port(settings.istiod_address)
        self.secrets: SecretManager | None = None
        self.current = ProxyConfig()
        self.resources: dict[str, dict[str, dict]] = {t: {} for t in PROXY_TYPES}
        self.versions: dict[str, dict[str, str]] = {t: {} for t in PROXY_TYPES}
        self.synced = False
        self.connected = False
        self.last_error: str | None = None
        self.rejected: str | None = None  # why the newest update was refused, if it was
        self._good: tuple[dict, dict] = ({t: {} for t in PROXY_TYPES}, {t: {} for t in PROXY_TYPES})
        self.version = settings.version
        self._synced_event = trio.Event()

    @property
    def ready(self) -> bool:
        return self.synced

    def token(self) -> str:
        with open(self.settings.token_file) as f:
            return f.read().strip()

    def _secret_manager(self) -> SecretManager:
        if self.secrets is None:  # set by `run` once the mesh root is known
            raise RuntimeError("the proxy agent is not running yet: no SecretManager")
        return self.secrets

    async def certificate(self) -> WorkloadCertificate:
        return await self._secret_manager().fetch_certificate(self.settings.identity)

    async def run(self, *, task_status: trio.TaskStatus[ProxyAgent] = trio.TASK_STATUS_IGNORED) -> None:
        root = await self._root_cert()
        self.secrets = SecretManager(self._sign, root)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.secrets.run)
            self.secrets.acquire(self.settings.identity)
            nursery.start_soon(self._follow_config, root)
            task_status.started(self)

    async def wait_synced(self) -> None:
        await self._synced_event.wait()

    async def _root_cert(self) -> str:
        return await istiod.mesh_root(self.api, retry=ROOT_RETRY)

    async def _sign(self, csr_pem: str, identity: str) -> list[str]:
        return await istiod.create_certificate(
            self.address,
            self._secret_manager().root_pem,
            self.token(),
            csr_pem,
            validity=self.settings.cert_validity,
            server_identity=istiod_identity(self.settings.trust_domain),
        )

    async def _follow_config(self, root: str) -> None:
        await istiod.keep_streaming(self, lambda: self._stream(root), logger=log)

    async def _stream(self, root: str) -> bool:
        synced = False
        proxy = f"{self.settings.namespace}/{self.settings.name}"
        if self.version is None:
            self.version = await istiod.own_version(self.api, os.environ, "istio-proxy")
        stream = istiod.subscribe(
            self.address,
            root,
            self.token(),
            self.settings.node,
            self.versions,
            server_identity=istiod_identity(self.settings.trust_domain),
            types=list(PROXY_TYPES),
            proxy=proxy,
            version=self.version,
        )
        async with aclosing(stream) as messages:
            async for message in messages:
                self.connected = True
                if message.get("type") == SYNCED:
                    synced = True
                    self._rebuild()
                    if not self.synced:
                        self.synced = True
                        self._synced_event.set()
                        log.info(
                            "config synced from istiod: %d filter chains, %d clusters",
                            len(self.current.chains),
                            len(self.current.clusters),
                        )
                    continue
                self._apply(message)
                if synced:
                    self._rebuild()
        return synced

    def _apply(self, message: dict[str, Any]) -> None:
        type_ = message.get("type")
        if type_ not in self.resources:
            return
        prefix = proxy_id(self.settings.namespace, self.settings.name)
        for name in message.get("removed") or []:
            self.resources[type_].pop(name[len(prefix) :] if name.startswith(prefix) else name, None)
            self.versions[type_].pop(name, None)
        for entry in message.get("resources") or []:
            name = entry["name"]
            self.resources[type_][name[len(prefix) :] if name.startswith(prefix) else name] = entry["resource"]
            self.versions[type_][name] = entry["version"]

    def _rebuild(self) -> None:
        """Build the new config; on failure go back to the last good resources (an Envoy NACK): the
        bad versions are forgotten, so a later update of the same resources is tried afresh."""
        try:
            self.current = ProxyConfig.build(*(self.resources[t] for t in PROXY_TYPES))
            self.rejected = None
            self._good = (
                {t: dict(r) for t, r in self.resources.items()},
                {t: dict(v) for t, v in self.versions.items()},
            )
        except (InvalidConfig, KeyError, TypeError, ValueError) as exc:
            self.rejected = str(exc)
            self.resources = {t: dict(r) for t, r in self._good[0].items()}
            self.versions = {t: dict(v) for t, v in self._good[1].items()}
            log.error("rejected a config update from istiod (keeping the previous one): %s", exc)

    # --- config_dump -----------------------------------------------------------------------------

    def secrets_dump(self) -> list[dict]:
        """Envoy's SecretsConfigDump entries: `default` (the pod's chain) and `ROOTCA`."""
        out = []
        for entry in self.secrets.dump() if self.secrets else []:
            chain = "".join(base64.b64decode(c["pem"]).decode() for c in entry.get("certChain", []))
            roots = "".join(base64.b64decode(c["pem"]).decode() for c in entry.get("rootCerts", []))
            if chain:
                out.append(
                    {
                        "name": "default",
                        "version_info": entry.get("refreshAt", ""),
                        "secret": {
                            "@type": SECRET_TYPE_URL,
                            "name": "default",
                            "tls_certificate": {
                                "certificate_chain": {"inline_bytes": base64.b64encode(chain.encode()).decode()},
                                "private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="},
                            },
                        },
                    }
                )
            if roots:
                out.append(
                    {
                        "name": "ROOTCA",
                        "secret": {
                            "@type": SECRET_TYPE_URL,
                            "name": "ROOTCA",
                            "validation_context": {
                                "trusted_ca": {"inline_bytes": base64.b64encode(roots.encode()).decode()}
                            },
                        },
                    }
                )
        return out

    def config_dump(self) -> dict:
        """Envoy's /config_dump: listeners, clusters, routes and secrets as this proxy holds them."""
        raw = self.current.raw
        prefix = TYPE_URL_PREFIX + "envoy.admin.v3."
        return {
            "configs": [
                {
                    "@type": prefix + "ListenersConfigDump",
                    "dynamic_listeners": [
                        {"name": name, "active_state": {"listener": listener}}
                        for name, listener in raw.get(LISTENER, {}).items()
                    ],
                },
                {
                    "@type": prefix + "ClustersConfigDump",
                    "dynamic_active_clusters": [{"cluster": cluster} for cluster in raw.get(CLUSTER, {}).values()],
                },
                {
                    "@type": prefix + "RoutesConfigDump",
                    "dynamic_route_configs": [
                        {"route_config": route} for route in raw.get(ROUTE_CONFIGURATION, {}).values()
                    ],
                },
                {"@type": prefix + "SecretsConfigDump", "dynamic_active_secrets": self.secrets_dump()},
            ],
            "xds": {
                "connected": self.connected,
                "synced": self.synced,
                "lastError": self.last_error,
                "rejected": self.rejected,
            },
        }
