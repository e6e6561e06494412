"""`istioctl proxy-config`: what a waypoint's or sidecar's L7 proxy holds, from its /config_dump."""

from __future__ import annotations

from mesh.contract import ADMIN_PORT, PASSTHROUGH_CLUSTER, TYPE_URL_PREFIX
from mesh.istioctl.common import admin_get, table

DUMP_TYPES = {
    "listeners": TYPE_URL_PREFIX + "envoy.admin.v3.ListenersConfigDump",
    "clusters": TYPE_URL_PREFIX + "envoy.admin.v3.ClustersConfigDump",
    "routes": TYPE_URL_PREFIX + "envoy.admin.v3.RoutesConfigDump",
    "secret": TYPE_URL_PREFIX + "envoy.admin.v3.SecretsConfigDump",
}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w.title() for w in rest)


def _f(obj, key: str, default=None):
    """obj[key], accepting the protobuf JSON camelCase spelling too."""
    if not isinstance(obj, dict):
        return default
    if key in obj:
        return obj[key]
    return obj.get(_camel(key), default)


def dump_section(dump: dict, what: str) -> dict:
    """The config of one @type (listeners, clusters, routes, secret) of an Envoy config_dump."""
    want = DUMP_TYPES[what]
    for cfg in dump.get("configs") or []:
        if cfg.get("@type") == want:
            return cfg
    return {}


def _listener_entries(section: dict) -> list[dict]:
    out = [_f(s, "listener") or {} for s in _f(section, "static_listeners") or []]
    for d in _f(section, "dynamic_listeners") or []:
        state = _f(d, "active_state") or _f(d, "warming_state") or {}
        if _f(state, "listener"):
            out.append(_f(state, "listener"))
    return out


def _socket_address(addr: dict | None) -> tuple[str, str]:
    sa = _f(addr, "socket_address") or {}
    if sa:
        return str(_f(sa, "address", "")), str(_f(sa, "port_value", "") or _f(sa, "named_port", "") or "")
    pipe = _f(addr, "pipe") or {}
    if pipe:
        return str(_f(pipe, "path", "")), ""
    internal = _f(addr, "envoy_internal_address") or {}
    if internal:
        return "envoy://" + str(_f(internal, "server_listener_name", "")), ""
    return "", ""


def _chain_match(match: dict | None) -> str:
    match = match or {}
    parts = []
    ranges = _f(match, "prefix_ranges") or []
    if ranges:
        parts.append("Addr: " + ",".join(f'{_f(r, "address_prefix", "")}/{_f(r, "prefix_len", 0)}' for r in ranges))
    if _f(match, "destination_port") is not None:
        parts.append(f'Port: {_f(match, "destination_port")}')
    if _f(match, "server_names"):
        parts.append("SNI: " + ",".join(_f(match, "server_names")))
    if _f(match, "transport_protocol"):
        parts.append("Trans: " + _f(match, "transport_protocol"))
    if _f(match, "application_protocols"):
        parts.append("App: " + ",".join(_f(match, "application_protocols")))
    return "; ".join(parts) or "ALL"


SPECIAL_CLUSTERS = (PASSTHROUGH_CLUSTER, "BlackHoleCluster", "InboundPassthroughCluster")


def _chain_destination(chain: dict) -> str:
    for flt in _f(chain, "filters") or []:
        name = _f(flt, "name", "")
        cfg = _f(flt, "typed_config") or {}
        kind = str(cfg.get("@type", ""))
        if name.endswith("http_connection_manager") or kind.endswith("HttpConnectionManager"):
            rds = _f(cfg, "rds")
            if rds:
                return "Route: " + str(_f(rds, "route_config_name", ""))
            inline = _f(cfg, "route_config") or {}
            routes = [
                _f(_f(r, "route") or {}, "cluster")
                for vh in _f(inline, "virtual_hosts") or []
                for r in _f(vh, "routes") or []
            ]
            routes = [r for r in routes if r]
            if routes:
                return "Inline Route: " + ",".join(dict.fromkeys(routes))
            return "Inline Route: " + str(_f(inline, "name", "")) if inline else "HTTP"
        if name.endswith("tcp_proxy") or kind.endswith("TcpProxy"):
            if _f(cfg, "cluster"):
                cluster = str(_f(cfg, "cluster"))
                return cluster if cluster in SPECIAL_CLUSTERS else "Cluster: " + cluster
            weighted = _f(_f(cfg, "weighted_clusters") or {}, "clusters") or []
            if weighted:
                return "Clusters: " + ",".join(str(_f(c, "name", "")) for c in weighted)
            return "TCP"
    return "Non-HTTP/Non-TCP"


