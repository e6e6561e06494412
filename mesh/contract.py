"""The names the mesh's processes share: one spelling each, read by both sides of every contract.

istiod writes resources and labels that ztunnel, istio-cni, the sidecar injector and the L7 proxies
read; a port or mark one process listens on or sets is one another redirects to or skips. Spelled in
one place, the two sides cannot drift apart. Wire shapes are described in docs/mesh-internals.md;
the values are Istio's own. Lab-side keys (`lab.ambient/*`) belong to the lab, not here.
"""

from __future__ import annotations

# ---- the config stream (istiod → ztunnel and proxies) ------------------------------------------------

#: ztunnel's resource types (WDS), in push order: a policy arrives before the workloads naming it.
AUTHORIZATION = "Authorization"
ADDRESS = "Address"
WDS_TYPES = (AUTHORIZATION, ADDRESS)
#: The L7 proxies' resource types (Envoy's LDS, CDS, RDS).
LISTENER = "Listener"
CLUSTER = "Cluster"
ROUTE_CONFIGURATION = "RouteConfiguration"
PROXY_TYPES = (LISTENER, CLUSTER, ROUTE_CONFIGURATION)
#: The message type that closes a full push: the subscriber now holds istiod's whole state.
SYNCED = "SYNCED"
#: Workload enum values (WDS): how a workload is reached (also the L7 proxies' endpoint `tunnel`),
#: whether it takes traffic, and whether it shares its node's network.
PROTOCOL_HBONE = "HBONE"
PROTOCOL_TCP = "TCP"
STATUS_HEALTHY = "Healthy"
STATUS_UNHEALTHY = "Unhealthy"
NETWORK_MODE_STANDARD = "STANDARD"
NETWORK_MODE_HOST = "HOST_NETWORK"

#: Envoy type URLs and filter names istiod writes and the L7 proxies dispatch on.
TYPE_URL_PREFIX = "type.googleapis.com/"
JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
JWT_AUTHN_TYPE_URL = TYPE_URL_PREFIX + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
RBAC_HTTP_FILTER = "envoy.filters.http.rbac"
RBAC_NETWORK_FILTER = "envoy.filters.network.rbac"
#: Listener and cluster names istiod gives an L7 proxy and the proxy looks up.
CONNECT_TERMINATE = "connect_terminate"
MAIN_INTERNAL = "main_internal"
VIRTUAL_INBOUND = "virtualInbound"
VIRTUAL_OUTBOUND = "virtualOutbound"
PASSTHROUGH_CLUSTER = "PassthroughCluster"

# ---- ports --------------------------------------------------------------------------------------------

#: In every captured pod: where redirected outbound TCP lands (ztunnel or a sidecar).
OUTBOUND_CAPTURE_PORT = 15001
#: In every captured pod: where redirected inbound plaintext lands.
INBOUND_CAPTURE_PORT = 15006
#: HBONE (mTLS + HTTP/2 CONNECT): ztunnel in each enrolled pod, waypoints, HBONE-capable sidecars.
HBONE_PORT = 15008
#: Ports a proxy must never be asked to dial: they would loop back through the proxy itself.
PROXY_PORTS = frozenset({OUTBOUND_CAPTURE_PORT, INBOUND_CAPTURE_PORT, HBONE_PORT})
#: The proxies' admin (config_dump), on 127.0.0.1 only.
ADMIN_PORT = 15000
#: Prometheus metrics (Istio's merged status port).
METRICS_PORT = 15020
#: `/healthz/ready`: what a readiness probe asks.
READINESS_PORT = 15021
#: Envoy's own Prometheus port (sidecars and waypoints).
ENVOY_PROMETHEUS_PORT = 15090
#: istiod's CA and config stream (TLS); ztunnel and the proxies dial it.
ISTIOD_PORT = 15012
#: istiod's plain-HTTP debug port (sync status).
ISTIOD_DEBUG_PORT = 15014
ISTIO_NAMESPACE = "istio-system"
ISTIOD_ADDRESS = f"istiod.{ISTIO_NAMESPACE}.svc:{ISTIOD_PORT}"
#: Environment variables the deployers (istiod for waypoints, the injector, the lab's manifests) set
#: and the proxies read.
ENV_ISTIOD_ADDRESS = "ISTIOD_ADDRESS"
ENV_TRUST_DOMAIN = "TRUST_DOMAIN"
ENV_GATEWAY_NAME = "GATEWAY_NAME"
#: The ConfigMap (in ISTIO_NAMESPACE) istiod publishes the mesh root in; ztunnel and proxies read it.
ROOT_CERT_CONFIGMAP = "istio-ca-root-cert"
ROOT_CERT_KEY = "root-cert.pem"

# ---- packet marks and the proxy's user ----------------------------------------------------------------

#: SO_MARK on every socket ztunnel makes in a pod netns (Istio's InpodMark, 1337); the pod's
#: redirection lets packets carrying it through untouched.
INPOD_MARK = 0x539
#: The sidecar proxy's uid and gid; istio-init's redirection lets its own traffic through.
PROXY_UID = 1337

# ---- labels and annotations -----------------------------------------------------------------------------

#: Namespace or pod label that enrolls in ambient ("ambient") or opts out ("none").
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
DATAPLANE_MODE_AMBIENT = "ambient"
DATAPLANE_MODE_NONE = "none"
#: Pod annotation istio-cni sets once the pod's redirection is in place; istiod then sends it as HBONE.
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"
REDIRECTION_ENABLED = "enabled"
#: Pod annotation the sidecar injector leaves on a pod it gave a sidecar.
SIDECAR_STATUS_ANNOTATION = "sidecar.istio.io/status"
#: Pod label (or annotation) that asks the injector for a sidecar, or not ("false").
SIDECAR_INJECT_LABEL = "sidecar.istio.io/inject"
#: Pod label: "http" when the pod's sidecar takes HBONE on 15008.
TUNNEL_LABEL = "networking.istio.io/tunnel"
#: Control-plane revision of a namespace or pod.
REVISION_LABEL = "istio.io/rev"
#: Pod, Service or Namespace label naming the waypoint to use ("#none": none).
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
#: Waypoint Gateway label: which traffic it serves (service, workload, all, none).
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
#: Label Gateway API puts on a Gateway's generated objects, naming the Gateway.
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
#: The workload's canonical service name and revision (telemetry, baggage).
CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"
