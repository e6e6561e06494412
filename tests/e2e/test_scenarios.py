"""Each scenario on the session's lab, through the Python API; the MEASURED figures are checked,
and every scenario must leave the lab as it found it (no `sc-` namespace, the mesh all ready)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from lab.testing import REPO, eventually
from scenarios.framework import leftover_namespaces, mesh_ready
from tests.e2e.conftest import run_scenario


def test_ztunnel_down(mesh):
    r = run_scenario(mesh, "ztunnel-down")
    f = r.figures
    victim = f["victim_node"]
    assert victim != f["server_node"]
    during = f["during_outage"]
    assert during[victim]["requests"] >= 10 and during[victim]["success_rate"] <= 0.05
    for node, d in during.items():
        if node != victim:
            assert d["requests"] >= 10 and d["success_rate"] >= 0.99, (node, d)
    assert f["recovery_s"] is not None  # it recovered (how soon: `make bench`)
    assert f["pods_before"] == f["pods_after"]
    assert all(p["restarts"] == 0 for p in f["pods_after"].values())
    assert "refused" in f["errors"][victim]
    assert all(d["success_rate"] is not None and d["success_rate"] <= 0.05 for d in f["during_server_outage"].values())
    assert r.agrees


def test_waypoint_down(mesh):
    r = run_scenario(mesh, "waypoint-down")
    f = r.figures
    assert f["served_during_outage"]["requests"] >= 10 and f["served_during_outage"]["success_rate"] <= 0.05
    assert f["plain_during_outage"]["requests"] >= 10 and f["plain_during_outage"]["success_rate"] >= 0.99
    assert f["plain_success_rate"] >= 0.99
    assert f["two_replicas_requests"] >= 50 and f["two_replicas_success_rate"] >= 0.99, f["two_replicas_errors"]


def test_istiod_down(mesh):
    r = run_scenario(mesh, "istiod-down")
    f = r.figures
    assert f["existing_during_outage"]["requests"] >= 20 and f["existing_during_outage"]["success_rate"] >= 0.99
    assert all(code != 0 for code in f["late_pod"]["curl_exit_while_down"])
    assert f["late_pod"]["ok_after_istiod_ready_s"] >= 0
    assert f["policy"]["probe_status_while_down"] == [200, 200]
    assert f["policy"]["in_force_after_istiod_ready_s"] >= 0
    assert r.agrees


def test_policy_mistake(mesh):
    r = run_scenario(mesh, "policy-mistake")
    f = r.figures
    assert f["mistake_curl_exit"]["/ip"] in (7, 52, 56) and f["mistake_curl_exit"]["/headers"] in (7, 52, 56)
    assert (
        f["status"]["type"] == "ZtunnelAccepted"
        and "ztunnel does not support HTTP attributes" in f["status"]["message"]
    )
    assert any("Warning: ztunnel does not support HTTP attributes" in ln for ln in f["describe"])
    assert "policy rejection" in f["ztunnel_log"] and "allow-ip-only" in f["ztunnel_log"]
    assert f["fixed"]["/ip"] == 200 and f["fixed"]["/headers"] == 403
    assert r.agrees


def test_headless(mesh):
    r = run_scenario(mesh, "headless")
    f = r.figures
    assert f["cluster_ip"] in ("None", None)
    assert f["dns_answer"] == f["pod_ips"] and len(f["pod_ips"]) == 2
    assert f["inbound_log"]["src.identity"].endswith("/sa/friend")
    assert f["policy"]["friend"] == [200] * 4 and f["policy"]["stranger_curl_exit"] in (7, 52, 56)
    assert r.agrees


def test_hops(mesh):
    r = run_scenario(mesh, "hops")
    f = r.figures
    assert f["proxy_count"] == {"direct": 0, "ambient L4": 2, "sidecar": 2, "ambient + waypoint": 3}, f["proxies"]
    lat = f["latency_ms"]
    assert all(v["success_rate"] >= 0.99 for v in lat.values())  # which path is how much slower: `make bench`
    assert set(r.bars) == {"p50 latency (ms)", "p99 latency (ms)"}


def test_ctrl_c_puts_the_lab_back(mesh, tmp_path):
    """SIGINT while istiod is scaled to 0: the CLI exits 130 and istiod, the namespaces, all come back."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "--lab", mesh.name, "scenario", "run", "istiod-down"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def istiod_gone():
            return not mesh.pods("istio-system", "app=istiod")

        eventually(istiod_gone, timeout=30, interval=0.05, what="istiod scaled to 0 by the scenario")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "put back" in err
    assert leftover_namespaces(mesh.client) == []
    assert mesh.get("Deployment", "istiod", "istio-system")["spec"]["replicas"] == 1
    assert mesh_ready(mesh.client) == []


def test_cli_table_json_and_plot(mesh, tmp_path):
    png = tmp_path / "headless.png"
    r = mesh.lab("scenario", "run", "headless", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[2].split() == ["CLAIM", "OBSERVED", "VERDICT"]
    assert os.path.getsize(png) > 1000
    r = mesh.lab("scenario", "run", "policy-mistake", "-o", "json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["scenario"] == "policy-mistake" and len(d["rows"]) == 4 and d["figures"]["fixed"]["/ip"] == 200
