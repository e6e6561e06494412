"""Ambient L4 (issue 3): enrollment without restart, HBONE on the wire, the article's L4 policy,
policy semantics end to end, refused clients, un-enrollment, and ztunnel restarts."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from lab.testing import ARTICLE, eventually
from tests.e2e.conftest import ztunnel_log, ztunnel_on

AMBIENT = "istio.io/dataplane-mode"


def curl(lab, pod, ns, url, *extra, timeout=10):
    return lab.exec(pod, ns, ["curl", "-sS", "--max-time", str(timeout), *extra, url], timeout=timeout + 10)


@pytest.fixture(scope="module")
def mesh(lab):
    r = lab.lab("istioctl", "install", "--set", "profile=ambient", "-y", timeout=180)
    assert r.returncode == 0, r.stderr
    assert "Installation complete" in r.stdout  # the CLI's own output is part of this test
    r = lab.lab("get", "pods", "-n", "istio-system")
    assert r.returncode == 0
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert len(rows) == 1 + 2 * len(lab.status["nodes"])  # istiod + cni and ztunnel per node
    assert all(row[2] == "Running" for row in rows), r.stdout
    return lab


@pytest.fixture(scope="module")
def apps(mesh):
    """The article's ambient namespace, created WITHOUT the label; the tests enroll it."""
    lab = mesh
    lab.create_namespace("ambient-apps")
    for f in ("httpbin-ambient.yaml", "sleep-ambient.yaml"):
        lab.apply(os.path.join(ARTICLE, f))
    sleep = lab.wait_ready("ambient-apps", "app=sleep-ambient")[0]
    httpbin = lab.wait_ready("ambient-apps", "app=httpbin-ambient")[0]
    yield lab, sleep, httpbin
    lab.delete_namespace("ambient-apps")


