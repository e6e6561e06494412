"""istiod's waypoint controller on a real lab (docs/waypoints.md): the article's Gateway gets its
ServiceAccount, Deployment and Service, is Programmed, puts its reference on the workloads and
services it serves (as ztunnel's config_dump shows), restarts no app pod, leaves a scaled
Deployment scaled, and takes its objects with it when it is deleted."""

from __future__ import annotations

import json
import os
import time

import pytest

from lab.client import LabError
from lab.testing import ARTICLE, eventually

NS = "ambient-apps"
WAYPOINT = "httpbin-ambient-waypoint"
DESTINATION = f"{NS}/{WAYPOINT}.{NS}.svc.cluster.local"
OWNED = ("ServiceAccount", "Deployment", "Service")


@pytest.fixture(scope="module")
def apps(lab):
    lab.install_ambient()
    lab.create_namespace(NS, {"istio.io/dataplane-mode": "ambient"})
    for f in ("httpbin-ambient.yaml", "sleep-ambient.yaml"):
        lab.apply(os.path.join(ARTICLE, f))
    lab.wait_ready(NS, "app=sleep-ambient")
    httpbin = lab.wait_ready(NS, "app=httpbin-ambient")[0]
    eventually(lambda: lab.all_enrolled(NS, "app in (sleep-ambient,httpbin-ambient)"), timeout=30)
    yield lab, httpbin
    lab.delete_namespace(NS)


def _get(lab, kind, name, ns=NS):
    try:
        return lab.get(kind, name, ns)
    except LabError:
        return None


def _app_pods(lab):
    return {
        p["metadata"]["uid"]: p["status"]["containerStatuses"][0]["restartCount"]
        for p in lab.pods(NS, "app in (sleep-ambient,httpbin-ambient)")
    }


def _config_dump(lab, node):
    r = lab.lab("istioctl", "ztunnel-config", "workloads", "--node", node, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_waypoint_gateway_is_deployed_attached_scaled_and_collected(apps):
    lab, httpbin = apps
    before = _app_pods(lab)
    r = lab.lab("apply", "-f", os.path.join(ARTICLE, "waypoint.yaml"))
    assert r.returncode == 0, r.stderr
    gateway = lab.get("Gateway", WAYPOINT, NS)

    # istiod deploys the three objects, each controlled by the Gateway.
    objects = eventually(
        lambda: all(_get(lab, k, WAYPOINT) for k in OWNED) and {k: _get(lab, k, WAYPOINT) for k in OWNED},
        timeout=30,
        what="waypoint objects",
    )
    for kind, obj in objects.items():
        [ref] = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "Gateway",
            WAYPOINT,
            gateway["metadata"]["uid"],
            True,
        ), kind
        assert ref["apiVersion"] == "gateway.networking.k8s.io/v1beta1"  # as the article's Gateway
    deploy = objects["Deployment"]
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "docker.io/istio/proxyv2:1.24.0"
    ip = objects["Service"]["spec"]["clusterIP"]

    # The Gateway's status: Programmed, at the Service's address.
    def programmed():
        status = lab.get("Gateway", WAYPOINT, NS).get("status") or {}
        cond = next((c for c in status.get("conditions", []) if c["type"] == "Programmed"), None)
        return cond and cond["status"] == "True" and status

    status = eventually(programmed, timeout=30, what="Gateway Programmed")
    assert {"type": "IPAddress", "value": ip} in status["addresses"]
    assert next(c for c in status["conditions"] if c["type"] == "Accepted")["status"] == "True"
    assert (
        "assigned to service(s) httpbin-ambient-waypoint.ambient-apps.svc.cluster.local:15008"
        in next(c for c in status["conditions"] if c["type"] == "Programmed")["message"]
    )

    r = lab.lab("get", "gateway", WAYPOINT, "-n", NS)
    assert r.returncode == 0, r.stderr

    # ztunnel is told: httpbin's workload and service (and sleep's) go through the waypoint.
    expected = {"destination": DESTINATION, "address": ip, "hboneMtlsPort": 15008}
    node = httpbin["spec"]["nodeName"]

    def attached():
        dump = _config_dump(lab, node)
        wl = next(w for w in dump["workloads"] if w["name"] == httpbin["metadata"]["name"])
        svc = next(s for s in dump["services"] if s["namespace"] == NS and s["name"] == "httpbin-ambient")
        return wl.get("waypoint") == expected and svc.get("waypoint") == expected and dump

    dump = eventually(attached, timeout=30, what="waypoint on httpbin-ambient in ztunnel's config")
    own = [w for w in dump["workloads"] if w["namespace"] == NS and w["name"].startswith(WAYPOINT + "-")]
    assert all(w.get("waypoint") is None for w in own)  # the waypoint's own pods go direct
    r = lab.lab("istioctl", "zc", "services", "--node", node, "-n", NS)
    row = next(line.split() for line in r.stdout.splitlines()[1:] if line.split()[1] == "httpbin-ambient")
    assert WAYPOINT in row[3]

    # No app pod was restarted or replaced.
    assert _app_pods(lab) == before

    # The waypoint Deployment becomes 1/1 ready (the proxy image, run as istiod deployed it).
    lab.wait_ready(NS, f"gateway.networking.k8s.io/gateway-name={WAYPOINT}", timeout=60)
    eventually(
        lambda: lab.get("Deployment", WAYPOINT, NS)["status"].get("readyReplicas") == 1,
        timeout=30,
        what="waypoint Deployment 1/1",
    )

    # `lab scale` sticks: istiod never puts replicas back.
    r = lab.lab("scale", f"deploy/{WAYPOINT}", "-n", NS, "--replicas", "2")
    assert r.returncode == 0, r.stderr
    eventually(
        lambda: (
            len(
                [
                    p
                    for p in lab.pods(NS, f"gateway.networking.k8s.io/gateway-name={WAYPOINT}")
                    if not p["metadata"].get("deletionTimestamp")
                ]
            )
            == 2
        ),
        timeout=30,
        what="2 waypoint pods",
    )
    time.sleep(1.0)  # istiod has seen the change and reconciled meanwhile
    assert lab.get("Deployment", WAYPOINT, NS)["spec"]["replicas"] == 2

    # Deleting the Gateway takes its objects (and pods) with it, and ztunnel forgets the waypoint.
    r = lab.lab("delete", "-f", os.path.join(ARTICLE, "waypoint.yaml"))
    assert r.returncode == 0, r.stderr
    eventually(lambda: not any(_get(lab, k, WAYPOINT) for k in OWNED), timeout=30, what="waypoint objects gone")
    eventually(
        lambda: not lab.pods(NS, f"gateway.networking.k8s.io/gateway-name={WAYPOINT}"),
        timeout=60,
        what="waypoint pods gone",
    )

    def detached():
        dump = _config_dump(lab, node)
        wl = next(w for w in dump["workloads"] if w["name"] == httpbin["metadata"]["name"])
        return wl.get("waypoint") is None

    eventually(detached, timeout=30, what="waypoint gone from ztunnel's config")
    assert _app_pods(lab) == before
