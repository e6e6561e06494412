"""What istiod sends a waypoint, in Envoy's shapes (Listener, Cluster, RouteConfiguration).

Pure: the cluster's objects in, per-waypoint resources out. The waypoint (`mesh/proxy`) reads
exactly these, and `lab istioctl proxy-config` prints them, so a learner sees what Envoy would
hold. The shapes follow Envoy's v3 API with three simplifications, each said in docs/waypoints.md:

- clusters carry their endpoints inline (`load_assignment`) instead of a separate EDS resource;
- an endpoint's metadata says how to reach it (`tunnel`: HBONE or TCP), who it is (`identity`),
  and which selector policies apply to it (`policies`): the article's waypoint model enforces the
  destination workload's own policies with the original client's identity;
- the rbac filter carries the AuthorizationPolicies themselves (Istio's form), not the matcher
  trees istiod compiles them to; `mesh.policy.http` evaluates them as Envoy's RBAC filter would.

Waypoint listeners: `connect_terminate` (0.0.0.0:15008, mTLS, CONNECT) hands each tunnel to
`main_internal`, whose filter chains match the tunnel's target (a Service VIP:port, or a pod IP
for workload traffic); each chain has an HTTP variant (jwt_authn → rbac → router) and a TCP one.

Sidecar listeners (the same engine in the app's pod): `connect_terminate` hands HBONE tunnels to
`virtualInbound`, which also takes plaintext captured on 15006; its one chain is the pod itself,
with the pod's own policies and RequestAuthentications and its PeerAuthentication mode (STRICT
refuses plaintext). `virtualOutbound` (15001) holds a TCP chain per Service VIP:port and per
HBONE-capable pod of the mesh; anything else passes through as plain TCP (Envoy's
PassthroughCluster). Sidecars never use waypoints.

Resource names on the config stream are `<ns>/<proxy name>/<envoy name>`, the proxy name being the
waypoint's Gateway or the sidecar's pod; a proxy subscribes with its own prefix
(docs/mesh-internals.md).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from mesh.contract import (
    CLUSTER,
    CONNECT_TERMINATE,
    HBONE_PORT,
    INBOUND_CAPTURE_PORT,
    LISTENER,
    MAIN_INTERNAL,
    OUTBOUND_CAPTURE_PORT,
    PASSTHROUGH_CLUSTER,
    PROTOCOL_HBONE,
    PROTOCOL_TCP,
    ROUTE_CONFIGURATION,
    TCP_PROXY,
    TYPE_URL_PREFIX,
    VIRTUAL_INBOUND,
    VIRTUAL_OUTBOUND,
)
from mesh.contract import HTTP_CONNECTION_MANAGER as HCM
from mesh.contract import RBAC_HTTP_FILTER as RBAC_HTTP
from mesh.contract import RBAC_NETWORK_FILTER as RBAC_NETWORK
from mesh.istiod.jwt import jwt_authn_filter
from mesh.istiod.objects import Obj, is_live, is_ready, selects_pod, service_account
from mesh.istiod.objects import labels as _labels
from mesh.istiod.objects import meta as _meta
from mesh.istiod.objects import name as _name
from mesh.istiod.objects import namespace as _ns
from mesh.policy.model import AuthorizationPolicy, RequestAuthentication, parse_as
from mesh.policy.ztunnel import selects

TYPE_PREFIX = TYPE_URL_PREFIX
ROUTER = "envoy.filters.http.router"

JwksLookup = Callable[[str], "str | None"]


def proxy_id(namespace: str, name: str) -> str:
    """The prefix of a waypoint's resource names on the config stream."""
    return f"{namespace}/{name}/"


def service_host(service: Obj, domain_suffix: str = "cluster.local") -> str:
    return f"{_name(service)}.{_ns(service)}.svc.{domain_suffix}"


