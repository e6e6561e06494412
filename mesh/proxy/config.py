"""The proxy's configuration: istiod's Envoy-shaped resources turned into lookup tables (pure).

`ProxyConfig.build(listeners, clusters, routes)` takes the resources as the config stream carries
them (`mesh.istiod.proxyconfig` writes them) and answers what the engine asks per connection:
which inbound filter chain serves a target ip:port (`chain_for`: a waypoint's `main_internal`, a
sidecar's `virtualInbound`), which outbound chain a sidecar's captured connection takes
(`outbound_chain_for`, from `virtualOutbound`), which cluster a request goes to, the policies its
rbac filters name, and the sidecar's mTLS mode. Anything malformed raises `InvalidConfig`; the engine then
keeps the previous configuration, as Envoy rejects (NACKs) a bad update.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping

from mesh.contract import (
    CLUSTER,
    HTTP_CONNECTION_MANAGER,
    JWT_AUTHN_FILTER,
    LISTENER,
    MAIN_INTERNAL,
    PROTOCOL_TCP,
    RBAC_HTTP_FILTER,
    ROUTE_CONFIGURATION,
    TCP_PROXY,
    VIRTUAL_INBOUND,
    VIRTUAL_OUTBOUND,
)
from mesh.policy.model import AuthorizationPolicy, parse_as


class InvalidConfig(ValueError):
    """A resource the proxy cannot use; the message names it."""


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int  # 0: the tunnel's own target port
    healthy: bool
    workload: str  # "ns/pod"
    identity: str
    tunnel: str  # HBONE or TCP
    policies: tuple[str, ...]  # the workload's own policy keys


@dataclass(frozen=True)
class Cluster:
    name: str
    endpoints: tuple[Endpoint, ...]
    service: str | None  # the Service hostname, when the cluster is one


@dataclass(frozen=True)
class Chain:
    """One destination of the waypoint: its HTTP and TCP variants share the cluster."""

    name: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None
    cluster: str
    policies: tuple[str, ...]  # chain-level (targetRefs) policy keys
    jwt_config: Mapping[str, Any] | None  # the jwt_authn filter's typed_config
    route: str | None


@dataclass
class ProxyConfig:
    chains: list[Chain] = field(default_factory=list)
    outbound_chains: list[Chain] = field(default_factory=list)
    mtls: str = "PERMISSIVE"  # a sidecar's PeerAuthentication mode for plaintext inbound
    mtls_ports: dict[int, str] = field(default_factory=dict)  # port-level exceptions to `mtls`
    clusters: dict[str, Cluster] = field(default_factory=dict)
    policies: dict[str, AuthorizationPolicy] = field(default_factory=dict)
    identity: str | None = None
    gateway: str | None = None
    raw: dict[str, dict[str, Mapping]] = field(default_factory=dict)  # type → name → resource, for config_dump

    @classmethod
    def build(
        cls, listeners: Mapping[str, Mapping], clusters: Mapping[str, Mapping], routes: Mapping[str, Mapping]
    ) -> ProxyConfig:
        config = cls(raw={LISTENER: dict(listeners), CLUSTER: dict(clusters), ROUTE_CONFIGURATION: dict(routes)})
        for name, cluster in clusters.items():
            if name == MAIN_INTERNAL:
                continue
            config.clusters[name] = _cluster(name, cluster)
        route_clusters = {name: _route_cluster(name, route) for name, route in routes.items()}
        for chain in (listeners.get(VIRTUAL_OUTBOUND) or {}).get("filter_chains") or []:
            config.outbound_chains.append(_outbound_chain(chain))
        main = listeners.get(MAIN_INTERNAL) or listeners.get(VIRTUAL_INBOUND)
        if main is None:
            return config
        istio = ((main.get("metadata") or {}).get("filter_metadata") or {}).get("istio") or {}
        config.identity = istio.get("identity")
        config.gateway = istio.get("gateway")
        config.mtls = istio.get("mtls", "PERMISSIVE")
        config.mtls_ports = {int(port): mode for port, mode in (istio.get("mtlsPorts") or {}).items()}
        for key, obj in (istio.get("policies") or {}).items():
            meta = obj.get("metadata") or {}
            try:
                config.policies[key] = parse_as(
                    AuthorizationPolicy,
                    {
                        "apiVersion": "security.istio.io/v1",
                        "kind": "AuthorizationPolicy",
                        "metadata": meta,
                        "spec": obj.get("spec") or {},
                    },
                )
            except (ValueError, TypeError) as e:
                raise InvalidConfig(f"policy {key}: {e}") from None
        for chain in main.get("filter_chains") or []:
            parsed = _chain(chain, route_clusters)
            if parsed is not None:
                config.chains.append(parsed)
        return config

    def chain_for(self, ip: str, port: int) -> Chain | None:
        """The chain for a tunnel's target: an exact port match beats a port-less one."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        best = None
        for chain in self.chains:
            if addr in chain.network and chain.port in (None, port):
                if chain.port == port:
                    return chain
                best = best or chain
        return best

    def mtls_for(self, port: int) -> str:
        """The PeerAuthentication mode for plaintext to `port` (port-level settings win)."""
        return self.mtls_ports.get(port, self.mtls)

    def outbound_chain_for(self, ip: str, port: int) -> Chain | None:
        """A sidecar's outbound chain: a Service VIP:port, else an HBONE-capable pod's IP."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        return next((c for c in self.outbound_chains if addr in c.network and c.port in (None, port)), None)

    def policies_named(self, keys: tuple[str, ...]) -> list[AuthorizationPolicy]:
        return [self.policies[k] for k in keys if k in self.policies]


def _socket_address(obj: Mapping) -> tuple[str, int]:
    sa = ((obj.get("endpoint") or {}).get("address") or {}).get("socket_address") or {}
    if "address" not in sa:
        raise InvalidConfig("endpoint without socket_address")
    return sa["address"], int(sa.get("port_value") or 0)


def _cluster(name: str, raw: Mapping) -> Cluster:
    endpoints = []
    for group in (raw.get("load_assignment") or {}).get("endpoints") or []:
        for lb in group.get("lb_endpoints") or []:
            ip, port = _socket_address(lb)
            istio = ((lb.get("metadata") or {}).get("filter_metadata") or {}).get("istio") or {}
            endpoints.append(
                Endpoint(
                    ip,
                    port,
                    lb.get("health_status", "HEALTHY") == "HEALTHY",
                    istio.get("workload", ""),
                    istio.get("identity", ""),
                    istio.get("tunnel", PROTOCOL_TCP),
                    tuple(istio.get("policies") or ()),
                )
            )
    services = (((raw.get("metadata") or {}).get("filter_metadata") or {}).get("istio") or {}).get("services") or []
    return Cluster(name, tuple(endpoints), services[0].get("host") if services else None)


def _route_cluster(name: str, route: Mapping) -> str:
    for vhost in route.get("virtual_hosts") or []:
        for r in vhost.get("routes") or []:
            cluster = (r.get("route") or {}).get("cluster")
            if cluster:
                return cluster
    raise InvalidConfig(f"route {name} names no cluster")


def _network(raw: Mapping) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The destination a chain matches (its first prefix range)."""
    ranges = (raw.get("filter_chain_match") or {}).get("prefix_ranges") or []
    if not ranges:
        raise InvalidConfig(f"chain {raw.get('name')} has no prefix_ranges")
    return ipaddress.ip_network(f"{ranges[0]['address_prefix']}/{ranges[0].get('prefix_len', 32)}", strict=False)


