"""What the integration tests share: scratch network namespaces joined by veths, sockets and
redirection tables in them, and the ztunnel tests' node of four pods.

    node (10.244.0.1)
     ├─ a  10.244.0.2  sleep  (enrolled, HBONE)   client
     ├─ b  10.244.0.3  echo   (enrolled, HBONE)   echo app :8080 (HTTP, reports the peer IP), :9000 (TCP echo)
     ├─ c  10.244.0.4  legacy (not enrolled)      a client outside the mesh
     └─ d  10.244.0.5  plain  (not enrolled, TCP) the same echo app, reached directly
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import trio

from lab.client import netns
from lab.runtime import network
from mesh.cni import inpod
from mesh.ztunnel.testing import workload

SO_ORIGINAL_DST = 80  # <linux/netfilter_ipv4.h>


# ---- scratch namespaces ------------------------------------------------------------------------


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True, timeout=10).stdout


def nft_list(ns: str, table: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "list", "table", "ip", table], capture_output=True, text=True, timeout=10
    )


def join_with_veth(pod_ns: str, pod_ip: str, peer_ns: str, peer_ip: str) -> None:
    """POD_NS eth0 POD_IP/24 <-> PEER_NS eth0 PEER_IP/24, both up (and their loopbacks)."""
    ip(pod_ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer_ns)
    for ns, addr in ((pod_ns, pod_ip), (peer_ns, peer_ip)):
        ip(ns, "link", "set", "lo", "up")
        ip(ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip(ns, "link", "set", "eth0", "up")


def listener(ns: str, port: int, host: str = "0.0.0.0") -> socket.socket:
    sock = netns.socket_in(ns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen()
    sock.settimeout(3)
    return sock


def connect_from(ns: str, address: tuple[str, int], mark: int | None = None) -> socket.socket:
    """A connection made in NS by this process (root: the app, as the rules see it)."""
    sock = netns.socket_in(ns)
    if mark is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    sock.settimeout(3)
    sock.connect(address)
    return sock


def original_dst(conn: socket.socket) -> tuple[str, int]:
    """Where a redirected connection was going (SO_ORIGINAL_DST), as ztunnel and Envoy read it."""
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, addr = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(addr), port


# ---- the ztunnel tests' node ---------------------------------------------------------------------

PID = os.getpid()
NS = {pod: f"al-z{PID}-{pod}" for pod in ("node", "a", "b", "c", "d")}
IP = {"a": "10.244.0.2", "b": "10.244.0.3", "c": "10.244.0.4", "d": "10.244.0.5"}
GATEWAY = "10.244.0.1"
VIP = "10.96.0.50"
ECHO_SVC = "default/echo.default.svc.cluster.local"
SLEEP_ID = "spiffe://cluster.local/ns/default/sa/sleep"
POD_NAMES = {"a": "sleep-a", "b": "echo-b"}


def wait_listening(ns: str, port: int, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while True:
        with netns.socket_in(ns) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > end:
            raise TimeoutError(f"nothing listens on {ns} :{port}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def ztunnel_node() -> Iterator[dict[str, str]]:
    """The node and its four pods, the echo apps and iperf3 servers; all removed by exact name."""
    created: list[str] = []
    procs: list[subprocess.Popen] = []
    try:
        netns.create(NS["node"])
        created.append(NS["node"])
        ip(NS["node"], "link", "set", "lo", "up")
        ip(NS["node"], "addr", "add", f"{GATEWAY}/32", "dev", "lo")
        netns.set_sysctl(NS["node"], "net.ipv4.ip_forward", 1)
        for pod in ("a", "b", "c", "d"):
            netns.create(NS[pod])
            created.append(NS[pod])
            network.add_pod(NS["node"], NS[pod], f"vz{PID}{pod}", IP[pod], GATEWAY, owner=f"z{PID}")
        for pod in ("a", "b"):
            inpod.enroll(NS[pod])
        # Count what reaches b's 15008: the evidence that a connection went over HBONE.
        network.apply_nft(
            NS["b"],
            "table ip zcount {\n chain input {\n type filter hook input priority 0; tcp dport 15008 counter\n }\n}\n",
        )
        for pod in ("b", "d"):
            env = {**os.environ, "HOSTNAME": f"app-{pod}", "POD_NAMESPACE": "default"}
            for argv in (
                [sys.executable, "-m", "lab.apps.echo", "--port", "8080", "--tcp-port", "9000"],
                ["iperf3", "-s", "-p", "5201"],
            ):
                procs.append(
                    subprocess.Popen(
                        ["ip", "netns", "exec", NS[pod], *argv],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        for pod in ("b", "d"):
            for port in (8080, 9000, 5201):
                wait_listening(NS[pod], port)
        yield NS
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for name in reversed(created):
            netns.remove(name)


def echo_workload(policies: list[str] | None = None) -> dict:
    return workload("echo-b", IP["b"], sa="echo", services={ECHO_SVC: {80: 8080, 9000: 9000}}, policies=policies)


async def run_in(pod: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return await trio.run_process(
        ["ip", "netns", "exec", NS[pod], *argv], capture_stdout=True, capture_stderr=True, check=False
    )


async def curl(pod: str, url: str) -> subprocess.CompletedProcess:
    return await run_in(pod, "curl", "-sS", "--max-time", "5", url)


async def open_from(pod: str, port: int = 15008) -> trio.SocketStream:
    sock = trio.socket.from_stdlib_socket(netns.socket_in(NS[pod]))
    await sock.connect((IP["b"], port))
    return trio.SocketStream(sock)