def format_proxy_listeners(dump: dict) -> str:
    rows = [["ADDRESSES", "PORT", "MATCH", "DESTINATION"]]
    for lst in _listener_entries(dump_section(dump, "listeners")):
        addrs = [_socket_address(_f(lst, "address"))]
        if not addrs[0][0] and _f(lst, "internal_listener") is not None:
            addrs = [("envoy://" + str(_f(lst, "name", "")), "")]
        addrs += [_socket_address(_f(a, "address")) for a in _f(lst, "additional_addresses") or []]
        address = ",".join(a for a, _ in addrs if a) or "-"
        port = addrs[0][1] or "-"
        chains = list(_f(lst, "filter_chains") or [])
        default = _f(lst, "default_filter_chain")
        if not chains and not default:
            rows.append([address, port, "ALL", "-"])
        for chain in chains:
            rows.append([address, port, _chain_match(_f(chain, "filter_chain_match")), _chain_destination(chain)])
        if default:  # what no chain matched: its own match is moot
            rows.append([address, port, "ALL", _chain_destination(default)])
    return table(rows)


def parse_cluster_name(name: str) -> tuple[str, str, str, str]:
    """Istio's `direction|port|subset|host` → (fqdn, port, subset, direction); other names as
    themselves with `-` for the rest."""
    parts = name.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound", "inbound-vip"):
        direction, port, subset, host = parts
        return host or "-", port or "-", subset or "-", direction
    if len(parts) == 2 and parts[0].startswith(("inbound", "outbound")):
        return parts[1] or "-", "-", "-", parts[0]
    return name, "-", "-", "-"


def _config_ref(obj: dict, kind: str) -> str:
    """`name.ns` of the Istio config an Envoy resource came from (its istio metadata), or `-`."""
    meta = _f(_f(_f(obj, "metadata") or {}, "filter_metadata") or {}, "istio") or {}
    path = str(meta.get("config", ""))
    bits = path.strip("/").split("/")
    if kind in bits and "namespaces" in bits:
        return f'{bits[-1]}.{bits[bits.index("namespaces") + 1]}'
    return "-"