def cluster_name(service: Obj, port: Obj, domain_suffix: str = "cluster.local") -> str:
    """Istio's waypoint naming: `inbound-vip|<port>|<protocol>|<host>`."""
    protocol = "http" if _is_http_port(port) else "tcp"
    return f"inbound-vip|{port.get('port')}|{protocol}|{service_host(service, domain_suffix)}"


def _is_http_port(port: Obj) -> bool:
    name = (port.get("name") or "").lower()
    app = (port.get("appProtocol") or "").lower()
    return app in ("http", "http2", "grpc") or name.split("-")[0] in ("http", "http2", "grpc")


def _target_port(port: Obj, pod: Obj) -> int | None:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int):
        return target
    for container in (pod.get("spec") or {}).get("containers") or []:
        for cport in container.get("ports") or []:
            if cport.get("name") == target:
                found: int | None = cport.get("containerPort")
                return found
    return None


def _pod_ip(pod: Obj) -> str | None:
    return ((pod.get("status") or {}).get("podIP") or None) if is_live(pod) else None


def _identity(pod: Obj, trust_domain: str) -> str:
    return f"spiffe://{trust_domain}/ns/{_ns(pod)}/sa/{service_account(pod)}"


# ---- which policies apply where ------------------------------------------------------------------


def _targets(ref_owner: AuthorizationPolicy | RequestAuthentication, kind: str, name: str, namespace: str) -> bool:
    return any(
        ref.kind == kind and ref.name == name and (ref.namespace or ref_owner.namespace) == namespace
        for ref in ref_owner.target_refs
    )


def chain_policies(
    policies: Iterable[AuthorizationPolicy], gateway: Obj, service: Obj | None, root_namespace: str
) -> list[str]:
    """targetRefs policies for a chain: the waypoint's Gateway, the Service, or (root namespace)
    the waypoint's GatewayClass."""
    keys = []
    for p in policies:
        if not p.target_refs:
            continue
        if (
            _targets(p, "Gateway", _name(gateway), _ns(gateway))
            or (service is not None and _targets(p, "Service", _name(service), _ns(service)))
            or (
                p.namespace == root_namespace
                and any(
                    r.kind == "GatewayClass" and r.name == (gateway.get("spec") or {}).get("gatewayClassName")
                    for r in p.target_refs
                )
            )
        ):
            keys.append(p.key)
    return sorted(keys)


def workload_policies(policies: Iterable[AuthorizationPolicy], pod: Obj, root_namespace: str) -> list[str]:
    """The selector/namespace/root policies of the destination workload (the article's model)."""
    return sorted(p.key for p in policies if selects(p, _labels(pod), _ns(pod), root_namespace))


def _authn_selects(ra: RequestAuthentication, pod: Obj, root_namespace: str) -> bool:
    if ra.target_refs or ra.namespace not in (_ns(pod), root_namespace):
        return False
    if ra.selector is None:
        return True
    return bool(ra.selector.match_labels) and ra.selector.matches(_labels(pod))


def chain_authns(
    authns: Iterable[RequestAuthentication], gateway: Obj, service: Obj | None, pods: Iterable[Obj], root_namespace: str
) -> list[RequestAuthentication]:
    """RequestAuthentications for a chain: those selecting any of its workloads, plus targetRefs
    to the Gateway or the Service. Envoy runs one jwt_authn filter per chain, so it is the union."""
    pods = list(pods)
    picked = []
    for ra in authns:
        if (
            any(_authn_selects(ra, pod, root_namespace) for pod in pods)
            or _targets(ra, "Gateway", _name(gateway), _ns(gateway))
            or (service is not None and _targets(ra, "Service", _name(service), _ns(service)))
        ):
            picked.append(ra)
    return sorted(picked, key=lambda ra: ra.key)


# ---- Envoy shapes --------------------------------------------------------------------------------