def test_enrollment_without_restart_and_hbone_on_the_wire(apps):
    lab, sleep, httpbin = apps
    before = {p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["pid"] for p in (sleep, httpbin)}
    r = lab.lab("label", "ns", "ambient-apps", f"{AMBIENT}=ambient")
    assert r.returncode == 0 and r.stdout.strip() == "namespace/ambient-apps labeled"
    eventually(lambda: lab.all_enrolled("ambient-apps", "app in (sleep-ambient,httpbin-ambient)"), timeout=20)
    for p in lab.pods("ambient-apps"):
        cs = p["status"]["containerStatuses"][0]
        assert before[p["metadata"]["uid"]] == cs["pid"] and cs["restartCount"] == 0
    sleep_pod = sleep["metadata"]["name"]

    # Capture the node-to-node link of the client's node while it calls the server.
    node_ns = lab.get("Pod", sleep_pod, "ambient-apps")["metadata"]["annotations"]["lab.ambient/netns"]
    client_node = f"al-{lab.name}-node-{sleep['spec']['nodeName']}"
    pcap = f"/tmp/{lab.name}-hbone.pcap"
    dump = subprocess.Popen(
        ["ip", "netns", "exec", client_node, "tcpdump", "-U", "-n", "-i", "eth0", "-w", pcap, "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)
        r = eventually(
            lambda: (
                (res := curl(lab, sleep_pod, "ambient-apps", "http://httpbin-ambient.ambient-apps:8000/ip")).returncode
                == 0
                and res
            ),
            timeout=20,
        )
        assert json.loads(r.stdout)["origin"] == sleep["status"]["podIP"]  # the original source IP is kept
        time.sleep(0.5)
    finally:
        dump.terminate()
        dump.wait(5)
    text = subprocess.run(["tcpdump", "-n", "-A", "-r", pcap], capture_output=True, text=True).stdout
    os.unlink(pcap)
    assert f"{httpbin['status']['podIP']}.15008" in text, "HBONE goes to the destination pod's port 15008"
    assert "GET /ip" not in text and '"origin"' not in text, "no plaintext HTTP on the wire"
    assert node_ns  # the pod's own namespace is unchanged by enrollment


def test_article_l4_policy_denies_the_rogue_client_with_a_reset(apps):
    """A reset, not a timeout (how soon: `make bench`, bench/checks.py)."""
    lab, sleep, httpbin = apps
    eventually(lambda: lab.all_enrolled("ambient-apps", "app=sleep-ambient"), timeout=20)
    r = lab.lab("apply", "-f", os.path.join(ARTICLE, "l4-policy.yaml"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "authorizationpolicy.security.istio.io/require-sleep-identity created"
    sleep_pod = sleep["metadata"]["name"]
    eventually(
        lambda: (
            curl(lab, sleep_pod, "ambient-apps", "http://httpbin-ambient.ambient-apps:8000/headers").returncode == 0
        ),
        timeout=20,
    )
    lab.apply(os.path.join(ARTICLE, "rogue-client.yaml"))
    rogue = lab.wait_ready("ambient-apps", "app=rogue-client")[0]["metadata"]["name"]
    eventually(lambda: lab.all_enrolled("ambient-apps", "app=rogue-client"), timeout=20)
    r = curl(lab, rogue, "ambient-apps", "http://httpbin-ambient.ambient-apps:8000/headers")
    assert r.returncode != 0 and r.stdout == "", r.stdout
    # No HTTP response: a reset (56; 7 when it beats curl's own connect check) or an empty reply (52).
    assert r.returncode in (7, 52, 56), r.stderr
    # The destination ztunnel says who was denied and by which policy.
    node = httpbin["spec"]["nodeName"]

    def denial_logged():
        return [
            line
            for line in ztunnel_log(lab, node)
            if "spiffe://cluster.local/ns/ambient-apps/sa/rogue-sa" in line and "policy rejection" in line
        ]

    lines = eventually(denial_logged, timeout=10)
    assert 'direction="inbound"' in lines[-1]
    assert "allow policies exist, but none allowed" in lines[-1]
    assert "ambient-apps/require-sleep-identity" in lines[-1]
    lab.client.call("delete", kind="AuthorizationPolicy", name="require-sleep-identity", namespace="ambient-apps")
    lab.client.call("delete", kind="Deployment", name="rogue-client", namespace="ambient-apps")


def test_unlabel_returns_pods_to_plain_traffic(apps):
    lab, sleep, httpbin = apps
    lab.lab("label", "ns", "ambient-apps", f"{AMBIENT}=ambient", "--overwrite")
    eventually(lambda: lab.all_enrolled("ambient-apps", "app=httpbin-ambient"), timeout=20)
    r = lab.lab("label", "ns", "ambient-apps", f"{AMBIENT}-")
    assert r.returncode == 0 and r.stdout.strip() == "namespace/ambient-apps unlabeled"
    eventually(
        lambda: all(
            "ambient.istio.io/redirection" not in p["metadata"].get("annotations", {}) for p in lab.pods("ambient-apps")
        ),
        timeout=20,
    )
    r = curl(lab, sleep["metadata"]["name"], "ambient-apps", "http://httpbin-ambient.ambient-apps:8000/ip")
    assert r.returncode == 0
    # Back to plain traffic: no ztunnel listener in the pod any more.
    r = lab.exec(httpbin["metadata"]["name"], "ambient-apps", ["ss", "-Htln", "sport = :15008"])
    assert r.stdout.strip() == ""


def test_observability_ztunnel_config_metrics_and_logs(apps):
    lab, sleep, httpbin = apps
    lab.lab("label", "ns", "ambient-apps", f"{AMBIENT}=ambient", "--overwrite")
    eventually(lambda: lab.all_enrolled("ambient-apps", "app in (sleep-ambient,httpbin-ambient)"), timeout=20)
    sleep_pod = sleep["metadata"]["name"]
    eventually(
        lambda: curl(lab, sleep_pod, "ambient-apps", "http://httpbin-ambient.ambient-apps:8000/ip").returncode == 0,
        timeout=20,
    )
    node = httpbin["spec"]["nodeName"]

    def workloads():
        r = lab.lab("istioctl", "ztunnel-config", "workloads", "--node", node, "-n", "ambient-apps")
        rows = {line.split()[1]: line.split() for line in r.stdout.splitlines()[1:]}
        return (
            r.stdout.splitlines()[0].split() == ["NAMESPACE", "POD", "NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"]
            and rows.get(httpbin["metadata"]["name"])
            and rows
        )

    rows = eventually(workloads, timeout=20)
    assert rows[httpbin["metadata"]["name"]][-1] == "HBONE"
    r = lab.lab("istioctl", "zc", "certificates", "--node", node)
    assert "spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient" in r.stdout and "Leaf" in r.stdout
    r = lab.lab("istioctl", "zc", "services", "--node", node, "-n", "ambient-apps")
    assert any(line.split()[1] == "httpbin-ambient" and line.split()[-1] == "1/1" for line in r.stdout.splitlines()[1:])

    zt = ztunnel_on(lab, node)
    r = lab.exec(zt["metadata"]["name"], "istio-system", ["curl", "-s", "http://127.0.0.1:15020/metrics"])
    assert r.returncode == 0
    opened = [line for line in r.stdout.splitlines() if line.startswith("istio_tcp_connections_opened_total{")]
    assert any(
        'reporter="destination"' in line
        and 'destination_workload="httpbin-ambient"' in line
        and 'source_principal="spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"' in line
        and 'connection_security_policy="mutual_tls"' in line
        for line in opened
    ), opened
    logs = lab.lab("logs", zt["metadata"]["name"], "-n", "istio-system").stdout
    inbound = [
        line
        for line in logs.splitlines()
        if "access connection complete" in line and 'direction="inbound"' in line and "sa/sleep-ambient" in line
    ]
    assert inbound and "bytes_sent=" in inbound[-1] and 'dst.workload="httpbin-ambient-' in inbound[-1]
