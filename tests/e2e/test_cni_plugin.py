"""The CNI plugin path (docs/mesh-internals.md, "CNI plugin"): a new pod of an ambient namespace is
captured before its first container starts, and with its node's ztunnel gone it is held in
ContainerCreating (FailedCreatePodSandBox "no ztunnel connection") until the ztunnel is back."""

from __future__ import annotations

import re
import threading
import time

import pytest

from lab.client import LabError
from lab.testing import eventually
from tests.conftest import bare_pod, curl_container, deployment, httpbin_container, service, service_account
from tests.e2e.conftest import AMBIENT, app_namespaces, ztunnel_log, ztunnel_on

NS = "cni-plugin"
IDENTITY = f"spiffe://cluster.local/ns/{NS}/sa/caller"

SERVER = [
    service_account("web", NS),
    service_account("caller", NS),
    service("web", NS, ("http", 8000, 80)),
    deployment("web", NS, httpbin_container(), replicas=1, sa="web"),
]


def caller(name: str, node: str | None = None) -> dict:
    """A pod whose only container calls the service the moment it starts, then idles."""
    script = (
        "curl -s -o /dev/null --max-time 10 -w 'status=%{http_code}\\n' http://web:8000/status/200; exec sleep 3650d"
    )
    return bare_pod(
        name,
        NS,
        curl_container("curl", ("sh", "-c", script)),
        labels={"app": "caller"},
        sa="caller",
        **({"nodeName": node} if node else {}),
    )


@pytest.fixture(scope="module")
def web(lab):
    with app_namespaces(lab, {NS: AMBIENT}, SERVER, ready=((NS, "web"),), mesh=True) as pods:
        yield pods["web"]


def inbound_lines(lab, node: str, src_ip: str) -> list[str]:
    """The access log lines of NODE's ztunnel for inbound connections from SRC_IP."""
    # The session's lab reuses pod IPs, so a line counts only with this test's identity as well.
    return [
        line
        for line in ztunnel_log(lab, node)
        if "access connection complete" in line
        and f"src.addr={src_ip}:" in line
        and 'direction="inbound"' in line
        and f'src.identity="{IDENTITY}"' in line
    ]


def curl_result(lab, name: str) -> str:
    return lab.lab("logs", name, "-n", NS).stdout.strip()


def add_timings(lab) -> list[float]:
    """How long the agents took to answer ADD for this test's pods (their own log lines)."""
    took = []
    for p in lab.pods("istio-system", "k8s-app=istio-cni-node"):
        logs = lab.lab("logs", p["metadata"]["name"], "-n", "istio-system").stdout
        took += [float(m.group(1)) for m in re.finditer(rf"CNI ADD of pod {NS}/\S+: ok \((\d+) ms\)", logs)]
    return took


def test_pods_that_call_out_at_start_are_always_captured(lab, web):
    names = [f"caller-{i}" for i in range(5)]
    for name in names:
        lab.apply(caller(name))
    pods = lab.wait_ready(NS, "app=caller", count=5, timeout=90)
    assert all(p["metadata"]["annotations"].get("ambient.istio.io/redirection") == "enabled" for p in pods)
    for p in pods:
        name = p["metadata"]["name"]
        assert eventually(lambda: curl_result(lab, name), timeout=20) == "status=200", name
        # The server's ztunnel took the connection over HBONE with the caller's own identity: the
        # caller's very first connection was captured by its node's ztunnel.
        lines = eventually(
            lambda: inbound_lines(lab, web["spec"]["nodeName"], p["status"]["podIP"]),
            timeout=10,
            what=f"{name}'s connection in the server ztunnel's log",
        )
        assert f'src.identity="{IDENTITY}"' in lines[0], lines[0]
        # Its container started once, and not before the pod was enrolled.
        assert p["status"]["containerStatuses"][0]["restartCount"] == 0
    timings = add_timings(lab)
    assert timings, "the agents logged their ADD answers"
    print(f"\nCNI ADD answered in {min(timings):.0f}-{max(timings):.0f} ms ({len(timings)} pods)")
    for name in names:
        lab.client.call("delete", kind="Pod", name=name, namespace=NS)
    eventually(lambda: not lab.pods(NS, "app=caller"), timeout=60, what="the callers gone")


def test_without_ztunnel_a_new_pod_waits_in_container_creating(lab, web):
    node = next(
        n["name"] for n in lab.status["nodes"] if n["role"] != "control-plane" and n["name"] != web["spec"]["nodeName"]
    )
    stop = threading.Event()
    known: set[str] = set()

    def hold_ztunnel_away():
        while not stop.is_set():
            for p in lab.pods("istio-system", "app=ztunnel"):
                if p["spec"].get("nodeName") == node and p["metadata"]["uid"] not in known:
                    known.add(p["metadata"]["uid"])
                    try:
                        lab.client.call("delete", kind="Pod", name=p["metadata"]["name"], namespace="istio-system")
                    except LabError:
                        pass
            time.sleep(0.02)

    holder = threading.Thread(target=hold_ztunnel_away, daemon=True)
    holder.start()
    try:
        eventually(
            lambda: (
                ztunnel_on(lab, node) is None
                or all(
                    p["metadata"]["uid"] in known
                    for p in lab.pods("istio-system", "app=ztunnel")
                    if p["spec"].get("nodeName") == node
                )
            ),
            timeout=20,
        )
        time.sleep(1.0)  # the agent has seen its ztunnel go
        lab.apply(caller("held", node))

        def refused():
            events = lab.get("Event", namespace=NS)["items"]
            return [
                e for e in events if e["involvedObject"]["name"] == "held" and e["reason"] == "FailedCreatePodSandBox"
            ]

        events = eventually(refused, timeout=20)
        assert "no ztunnel connection" in events[0]["message"] and events[0]["type"] == "Warning"
        time.sleep(3.0)  # several retries, and still nothing runs
        pod = lab.get("Pod", "held", NS)
        state = pod["status"]["containerStatuses"][0]
        assert state["state"] == {"waiting": {"reason": "ContainerCreating"}} and "pid" not in state
        row = lab.lab("get", "pod", "held", "-n", NS).stdout.splitlines()[1].split()
        assert row[2] == "ContainerCreating", row
        assert len(refused()) >= 2  # retried with backoff
        assert curl_result(lab, "held") == ""
    finally:
        stop.set()
        holder.join(5)
    lab.wait_ready("istio-system", "app=ztunnel", count=len(lab.status["nodes"]), timeout=60)
    pod = next(p for p in lab.wait_ready(NS, "app=caller", timeout=60) if p["metadata"]["name"] == "held")
    assert eventually(lambda: curl_result(lab, "held"), timeout=20) == "status=200"
    lines = eventually(lambda: inbound_lines(lab, web["spec"]["nodeName"], pod["status"]["podIP"]), timeout=10)
    assert f'src.identity="{IDENTITY}"' in lines[0], lines[0]
    lab.client.call("delete", kind="Pod", name="held", namespace=NS)
