"""The pure helpers of the later scenarios (noisy-neighbour, cert-expiry, overhead, the sidecar
races, upgrade), the ztunnel template edits, and the --all report page."""

from __future__ import annotations

import argparse
import json

import pytest

import scenarios
from scenarios import cert_expiry as ce
from scenarios import meshops, report
from scenarios import noisy_neighbour as nn
from scenarios import overhead as oh
from scenarios import sidecar_shutdown as sd
from scenarios import sidecar_startup as su
from scenarios import upgrade as up
from scenarios.framework import Result, Row


def test_registered_in_order():
    assert scenarios.names()[-6:] == [
        "noisy-neighbour",
        "cert-expiry",
        "overhead",
        "sidecar-startup-race",
        "sidecar-shutdown-race",
        "upgrade",
    ]
    for name in scenarios.names():
        s = scenarios.get(name)
        assert s.summary and s.claims


# noisy-neighbour -------------------------------------------------------------------------------


def test_starved_and_improved():
    assert nn.starved(4.0, 8.0) and nn.starved(4.0, 200.0)
    assert not nn.starved(4.0, 7.9)
    assert not nn.starved(0.0, 10.0)  # no baseline: no verdict
    assert nn.improved(200.0, 6.0) and not nn.improved(200.0, 190.0)
    assert nn.ratio(None, 1.0) is None and nn.ratio(2.0, 0) is None and nn.ratio(6.0, 2.0) == 3.0


def test_iperf_rate():
    doc = {"end": {"sum_sent": {"bits_per_second": 2e9}, "sum_received": {"bits_per_second": 1e9}}}
    assert nn.iperf_rate(json.dumps(doc)) == 1e9
    assert nn.iperf_rate(json.dumps({"end": {"sum_sent": {"bits_per_second": 5.0}}})) == 5.0
    assert nn.iperf_rate("not json") is None and nn.iperf_rate("") is None and nn.iperf_rate("{}") is None


def test_iperf_server_manifest():
    objs = [json.loads(t) for t in nn.iperf_server("ns1", "worker2").split("\n---\n")]
    dep, svc = objs
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == nn.IPERF_IMAGE and c["args"] == ["-s", "-p", "5201"]
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "worker2"}
    assert svc["spec"]["ports"][0]["port"] == 5201 and svc["spec"]["selector"] == {"app": "iperf"}


# the ztunnel template ---------------------------------------------------------------------------


def test_set_cpu_limit_and_back():
    c = {"name": "istio-proxy", "resources": {"requests": {"cpu": "200m", "memory": "64Mi"}}}
    meshops.set_cpu_limit(c, "100m")
    assert c["resources"] == {"limits": {"cpu": "100m"}, "requests": {"memory": "64Mi"}}
    meshops.set_cpu_limit(c, None)
    assert c["resources"] == {"requests": {"memory": "64Mi"}}
    bare = {"name": "x"}
    meshops.set_cpu_limit(bare, "2")
    assert bare["resources"] == {"limits": {"cpu": "2"}}
    meshops.set_cpu_limit(bare, None)
    assert "resources" not in bare


def test_set_env_replaces_and_removes():
    c = {"env": [{"name": "A", "value": "1"}, {"name": "SECRET_TTL_SECONDS", "value": "9"}]}
    meshops.set_env(c, "SECRET_TTL_SECONDS", "8")
    assert c["env"] == [{"name": "A", "value": "1"}, {"name": "SECRET_TTL_SECONDS", "value": "8"}]
    meshops.set_env(c, "SECRET_TTL_SECONDS", None)
    assert c["env"] == [{"name": "A", "value": "1"}]


def test_applyable_drops_server_fields():
    obj = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "status": {"numberReady": 4},
        "metadata": {
            "name": "ztunnel",
            "namespace": "istio-system",
            "uid": "u",
            "resourceVersion": "9",
            "generation": 3,
            "labels": {"app": "ztunnel"},
        },
        "spec": {"template": {"spec": {"containers": []}}},
    }
    a = meshops.applyable(obj)
    assert a == {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "spec": {"template": {"spec": {"containers": []}}},
        "metadata": {"name": "ztunnel", "namespace": "istio-system", "labels": {"app": "ztunnel"}},
    }
    a["spec"]["template"]["spec"]["containers"].append({})
    assert obj["spec"]["template"]["spec"]["containers"] == []  # a copy
    hook = {"apiVersion": "v1", "kind": "MutatingWebhookConfiguration", "metadata": {"name": "w"}, "webhooks": [1]}
    assert meshops.applyable(hook)["webhooks"] == [1]


def test_served_pods():
    dump = {
        "workloadState": [
            {"name": "a", "namespace": "n", "state": "Up"},
            {"name": "b", "namespace": "n", "state": "Pending"},
            {"uid": "x"},
            "junk",
        ]
    }
    assert meshops.served_pods(dump) == {("n", "a")}
    assert meshops.served_pods({}) == set()


