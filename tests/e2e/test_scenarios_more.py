"""The later scenarios on the session's lab: their MEASURED figures are checked, and each must leave
the lab as it found it (no `sc-` namespace, the mesh Ready, the ztunnel DaemonSet, istiod and the
injector as they were). Then `run --all --report DIR` once, through the CLI's handler."""

from __future__ import annotations

import argparse
import os

import scenarios
from scenarios import meshops
from scenarios.framework import leftover_namespaces, mesh_ready
from tests.e2e.conftest import run_scenario

MESH = (("DaemonSet", "ztunnel"), ("DaemonSet", "istio-cni-node"), ("Deployment", "istiod"))


def mesh_objects(lab) -> dict:
    out = {kind + "/" + name: meshops.applyable(lab.get(kind, name, "istio-system")) for kind, name in MESH}
    hook = lab.get("MutatingWebhookConfiguration", "istio-sidecar-injector", None)
    out["webhook"] = meshops.applyable(hook)
    return out


def run(lab, name: str):
    """run_scenario, and the mesh's objects as they were, the ztunnels all updated and ready."""
    before = mesh_objects(lab)
    result = run_scenario(lab, name)
    assert mesh_objects(lab) == before
    ds = lab.get("DaemonSet", "ztunnel", "istio-system")
    assert (
        ds["status"]["numberReady"] == ds["status"]["desiredNumberScheduled"] == ds["status"]["updatedNumberScheduled"]
    )
    assert lab.get("Deployment", "istiod", "istio-system")["spec"]["replicas"] == 1
    return result


def test_noisy_neighbour(mesh):
    """The three phases run and are measured; how much the bulk flow hurts and CPU helps (the
    scenario's verdict, latency against latency on a shared machine): `make bench`."""
    r = run(mesh, "noisy-neighbour")
    lat = r.figures["latency_ms"]
    alone, noisy, fed = (
        lat[p] for p in ("alone, ztunnel 100m", "beside bulk, ztunnel 100m", "beside bulk, ztunnel 2 CPU")
    )
    assert alone["requests"] >= 50 and alone["success_rate"] >= 0.99
    assert noisy["requests"] >= 50 and noisy["p99"] > 0
    assert fed["success_rate"] >= 0.99
    assert noisy["bulk_bps"] and fed["bulk_bps"]
    assert len(r.rows) == 2


def test_cert_expiry(mesh):
    r = run(mesh, "cert-expiry")
    f = r.figures
    rot = f["rotation"]
    assert len(rot["serials"]) >= 2 and len({s["serial"] for s in rot["serials"]}) == len(rot["serials"])
    assert abs(rot["median_interval_s"] - rot["expected_interval_s"]) <= 0.6
    assert rot["backdated_s"] >= 110 and 5 <= rot["lifetime_after_issue_s"] <= 9
    assert any("CERTIFICATE NAME" in ln for ln in f["certificates_table"])
    fc = f["fail_closed"]
    assert fc["ok_until_expiry"] and fc["all_failed_while_expired"]
    assert -0.5 <= fc["fail_after_expiry_s"] <= 3.0
    assert f["istiod_down_at"] < f["expiry_at"] < f["istiod_ready_at"]
    assert f["recovery_after_istiod_ready_s"] is not None  # it recovered (how soon: `make bench`)
    assert r.agrees


def test_overhead(mesh):
    r = run(mesh, "overhead")
    f = r.figures
    n = f["pods"]
    assert f["ambient"]["pods"] == n and f["sidecar"]["pods"] == n
    assert f["ambient"]["proxy_memory"] == 0
    per_pod = f["overhead_per_pod_mib"]
    assert per_pod["sidecar"] >= 5 and per_pod["ambient"] < 0.1 * per_pod["sidecar"]
    assert f["overhead_total_mib"]["sidecar (all proxies)"] > f["overhead_total_mib"]["ambient (ztunnel growth)"]
    assert r.agrees


def test_sidecar_startup_race(mesh):
    r = run(mesh, "sidecar-startup-race")
    f = r.figures
    k = f["replicas"]
    assert f["failed"]["sidecar"] >= 1
    assert all(v and v["curl_exit"] == 7 for v in f["results"]["sidecar"].values() if v and v["status"] != 200)
    assert f["failed"]["sidecar + hold"] == 0
    assert f["failed"]["ambient"] == 0, f["results"]["ambient"]
    assert f["ambient_calls_in_ztunnel_log"] == k


def test_sidecar_shutdown_race(mesh):
    r = run(mesh, "sidecar-shutdown-race")
    c = r.figures["cases"]
    assert c["drain 0s"]["requests"] >= 200 and c["drain 3s"]["requests"] >= 200
    assert c["drain 0s"]["failed"] >= 1
    assert c["drain 3s"]["failed"] == 0, c["drain 3s"]["errors"]


def test_upgrade(mesh):
    r = run(mesh, "upgrade")
    f = r.figures
    assert f["mesh_tags"] == {"istiod": ["1.25.0"], "ztunnel": ["1.25.0"], "istio-cni": ["1.25.0"]}
    assert f["ambient_pods_before"] == f["ambient_pods_after"]
    assert all(p["restarts"] == 0 for p in f["ambient_pods_after"].values())
    tags = f["sidecar_proxy_tag"]
    assert tags["before"] == "1.24.0" and list(tags["after_upgrade"].values()) == ["1.24.0"] and tags["same_pod"]
    assert tags["after_restart"] == "1.25.0"
    assert "1.24.0" in f["proxy_status_versions"]["after_upgrade"].values()
    assert f["proxy_status_skew"].startswith("Version skew")
    assert "1.25.0" in f["proxy_status_versions"]["after_restart"].values()
    assert r.agrees


def test_run_all_report(mesh, tmp_path):
    """Every scenario in order, one page with the total (how long it takes: `make bench`)."""
    from scenarios.cli import add_run_arguments, cmd_scenario

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    args = p.parse_args(["--all", "--report", str(tmp_path)])
    args.scenario_verb = "run"
    before = mesh_objects(mesh)
    code = cmd_scenario(args, mesh.client)
    page = (tmp_path / "report.md").read_text()
    print(page)
    assert code == 0
    assert "lab version:" in page and f"{os.cpu_count()} cores" in page
    for name in scenarios.names():
        assert f"## {name}" in page
    pngs = [n for n in os.listdir(tmp_path) if n.endswith(".png")]
    assert len(pngs) >= 8 and all(f"({n})" in page for n in pngs)
    assert float(page.split("| **total** | | **")[1].split("**")[0]) > 0
    assert leftover_namespaces(mesh.client) == [] and mesh_ready(mesh.client) == []
    assert mesh_objects(mesh) == before
