"""ztunnel in-process against real pods (the node of tests/integration/conftest.py): Istio's in-pod
redirection (`mesh.cni.inpod.enroll`), the pods handed over a real ZDS socket, certificates and
config from a fake control plane, and real clients (curl, iperf3, raw sockets) in the pods."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import tempfile

import pytest
import trio

from lab.client import netns
from mesh import zds
from mesh.identity.ca import RootCA, make_csr
from mesh.identity.spiffe import Identity
from mesh.policy.peerauth import static_strict
from mesh.tls import client_context
from mesh.ztunnel.app import Ztunnel
from mesh.ztunnel.config import Config
from mesh.ztunnel.testing import FakeControlPlane, address_push, authorization, authorization_push, service, workload
from tests.conftest import read_all
from tests.integration.conftest import IP, NS, POD_NAMES, SLEEP_ID, VIP, curl, echo_workload, open_from, run_in

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def hbone_packets() -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", NS["b"], "nft", "-j", "list", "table", "ip", "zcount"],
        check=True,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return next(
        item["rule"]["expr"][-1]["counter"]["packets"] for item in json.loads(out)["nftables"] if "rule" in item
    )


class Harness:
    """ztunnel in-process, its fake control plane, and the fake CNI agent's end of ZDS."""

    def __init__(self, zds_path: str) -> None:
        self.cp = FakeControlPlane()
        self.cp.push(
            address_push(
                workload("sleep-a", IP["a"], sa="sleep"),
                echo_workload(),
                workload("legacy-c", IP["c"], sa="legacy", protocol="TCP"),
                workload("plain-d", IP["d"], sa="plain", protocol="TCP"),
                service("echo", VIP, {80: 8080, 9000: 9000}),
            )
        )
        self.logs: list[str] = []
        config = Config(
            node_name="worker1",
            zds_path=zds_path,
            admin_addr=("127.0.0.1", 0),
            metrics_addr=("127.0.0.1", 0),
            readiness_addr=("127.0.0.1", 0),
            handshake_timeout=5,
        )
        self.ztunnel = Ztunnel(config, self.cp, log=self.logs.append)
        self.zds_path = zds_path
        self.cni: zds.ZdsSocket | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        listener = await zds.open_zds_listener(self.zds_path)
        await nursery.start(self.ztunnel.run)
        async with listener:
            self.cni = await listener.accept()
        assert await self.cni.receive_hello() == zds.ZdsHello("V1")
        for pod in ("a", "b"):
            await self.add(pod)
        await self.cni.send(zds.SnapshotSent())
        assert (await self.cni.receive_response()).ok
        with trio.fail_after(5):
            while not self.ztunnel.readiness.ready:
                await trio.sleep(0.01)

    async def add(self, pod: str) -> None:
        fd = os.open(netns.path(NS[pod]), os.O_RDONLY | os.O_CLOEXEC)
        try:
            info = zds.WorkloadInfo(POD_NAMES[pod], "default", "sleep" if pod == "a" else "echo")
            await self.cni.send(zds.AddWorkload(f"uid-{pod}", info), [fd])
        finally:
            os.close(fd)
        ack = await self.cni.receive_response()
        assert ack.ok, ack.error

    def push(self, message: dict, *, remember: bool = True) -> None:
        self.cp.push(message, remember=remember)

    def lines(self, direction: str) -> list[str]:
        return [line for line in self.logs if f'direction="{direction}"' in line]

    async def wait_log(self, pattern: str, timeout: float = 5) -> str:
        with trio.fail_after(timeout):
            while True:
                for line in self.logs:
                    if re.search(pattern, line):
                        return line
                await trio.sleep(0.01)


@pytest.fixture
async def zt(ztunnel_node, nursery):
    with tempfile.TemporaryDirectory(prefix="zt-") as tmp:
        harness = Harness(os.path.join(tmp, "ztunnel.sock"))
        await harness.start(nursery)
        yield harness
        nursery.cancel_scope.cancel()


async def settle(zt: Harness) -> None:
    """Let a pushed config reach the state (the fake stream is in-process, so this is quick)."""
    await trio.sleep(0.05)


# --- the data path ---------------------------------------------------------------------


