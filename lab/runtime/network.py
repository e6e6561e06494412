"""The lab's plumbing: bridge, node and pod links, routes, nftables (docs/internals.md: Network
plan).

Every function takes the names of namespaces that already exist (lab/runtime/netns.py makes them,
after the journal has recorded them) and does its netlink work with pyroute2's sync `IPRoute`,
created while the calling thread is switched into the target namespace and closed before it switches
back. pyroute2's own `IPRoute(netns=...)` would fork a helper per call (20-30 ms a pod); a switch
costs microseconds.

The functions are synchronous and thread-safe: labd runs them in trio worker threads, several at
once. veths are created with their far end already in the target namespace (one netlink request), so
a crash can never strand an interface in the wrong namespace.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import subprocess
from collections.abc import Iterable, Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lab.client import netns

BRIDGE = "br0"
NODE_IFNAME = "eth0"
POD_IFNAME = "eth0"
OWNER_PREFIX = "ambient-lab:"
IFNAMSIZ = 16
IFALIASZ = 256
LOOPBACK_IFINDEX = 1  # the kernel gives `lo` index 1 in every network namespace
NFT_TIMEOUT_S = 30


class NetworkError(RuntimeError):
    """A plumbing step failed; the message says which step, in which namespace, and why."""


# --- the fabric and the nodes ----------------------------------------------------------------


def build_fabric(fabric_ns: str) -> None:
    """Bridge `br0` (up) and `lo` (up) in the fabric namespace: the underlay the nodes plug into."""
    with _rtnl(fabric_ns, "build the fabric") as ipr:
        ipr.link("set", index=LOOPBACK_IFINDEX, state="up")
        if not ipr.link_lookup(ifname=BRIDGE):
            ipr.link("add", ifname=BRIDGE, kind="bridge", state="up")
        elif _link(ipr, BRIDGE).get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "bridge":
            raise NetworkError(f"{fabric_ns}: {BRIDGE} exists and is not a bridge")
        _link_up(ipr, BRIDGE)


def attach_node(fabric_ns: str, node_ns: str, node_name: str, node_ip_cidr: str, pod_gateway_ip: str) -> None:
    """Plug node NODE_NAME into the fabric and make it a router for its pods.

    veth `<node_name>` (fabric, in br0, up) <-> `eth0` (node, NODE_IP_CIDR, up); `lo` up; the pod
    gateway address /32 on the node's `lo` (pods ARP for it on their veth and the node answers,
    since it is a local address); `ip_forward=1`. Safe to call again on an attached node."""
    _check_ifname(node_name, reserved=(BRIDGE, "lo"))
    node_ip = _parse(ipaddress.IPv4Interface, node_ip_cidr, "node address")
    gateway = _parse(ipaddress.IPv4Address, pod_gateway_ip, "pod gateway")
    with _rtnl(fabric_ns, f"attach node {node_name}") as ipr:
        bridge = _index(ipr, BRIDGE, fabric_ns)
        if not ipr.link_lookup(ifname=node_name):
            _add_veth(ipr, node_name, node_ns, NODE_IFNAME, master=bridge)
        _link_up(ipr, node_name, master=bridge)
    with _rtnl(node_ns, f"configure node {node_name}") as ipr:
        ipr.link("set", index=LOOPBACK_IFINDEX, state="up")
        ipr.addr("replace", index=LOOPBACK_IFINDEX, address=str(gateway), prefixlen=32)
        eth0 = _index(ipr, NODE_IFNAME, node_ns)
        ipr.addr("replace", index=eth0, address=str(node_ip.ip), prefixlen=node_ip.network.prefixlen)
        ipr.link("set", index=eth0, state="up")
    netns.set_sysctl(node_ns, "net.ipv4.ip_forward", 1)


def route_node_to_peers(node_ns: str, routes: Iterable[tuple[str, str]]) -> None:
    """Routes from a node to the other nodes' pod CIDRs: [(pod_cidr, via_node_ip), ...].

    `replace`, so calling it again (or after a node moved) converges instead of failing."""
    checked = [
        (_parse(ipaddress.IPv4Network, cidr, "pod CIDR"), _parse(ipaddress.IPv4Address, via, "node address"))
        for cidr, via in routes
    ]
    with _rtnl(node_ns, "route to peer nodes") as ipr:
        for cidr, via in checked:
            ipr.route("replace", dst=str(cidr), gateway=str(via))


def route_node_to_services(node_ns: str, service_cidr: str) -> None:
    """A route for the Service CIDR on the node's `eth0`, for the node's own processes.

    Pods reach ClusterIPs through their default route and the node's prerouting DNAT. A process in
    the node namespace (a hostNetwork pod: ztunnel, istio-cni) needs a route before its packet
    exists at all: connect() fails with ENETUNREACH before the output hook's DNAT can run. The
    route only has to get the packet to the output hook, which then re-routes it to the endpoint."""
    cidr = _parse(ipaddress.IPv4Network, service_cidr, "service CIDR")
    with _rtnl(node_ns, "route to the service CIDR") as ipr:
        ipr.route("replace", dst=str(cidr), oif=_index(ipr, NODE_IFNAME, node_ns), scope="link")


# --- pods ------------------------------------------------------------------------------------


def add_pod(node_ns: str, pod_ns: str, host_ifname: str, pod_ip: str, gateway_ip: str, owner: str) -> None:
    """Wire a pod: veth HOST_IFNAME (node) <-> `eth0` (made directly in the pod namespace).

    Pod: `lo` up, `eth0` POD_IP/32 up, `GATEWAY_IP dev eth0 scope link`, `default via GATEWAY_IP`.
    Node: host end up, marked `ambient-lab:<OWNER>` in its ifalias, `POD_IP/32 dev HOST_IFNAME`.
    Calling it again for the same pod converges; a host interface owned by someone else is an
    error. If wiring fails half-way, a veth made by this call is deleted again."""
    _check_ifname(host_ifname, reserved=("lo", NODE_IFNAME))
    alias = _owner_alias(owner)
    ip = _parse(ipaddress.IPv4Address, pod_ip, "pod IP")
    gateway = _parse(ipaddress.IPv4Address, gateway_ip, "pod gateway")
    created = False
    try:
        with _rtnl(node_ns, f"add pod link {host_ifname}") as ipr:
            created, host, eth0 = _ensure_pod_veth(ipr, node_ns, pod_ns, host_ifname, alias)
            ipr.route("replace", dst=f"{ip}/32", oif=host, scope="link")
        with _rtnl(pod_ns, f"configure {POD_IFNAME} of {host_ifname}") as ipr:
            ipr.link("set", index=LOOPBACK_IFINDEX, state="up")
            ipr.addr("replace", index=eth0, address=str(ip), prefixlen=32)
            ipr.link("set", index=eth0, state="up")
            ipr.route("replace", dst=f"{gateway}/32", oif=eth0, scope="link")
            ipr.route("replace", dst="0.0.0.0/0", gateway=str(gateway), oif=eth0)
    except BaseException:
        if created:
            with contextlib.suppress(NetworkError):  # keep the original error
                remove_pod(node_ns, host_ifname)
        raise


def remove_pod(node_ns: str, host_ifname: str, owner: str | None = None) -> None:
    """Delete a pod's veth pair by its host end (the pod's `eth0` and the /32 route go with it).

    Idempotent: a missing interface, or a node namespace already gone, is fine. With OWNER, a link
    that carries another owner's marker is left alone and reported: teardown deletes exactly what
    the lab made."""
    _check_ifname(host_ifname, reserved=("lo", NODE_IFNAME))
    if not netns.exists(node_ns):
        return
    with _rtnl(node_ns, f"remove pod link {host_ifname}") as ipr:
        try:
            link = _link(ipr, host_ifname)
        except _NoSuchLink:
            return
        if owner is not None and link.get("IFLA_IFALIAS") != _owner_alias(owner):
            raise NetworkError(
                f"{node_ns}: not deleting {host_ifname}: it is marked "
                f"{link.get('IFLA_IFALIAS')!r}, not {_owner_alias(owner)!r}"
            )
        ipr.link("del", index=link["index"])


def owner_of(node_ns: str, host_ifname: str) -> str | None:
    """The owner recorded on a pod's host interface by add_pod (None: no such link, or unmarked)."""
    with _rtnl(node_ns, f"read link {host_ifname}") as ipr:
        try:
            alias = _link(ipr, host_ifname).get("IFLA_IFALIAS") or ""
        except _NoSuchLink:
            return None
    return alias[len(OWNER_PREFIX) :] if alias.startswith(OWNER_PREFIX) else None


