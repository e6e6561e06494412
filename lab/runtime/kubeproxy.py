"""kube-proxy for the lab: Services and Endpoints in, one atomic nftables script out (pure, no I/O).

The script follows kube-proxy's nftables mode, with the same chain roles:

    prerouting (nat, dstnat) ─┐
    output     (nat, -100)   ─┴─ jump services: ip daddr VIP <proto> dport P goto svc-…
                                 svc-…: numgen random mod N vmap { i : goto sep-… }
                                 sep-…: source is the endpoint (hairpin)? mark 0x4000;
                                        dnat to IP:PORT
    postrouting (nat, srcnat): masquerade packets marked 0x4000 (a pod that reached itself
    through its Service would otherwise receive a packet from its own address: a martian, dropped)

A service port without ready endpoints rejects (TCP reset, ICMP port-unreachable for UDP/SCTP),
and a ClusterIP's other ports reject too, so clients fail fast instead of timing out. Unlike
kube-proxy, which rejects in filter chains, the rejects sit in the nat chains: a node has no route
to the Service CIDR, so such a packet would never reach a forward or input hook. The script
starts by creating and deleting the table, so `nft -f` replaces the whole table in one
transaction whether it existed or not.

Chain names are `svc-HASH-ns/name/proto/port` and `sep-HASH-ns/name/proto/port__ip/port`
(kube-proxy's style): readable in `nft list ruleset`, deterministic, and unique through the hash.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

MASQUERADE_MARK = 0x4000
NFT_PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
MAX_CHAIN_NAME = 200  # the kernel allows 255; leave room

_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_NOT_IN_IDENTIFIER = re.compile(r"[^A-Za-z0-9_./\-]")


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    """One port of one Service with a ClusterIP, and the ready endpoints it balances over."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # nft keyword: tcp, udp, sctp
    cluster_ip: str
    port: int
    endpoints: tuple[Endpoint, ...]

    @property
    def label(self) -> str:
        """ns/name/proto/port-name-or-number: what the chains are named after."""
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name or self.port}"

    @property
    def chain(self) -> str:
        return _chain_name("svc", self.label)

    def endpoint_chain(self, endpoint: Endpoint) -> str:
        return _chain_name("sep", f"{self.label}__{endpoint.ip}/{endpoint.port}")


def render(services: list[dict], endpoints: list[dict], table: str = "kube_proxy") -> str:
    """The nft script (for `nft -f`) that makes table `ip TABLE` do kube-proxy's job."""
    if not _TABLE_RE.match(table):
        raise ValueError(f"invalid nft table name {table!r}")
    ports = service_ports(services, endpoints)
    body = [*_base_chains(), _services_chain(ports)]
    for sp in ports:
        body.append(_service_chain(sp))
        body.extend(_endpoint_chain(sp, ep) for ep in sp.endpoints)
    return f"table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n" + "\n".join(body) + "}\n"


def service_ports(services: list[dict], endpoints: list[dict]) -> list[ServicePort]:
    """Every port of every ClusterIP Service, with its ready endpoints, in a stable order.

    Headless services (clusterIP None), services without a ClusterIP (ExternalName, not yet
    allocated) and IPv6 ClusterIPs get nothing: kube-proxy makes no rules for them either."""
    by_name = {_key(ep): ep for ep in endpoints}
    ports = []
    for svc in sorted(services, key=_key):
        cluster_ip = _cluster_ip(svc)
        if cluster_ip is None:
            continue
        namespace, name = _key(svc)
        for spec in svc.get("spec", {}).get("ports") or []:
            ports.append(_service_port(namespace, name, cluster_ip, spec, by_name.get(_key(svc))))
    return ports


# --- from Kubernetes objects -----------------------------------------------------------------


def _key(obj: dict) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return meta.get("namespace") or "default", meta["name"]


def _cluster_ip(svc: dict) -> str | None:
    spec = svc.get("spec", {})
    if spec.get("type") == "ExternalName":
        return None
    value = spec.get("clusterIP")
    if not value or value == "None":
        return None
    address = ipaddress.ip_address(value)  # ValueError on garbage: never reaches the script
    return str(address) if address.version == 4 else None


def _service_port(namespace: str, name: str, cluster_ip: str, spec: dict, endpoints_obj: dict | None) -> ServicePort:
    protocol = spec.get("protocol") or "TCP"
    if protocol not in NFT_PROTOCOLS:
        raise ValueError(f"service {namespace}/{name}: unsupported protocol {protocol!r}")
    port = _port_number(spec.get("port"), f"service {namespace}/{name} port")
    sp = ServicePort(namespace, name, spec.get("name") or "", NFT_PROTOCOLS[protocol], cluster_ip, port, ())
    target = spec.get("targetPort") or port
    if isinstance(target, str) and target.isdigit():
        target = int(target)  # an IntOrString that came in as a string
    found = _ready_endpoints(sp, target, endpoints_obj) if endpoints_obj else []
    return replace(sp, endpoints=tuple(sorted(set(found))))