# cert-expiry -------------------------------------------------------------------------------------


def test_expected_refresh_half_life_or_floor():
    # 24 h certificate backdated 2 min: renewal just under 12 h after issue.
    assert ce.expected_refresh(-120.0, 86400.0, 0.0) == pytest.approx(43140.0)
    # 8 s certificate backdated 2 min: the half-life is long past, the 1 s floor applies.
    assert ce.expected_refresh(-120.0, 8.0, 0.0) == 1.0
    assert ce.expected_refresh(0.0, 20.0, 0.0) == 10.0


def test_intervals_between_serials():
    s = [(0.0, "a"), (0.1, "a"), (1.0, "b"), (1.2, "b"), (2.1, "c"), (0.05, "a")]
    assert ce.intervals(s) == [1.0, 1.1]
    assert ce.intervals([(0.0, "a")]) == [] and ce.intervals([]) == []


def test_epoch():
    assert ce.epoch("1970-01-01T00:01:40Z") == 100.0


def _p(t, ok):
    return {"t": t, "ok": ok}


def test_fail_closed_window():
    probes = [
        _p(9.0, True),
        _p(9.4, True),
        _p(10.1, False),
        _p(10.5, False),
        _p(12.5, False),
        _p(15.0, True),
        _p(15.4, True),
    ]
    f = ce.fail_closed(probes, expiry=10.0, back=12.0)
    assert f["first_fail"] == 10.1 and f["last_ok_before"] == 9.4 and f["recovered_at"] == 15.0
    assert f["fail_after_expiry_s"] == pytest.approx(0.1)
    assert f["ok_until_expiry"] and f["all_failed_while_expired"]


def test_fail_closed_never_fails_or_fails_early():
    f = ce.fail_closed([_p(1, True), _p(2, True)], expiry=1.5, back=3)
    assert f["first_fail"] is None and f["recovered_at"] is None and not f["all_failed_while_expired"]
    f = ce.fail_closed([_p(1, False), _p(2, True), _p(3, True)], expiry=5, back=6)
    assert not f["ok_until_expiry"] and f["recovered_at"] == 2
    # a success in the middle of the failures is not a recovery
    f = ce.fail_closed([_p(1, False), _p(2, True), _p(3, False)], expiry=0.5, back=4)
    assert f["recovered_at"] is None and not f["all_failed_while_expired"]


# overhead ----------------------------------------------------------------------------------------


def _top_pod(mem_app, mem_proxy=None, cpu_app=0.0, cpu_proxy=0.0):
    cs = [{"name": "app", "memory": mem_app, "cpu": cpu_app}]
    if mem_proxy is not None:
        cs.append({"name": "istio-proxy", "memory": mem_proxy, "cpu": cpu_proxy})
    return {"memory": sum(c["memory"] for c in cs), "cpu": sum(c["cpu"] for c in cs), "containers": cs}


def test_summarize_splits_proxy_and_app():
    s = oh.summarize([_top_pod(100, 900, 0.0, 1.0), _top_pod(100, 1100, 0.0, 3.0)])
    assert s["pods"] == 2 and s["memory"] == 2200 and s["proxy_memory"] == 2000 and s["app_memory"] == 200
    assert s["proxy_memory_per_pod"] == 1000 and s["proxy_cpu"] == 4.0 and s["proxy_cpu_per_pod"] == 2.0
    a = oh.summarize([_top_pod(100), _top_pod(300)])
    assert a["proxy_memory"] == 0 and a["memory_per_pod"] == 200
    assert oh.summarize([])["memory_per_pod"] == 0.0


def test_share_and_mib():
    assert oh.share(100.0, 600.0, 10) == 50.0
    assert oh.share(600.0, 100.0, 10) == 0.0 and oh.share(1, 2, 0) == 0.0
    assert oh.mib(3 * 1024 * 1024) == 3.0


# sidecar races -----------------------------------------------------------------------------------


def test_startup_result_parsing():
    assert su.parse_result("status=200 exit=0\n") == (200, 0)
    assert su.parse_result("curl: (7) Failed to connect\nstatus=000 exit=7\n") == (0, 7)
    assert su.parse_result("") is None and su.parse_result(None) is None
    assert su.failures({"a": (200, 0), "b": (0, 7), "c": None, "d": (503, 0)}) == 3


def test_startup_app_command_and_hold_annotation():
    cmd = su.call_once("http://echo.s/")
    assert cmd[:2] == ["/bin/sh", "-c"] and "status=%{http_code}" in cmd[2] and "exec sleep" in cmd[2]
    dep = json.loads(su.app_deployment("ns", "http://echo.s/", 3, {"proxy.istio.io/config": su.HOLD}))
    assert dep["spec"]["replicas"] == 3
    assert json.loads(dep["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"]) == {
        "holdApplicationUntilProxyStarts": True
    }