def endpoint_entry(
    pod: Obj, port: int, policies: list[str], trust_domain: str, enrolled: Callable[[Obj], bool]
) -> dict[str, Any]:
    return {
        "endpoint": {"address": {"socket_address": {"address": _pod_ip(pod), "port_value": port}}},
        "health_status": "HEALTHY" if is_ready(pod) else "UNHEALTHY",
        "metadata": {
            "filter_metadata": {
                "istio": {
                    "workload": f"{_ns(pod)}/{_name(pod)}",
                    "identity": _identity(pod, trust_domain),
                    "tunnel": PROTOCOL_HBONE if enrolled(pod) else PROTOCOL_TCP,
                    "policies": policies,
                }
            }
        },
    }


def cluster_resource(name: str, endpoints: list[dict[str, Any]], service_host_name: str | None) -> dict[str, Any]:
    return {
        "@type": TYPE_PREFIX + "envoy.config.cluster.v3.Cluster",
        "name": name,
        "type": "EDS",
        "connect_timeout": "10s",
        "lb_policy": "ROUND_ROBIN",
        "metadata": {
            "filter_metadata": {"istio": {"services": [{"host": service_host_name}] if service_host_name else []}}
        },
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }


def route_resource(name: str, cluster: str) -> dict[str, Any]:
    return {
        "@type": TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration",
        "name": name,
        "virtual_hosts": [
            {
                "name": name,
                "domains": ["*"],
                "routes": [
                    {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}
                ],
            }
        ],
        "validate_clusters": False,
    }


def rbac_config(policy_keys: list[str], type_name: str) -> dict[str, Any]:
    return {"@type": TYPE_PREFIX + type_name, "policy_keys": policy_keys}


def chain_match(prefix: str, port: int | None, http: bool) -> dict[str, Any]:
    match: dict[str, Any] = {"prefix_ranges": [{"address_prefix": prefix, "prefix_len": 32}]}
    if port is not None:
        match["destination_port"] = port
    if http:
        match["application_protocols"] = ["http/1.1", "h2c"]
    return match


def filter_chains(
    name: str, prefix: str, port: int | None, cluster: str, policy_keys: list[str], jwt_filter: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The HTTP and the TCP variant of one destination's filter chain."""
    http_filters = ([jwt_filter] if jwt_filter else []) + [
        {"name": RBAC_HTTP, "typed_config": rbac_config(policy_keys, "envoy.extensions.filters.http.rbac.v3.RBAC")},
        {"name": ROUTER, "typed_config": {"@type": TYPE_PREFIX + "envoy.extensions.filters.http.router.v3.Router"}},
    ]
    hcm = {
        "@type": TYPE_PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "rds": {"route_config_name": name},
        "http_filters": http_filters,
        "server_name": "istio-envoy",
        "forward_client_cert_details": "APPEND_FORWARD",
        "set_current_client_cert_details": {"subject": True, "uri": True, "dns": True},
        "max_request_headers_kb": 60,
        "use_remote_address": False,
    }
    tcp = [
        {
            "name": RBAC_NETWORK,
            "typed_config": rbac_config(policy_keys, "envoy.extensions.filters.network.rbac.v3.RBAC"),
        },
        {
            "name": TCP_PROXY,
            "typed_config": {
                "@type": TYPE_PREFIX + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": name,
                "cluster": cluster,
            },
        },
    ]
    return [
        {
            "name": name,
            "filter_chain_match": chain_match(prefix, port, True),
            "filters": [{"name": HCM, "typed_config": hcm}],
        },
        {
            "name": name.replace("|http|", "|tcp|") if "|http|" in name else name + "|tcp",
            "filter_chain_match": chain_match(prefix, port, False),
            "filters": tcp,
        },
    ]


def policies_dump(policy_objects: Iterable[Obj], keys: set[str]) -> dict[str, dict[str, Any]]:
    """The AuthorizationPolicies the rbac filters name, as {"ns/name": {metadata, spec}}."""
    out = {}
    for obj in policy_objects:
        key = f"{_ns(obj)}/{_name(obj)}"
        if key in keys:
            meta: dict[str, Any] = {"name": _name(obj), "namespace": _ns(obj)}
            if _meta(obj).get("annotations"):
                meta["annotations"] = dict(_meta(obj)["annotations"])
            out[key] = {"metadata": meta, "spec": obj.get("spec") or {}}
    return dict(sorted(out.items()))


def connect_terminate_listener(inbound: str = MAIN_INTERNAL) -> dict[str, Any]:
    """0.0.0.0:15008: mTLS 1.3 with the pod's certificate, ALPN h2, CONNECT handed to the inbound
    listener (Envoy's `connect_terminate`, the same for a waypoint and a sidecar)."""
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": TYPE_PREFIX + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_3"},
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [{"name": "default"}],
                "validation_context_sds_secret_config": {"name": "ROOTCA"},
            },
        },
    }
    connect_terminate = {
        "@type": TYPE_PREFIX + "envoy.config.listener.v3.Listener",
        "name": CONNECT_TERMINATE,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": HBONE_PORT}},
        "filter_chains": [
            {
                "name": "default",
                "transport_socket": tls,
                "filters": [
                    {
                        "name": HCM,
                        "typed_config": {
                            "@type": TYPE_PREFIX
                            + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "connect_terminate",
                            "upgrade_configs": [{"upgrade_type": "CONNECT"}],
                            "http2_protocol_options": {"allow_connect": True},
                            "route_config": {
                                "name": "default",
                                "virtual_hosts": [
                                    {
                                        "name": "default",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"connect_matcher": {}},
                                                "route": {
                                                    "cluster": inbound,
                                                    "upgrade_configs": [
                                                        {"upgrade_type": "CONNECT", "connect_config": {}}
                                                    ],
                                                },
                                            }
                                        ],
                                    }
                                ],
                            },
                        },
                    }
                ],
            }
        ],
    }
    return connect_terminate