async def test_pod_to_pod_goes_over_hbone_with_the_client_ip(zt):
    before = hbone_packets()
    res = await curl("a", f"http://{IP['b']}:8080/")
    assert res.returncode == 0, res.stderr
    assert f"IP={IP['a']}" in res.stdout.decode()  # the app sees the client pod, not ztunnel
    assert hbone_packets() > before  # and the bytes went through b's 15008
    out = await zt.wait_log(r'direction="outbound"')
    assert f"dst.addr={IP['b']}:15008 dst.hbone_addr={IP['b']}:8080" in out
    assert f'src.identity="{SLEEP_ID}"' in out and 'dst.workload="echo-b"' in out
    inbound = await zt.wait_log(r'direction="inbound"')
    assert f'src.identity="{SLEEP_ID}"' in inbound and "bytes_sent=" in inbound and "error" not in inbound


async def test_service_vip_is_load_balanced_to_an_endpoint_over_hbone(zt):
    before = hbone_packets()
    res = await curl("a", f"http://{VIP}/")
    assert res.returncode == 0, res.stderr
    assert f"IP={IP['a']}" in res.stdout.decode()
    assert hbone_packets() > before
    out = await zt.wait_log(r'direction="outbound"')
    assert 'dst.service="echo.default.svc.cluster.local"' in out and f"dst.hbone_addr={IP['b']}:8080" in out


async def test_non_mesh_destination_is_plain_tcp_from_the_pod(zt):
    before = hbone_packets()
    res = await curl("a", f"http://{IP['d']}:8080/")
    assert res.returncode == 0, res.stderr
    assert f"IP={IP['a']}" in res.stdout.decode()
    assert hbone_packets() == before
    out = await zt.wait_log(r'direction="outbound"')
    assert f"dst.addr={IP['d']}:8080" in out and "identity" not in out and 'dst.workload="plain-d"' in out


async def test_l4_policy_by_principal(zt):
    async def raw_exchange() -> bytes:
        """From the sleep pod, talk to echo's TCP port: what came back before the connection ended."""
        sock = trio.socket.from_stdlib_socket(netns.socket_in(NS["a"]))
        with sock:
            await sock.connect((IP["b"], 9000))
            await sock.send(b"ping")
            try:
                with trio.fail_after(5):
                    return await sock.recv(100)
            except ConnectionResetError:
                return b""

    assert await raw_exchange() == b"ping"

    zt.push(authorization_push(authorization("deny-sleep", "default", "DENY", ["cluster.local/ns/default/sa/sleep"])))
    zt.push(address_push(echo_workload(["default/deny-sleep"]), version="2"))
    await settle(zt)
    assert await raw_exchange() == b""  # closed, nothing from the app
    res = await curl("a", f"http://{IP['b']}:8080/")
    # A reset, as with real ztunnel: 56 once curl saw its connect complete, 7 when the reset came
    # first (a denial is quick, and a busy machine may delay curl between SYN and its check).
    assert res.returncode in (7, 56), (res.returncode, res.stderr)
    denied = await zt.wait_log(r'direction="inbound".*policy rejection')
    assert denied.endswith(
        'error="connection closed due to policy rejection: explicitly denied by: '
        'default/deny-sleep" decided_by="ztunnel" policy="default/deny-sleep"'
    )
    assert await zt.wait_log(r'direction="outbound".*error="http status: 401 Unauthorized"')

    # An ALLOW for someone else: sleep is now denied because it is not allowed.
    zt.push(authorization_push(authorization("allow-other", "default", "ALLOW", ["cluster.local/ns/default/sa/other"])))
    zt.push(address_push(echo_workload(["default/allow-other"]), version="3"))
    await settle(zt)
    assert await raw_exchange() == b""
    assert await zt.wait_log("allow policies exist, but none allowed")

    # ALLOW sleep: through again.
    zt.push(authorization_push(authorization("allow-sleep", "default", "ALLOW", ["cluster.local/ns/default/sa/sleep"])))
    zt.push(address_push(echo_workload(["default/allow-other", "default/allow-sleep"]), version="4"))
    await settle(zt)
    assert await raw_exchange() == b"ping"


