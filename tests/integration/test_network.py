"""Real namespaces, veths and nftables (root): lab.client.netns, lab.runtime.network, and the
kube-proxy script applied to a small cluster (a fabric, 2 nodes, 2 pods per node).

Every namespace made here is called `al-t<pid>-...`, is recorded as soon as it exists, and is
deleted by its exact name in a finalizer, also when a test fails. Traffic is real: sockets made
inside pod namespaces with `netns.socket_in`, no processes needed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import trio

from lab.client import netns
from lab.runtime import kubeproxy, network
from tests.unit.test_kubeproxy import SCENARIOS, endpoints, service

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

PREFIX = f"al-t{os.getpid()}-"
HOST_NETNS = os.readlink("/proc/thread-self/ns/net")
SERVICE_CIDR = "10.96.0.0/16"
WEB_VIP, SELF_VIP, EMPTY_VIP, DNS_VIP = "10.96.0.100", "10.96.0.101", "10.96.0.102", "10.96.0.10"


# --- namespaces owned by the tests -----------------------------------------------------------


class Namespaces:
    """The namespaces a test made, deleted by exact name (newest first). A name that already
    existed is never recorded, so it is never deleted."""

    def __init__(self) -> None:
        self._names: list[str] = []

    def create(self, suffix: str) -> str:
        name = PREFIX + suffix
        netns.create(name)  # FileExistsError if taken: not ours, not recorded
        self._names.append(name)
        return name

    def remove_all(self) -> None:
        while self._names:
            netns.remove(self._names.pop())


@pytest.fixture
def namespaces():
    made = Namespaces()
    try:
        yield made
    finally:
        made.remove_all()


def lab_netns_names() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    return [name for name in listed if name.startswith(PREFIX)]


def read_host_sysctl(key: str) -> str:
    with open(f"/proc/sys/{key}") as f:
        return f.read().strip()


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines()}


# --- the cluster -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    netns: str
    ip: str
    node: int
    host_ifname: str


@dataclass
class Cluster:
    namespaces: Namespaces
    fabric: str = ""
    nodes: list[str] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)


def build_cluster(made: Namespaces) -> Cluster:
    """docs/internals.md's network plan, 2 nodes with 2 pods each."""
    cluster = Cluster(made, fabric=made.create("fabric"))
    network.build_fabric(cluster.fabric)
    for i in range(2):
        node = made.create(f"node-{i}")
        cluster.nodes.append(node)
        network.attach_node(cluster.fabric, node, f"node{i}", f"172.18.0.{10 + i}/16", f"10.244.{i}.1")
        network.route_node_to_services(node, SERVICE_CIDR)
    for i, node in enumerate(cluster.nodes):
        network.route_node_to_peers(node, [(f"10.244.{j}.0/24", f"172.18.0.{10 + j}") for j in range(2) if j != i])
        for k in range(2):
            pod = Pod(made.create(f"pod-{i}-{k}"), f"10.244.{i}.{10 + k}", i, f"v{i:04x}{k:04x}")
            network.add_pod(node, pod.netns, pod.host_ifname, pod.ip, f"10.244.{i}.1", owner=f"test/{pod.netns}")
            cluster.pods.append(pod)
    return cluster


@pytest.fixture(scope="module")
def host_links_before():
    return host_links()


@pytest.fixture(scope="module")
def cluster(host_links_before):
    made = Namespaces()
    try:
        yield build_cluster(made)
    finally:
        made.remove_all()