def waypoint_resources(
    gateway: Obj,
    services: Iterable[Obj],
    pods: Iterable[Obj],
    all_pods: Iterable[Obj],
    policy_objects: Iterable[Obj],
    authn_objects: Iterable[Obj],
    *,
    jwks_for: JwksLookup,
    enrolled: Callable[[Obj], bool],
    trust_domain: str = "cluster.local",
    domain_suffix: str = "cluster.local",
    root_namespace: str = "istio-system",
    identity: str | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{type: {envoy name: resource}} for one waypoint, serving `services` (by VIP) and `pods`
    (by pod IP: workload traffic). `all_pods` are the cluster's pods (a Service's endpoints)."""
    policy_objects = list(policy_objects)
    policies = [parse_as(AuthorizationPolicy, p) for p in policy_objects]
    authns = [parse_as(RequestAuthentication, a) for a in authn_objects]
    all_pods = [p for p in all_pods if _pod_ip(p)]
    clusters: dict[str, dict[str, Any]] = {}
    routes: dict[str, dict[str, Any]] = {}
    chains: list[dict[str, Any]] = []
    named: set[str] = set()

    for service in sorted(services, key=lambda s: (_ns(s), _name(s))):
        vip = (service.get("spec") or {}).get("clusterIP")
        if not vip or vip == "None":
            continue
        members = [p for p in all_pods if selects_pod(service, p)]
        at_chain = chain_policies(policies, gateway, service, root_namespace)
        jwt = jwt_authn_filter(chain_authns(authns, gateway, service, members, root_namespace), jwks_for)
        for port in (service.get("spec") or {}).get("ports") or []:
            if (port.get("protocol") or "TCP") != "TCP":
                continue
            name = cluster_name(service, port, domain_suffix)
            endpoints = []
            for pod in members:
                target = _target_port(port, pod)
                if target:
                    keys = workload_policies(policies, pod, root_namespace)
                    named.update(keys)
                    endpoints.append(endpoint_entry(pod, target, keys, trust_domain, enrolled))
            clusters[name] = cluster_resource(name, endpoints, service_host(service, domain_suffix))
            routes[name] = route_resource(name, name)
            named.update(at_chain)
            chains += filter_chains(name, vip, int(port["port"]), name, at_chain, jwt)

    for pod in sorted(pods, key=lambda p: (_ns(p), _name(p))):
        ip = _pod_ip(pod)
        if not ip:
            continue
        name = f"inbound-pod|{_ns(pod)}/{_name(pod)}"
        keys = workload_policies(policies, pod, root_namespace)
        named.update(keys)
        at_chain = chain_policies(policies, gateway, None, root_namespace)
        named.update(at_chain)
        jwt = jwt_authn_filter(chain_authns(authns, gateway, None, [pod], root_namespace), jwks_for)
        # Port 0: the tunnel's own target port (Envoy's ORIGINAL_DST behaviour).
        clusters[name] = cluster_resource(name, [endpoint_entry(pod, 0, keys, trust_domain, enrolled)], None)
        routes[name] = route_resource(name, name)
        chains += filter_chains(name, ip, None, name, at_chain, jwt)

    connect_terminate = connect_terminate_listener()
    main_internal = {
        "@type": TYPE_PREFIX + "envoy.config.listener.v3.Listener",
        "name": MAIN_INTERNAL,
        "internal_listener": {},
        "use_original_dst": True,
        "filter_chains": chains,
        "metadata": {
            "filter_metadata": {
                "istio": {
                    "gateway": f"{_ns(gateway)}/{_name(gateway)}",
                    "identity": identity or f"spiffe://{trust_domain}/ns/{_ns(gateway)}/sa/{_name(gateway)}",
                    "policies": policies_dump(policy_objects, named),
                }
            }
        },
    }
    clusters[MAIN_INTERNAL] = {
        "@type": TYPE_PREFIX + "envoy.config.cluster.v3.Cluster",
        "name": MAIN_INTERNAL,
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": MAIN_INTERNAL,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"envoy_internal_address": {"server_listener_name": MAIN_INTERNAL}}}}
                    ]
                }
            ],
        },
    }
    return {
        LISTENER: {CONNECT_TERMINATE: connect_terminate, MAIN_INTERNAL: main_internal},
        CLUSTER: dict(sorted(clusters.items())),
        ROUTE_CONFIGURATION: dict(sorted(routes.items())),
    }


# ---- sidecars ------------------------------------------------------------------------------------


def outbound_chain(name: str, prefix: str, port: int | None, cluster: str) -> dict[str, Any]:
    """A sidecar's outbound chain: plain TCP proxying to the cluster (no HTTP parsing outbound)."""
    return {
        "name": name,
        "filter_chain_match": chain_match(prefix, port, False),
        "filters": [
            {
                "name": TCP_PROXY,
                "typed_config": {
                    "@type": TYPE_PREFIX + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": name,
                    "cluster": cluster,
                },
            }
        ],
    }