async def test_plaintext_inbound_is_proxied_and_strict_refuses_it(zt):
    res = await curl("c", f"http://{IP['b']}:8080/")
    assert res.returncode == 0, res.stderr
    assert f"IP={IP['c']}" in res.stdout.decode()  # passthrough keeps the client's address
    line = await zt.wait_log(r'direction="inbound"')
    assert f"dst.addr={IP['b']}:8080" in line and "identity" not in line and 'src.workload="legacy-c"' in line

    strict = static_strict()
    zt.push(authorization_push(strict))
    zt.push(address_push(echo_workload([f"{strict['namespace']}/{strict['name']}"]), version="2"))
    await settle(zt)
    res = await curl("c", f"http://{IP['b']}:8080/")
    # Closed with nothing said; the reset can even beat curl's own connect bookkeeping (exit 7).
    assert res.returncode in (7, 52, 56), (res.returncode, res.stderr)
    assert not res.stdout
    assert await zt.wait_log("explicitly denied by: istio-system/istio_converted_static_strict")
    assert (await curl("a", f"http://{IP['b']}:8080/")).returncode == 0  # mTLS still gets in


async def test_app_not_listening_is_a_503_and_a_reset(zt):
    res = await curl("a", f"http://{IP['b']}:8081/")
    assert res.returncode in (7, 56), (res.returncode, res.stderr)  # a reset (see the policy test)
    assert await zt.wait_log(r'direction="inbound".*error="connection failed: ')
    assert await zt.wait_log(r'direction="outbound".*error="http status: 503 Service Unavailable"')


async def test_a_pods_first_connection_waits_for_its_workload(zt):
    sleep = workload("sleep-a", IP["a"], sa="sleep")
    zt.push(address_push(removed=[sleep["workload"]["uid"]]), remember=False)
    await settle(zt)

    arrived = trio.Event()

    async def arrive_late():
        await trio.sleep(0.5)
        zt.push(address_push(sleep, version="2"))
        arrived.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(arrive_late)
        res = await curl("a", f"http://{IP['b']}:8080/")
        answered_after_arrival = arrived.is_set()
    assert res.returncode == 0, res.stderr
    assert answered_after_arrival  # held, not refused, until ztunnel knew the pod


# --- 15008 refuses what is not mesh mTLS ---------------------------------------------------


async def test_plaintext_to_15008_is_refused(zt):
    stream = await open_from("c")
    async with stream:
        await stream.send_all(b"CONNECT 10.244.0.3:8080 HTTP/1.1\r\nhost: x\r\n\r\n")
        assert await read_all(stream, 5, resets_end=True) in (b"",)  # the TLS server never answers plaintext
    assert await zt.wait_log(r'warn access connection failed .*direction="inbound" error="tls error')


def tls_client(ca: RootCA) -> ssl.SSLContext:
    key, csr = make_csr(Identity.parse(SLEEP_ID))
    chain = ca.sign_csr(csr, [Identity.parse(SLEEP_ID)])
    return client_context(chain, key, ca.cert_pem)


@pytest.mark.parametrize("same_ca", [True, False], ids=["mesh-ca", "other-ca"])
async def test_client_certificate_must_come_from_the_mesh_ca(zt, same_ca):
    ca = zt.cp.ca if same_ca else RootCA.generate()
    ctx = tls_client(ca)
    if not same_ca:
        ctx.verify_mode = ssl.CERT_NONE  # the rogue client does not care who the server is
    stream = trio.SSLStream(await open_from("c"), ctx, server_hostname=None)
    async with stream:
        try:
            await stream.do_handshake()
            data = await stream.receive_some(65536)  # an HBONE server speaks first: its SETTINGS
        except trio.BrokenResourceError:
            data = b""
    if same_ca:
        assert data.startswith(b"\x00\x00") and data[3] == 0x04  # an HTTP/2 SETTINGS frame
    else:
        assert data == b""
        assert await zt.wait_log(r'direction="inbound" error="tls error')


# --- pods come and go over ZDS; telemetry ----------------------------------------------------