@pytest.fixture(scope="module")
def kube_proxy(cluster):
    """Services on the cluster: web (3 endpoints on both nodes), self (its only endpoint is the
    pod that calls it: hairpin), empty (no endpoints), kube-dns (UDP)."""
    p = cluster.pods
    http = {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    dns = {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}
    services = [
        service("web", [http], WEB_VIP),
        service("self", [http], SELF_VIP),
        service("empty", [http], EMPTY_VIP),
        service("kube-dns", [dns], DNS_VIP, namespace="kube-system"),
    ]
    eps = [
        endpoints("web", [p[1].ip, p[2].ip, p[3].ip], [{"name": "http", "port": 8080}]),
        endpoints("self", [p[1].ip], [{"name": "http", "port": 8081}]),
        endpoints("empty", [], [{"name": "http", "port": 8080}], not_ready=[p[2].ip]),
        endpoints("kube-dns", [p[2].ip], [{"name": "dns", "port": 5353, "protocol": "UDP"}], namespace="kube-system"),
    ]
    script = kubeproxy.render(services, eps)
    for node in cluster.nodes:
        network.apply_nft(node, script)
    return script


# --- sockets in pods -------------------------------------------------------------------------


@contextlib.contextmanager
def listening(ns: str, ip: str, port: int, kind: int = socket.SOCK_STREAM):
    sock = netns.socket_in(ns, socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.settimeout(2)
        yield sock
    finally:
        sock.close()


def connect(ns: str, address: tuple[str, int], timeout: float = 2) -> socket.socket:
    sock = netns.socket_in(ns)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def exchange(client_ns: str, address: tuple[str, int], listener: socket.socket) -> str:
    """Connect, send a line each way, return the client address the server saw."""
    with contextlib.closing(connect(client_ns, address)) as client:
        conn, peer = listener.accept()
        with conn:
            client.sendall(b"ping\n")
            assert conn.recv(5) == b"ping\n"
            conn.sendall(b"pong\n")
            assert client.recv(5) == b"pong\n"
    return peer[0]


def drain_accepts(listeners: dict[str, socket.socket], expected: int) -> Counter:
    """Accept until EXPECTED connections have arrived (handshakes finish asynchronously)."""
    counts: Counter = Counter()
    deadline = time.monotonic() + 3
    for sock in listeners.values():
        sock.setblocking(False)
    while sum(counts.values()) < expected and time.monotonic() < deadline:
        for name, sock in listeners.items():
            with contextlib.suppress(BlockingIOError):
                conn, _ = sock.accept()
                conn.close()
                counts[name] += 1
    return counts


# --- netns -----------------------------------------------------------------------------------


def test_netns_create_exists_remove(namespaces):
    name = namespaces.create("scratch")
    assert netns.exists(name) and name in lab_netns_names()
    with pytest.raises(FileExistsError):
        netns.create(name)
    netns.remove(name)
    netns.remove(name)  # idempotent
    assert not netns.exists(name) and name not in lab_netns_names()


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "x" * 201])
def test_netns_names_are_validated(bad):
    with pytest.raises(ValueError):
        netns.create(bad)


def test_entered_switches_back_even_when_the_body_fails(namespaces):
    name = namespaces.create("scratch")
    with pytest.raises(RuntimeError):
        with netns.entered(name):
            assert os.readlink("/proc/thread-self/ns/net") != HOST_NETNS
            raise RuntimeError("boom")
    assert os.readlink("/proc/thread-self/ns/net") == HOST_NETNS
    with pytest.raises(netns.NetnsError):
        with netns.entered(PREFIX + "missing"):
            pass
    assert os.readlink("/proc/thread-self/ns/net") == HOST_NETNS


def test_socket_in_stays_in_its_namespace(cluster):
    pod = cluster.pods[0]
    with listening(pod.netns, "127.0.0.1", 0) as listener:
        address = listener.getsockname()
        assert exchange(pod.netns, address, listener) == "127.0.0.1"
        for elsewhere in (cluster.pods[1].netns, cluster.fabric):  # their own loopbacks
            with pytest.raises(ConnectionRefusedError):
                connect(elsewhere, address).close()


def test_create_makes_the_run_dir_a_shared_mount_like_iproute2():
    """In a private mount namespace where /run/netns is a plain directory (as on a fresh boot),
    create() bind-mounts it onto itself and makes it shared. Nothing leaks to the host's mounts."""
    name = PREFIX + "rundir"
    script = (
        "import os, subprocess, sys\n"
        "from lab.client import netns\n"
        "subprocess.run(['umount', '--lazy', netns.NETNS_RUN_DIR], check=True)\n"
        f"netns.create({name!r})\n"
        "try:\n"
        "    mounts = [l.split() for l in open('/proc/self/mountinfo')]\n"
        "    run_dir = [m for m in mounts if m[4] == netns.NETNS_RUN_DIR]\n"
        "    assert run_dir and 'shared:' in ' '.join(run_dir[0]), run_dir\n"
        f"    assert netns.exists({name!r})\n"
        "finally:\n"
        f"    netns.remove({name!r})\n"
    )
    subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        timeout=30,
    )
    assert not netns.exists(name)


def test_set_sysctl_changes_only_that_namespace(namespaces):
    key = "net.ipv4.conf.all.accept_local"  # 0 by default, harmless to flip
    host_before = read_host_sysctl("net/ipv4/conf/all/accept_local")
    a, b = namespaces.create("sysctl-a"), namespaces.create("sysctl-b")
    netns.set_sysctl(a, key, 1)
    assert netns.get_sysctl(a, key) == "1"
    assert netns.get_sysctl(b, key) == "0"
    assert read_host_sysctl("net/ipv4/conf/all/accept_local") == host_before
    with pytest.raises(ValueError):
        netns.set_sysctl(a, "kernel.hostname", "x")  # not per-namespace: refused


