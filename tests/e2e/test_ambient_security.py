"""Who ztunnel and istiod refuse (issue 3): clients without a mesh certificate, with a certificate
from another CA, with TLS 1.2, plain TCP on 15008; a ztunnel asking for another node's identity;
and a ztunnel restart failing closed, then recovering without restarting any app."""

from __future__ import annotations

import json
import ssl
import threading
import time

import pytest

from lab.client import netns
from lab.testing import eventually
from mesh.identity.ca import RootCA, make_csr
from mesh.identity.spiffe import Identity
from mesh.tls import client_context
from tests.conftest import curl_client, echo_app
from tests.e2e.conftest import AMBIENT, app_namespaces, ztunnel_on

NS = "sec-tests"
OUTSIDE = "sec-outside"
APPS = [*echo_app(NS, "server"), curl_client(NS), curl_client(OUTSIDE, "outsider")]


@pytest.fixture(scope="module")
def world(lab):
    ready = ((NS, "server"), (NS, "client"), (OUTSIDE, "outsider"))
    with app_namespaces(lab, {NS: AMBIENT, OUTSIDE: None}, APPS, ready=ready, mesh=True) as pods:
        yield lab, pods["server"], pods["client"], pods["outsider"]


def handshake(outsider: dict, server_ip: str, ctx: ssl.SSLContext) -> str:
    """A TLS handshake to SERVER_IP:15008 from inside the out-of-mesh pod's namespace."""
    sock = netns.socket_in(outsider["metadata"]["annotations"]["lab.ambient/netns"])
    sock.settimeout(5)
    try:
        sock.connect((server_ip, 15008))
        with ctx.wrap_socket(sock, server_hostname=None) as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            data = tls.recv(1024)  # TLS 1.3 reports a refused client certificate on first read
            return "open" if data else "closed"
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return f"refused: {e}"
    finally:
        sock.close()


def unverifying(minimum: ssl.TLSVersion | None = None, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client with no certificate that checks nothing of the server's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


@pytest.fixture(scope="module")
def other_ca_identity():
    root = RootCA.generate()
    ident = Identity("cluster.local", NS, "client")
    key, csr = make_csr(ident)
    return root, key, root.sign_csr(csr, [ident])


def test_clients_that_ztunnel_refuses(world, other_ca_identity):
    lab, server, client, outsider = world
    ip = server["status"]["podIP"]
    mesh_root = lab.get("ConfigMap", "istio-ca-root-cert", "istio-system")["data"]["root-cert.pem"]
    root, key, chain = other_ca_identity

    no_cert = unverifying(minimum=ssl.TLSVersion.TLSv1_3)
    no_cert.set_alpn_protocols(["h2"])
    assert handshake(outsider, ip, no_cert).startswith("refused")

    other_ca = client_context(chain, key, mesh_root)
    assert handshake(outsider, ip, other_ca).startswith("refused")

    assert handshake(outsider, ip, unverifying(maximum=ssl.TLSVersion.TLSv1_2)).startswith("refused")

    # Plain TCP (HTTP) to 15008 gets no HTTP answer.
    r = lab.exec(outsider["metadata"]["name"], OUTSIDE, ["curl", "-sS", "--max-time", "5", f"http://{ip}:15008/"])
    assert r.returncode in (52, 56, 7) and r.stdout == ""


def test_ztunnel_gets_only_identities_of_its_own_node(world):
    lab, server, client, _ = world
    node = server["spec"]["nodeName"]
    # A worker with no pod of the namespace: its ztunnel may not have the namespace's identities.
    other = next(
        n["name"]
        for n in lab.status["nodes"]
        if n["role"] == "worker" and not any(p["spec"]["nodeName"] == n["name"] for p in lab.pods(NS))
    )
    script = (
        """
import json, os, sys, trio
from mesh.identity.ca import make_csr
from mesh.identity.spiffe import Identity
from mesh.istiod.client import create_certificate
from lab.client import AsyncLabClient
async def main(sa):
    api = AsyncLabClient(os.environ["LAB_API_SOCKET"])
    cm = await api.call("get", kind="ConfigMap", name="istio-ca-root-cert", namespace="istio-system")
    root = cm["data"]["root-cert.pem"]
    ident = Identity("cluster.local", "%s", sa)
    key, csr = make_csr(ident)
    token = open(os.environ["LAB_SA_TOKEN_FILE"]).read()
    try:
        chain = await create_certificate(("istiod.istio-system.svc", 15012), root, token, csr, impersonated=str(ident))
        print(json.dumps({"ok": True}))
    except Exception as e:
        print(json.dumps({"ok": False, "error": str(e)}))
trio.run(main, sys.argv[1])
"""
        % NS
    )
    for zt_node, want in ((node, True), (other, False)):
        zt = ztunnel_on(lab, zt_node)
        r = lab.exec(zt["metadata"]["name"], "istio-system", ["python3", "-c", script, "default"], timeout=30)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["ok"] is want, (zt_node, res)
        if not want:
            assert "request impersonation authentication failure" in res["error"]
    logs = lab.lab("logs", "deploy/istiod", "-n", "istio-system").stdout
    assert f"spiffe://cluster.local/ns/{NS}/sa/default" in logs


def test_ztunnel_restart_fails_closed_then_recovers(world):
    lab, server, client, _ = world
    node = server["spec"]["nodeName"]
    apps_before = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["pid"] for p in lab.pods(NS)}
    zt = ztunnel_on(lab, node)
    results: list[tuple[float, int]] = []
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            r = lab.exec(
                client["metadata"]["name"], NS, ["curl", "-sS", "--max-time", "2", f"http://server.{NS}/"], timeout=10
            )
            results.append((time.monotonic(), r.returncode))
            time.sleep(0.05)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(1)
        r = lab.lab("delete", "pod", zt["metadata"]["name"], "-n", "istio-system")
        assert r.returncode == 0, r.stderr
        eventually(
            lambda: (
                (new := ztunnel_on(lab, node))
                and new["metadata"]["uid"] != zt["metadata"]["uid"]
                and any(c["type"] == "Ready" and c["status"] == "True" for c in new["status"].get("conditions", []))
            ),
            timeout=30,
        )
        eventually(lambda: len(results) >= 3 and all(rc == 0 for _, rc in results[-3:]), timeout=30)
    finally:
        stop.set()
        t.join()
    codes = [rc for _, rc in results]
    assert any(rc != 0 for rc in codes), "calls fail while the destination node's ztunnel is down"
    assert all(rc in (0, 7, 28, 52, 56) for rc in codes), codes
    assert codes[-1] == 0
    apps_after = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["pid"] for p in lab.pods(NS)}
    assert apps_after == apps_before, "no app pod was restarted"