async def http_get(port: int, path: str) -> tuple[int, str]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        data = await read_all(stream, 5, resets_end=True)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def test_telemetry_and_pod_removal(zt):
    assert (await curl("a", f"http://{IP['b']}:8080/")).returncode == 0
    await zt.wait_log(r'direction="inbound"')
    ports = zt.ztunnel.ports
    assert await http_get(ports["readiness"], "/healthz/ready") == (200, "ready\n")
    status, text = await http_get(ports["metrics"], "/metrics")
    assert status == 200
    for reporter in ("source", "destination"):
        assert re.search(
            rf'^istio_tcp_connections_opened_total\{{reporter="{reporter}",source_workload="sleep",'
            rf'.*destination_workload="echo".*connection_security_policy="mutual_tls"\}} 1$',
            text,
            re.M,
        )
    status, body = await http_get(ports["admin"], "/config_dump")
    dump = json.loads(body)
    assert {c["identity"]: c["state"] for c in dump["certificates"]} == {
        SLEEP_ID: "Available",
        "spiffe://cluster.local/ns/default/sa/echo": "Available",
    }
    assert dump["certificates"][0]["certChain"][0]["serialNumber"]
    assert {w["name"] for w in dump["workloadState"]} == {"sleep-a", "echo-b"}
    assert len(dump["workloads"]) == 4 and dump["services"][0]["hostname"] == "echo.default.svc.cluster.local"

    # The agent deletes the echo pod: its listeners close, and sleep's connections to it fail fast.
    await zt.cni.send(zds.DelWorkload("uid-b"))
    assert (await zt.cni.receive_response()).ok
    await trio.sleep(0.05)
    with pytest.raises(ConnectionRefusedError):
        await open_from("c")
    res = await curl("a", f"http://{IP['b']}:8080/")
    # Reset before any data: curl says 56, or 7 when the reset lands while its connect is still
    # being confirmed (the app's connection to 15001 is local, the reset follows in microseconds);
    # not 28, its own timeout.
    assert res.returncode in (7, 56)
    assert await zt.wait_log(r'direction="outbound".*error="connection failed')
    status, body = await http_get(ports["admin"], "/config_dump")
    assert [w["name"] for w in json.loads(body)["workloadState"]] == ["sleep-a"]


async def test_live_connections_show_in_config_dump(zt):
    sock = trio.socket.from_stdlib_socket(netns.socket_in(NS["a"]))
    with sock:
        await sock.connect((IP["b"], 9000))
        await sock.send(b"x" * 1000)
        assert len(await sock.recv(2000)) > 0
        await trio.sleep(0.05)
        status, body = await http_get(zt.ztunnel.ports["admin"], "/config_dump")
        conns = json.loads(body)["connections"]
        (out,) = conns["default/sleep-a"]["outbound"]
        assert (out["originalDst"], out["actualDst"], out["protocol"]) == (
            f"{IP['b']}:9000",
            f"{IP['b']}:15008",
            "HBONE",
        )
        (inb,) = conns["default/echo-b"]["inbound"]
        assert inb["actualDst"] == f"{IP['b']}:9000" and inb["src"].startswith(IP["a"])
        assert out["bytesSent"] == 1000 and inb["bytesRecv"] == 1000


async def test_zds_reconnect_keeps_pods_and_a_snapshot_drops_the_missing(zt):
    """The agent restarts: ztunnel reconnects, pods re-sent with the same netns keep running, and
    a pod the new snapshot leaves out is stopped."""
    await zt.cni.aclose()
    listener = await zds.open_zds_listener(zt.zds_path)
    async with listener:
        with trio.fail_after(5):
            zt.cni = await listener.accept()
    assert await zt.cni.receive_hello() == zds.ZdsHello("V1")
    # Meanwhile the pods still work: proxies outlive the ZDS connection.
    assert (await curl("a", f"http://{IP['b']}:8080/")).returncode == 0
    await zt.add("a")
    await zt.cni.send(zds.SnapshotSent())
    assert (await zt.cni.receive_response()).ok
    await trio.sleep(0.05)
    with pytest.raises(ConnectionRefusedError):
        await open_from("c")  # echo-b was not in the snapshot: its 15008 is gone
    assert [p.info.name for p in zt.ztunnel.pods.pods.running.values()] == ["sleep-a"]


# --- the paths the figures of `make bench` (bench/mesh.py) measure in a lab ----------------

PING = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
for i in range(int(sys.argv[3])):
    s.sendall(b"x" * 64)
    got = 0
    while got < 64:
        got += len(s.recv(64 - got))
print(i + 1)
"""


async def test_round_trips_and_a_bulk_stream_over_hbone(zt):
    """Many small round trips on one connection, and iperf3's bulk stream, through both ztunnels."""
    res = await run_in("a", sys.executable, "-c", PING, IP["b"], "9000", "500")
    assert (res.returncode, res.stdout.strip()) == (0, b"500"), res.stderr
    before = hbone_packets()
    res = await run_in("a", "iperf3", "-c", IP["b"], "-p", "5201", "-t", "1", "-J")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["end"]["sum_received"]["bytes"] > 0
    assert hbone_packets() > before