def _ready_endpoints(sp: ServicePort, target: int | str, endpoints_obj: dict) -> list[Endpoint]:
    """The ready (ip, port) pairs of an Endpoints object that serve service port SP."""
    found = []
    for subset in endpoints_obj.get("subsets") or []:
        number = _endpoint_port(sp, target, subset.get("ports"))
        if number is None:
            continue
        for address in subset.get("addresses") or []:  # notReadyAddresses get no traffic
            ip = ipaddress.ip_address(address["ip"])  # ValueError on garbage
            if ip.version == 4:
                found.append(Endpoint(str(ip), number))
    return found


def _endpoint_port(sp: ServicePort, target: int | str, ports: list[dict] | None) -> int | None:
    """The port number a subset's addresses serve SP on, or None if they do not serve it.

    As in Kubernetes, an Endpoints port carries the name of the Service port it belongs to; a
    port named like a named targetPort (a container port name) is accepted too. A subset that
    lists no ports at all serves a numeric targetPort as is."""
    if not ports:
        return None if isinstance(target, str) else _port_number(target, f"{sp.label} targetPort")
    same_protocol = [p for p in ports if NFT_PROTOCOLS.get(p.get("protocol") or "TCP") == sp.protocol]
    wanted = [sp.port_name] + ([target] if isinstance(target, str) else [])
    for name in wanted:
        for p in same_protocol:
            if (p.get("name") or "") == name:
                return _port_number(p.get("port"), f"endpoints port of {sp.label}")
    return None


def _port_number(value: object, what: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"{what}: invalid port {value!r}")
    return value


# --- to nft text -----------------------------------------------------------------------------


def _base_chains() -> Iterator[str]:
    for chain, hook, priority in (("prerouting", "prerouting", "dstnat"), ("output", "output", "-100")):
        yield _chain(chain, [f"type nat hook {hook} priority {priority}; policy accept;", "jump services"])
    yield _chain(
        "postrouting",
        [
            "type nat hook postrouting priority srcnat; policy accept;",
            f"meta mark & {MASQUERADE_MARK:#x} == 0 return",
            f"meta mark set meta mark ^ {MASQUERADE_MARK:#x}",
            "masquerade fully-random",
        ],
    )


def _services_chain(ports: list[ServicePort]) -> str:
    """Dispatch on VIP, protocol and port; any other port of a ClusterIP is rejected."""
    rules = [f"ip daddr {sp.cluster_ip} {sp.protocol} dport {sp.port} goto {sp.chain}" for sp in ports]
    vips = sorted({sp.cluster_ip for sp in ports}, key=ipaddress.IPv4Address)
    if vips:
        rules.append(f"ip daddr {{ {', '.join(vips)} }} reject")
    return _chain("services", rules)


def _service_chain(sp: ServicePort) -> str:
    if not sp.endpoints:
        return _chain(sp.chain, ["reject with tcp reset" if sp.protocol == "tcp" else "reject"])
    choices = ", ".join(f"{i} : goto {sp.endpoint_chain(ep)}" for i, ep in enumerate(sp.endpoints))
    return _chain(sp.chain, [f"numgen random mod {len(sp.endpoints)} vmap {{ {choices} }}"])


def _endpoint_chain(sp: ServicePort, ep: Endpoint) -> str:
    return _chain(
        sp.endpoint_chain(ep),
        [
            f"ip saddr {ep.ip} meta mark set meta mark | {MASQUERADE_MARK:#x}",
            f"meta l4proto {sp.protocol} dnat to {ep.ip}:{ep.port}",
        ],
    )


def _chain(name: str, rules: Iterable[str]) -> str:
    lines = "".join(f"\t\t{rule}\n" for rule in rules)
    return f"\tchain {name} {{\n{lines}\t}}\n"


def _chain_name(kind: str, label: str) -> str:
    """KIND-HASH-LABEL: the hash keeps names unique after LABEL is sanitized and shortened."""
    digest = hashlib.sha256(label.encode()).digest()
    short = base64.b32encode(digest).decode()[:8]
    return f"{kind}-{short}-{_NOT_IN_IDENTIFIER.sub('_', label)}"[:MAX_CHAIN_NAME]