def test_shutdown_server_and_failures():
    dep = sd.server("ns", "first", "0s", "echo")
    tpl = dep["spec"]["template"]
    assert json.loads(tpl["metadata"]["annotations"]["proxy.istio.io/config"]) == {"terminationDrainDuration": "0s"}
    assert tpl["metadata"]["labels"] == {"app": "first", "svc": "echo"}
    assert tpl["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(sd.APP_GRACE)]
    rep = {
        "timeline": [
            {"t": 0, "requests": 40, "ok": 40},
            {"t": 1, "requests": 40, "ok": 36},
            {"t": 2, "requests": 40, "ok": 38},
        ]
    }
    assert sd.failed_after(rep, 1.5) == 6 and sd.failed_after(rep, 0.0) == 6 and sd.failed_after(rep, 3.0) == 0


# upgrade -----------------------------------------------------------------------------------------

PS = """NAME                 CLUSTER      CDS       LDS       EDS       RDS       ECDS      ISTIOD    VERSION   WDS
echo-1.ns            Kubernetes   SYNCED    SYNCED    SYNCED    SYNCED    IGNORED   istiod-x  1.24.0    -
ztunnel-a.istio-system Kubernetes IGNORED   IGNORED   IGNORED   IGNORED   IGNORED   istiod-x  1.25.0    SYNCED

Version skew: 1 of 2 proxies run 1.24.0, not the version of their istiod (istiod-x runs 1.25.0): echo-1.ns."""


def test_proxy_versions_and_skew():
    assert up.proxy_versions(PS) == {"echo-1.ns": "1.24.0", "ztunnel-a.istio-system": "1.25.0"}
    assert up.skew_note(PS).startswith("Version skew: 1 of 2")
    assert up.proxy_versions("") == {} and up.skew_note("NAME VERSION\n") == ""


def test_image_tags():
    pods = [
        {
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "echo", "image": "ambient-lab/echo"},
                    {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0"},
                ]
            },
        }
    ]
    assert up.image_tags(pods, "istio-proxy") == {"p": "1.24.0"}
    assert up.image_tags(pods) == {"p": ""}


# the report --------------------------------------------------------------------------------------


def test_report_page():
    ok = Result(
        "hops",
        "four paths",
        rows=[Row("a | claim", "seen\nthere", True, "2 proxies", "the article")],
        notes=["a note"],
        wall_s=12.34,
    )
    bad = Result("cert-expiry", "certs", rows=[Row("c", "o", False, "x")], wall_s=3.0)
    err = Result("overhead", "o", error="the mesh is not ready", wall_s=0.5)
    page = report.render(
        [ok, bad, err],
        {"hops": "hops.png"},
        {"version": "git abc", "cores": 2, "lab": "l1", "started": "now", "total_s": 15.84},
    )
    assert "- lab version: git abc" in page and "- machine: 2 cores" in page
    assert "| [hops](#hops) | 1 agree | 12.3 |" in page
    assert "| [cert-expiry](#cert-expiry) | 0 agree, 1 differs | 3.0 |" in page
    assert "error: the mesh is not ready" in page and "| **total** | | **15.8** |" in page
    assert "| a \\| claim | seen there | agrees (2 proxies) | the article |" in page
    assert "![hops](hops.png)" in page and "> a note" in page


def test_report_verdicts_and_version():
    assert report.verdicts(Result("x", "", interrupted=True)) == "interrupted"
    assert (
        report.verdicts(Result("x", "", rows=[Row("a", "b", True), Row("c", "d", False), Row("e", "f", False)]))
        == "1 agree, 2 differ"
    )
    assert report.lab_version()  # git describe or the pyproject version, never empty


def test_run_all_writes_the_page(tmp_path, monkeypatch):
    from scenarios import framework

    class Fake(framework.Scenario):
        name = "fake"
        summary = "does nothing"
        claims = [("c", "s")]

        def run(self, ctx):
            ctx.row("c", "o", True, "f", "s")

    monkeypatch.setattr(
        report,
        "run_scenario",
        lambda client, sc, log=None: Result(sc.name, sc.summary, rows=[Row("c", "o", True, "f", "s")], wall_s=0.1),
    )
    results, path = report.run_all(object(), str(tmp_path / "out"), scenarios=[Fake()])
    assert [r.scenario for r in results] == ["fake"]
    text = open(path).read()
    assert "## fake" in text and "| c | o | agrees (f) | s |" in text


def test_cli_flags():
    from lab.cli.common import CliError
    from scenarios.cli import add_run_arguments, cmd_scenario

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    a = p.parse_args(["--all", "--report", "/tmp/x"])
    assert a.all and a.report == "/tmp/x" and a.name is None
    a = p.parse_args(["hops", "--plot", "x.png"])
    assert a.name == "hops" and not a.all
    for argv in (["--all"], ["--all", "hops", "--report", "d"], ["--report", "d"], []):
        args = p.parse_args(argv)
        args.scenario_verb = "run"
        with pytest.raises(CliError):
            cmd_scenario(args, None)