def _chain(raw: Mapping, route_clusters: Mapping[str, str]) -> Chain | None:
    """The HTTP variant defines a chain; its TCP twin only repeats the cluster."""
    match = raw.get("filter_chain_match") or {}
    if not match.get("application_protocols"):
        return None
    network = _network(raw)
    filters = {f.get("name"): f.get("typed_config") or {} for f in raw.get("filters") or []}
    hcm = filters.get(HTTP_CONNECTION_MANAGER)
    if hcm is None:
        raise InvalidConfig(f"chain {raw.get('name')} has no http_connection_manager")
    http_filters = {f.get("name"): f.get("typed_config") or {} for f in hcm.get("http_filters") or []}
    route = (hcm.get("rds") or {}).get("route_config_name")
    if route is None or route not in route_clusters:
        raise InvalidConfig(f"chain {raw.get('name')} names unknown route {route!r}")
    return Chain(
        name=raw.get("name", ""),
        network=network,
        port=match.get("destination_port"),
        cluster=route_clusters[route],
        policies=tuple((http_filters.get(RBAC_HTTP_FILTER) or {}).get("policy_keys") or ()),
        jwt_config=http_filters.get(JWT_AUTHN_FILTER),
        route=route,
    )


def _outbound_chain(raw: Mapping) -> Chain:
    match = raw.get("filter_chain_match") or {}
    network = _network(raw)
    tcp = next((f.get("typed_config") or {} for f in raw.get("filters") or [] if f.get("name") == TCP_PROXY), None)
    if tcp is None or not tcp.get("cluster"):
        raise InvalidConfig(f"outbound chain {raw.get('name')} has no tcp_proxy cluster")
    return Chain(
        name=raw.get("name", ""),
        network=network,
        port=match.get("destination_port"),
        cluster=tcp["cluster"],
        policies=(),
        jwt_config=None,
        route=None,
    )