def sidecar_resources(
    pod: Obj,
    services: Iterable[Obj],
    all_pods: Iterable[Obj],
    policy_objects: Iterable[Obj],
    authn_objects: Iterable[Obj],
    *,
    mtls_mode: str,
    mtls_ports: Mapping[int, str] | None = None,
    jwks_for: JwksLookup,
    hbone: Callable[[Obj], bool],
    trust_domain: str = "cluster.local",
    domain_suffix: str = "cluster.local",
    root_namespace: str = "istio-system",
) -> dict[str, dict[str, dict[str, Any]]]:
    """{type: {envoy name: resource}} for the sidecar of `pod`; `hbone(pod)` says whether a
    destination pod takes HBONE (ambient-enrolled, or a sidecar advertising it)."""
    policy_objects = list(policy_objects)
    policies = [parse_as(AuthorizationPolicy, p) for p in policy_objects]
    authns = [parse_as(RequestAuthentication, a) for a in authn_objects]
    all_pods = [p for p in all_pods if _pod_ip(p)]
    # A terminating pod keeps its own inbound chain: its sidecar drains with it.
    ip = (pod.get("status") or {}).get("podIP") or None
    clusters: dict[str, dict[str, Any]] = {}
    routes: dict[str, dict[str, Any]] = {}

    # Inbound: the pod itself.
    keys = workload_policies(policies, pod, root_namespace)
    jwt = jwt_authn_filter([ra for ra in authns if _authn_selects(ra, pod, root_namespace)], jwks_for)
    inbound = f"inbound|{_ns(pod)}/{_name(pod)}"
    local = endpoint_entry(pod, 0, [], trust_domain, lambda p: False)
    local["endpoint"]["address"]["socket_address"]["address"] = ip
    local["health_status"] = "HEALTHY"  # the app beside the proxy: reached while the pod drains too
    clusters[inbound] = cluster_resource(inbound, [local], None)
    routes[inbound] = route_resource(inbound, inbound)
    virtual_inbound = {
        "@type": TYPE_PREFIX + "envoy.config.listener.v3.Listener",
        "name": VIRTUAL_INBOUND,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": INBOUND_CAPTURE_PORT}},
        "use_original_dst": True,
        "filter_chains": filter_chains(inbound, ip, None, inbound, keys, jwt) if ip else [],
        "metadata": {
            "filter_metadata": {
                "istio": {
                    "workload": f"{_ns(pod)}/{_name(pod)}",
                    "identity": _identity(pod, trust_domain),
                    "mtls": mtls_mode,
                    "mtlsPorts": {
                        str(port): mode for port, mode in sorted((mtls_ports or {}).items()) if mode != mtls_mode
                    },
                    "policies": policies_dump(policy_objects, set(keys)),
                }
            }
        },
    }

    # Outbound: every Service, and every pod that takes HBONE.
    chains = []
    for service in sorted(services, key=lambda s: (_ns(s), _name(s))):
        vip = (service.get("spec") or {}).get("clusterIP")
        if not vip or vip == "None":
            continue
        members = [p for p in all_pods if selects_pod(service, p)]
        for port in (service.get("spec") or {}).get("ports") or []:
            if (port.get("protocol") or "TCP") != "TCP":
                continue
            name = f"outbound|{port.get('port')}||{service_host(service, domain_suffix)}"
            endpoints = [endpoint_entry(p, t, [], trust_domain, hbone) for p in members if (t := _target_port(port, p))]
            clusters[name] = cluster_resource(name, endpoints, service_host(service, domain_suffix))
            chains.append(outbound_chain(name, vip, int(port["port"]), name))
    for other in sorted(all_pods, key=lambda p: (_ns(p), _name(p))):
        if other is pod or not hbone(other):
            continue
        name = f"outbound-pod|{_ns(other)}/{_name(other)}"
        clusters[name] = cluster_resource(name, [endpoint_entry(other, 0, [], trust_domain, hbone)], None)
        chains.append(outbound_chain(name, _pod_ip(other) or "", None, name))  # all_pods have an IP
    virtual_outbound = {
        "@type": TYPE_PREFIX + "envoy.config.listener.v3.Listener",
        "name": VIRTUAL_OUTBOUND,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": OUTBOUND_CAPTURE_PORT}},
        "use_original_dst": True,
        "filter_chains": chains,
        "default_filter_chain": outbound_chain("PassthroughFilterChain", "0.0.0.0", None, PASSTHROUGH_CLUSTER),
    }
    clusters[PASSTHROUGH_CLUSTER] = {
        "@type": TYPE_PREFIX + "envoy.config.cluster.v3.Cluster",
        "name": PASSTHROUGH_CLUSTER,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
    }
    return {
        LISTENER: {
            CONNECT_TERMINATE: connect_terminate_listener(VIRTUAL_INBOUND),
            VIRTUAL_INBOUND: virtual_inbound,
            VIRTUAL_OUTBOUND: virtual_outbound,
        },
        CLUSTER: dict(sorted(clusters.items())),
        ROUTE_CONFIGURATION: routes,
    }
