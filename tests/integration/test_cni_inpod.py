"""In-pod redirection in real network namespaces: what enroll writes, that it is idempotent, that
unenroll removes it, and that real connections are redirected the way ztunnel expects."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import pytest

from lab.client import netns
from mesh.cni import inpod, rules
from tests.integration.conftest import connect_from, ip, join_with_veth, listener, nft_list, original_dst

IP_TRANSPARENT = 19  # <linux/in.h>
POD_IP, PEER_IP = "10.99.0.2", "10.99.0.3"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


@contextlib.contextmanager
def scratch_netns(suffix: str) -> Iterator[str]:
    name = f"al-c{os.getpid()}-{suffix}"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


@pytest.fixture
def pod() -> Iterator[str]:
    with scratch_netns("pod") as name:
        yield name


@pytest.fixture
def pod_and_peer() -> Iterator[tuple[str, str]]:
    """A pod and a peer joined by a veth: pod eth0 10.99.0.2/24 <-> peer eth0 10.99.0.3/24."""
    with scratch_netns("pod") as pod_ns, scratch_netns("peer") as peer_ns:
        join_with_veth(pod_ns, POD_IP, peer_ns, PEER_IP)
        yield pod_ns, peer_ns


def test_enroll_writes_table_rule_and_route_idempotently(pod: str) -> None:
    assert not inpod.is_enrolled(pod)
    inpod.enroll(pod)
    listed = nft_list(pod, "istio_inpod")
    assert listed.returncode == 0, listed.stderr
    for chain in rules.CHAINS:
        assert f"chain {chain.name} {{" in listed.stdout
    for rule in rules.RULES:
        assert f'comment "{rule.iptables}"' in listed.stdout
    assert "redirect to :15001" in listed.stdout and "redirect to :15006" in listed.stdout
    assert "32764:\tfrom all fwmark 0x111/0xfff lookup 100" in ip(pod, "rule", "show")
    assert ip(pod, "route", "show", "table", "100").split() == "local default dev lo proto static scope host".split()
    assert inpod.is_enrolled(pod)

    inpod.enroll(pod)  # again: the same, not doubled
    assert nft_list(pod, "istio_inpod").stdout == listed.stdout
    assert ip(pod, "rule", "show").count("fwmark 0x111/0xfff") == 1
    assert len(ip(pod, "route", "show", "table", "100").splitlines()) == 1

    inpod.unenroll(pod)
    assert nft_list(pod, "istio_inpod").returncode != 0
    assert "fwmark" not in ip(pod, "rule", "show")
    assert ip(pod, "route", "show", "table", "100") == ""
    assert not inpod.is_enrolled(pod)
    inpod.unenroll(pod)  # again: nothing left to remove, no error


def test_unenroll_of_a_vanished_netns_is_a_no_op() -> None:
    name = f"al-c{os.getpid()}-gone"
    assert not netns.exists(name)
    inpod.unenroll(name)
    assert not inpod.is_enrolled(name)
    with pytest.raises(inpod.InpodError, match=name):
        inpod.enroll(name)


def test_real_connections_are_redirected_like_ztunnel_expects(pod_and_peer: tuple[str, str]) -> None:
    pod_ns, peer_ns = pod_and_peer
    inpod.enroll(pod_ns)
    with (
        listener(pod_ns, rules.ZTUNNEL_OUTBOUND_PORT) as outbound,
        listener(pod_ns, rules.ZTUNNEL_INBOUND_PLAINTEXT_PORT) as inbound,
        listener(pod_ns, rules.ZTUNNEL_INBOUND_HBONE_PORT) as hbone,
        listener(peer_ns, 8080) as peer_app,
    ):
        # The app's outbound connection lands on ztunnel's 15001, which can read where it was going.
        with connect_from(pod_ns, (PEER_IP, 8080)):
            conn, _ = outbound.accept()
            with conn:
                assert original_dst(conn) == (PEER_IP, 8080)
        # ztunnel's own sockets (mark 0x539) go where they connect.
        with connect_from(pod_ns, (PEER_IP, 8080), mark=rules.INPOD_MARK):
            conn, (source, _) = peer_app.accept()
            conn.close()
            assert source == POD_IP
        # Inbound plaintext lands on 15006 with the original destination ...
        with connect_from(peer_ns, (POD_IP, 80)):
            conn, (source, _) = inbound.accept()
            with conn:
                assert source == PEER_IP
                assert original_dst(conn) == (POD_IP, 80)
        # ... and HBONE reaches 15008 untouched.
        with connect_from(peer_ns, (POD_IP, rules.ZTUNNEL_INBOUND_HBONE_PORT)):
            conn, _ = hbone.accept()
            conn.close()
    inpod.unenroll(pod_ns)
    with listener(peer_ns, 8080) as peer_app, connect_from(pod_ns, (PEER_IP, 8080)):
        conn, _ = peer_app.accept()  # released: straight to the peer again
        conn.close()


def test_replies_to_ztunnels_spoofed_inbound_connections_come_back_to_it(pod_and_peer: tuple[str, str]) -> None:
    """ztunnel connects to the app from the client's address (IP_TRANSPARENT); the app's replies
    must reach ztunnel, not the real client: connmark 0x111 + the table-100 local route."""
    pod_ns, _ = pod_and_peer

    def spoofed_connect() -> None:
        with netns.socket_in(pod_ns) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, rules.INPOD_MARK)
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            sock.bind((PEER_IP, 0))
            sock.settimeout(0.3)
            sock.connect((POD_IP, 80))
            conn, (source, _) = app.accept()
            conn.sendall(b"reply")
            assert sock.recv(5) == b"reply" and source == PEER_IP
            conn.close()

    with listener(pod_ns, 80) as app:
        inpod.enroll(pod_ns)
        spoofed_connect()
        inpod.unenroll(pod_ns)
        with pytest.raises(TimeoutError):  # the app's SYN-ACK goes out to the real peer instead
            spoofed_connect()
