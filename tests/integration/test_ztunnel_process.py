"""ztunnel as labd starts it (`python -m mesh.ztunnel`) in the node of tests/integration/conftest.py:
its root certificate from labd's API in process, certificates and config from a fake istiod, the
pods handed over ZDS; real traffic through it, and its exit on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import sys
import tempfile

import pytest
import trio

from lab.client import netns
from lab.client.protocol import LineDecoder, encode
from lab.testing import InProcessLabApi
from mesh import zds
from mesh.identity.ca import RootCA, make_csr
from mesh.identity.spiffe import Identity
from mesh.ztunnel.testing import service, workload
from tests.conftest import read_all
from tests.integration.conftest import ECHO_SVC, IP, NS, PID, POD_NAMES, SLEEP_ID, VIP, curl, echo_workload, open_from

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


class FakeIstiod:
    """istiod's port 15012 as the contract has it: TLS 1.3, one JSON request line per connection."""

    TOKEN = "ztunnel-token"

    def __init__(self, ca: RootCA, directory: str, resources: list[dict]) -> None:
        self.ca = ca
        self.resources = resources
        self.requests: list[dict] = []
        key, csr = make_csr(Identity("cluster.local", "istio-system", "istiod"))
        chain = ca.sign_csr(csr, [Identity("cluster.local", "istio-system", "istiod")])
        cert_path, key_path = os.path.join(directory, "istiod.pem"), os.path.join(directory, "istiod.key")
        with open(cert_path, "w") as f:
            f.write(chain[0])
        with open(key_path, "w") as f:
            f.write(key)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_cert_chain(cert_path, key_path)

    async def serve(self, sock: trio.socket.SocketType, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, tcp: trio.SocketStream) -> None:
        stream = trio.SSLStream(tcp, self.ctx, server_side=True, https_compatible=True)
        try:
            decoder = LineDecoder()
            while True:
                messages = list(decoder.feed(await stream.receive_some(65536)))
                if messages:
                    break
            request = messages[0]
            self.requests.append(request)
            if request.get("token") != self.TOKEN:
                await stream.send_all(encode({"ok": False, "error": "authentication failure"}))
            elif request["op"] == "CreateCertificate":
                identity = Identity.parse(request["impersonatedIdentity"])
                chain = self.ca.sign_csr(request["csr"], [identity])
                await stream.send_all(encode({"ok": True, "certChain": chain}))
            elif request["op"] == "Subscribe":
                await stream.send_all(
                    encode(
                        {
                            "type": "Address",
                            "removed": [],
                            "resources": [
                                {
                                    "name": r["workload"]["uid"] if "workload" in r else ECHO_SVC,
                                    "version": "1",
                                    "resource": r,
                                }
                                for r in self.resources
                            ],
                        }
                    )
                )
                await stream.send_all(encode({"type": "SYNCED"}))
                await trio.sleep_forever()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def test_the_ztunnel_process(ztunnel_node, nursery):
    lab = f"z{PID}"
    with tempfile.TemporaryDirectory(prefix="zt-") as tmp:
        ca = RootCA.generate()
        istiod = FakeIstiod(
            ca,
            tmp,
            [workload("sleep-a", IP["a"], sa="sleep"), echo_workload(), service("echo", VIP, {80: 8080, 9000: 9000})],
        )
        sock = trio.socket.from_stdlib_socket(netns.socket_in(NS["node"]))
        await sock.bind(("127.0.0.1", 15012))
        sock.listen()
        await nursery.start(istiod.serve, sock)
        lab_api = InProcessLabApi(tmp, namespaces=("istio-system",))
        lab_api.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "istio-ca-root-cert", "namespace": "istio-system"},
                "data": {"root-cert.pem": ca.cert_pem},
            }
        )
        await nursery.start(lab_api.serve)
        api = lab_api.path
        token = os.path.join(tmp, "token")
        with open(token, "w") as f:
            f.write(FakeIstiod.TOKEN + "\n")
        zds_path = os.path.join(tmp, lab, "nodes", "worker1", "ztunnel.sock")
        os.makedirs(os.path.dirname(zds_path))
        cni = await zds.open_zds_listener(zds_path)

        env = {
            **os.environ,
            "LAB_NAME": lab,
            "LAB_NODE_NAME": "worker1",
            "LAB_API_SOCKET": api,
            "LAB_SA_TOKEN_FILE": token,
            "ISTIOD_ADDRESS": "localhost:15012",
            "AMBIENT_LAB_RUN_ROOT": tmp,
            "LAB_POD_NAME": "ztunnel-x",
            "LAB_POD_NAMESPACE": "istio-system",
        }
        stdout = open(os.path.join(tmp, "stdout"), "w+")
        stderr = open(os.path.join(tmp, "stderr"), "w+")
        proc = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", NS["node"], sys.executable, "-m", "mesh.ztunnel"],
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            with trio.fail_after(10):
                async with cni:
                    agent = await cni.accept()
                assert await agent.receive_hello() == zds.ZdsHello("V1")
                for pod, sa in (("a", "sleep"), ("b", "echo")):
                    fd = os.open(netns.path(NS[pod]), os.O_RDONLY | os.O_CLOEXEC)
                    await agent.send(
                        zds.AddWorkload(f"uid-{pod}", zds.WorkloadInfo(POD_NAMES[pod], "default", sa)), [fd]
                    )
                    os.close(fd)
                    assert (await agent.receive_response()).ok
                await agent.send(zds.SnapshotSent())
                assert (await agent.receive_response()).ok
                while (await node_http(15021, "/healthz/ready"))[0] != 200:
                    await trio.sleep(0.05)

            res = await curl("a", f"http://{VIP}/")
            assert res.returncode == 0, res.stderr
            assert f"IP={IP['a']}" in res.stdout.decode()
            dump = json.loads((await node_http(15000, "/config_dump"))[1])
            assert {c["identity"]: c["state"] for c in dump["certificates"]} == {
                SLEEP_ID: "Available",
                "spiffe://cluster.local/ns/default/sa/echo": "Available",
            }
            assert "istio_tcp_connections_opened_total" in (await node_http(15020, "/metrics"))[1]
            ops = [r["op"] for r in istiod.requests]
            assert ops.count("Subscribe") == 1 and ops.count("CreateCertificate") == 2
            assert {r["impersonatedIdentity"] for r in istiod.requests if r["op"] == "CreateCertificate"} == {
                SLEEP_ID,
                "spiffe://cluster.local/ns/default/sa/echo",
            }
            subscribe = next(r for r in istiod.requests if r["op"] == "Subscribe")
            assert subscribe["node"] == "worker1" and subscribe["known"] == {"Address": {}, "Authorization": {}}

            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(5):
                assert await proc.wait() == 0
            with pytest.raises(ConnectionRefusedError):
                await open_from("c")  # the pods' listeners went with it
            await agent.aclose()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            stdout.seek(0)
            stderr.seek(0)
            out, err = stdout.read(), stderr.read()
            stdout.close()
            stderr.close()
        assert re.search(r'info access connection complete .*direction="outbound"', out), err[-3000:]
        assert re.search(r'info access connection complete .*direction="inbound"', out), err[-3000:]


async def node_http(port: int, path: str) -> tuple[int, str]:
    """GET a ztunnel endpoint in the node netns."""
    sock = trio.socket.from_stdlib_socket(netns.socket_in(NS["node"]))
    try:
        await sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        return 0, ""
    stream = trio.SocketStream(sock)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        data = await read_all(stream, 5, resets_end=True)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()