# --- plumbing --------------------------------------------------------------------------------


def test_nodes_are_routers_and_the_fabric_is_not(cluster):
    for node in cluster.nodes:
        assert netns.get_sysctl(node, "net.ipv4.ip_forward") == "1"
    assert netns.get_sysctl(cluster.fabric, "net.ipv4.ip_forward") == "0"


def test_pod_to_pod_on_the_same_node(cluster):
    a, b = cluster.pods[0], cluster.pods[1]
    with listening(b.netns, b.ip, 8000) as listener:
        assert exchange(a.netns, (b.ip, 8000), listener) == a.ip


def test_pod_to_pod_across_nodes(cluster):
    for a, b in ((cluster.pods[0], cluster.pods[2]), (cluster.pods[3], cluster.pods[1])):
        with listening(b.netns, b.ip, 8000) as listener:
            assert exchange(a.netns, (b.ip, 8000), listener) == a.ip


def test_node_to_pod_on_another_node(cluster):
    pod = cluster.pods[3]
    with listening(pod.netns, pod.ip, 8000) as listener:
        assert exchange(cluster.nodes[0], (pod.ip, 8000), listener) == "172.18.0.10"


def test_wiring_again_converges(cluster):
    network.build_fabric(cluster.fabric)
    network.attach_node(cluster.fabric, cluster.nodes[0], "node0", "172.18.0.10/16", "10.244.0.1")
    pod = cluster.pods[0]
    network.add_pod(cluster.nodes[0], pod.netns, pod.host_ifname, pod.ip, "10.244.0.1", owner=f"test/{pod.netns}")
    test_pod_to_pod_on_the_same_node(cluster)


def test_pod_links_carry_their_owner_and_teardown_respects_it(cluster, namespaces):
    node = cluster.nodes[0]
    pod = namespaces.create("owned")
    network.add_pod(node, pod, "vowned", "10.244.0.50", "10.244.0.1", owner="test/owned")
    assert network.owner_of(node, "vowned") == "test/owned"
    with pytest.raises(network.NetworkError, match="belongs to ambient-lab:test/owned"):
        network.add_pod(node, pod, "vowned", "10.244.0.50", "10.244.0.1", owner="someone-else")
    with pytest.raises(network.NetworkError, match="not deleting vowned"):
        network.remove_pod(node, "vowned", owner="someone-else")
    network.remove_pod(node, "vowned", owner="test/owned")
    network.remove_pod(node, "vowned", owner="test/owned")  # idempotent
    assert network.owner_of(node, "vowned") is None
    network.remove_pod(PREFIX + "no-such-node", "vowned")  # the node is gone: nothing to do


@pytest.mark.parametrize("node_name", ["", "a-node-name-too-long", "br0", "lo", "a/b", "a b"])
def test_node_names_must_be_usable_link_names(cluster, node_name):
    with pytest.raises(network.NetworkError):
        network.attach_node(cluster.fabric, cluster.nodes[0], node_name, "172.18.0.99/16", "10.244.9.1")


def test_bad_arguments_raise_network_error(cluster):
    with pytest.raises(network.NetworkError, match="invalid pod IP"):
        network.add_pod(cluster.nodes[0], cluster.pods[0].netns, "vbad", "10.244.0.300", "10.244.0.1", owner="x")
    with pytest.raises(network.NetworkError, match="does not exist"):
        network.build_fabric(PREFIX + "no-such-fabric")


def test_add_pod_does_not_fork(namespaces, monkeypatch):
    node, pod = namespaces.create("nofork-node"), namespaces.create("nofork-pod")

    def no_fork(*args, **kwargs):
        raise AssertionError("add_pod forked")

    monkeypatch.setattr(os, "fork", no_fork)
    monkeypatch.setattr(subprocess, "Popen", no_fork)
    network.add_pod(node, pod, "vnofork", "10.244.0.60", "10.244.0.1", owner="test/nofork")
    network.remove_pod(node, "vnofork")


async def test_concurrent_add_pod_from_trio_worker_threads(namespaces):
    """As labd calls it: several to_thread workers at once, each back in its namespace after."""
    node = namespaces.create("conc-node")
    pods = [namespaces.create(f"conc-pod-{k}") for k in range(12)]
    seen: dict[int, str] = {}

    def wire(k: int) -> None:
        network.add_pod(node, pods[k], f"vconc{k:04x}", f"10.244.5.{10 + k}", "10.244.5.1", owner=f"test/{pods[k]}")
        seen[k] = os.readlink("/proc/thread-self/ns/net")

    limiter = trio.CapacityLimiter(6)
    async with trio.open_nursery() as nursery:
        for k in range(len(pods)):
            nursery.start_soon(functools.partial(trio.to_thread.run_sync, wire, k, limiter=limiter))
    assert set(seen.values()) == {HOST_NETNS}
    assert [network.owner_of(node, f"vconc{k:04x}") for k in range(len(pods))] == [f"test/{p}" for p in pods]


