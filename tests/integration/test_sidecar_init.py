"""istio-init in a real network namespace: `python -m mesh.proxy istio-iptables <the injector's
flags>` writes the table idempotently, and real connections are captured the way a sidecar
expects (app outbound -> 15001, proxy outbound untouched, inbound -> 15006 except 15008)."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.client import netns
from mesh.sidecar import init, iptables
from mesh.sidecar.injection import PROXY_UID
from tests.integration.conftest import connect_from, ip, join_with_veth, listener, nft_list, original_dst
from tests.unit.test_sidecar_iptables import INJECTED_FLAGS

POD_IP, PEER_IP = "10.98.0.2", "10.98.0.3"
REMOTE = ("10.1.2.3", 80)  # somewhere outside the pod, reached through the peer
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


@pytest.fixture
def pod_and_peer() -> Iterator[tuple[str, str]]:
    """A pod netns and a peer joined by a veth (pod 10.98.0.2 <-> peer 10.98.0.3); the pod routes
    everything via the peer, which also holds 10.1.2.3 (a remote service)."""
    base = f"al-test-sidecar-{secrets.token_hex(3)}"
    pod_ns, peer_ns = base, base + "-peer"
    made = []
    try:
        for name in (pod_ns, peer_ns):
            netns.create(name)
            made.append(name)
        join_with_veth(pod_ns, POD_IP, peer_ns, PEER_IP)
        ip(pod_ns, "route", "add", "default", "via", PEER_IP)
        ip(peer_ns, "addr", "add", f"{REMOTE[0]}/32", "dev", "lo")
        yield pod_ns, peer_ns
    finally:
        for name in made:
            netns.remove(name)


def connect_as_proxy(ns: str, address: tuple[str, int]) -> None:
    """Connect and send "hi" as uid/gid 1337 (the sidecar's identity), in a child process."""
    script = f"exec 3<>/dev/tcp/{address[0]}/{address[1]} && printf hi >&3"
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "setpriv",
            f"--reuid={PROXY_UID}",
            f"--regid={PROXY_UID}",
            "--clear-groups",
            "bash",
            "-c",
            script,
        ],
        check=True,
        timeout=10,
        capture_output=True,
    )


def nothing_pending(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return True
    finally:
        sock.settimeout(3)
    conn.close()
    return False


@contextlib.contextmanager
def accepted(sock: socket.socket) -> Iterator[tuple[socket.socket, tuple[str, int]]]:
    conn, peer = sock.accept()
    with conn:
        yield conn, peer


def run_istio_init(ns: str, *flags: str) -> subprocess.CompletedProcess:
    """The init container's command, as the kubelet runs it: in the pod's netns, as root."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "mesh.proxy", "istio-iptables", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_istio_init_writes_the_table_idempotently_and_logs_it(pod_and_peer: tuple[str, str]) -> None:
    pod_ns, _ = pod_and_peer
    first = run_istio_init(pod_ns, *INJECTED_FLAGS)
    assert first.returncode == 0, first.stderr
    assert "-A ISTIO_OUTPUT -j ISTIO_REDIRECT" in first.stdout  # the log shows the rules
    listed = nft_list(pod_ns, iptables.TABLE)
    assert listed.returncode == 0, listed.stderr
    for rule in iptables.build_rules(iptables.parse_args(INJECTED_FLAGS)):
        assert f'comment "{rule.iptables}"' in listed.stdout
    again = run_istio_init(pod_ns, *INJECTED_FLAGS)
    assert again.returncode == 0, again.stderr
    assert nft_list(pod_ns, iptables.TABLE).stdout == listed.stdout  # replaced, not doubled
    refused = run_istio_init(pod_ns, "-m", "TPROXY")
    assert refused.returncode == 2 and "only REDIRECT" in refused.stderr
    assert nft_list(pod_ns, iptables.TABLE).stdout == listed.stdout  # a refused run changes nothing
    init.remove(pod_ns)
    assert nft_list(pod_ns, iptables.TABLE).returncode != 0
    init.remove(pod_ns)  # nothing left: no error


def test_real_connections_are_captured_like_a_sidecar_expects(pod_and_peer: tuple[str, str]) -> None:
    pod_ns, peer_ns = pod_and_peer
    init.apply(iptables.parse_args(INJECTED_FLAGS), pod_ns)
    with (
        listener(pod_ns, 15001) as outbound,
        listener(pod_ns, 15006) as inbound,
        listener(pod_ns, 15008) as hbone,
        listener(pod_ns, 8080) as app,
        listener(pod_ns, 9000, "127.0.0.1") as local,
        listener(peer_ns, REMOTE[1], REMOTE[0]) as remote,
    ):
        # The app's outbound connection lands on the proxy's 15001, which can read where it was going.
        with connect_from(pod_ns, REMOTE), accepted(outbound) as (conn, _):
            assert original_dst(conn) == REMOTE
        # The proxy's own connection (uid 1337) goes where it connects.
        connect_as_proxy(pod_ns, REMOTE)
        with accepted(remote) as (conn, (source, _)):
            assert source == POD_IP and conn.recv(2) == b"hi"
        # Localhost is never captured, from the proxy or from the app.
        connect_as_proxy(pod_ns, ("127.0.0.1", 9000))
        with accepted(local) as (conn, _):
            assert conn.recv(2) == b"hi"
        with connect_from(pod_ns, ("127.0.0.1", 9000)), accepted(local):
            pass
        # Inbound to the app's port lands on 15006 with the original destination ...
        with connect_from(peer_ns, (POD_IP, 8080)), accepted(inbound) as (conn, (source, _)):
            assert source == PEER_IP and original_dst(conn) == (POD_IP, 8080)
        # ... while HBONE (15008) and the proxy's own ports (-d) are not captured.
        with connect_from(peer_ns, (POD_IP, 15008)), accepted(hbone) as (conn, (source, _)):
            assert source == PEER_IP
        with listener(pod_ns, 15021) as ready, connect_from(peer_ns, (POD_IP, 15021)), accepted(ready):
            pass
        # The proxy calling its own pod's address goes through its inbound listener (not 15008).
        connect_as_proxy(pod_ns, (POD_IP, 8080))
        with accepted(inbound) as (conn, _):
            assert original_dst(conn) == (POD_IP, 8080)
        connect_as_proxy(pod_ns, (POD_IP, 15008))
        with accepted(hbone):
            pass
        assert nothing_pending(outbound) and nothing_pending(inbound) and nothing_pending(app)
    init.remove(pod_ns)
    with listener(peer_ns, REMOTE[1], REMOTE[0]) as remote, connect_from(pod_ns, REMOTE), accepted(remote):
        pass  # released: straight to the remote again
