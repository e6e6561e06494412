"""ztunnel's settings (ztunnel `src/config.rs`), read once from the pod's environment.

Everything a test may want to change is a field, so the core runs in-process with other ports,
shorter timeouts, or admin servers turned off (an address of None).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from lab.client.contract import ENV_LAB_NAME, ENV_NODE_NAME
from mesh.contract import (
    ADMIN_PORT,
    ENV_ISTIOD_ADDRESS,
    ENV_TRUST_DOMAIN,
    HBONE_PORT,
    INBOUND_CAPTURE_PORT,
    INPOD_MARK,
    ISTIO_NAMESPACE,
    ISTIOD_ADDRESS,
    ISTIOD_PORT,
    METRICS_PORT,
    OUTBOUND_CAPTURE_PORT,
    PROXY_PORTS,
    READINESS_PORT,
    ROOT_CERT_CONFIGMAP,
    ROOT_CERT_KEY,
)
from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN
from mesh.paths import zds_socket_path

DEFAULT_ISTIOD_ADDRESS = ISTIOD_ADDRESS
ROOT_CONFIGMAP = (ISTIO_NAMESPACE, ROOT_CERT_CONFIGMAP)
ROOT_CONFIGMAP_KEY = ROOT_CERT_KEY

Address = tuple[str, int]


@dataclass(frozen=True)
class Config:
    # Who and where this ztunnel is.
    node_name: str = ""
    cluster_id: str = "Kubernetes"
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    # The control plane.
    istiod_address: str = DEFAULT_ISTIOD_ADDRESS
    #: The certificate lifetime asked of the CA (SECRET_TTL).
    cert_validity: int = 86400
    # In-pod listeners (bound to 0.0.0.0 inside every enrolled pod's netns).
    outbound_port: int = OUTBOUND_CAPTURE_PORT
    inbound_plaintext_port: int = INBOUND_CAPTURE_PORT
    inbound_port: int = HBONE_PORT
    #: SO_MARK of every socket ztunnel makes in a pod (Istio's InpodMark).
    inpod_mark: int = INPOD_MARK
    listen_backlog: int = 128
    # Node-netns servers; None turns one off.
    admin_addr: Address | None = ("127.0.0.1", ADMIN_PORT)
    metrics_addr: Address | None = ("0.0.0.0", METRICS_PORT)
    readiness_addr: Address | None = ("0.0.0.0", READINESS_PORT)
    # The CNI agent's socket.
    zds_path: str = ""
    # Timeouts, in seconds.
    #: How long a connection waits for its pod's Workload to arrive (ztunnel `wait_for_workload`).
    workload_wait: float = 5.0
    #: TCP connect to an upstream or to a peer's 15008 (ztunnel CONNECTION_TIMEOUT).
    connect_timeout: float = 10.0
    #: A client that does not finish its TLS handshake on 15008 in this time is dropped.
    handshake_timeout: float = 10.0
    #: Ports that must never be a proxy's target: they would loop through ztunnel itself.
    illegal_ports: frozenset[int] = field(default=PROXY_PORTS)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """The settings of a ztunnel started by the lab's kubelet (docs/mesh-internals.md)."""
        env = os.environ if env is None else env
        lab, node = env[ENV_LAB_NAME], env[ENV_NODE_NAME]
        return cls(
            node_name=node,
            cluster_id=env.get("CLUSTER_ID", "Kubernetes"),
            trust_domain=env.get(ENV_TRUST_DOMAIN, DEFAULT_TRUST_DOMAIN),
            istiod_address=env.get(ENV_ISTIOD_ADDRESS) or DEFAULT_ISTIOD_ADDRESS,
            cert_validity=int(env.get("SECRET_TTL_SECONDS", "86400")),
            zds_path=zds_socket_path(lab, node),
        )

    @property
    def proxy_ports(self) -> tuple[int, int, int]:
        return (self.outbound_port, self.inbound_plaintext_port, self.inbound_port)


def split_host_port(address: str, default_port: int = ISTIOD_PORT) -> tuple[str, int]:
    """'host:port' (or '[v6]:port', or a bare host) → (host, port); a 'https://' prefix is ignored."""
    address = address.removeprefix("https://").rstrip("/")
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address, default_port
    return host, int(port)