def test_200_pods_set_up_and_torn_down(namespaces):
    """Many pods on one node, each with its own veth; how fast: `make bench` (bench/checks.py)."""
    count = 200
    node = namespaces.create("scale-node")
    pods = []
    for k in range(count):
        pods.append(namespaces.create(f"scale-pod-{k}"))
        network.add_pod(
            node,
            pods[-1],
            f"vscale{k:04x}",
            f"10.244.{k // 200}.{10 + k % 200}",
            "10.244.0.1",
            owner=f"test/{pods[-1]}",
        )
    assert [network.owner_of(node, f"vscale{k:04x}") for k in range(count)] == [f"test/{p}" for p in pods]
    for pod in pods:  # the pod's veth pair dies with its namespace, freed by the kernel
        netns.remove(pod)
    assert not [p for p in pods if netns.exists(p)]


def test_apply_nft_reports_nft_errors(cluster):
    with pytest.raises(network.NetworkError, match="syntax error"):
        network.apply_nft(cluster.nodes[0], "table ip broken { chain c { bogus } }")


# --- kube-proxy ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_scripts_pass_nft_check_and_apply_twice(namespaces, scenario):
    ns = namespaces.create("nft")
    script = kubeproxy.render(*SCENARIOS[scenario])
    network.apply_nft(ns, script, check=True)
    network.apply_nft(ns, script)
    network.apply_nft(ns, script)  # replaces the table: create-then-delete makes it atomic


def test_cluster_ip_spreads_over_three_endpoints(cluster, kube_proxy):
    client, targets = cluster.pods[0], cluster.pods[1:]
    with contextlib.ExitStack() as stack:
        listeners = {t.ip: stack.enter_context(listening(t.netns, t.ip, 8080)) for t in targets}
        for _ in range(60):
            connect(client.netns, (WEB_VIP, 80)).close()
        counts = drain_accepts(listeners, 60)
    assert sum(counts.values()) == 60
    assert set(counts) == {t.ip for t in targets}, counts  # P(an endpoint missed) ~ 1e-10


def test_cluster_ip_hairpin_to_the_calling_pod(cluster, kube_proxy):
    pod = cluster.pods[1]
    with listening(pod.netns, pod.ip, 8081) as listener:
        seen_as = exchange(pod.netns, (SELF_VIP, 80), listener)
    assert seen_as == "10.244.0.1"  # masqueraded to its node: a reply to itself would be dropped


def test_cluster_ip_without_endpoints_refuses_at_once(cluster, kube_proxy):
    for address in ((EMPTY_VIP, 80), (WEB_VIP, 81)):  # no ready endpoint; not a service port
        with pytest.raises(ConnectionRefusedError):  # a reject, not a drop (that would time out)
            connect(cluster.pods[0].netns, address).close()


def test_cluster_ip_udp(cluster, kube_proxy):
    client, server = cluster.pods[0], cluster.pods[2]
    with (
        listening(server.netns, server.ip, 5353, socket.SOCK_DGRAM) as listener,
        contextlib.closing(netns.socket_in(client.netns, socket.AF_INET, socket.SOCK_DGRAM)) as sock,
    ):
        sock.settimeout(2)
        sock.sendto(b"query", (DNS_VIP, 53))
        data, peer = listener.recvfrom(100)
        assert (data, peer[0]) == (b"query", client.ip)
        listener.sendto(b"answer", peer)
        assert sock.recvfrom(100) == (b"answer", (DNS_VIP, 53))


def test_cluster_ip_from_a_node_process(cluster, kube_proxy):
    """The output chain: a hostNetwork process on node 1 reaches an endpoint on node 0."""
    pod = cluster.pods[1]
    with listening(pod.netns, pod.ip, 8081) as listener:
        assert exchange(cluster.nodes[1], (SELF_VIP, 80), listener) == "172.18.0.11"


# --- teardown (keep last) --------------------------------------------------------------------


def test_teardown_leaves_nothing(cluster, host_links_before):
    cluster.namespaces.remove_all()
    assert lab_netns_names() == []
    assert not [n for n in os.listdir(netns.NETNS_RUN_DIR) if n.startswith(PREFIX)]
    assert host_links() == host_links_before
    assert os.readlink("/proc/thread-self/ns/net") == HOST_NETNS