def format_proxy_clusters(dump: dict) -> str:
    rows = [["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]]
    section = dump_section(dump, "clusters")
    clusters = [
        _f(c, "cluster") or {}
        for c in (_f(section, "static_clusters") or []) + (_f(section, "dynamic_active_clusters") or [])
    ]
    entries = []
    for c in clusters:
        name = str(_f(c, "name", ""))
        ctype = _f(c, "type") or _f(_f(c, "cluster_type") or {}, "name") or "-"
        entries.append([*parse_cluster_name(name), str(ctype), _config_ref(c, "destination-rule")])
    for e in sorted(entries, key=lambda r: (r[0], r[1], r[3], r[2])):
        rows.append(e)
    return table(rows)


def _route_match(match: dict | None) -> str:
    match = match or {}
    if _f(match, "prefix") is not None:
        return (_f(match, "prefix") or "/") + "*"
    if _f(match, "path") is not None:
        return _f(match, "path")
    if _f(match, "path_separated_prefix") is not None:
        return _f(match, "path_separated_prefix") + "/*"
    regex = _f(_f(match, "safe_regex") or {}, "regex")
    if regex is not None:
        return regex
    if _f(match, "connect_matcher") is not None:
        return "CONNECT"
    return "/*"


def format_proxy_routes(dump: dict) -> str:
    rows = [["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]]
    section = dump_section(dump, "routes")
    configs = [
        _f(r, "route_config") or {}
        for r in (_f(section, "static_route_configs") or []) + (_f(section, "dynamic_route_configs") or [])
    ]
    for rc in configs:
        for vh in _f(rc, "virtual_hosts") or []:
            domains = _f(vh, "domains") or []
            routes = _f(vh, "routes") or [{}]
            for r in routes:
                rows.append(
                    [
                        str(_f(rc, "name", "")),
                        str(_f(vh, "name", "")),
                        ",".join(domains) or "-",
                        _route_match(_f(r, "match")) if r else "-",
                        _config_ref(r, "virtual-service"),
                    ]
                )
    return table(rows)


def _pem_certs(source: dict | None) -> list:
    import base64

    from cryptography import x509

    if not source:
        return []
    if _f(source, "inline_bytes"):
        pem = base64.b64decode(_f(source, "inline_bytes"))
    elif _f(source, "inline_string"):
        pem = _f(source, "inline_string").encode()
    else:
        return []
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def _rfc3339(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_proxy_secrets(dump: dict, now=None) -> str:
    import datetime as dt

    now = now or dt.datetime.now(dt.timezone.utc)
    rows = [["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]]
    section = dump_section(dump, "secret")
    entries = [(s, "ACTIVE") for s in _f(section, "dynamic_active_secrets") or []]
    entries += [(s, "WARMING") for s in _f(section, "dynamic_warming_secrets") or []]
    entries += [(s, "ACTIVE") for s in _f(section, "static_secrets") or []]
    for entry, status in entries:
        secret = _f(entry, "secret") or {}
        name = str(_f(entry, "name") or _f(secret, "name", ""))
        if _f(secret, "tls_certificate"):
            kind, certs = "Cert Chain", _pem_certs(_f(_f(secret, "tls_certificate"), "certificate_chain"))
        elif _f(secret, "validation_context"):
            kind, certs = "CA", _pem_certs(_f(_f(secret, "validation_context"), "trusted_ca"))
        else:
            rows.append([name, "-", status, "false", "-", "-", "-"])
            continue
        if not certs:
            rows.append([name, kind, status, "false", "-", "-", "-"])
            continue
        cert = certs[0]
        before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
        valid = "true" if before <= now <= after else "false"
        rows.append([name, kind, status, valid, format(cert.serial_number, "x"), _rfc3339(after), _rfc3339(before)])
    return table(rows)


PROXY_CONFIG_VIEWS = {
    "listeners": format_proxy_listeners,
    "listener": format_proxy_listeners,
    "l": format_proxy_listeners,
    "clusters": format_proxy_clusters,
    "cluster": format_proxy_clusters,
    "c": format_proxy_clusters,
    "routes": format_proxy_routes,
    "route": format_proxy_routes,
    "r": format_proxy_routes,
    "secret": format_proxy_secrets,
    "secrets": format_proxy_secrets,
    "s": format_proxy_secrets,
}
PROXY_CONFIG_SECTION = {
    format_proxy_listeners: "listeners",
    format_proxy_clusters: "clusters",
    format_proxy_routes: "routes",
    format_proxy_secrets: "secret",
}


def format_proxy_all(dump: dict, now=None) -> str:
    return "\n\n".join(
        [
            format_proxy_clusters(dump),
            format_proxy_listeners(dump),
            format_proxy_routes(dump),
            format_proxy_secrets(dump, now),
        ]
    )


def fetch_proxy_config_dump(netns_name: str, pod: str) -> dict:
    """GET /config_dump from the L7 proxy's admin port, 127.0.0.1:15000 of the pod's namespace."""
    return admin_get(netns_name, "/config_dump", f"the proxy of pod {pod}", ADMIN_PORT)