def _ensure_pod_veth(ipr: IPRoute, node_ns: str, pod_ns: str, host_ifname: str, alias: str) -> tuple[bool, int, int]:
    """Create the pod's veth unless this pod's one is already there.

    Returns (created, host end's ifindex, pod end's ifindex in the pod namespace). The pod end's
    index comes from the host end's IFLA_LINK (a veth reports its peer's index there), which saves
    a lookup in the pod namespace: netlink round trips are most of a pod's setup time."""
    try:
        _add_veth(ipr, host_ifname, pod_ns, POD_IFNAME)
        created = True
    except _AlreadyExists:
        created = False
    try:
        link = _link(ipr, host_ifname)
    except _NoSuchLink:
        raise NetworkError(f"cannot create veth {host_ifname}: {pod_ns} already has an {POD_IFNAME}") from None
    if created:
        ipr.link("set", index=link["index"], ifalias=alias)
    elif link.get("IFLA_IFALIAS") != alias:
        raise NetworkError(
            f"{node_ns}: {host_ifname} exists and belongs to {link.get('IFLA_IFALIAS') or 'someone else'}, not {alias}"
        )
    return created, link["index"], link.get("IFLA_LINK")


# --- nftables --------------------------------------------------------------------------------


def apply_nft(ns: str, script: str, check: bool = False) -> None:
    """Run `nft -f -` (with CHECK: `nft -c -f -`, parse and validate only) inside namespace NS
    (spawned there without `ip netns exec`: lab.client.netns.run)."""
    argv = ["nft", "-c", "-f", "-"] if check else ["nft", "-f", "-"]
    try:
        done = netns.run(ns, argv, script, NFT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetworkError(f"{ns}: {' '.join(argv)}: {e}") from e
    if done.returncode != 0:
        raise NetworkError(f"{ns}: {' '.join(argv)} failed (exit {done.returncode}):\n{done.stderr.strip()}")


# --- helpers ---------------------------------------------------------------------------------


class _NoSuchLink(NetworkError):
    pass


class _AlreadyExists(NetworkError):
    pass


@contextlib.contextmanager
def _rtnl(ns: str, what: str) -> Iterator[IPRoute]:
    """An IPRoute whose netlink socket lives in NS, for a short switched-in section.

    Netlink and namespace errors come out as NetworkError naming WHAT and NS."""
    try:
        with netns.iproute(ns) as ipr:
            yield ipr
    except NetworkError:
        raise
    except (NetlinkError, OSError) as e:
        raise NetworkError(f"{what} in {ns}: {_describe(e)}") from e


def _add_veth(ipr: IPRoute, ifname: str, peer_ns: str, peer_ifname: str, master: int | None = None) -> None:
    """One netlink request: local end IFNAME (up, optionally enslaved), far end in PEER_NS.

    Raises _AlreadyExists if IFNAME exists here or PEER_IFNAME exists in PEER_NS."""
    peer_fd = os.open(netns.path(peer_ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        extra = {"master": master} if master is not None else {}
        ipr.link(
            "add", ifname=ifname, kind="veth", state="up", peer={"ifname": peer_ifname, "net_ns_fd": peer_fd}, **extra
        )
    except NetlinkError as e:
        if e.code == errno.EEXIST:
            raise _AlreadyExists(f"{ifname} or {peer_ns}'s {peer_ifname} exists") from e
        raise
    finally:
        os.close(peer_fd)


def _link_up(ipr: IPRoute, ifname: str, master: int | None = None) -> None:
    extra = {"master": master} if master is not None else {}
    ipr.link("set", index=_index(ipr, ifname), state="up", **extra)


def _link(ipr: IPRoute, ifname: str):
    return ipr.link("get", index=_index(ipr, ifname))[0]


def _index(ipr: IPRoute, ifname: str, ns: str = "") -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise _NoSuchLink(f"no interface {ifname}" + (f" in {ns}" if ns else ""))
    return found[0]


def _check_ifname(name: str, reserved: tuple[str, ...] = ()) -> None:
    """Linux interface names: 1-15 bytes, no '/', ':' or whitespace, not '.' or '..'."""
    if (
        not isinstance(name, str)
        or not name
        or len(name.encode()) >= IFNAMSIZ
        or name in (".", "..")
        or any(c in "/:" or c.isspace() for c in name)
    ):
        raise NetworkError(f"invalid interface name {name!r}: 1-15 characters, no '/', ':' or whitespace")
    if name in reserved:
        raise NetworkError(f"interface name {name!r} is reserved")


def _parse(kind, value: str, what: str):
    """ipaddress.KIND(VALUE), with a NetworkError that says what the value was for."""
    try:
        return kind(value)
    except ValueError as e:
        raise NetworkError(f"invalid {what} {value!r}: {e}") from None


def _owner_alias(owner: str) -> str:
    alias = OWNER_PREFIX + owner
    if not owner or len(alias.encode()) >= IFALIASZ or "\0" in owner:
        raise NetworkError(f"invalid owner marker {owner!r}")
    return alias


def _describe(e: BaseException) -> str:
    if isinstance(e, NetlinkError):
        return f"{os.strerror(e.code)} (netlink error {e.code})"
    return str(e)
