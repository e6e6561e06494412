"""The scenario framework's pure parts: verdict helpers, the load adapter's normalisation, the
runner's always-restore contract (with a fake lab), the table, the plot and the CLI verb."""

from __future__ import annotations

import json
import os

import pytest

import scenarios
from lab.cli import build_parser, main
from lab.client import LabError
from lab.load.stats import LoadReport, Outcome, summarize
from scenarios import framework as fw
from scenarios import traffic
from scenarios.headless import log_fields
from scenarios.hops import legs, ordered
from scenarios.policy_mistake import _excerpt, allow_ip, describe_lines
from scenarios.waypoint_down import echo_peer


def tl(*rows):
    """A merged timeline from (t, requests, ok) triples."""
    return [{"t": t, "requests": r, "ok": ok, "errors": r - ok, "rate": ok / r if r else None} for t, r, ok in rows]


# ---- verdict helpers ------------------------------------------------------------------------------


def test_pct():
    assert fw.pct(1.0) == "100%"
    assert fw.pct(0.0) == "0%"
    assert fw.pct(0.995) == "99.5%"
    assert fw.pct(None) == "n/a"


def test_merge_timelines_puts_reports_on_the_run_axis_and_sums_a_group():
    t0 = 1000.0
    a = {"started": 1000.4, "timeline": [{"t": 0, "requests": 10, "ok": 10}, {"t": 1, "requests": 10, "ok": 5}]}
    b = {"started": 1001.45, "timeline": [{"second": 0, "requests": 4, "ok": 0}]}  # lab.load's key
    merged = fw.merge_timelines([a, b], t0)
    assert [m["t"] for m in merged] == [0.4, 1.4]
    assert merged[1]["requests"] == 14 and merged[1]["ok"] == 5
    assert merged[1]["rate"] == pytest.approx(5 / 14)
    assert fw.merge_timelines([], t0) == []


def test_window_rate_counts_whole_seconds_inside_the_window_only():
    timeline = tl((0.3, 10, 10), (1.3, 10, 0), (2.3, 10, 0), (3.3, 10, 8), (4.3, 10, 10))
    assert fw.window_rate(timeline, 1.0, 3.5) == (0.0, 20)  # 1.3-2.3 and 2.3-3.3
    assert fw.window_rate(timeline, 1.0, 2.0) == (None, 0)
    rate, n = fw.overlap_rate(timeline, 1.0, 3.5)
    assert n == 40 and rate == pytest.approx(18 / 40)


def test_recovery_time_is_the_first_all_ok_second_after_the_last_failing_one():
    timeline = tl((0.4, 10, 10), (1.4, 10, 0), (2.4, 10, 3), (3.4, 10, 10), (4.4, 10, 10))
    assert fw.recovery_time(timeline, 2.0) == pytest.approx(1.4)
    assert fw.recovery_time(tl((0.4, 10, 10), (1.4, 10, 10)), 0.5) == 0.0
    assert fw.recovery_time(tl((0.4, 10, 10), (1.4, 10, 0)), 0.5) is None
    # a blip after an all-ok second still counts: recovery is after the LAST failing second
    assert fw.recovery_time(tl((1.0, 10, 0), (2.0, 10, 10), (3.0, 10, 9), (4.0, 10, 10)), 1.0) == 3.0


def pod(name, uid, restarts=0, deleting=False):
    md = {"name": name, "uid": uid}
    if deleting:
        md["deletionTimestamp"] = "x"
    return {"metadata": md, "status": {"containerStatuses": [{"restartCount": restarts}]}}


def test_untouched_compares_uids_and_restarts():
    before = fw.pod_state([pod("a", "1"), pod("b", "2")])
    assert fw.untouched(before, fw.pod_state([pod("a", "1"), pod("b", "2")])) == (True, "2 pods, same uids, 0 restarts")
    ok, how = fw.untouched(before, fw.pod_state([pod("a", "1", restarts=1), pod("b", "2")]))
    assert not ok and "1 restarts" in how
    ok, how = fw.untouched(before, fw.pod_state([pod("a", "1"), pod("b2", "3"), pod("b", "2", deleting=True)]))
    assert not ok and "1 gone, 1 new" in how


def test_proxies_crossed_and_hop_arithmetic():
    logs = {"waypoint": "GET /hops-abc 200", "sidecar": "nothing", "ztunnel@w1": "x /hops-abc"}
    assert fw.proxies_crossed(logs, "/hops-abc") == ["waypoint", "ztunnel@w1"]
    assert legs(0) == 1 and legs(2) == 3 and legs(3) == 4
    assert ordered({"a": 1, "b": 2, "c": 3}, ["a", "b", "c"])
    assert not ordered({"a": 1, "b": 1, "c": 3}, ["a", "b", "c"])


def test_row_verdict_table_and_result_json():
    r = fw.Row(
        "a claim about ztunnel that is long enough to wrap inside its column of the table",
        "0% (20)",
        True,
        "0% on worker3",
        "the article",
    )
    assert r.verdict == "agrees (0% on worker3)"
    assert fw.Row("c", "o", False).verdict == "differs"
    text = fw.table([r], width=90)
    assert text.splitlines()[0].split() == ["CLAIM", "OBSERVED", "VERDICT"]
    assert len(text.splitlines()) > 2 and all(len(line) <= 96 for line in text.splitlines())
    res = fw.Result("x", "summary", rows=[r], timelines={"g": tl((0.0, 1, 1))})
    d = json.loads(res.to_json())
    assert d["rows"][0]["verdict"] == "agrees (0% on worker3)" and d["agrees"] is True
    assert res.row("a claim").figure == "0% on worker3"
    res.error = "boom"
    assert not res.agrees


# ---- the load adapter -----------------------------------------------------------------------------


def test_normalize_reads_lab_load_reports():
    rep = summarize(
        [Outcome(0.1, 2.0, 200), Outcome(0.5, None, "refused"), Outcome(1.2, 3.0, 200)],
        url="http://echo.x/",
        qps=2,
        duration=2,
        connections=1,
        timeout=2,
        elapsed=1.3,
    )
    for raw in (rep, rep.to_json(), rep.to_dict()):
        out = traffic.normalize(raw, 123.0)
        assert out["succeeded"] == 2 and out["requests"] == 3 and out["errors"] == {"refused": 1}
        assert out["timeline"][0] == {"t": 0, "requests": 2, "ok": 1, "errors": 1, "p50_ms": 2.0}
        assert out["started"] == 123.0 and set(out["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert isinstance(LoadReport.from_json(rep.to_json()), LoadReport)


def test_first_request_time():
    assert traffic.first_request_time(100.0, 110.3, 10.0) == pytest.approx(100.3)
    assert traffic.first_request_time(100.0, 105.0, 10.0) == 100.0  # never before the call
    assert traffic.first_request_time(100.0, None, None) == 100.0 + traffic.STARTUP_GUESS


# ---- scenario helpers -----------------------------------------------------------------------------


def test_echo_peer_and_log_fields():
    assert echo_peer("ServiceVersion=v1\nIP=10.244.3.4\nHost=x") == "10.244.3.4"
    assert echo_peer("nothing") is None
    line = (
        '2026-01-01T00:00:00Z info access connection complete src.addr=10.0.0.1:5 '
        'src.identity="spiffe://cluster.local/ns/a/sa/b" direction="inbound" bytes_sent=3'
    )
    f = log_fields(line)
    assert f["src.identity"] == "spiffe://cluster.local/ns/a/sa/b" and f["bytes_sent"] == "3"
    assert f["direction"] == "inbound" and f["src.addr"] == "10.0.0.1:5"


def test_policy_mistake_helpers():
    sel = json.loads(allow_ip("ns1", "client"))
    assert sel["spec"]["selector"] == {"matchLabels": {"app": "echo"}} and "targetRefs" not in sel["spec"]
    tr = json.loads(allow_ip("ns1", "client", target_service="echo"))
    assert tr["spec"]["targetRefs"] == [{"kind": "Service", "group": "", "name": "echo"}]
    assert "selector" not in tr["spec"]
    text = (
        "Pod: p.ns1\n--------------------\nAuthorizationPolicy ns1/allow-ip-only (ALLOW, selector app=echo)\n"
        "   Enforcement: destination ztunnel (L4)\n   Warning: ztunnel does not support HTTP attributes\n"
        "--------------------\nEffective PeerAuthentication: x\n"
    )
    assert describe_lines(text, "ns1/allow-ip-only") == [
        "AuthorizationPolicy ns1/allow-ip-only (ALLOW, selector app=echo)",
        "Enforcement: destination ztunnel (L4)",
        "Warning: ztunnel does not support HTTP attributes",
    ]
    line = 'x error="connection closed due to policy rejection: allow policies exist, but none allowed" policy="a/b"'
    assert _excerpt(line) == (
        'error="connection closed due to policy rejection: allow policies exist, but none allowed" policy="a/b"'
    )


# ---- the registry and the runner ------------------------------------------------------------------


def test_registry():
    assert scenarios.names()[:6] == [
        "ztunnel-down",
        "waypoint-down",
        "istiod-down",
        "policy-mistake",
        "headless",
        "hops",
    ]
    assert all(s.summary and s.claims for s in scenarios.SCENARIOS)
    with pytest.raises(KeyError, match="known scenarios: ztunnel-down"):
        scenarios.get("nope")


class FakeLab:
    """Just enough of LabClient for the runner: namespaces, a ready mesh, calls recorded."""

    name = "fake"

    def __init__(self, leftover=()):
        self.namespaces = set(leftover)
        self.calls: list[tuple] = []

    def apply(self, text, source="-"):
        obj = json.loads(text)
        if obj["kind"] == "Namespace":
            self.namespaces.add(obj["metadata"]["name"])
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        return [obj]

    def call(self, op, **kw):
        self.calls.append((op, kw.get("kind"), kw.get("name")))
        if op == "get" and kw.get("kind") == "Pod":
            return {
                "items": [
                    {
                        "metadata": {"name": n, "labels": {"app": a}},
                        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                    }
                    for n, a in (("istiod-1", "istiod"), ("ztunnel-1", "ztunnel"))
                ]
                + [
                    {
                        "metadata": {"name": "cni-1", "labels": {"k8s-app": "istio-cni-node"}},
                        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
                    }
                ]
            }
        if op == "get" and kw.get("kind") == "Namespace":
            if kw.get("name"):
                if kw["name"] in self.namespaces:
                    return {"metadata": {"name": kw["name"]}}
                raise LabError("not found")
            return {"items": [{"metadata": {"name": n}} for n in sorted(self.namespaces)]}
        if op == "delete" and kw.get("kind") == "Namespace":
            self.namespaces.discard(kw["name"])
            return []
        return {}


class Breaks(fw.Scenario):
    name = "breaks"
    summary = "test"
    claims = [("c", "s")]

    def __init__(self, exc):
        self.exc = exc
        self.undone = []

    def run(self, ctx):
        ctx.namespace("a")
        ctx.undo("first", lambda: self.undone.append("first"))
        ctx.undo("second", lambda: self.undone.append("second"))
        ctx.verdict(("c", ""), "o", True)
        if self.exc:
            raise self.exc


@pytest.mark.parametrize("exc", [None, RuntimeError("boom"), fw.ScenarioError("no"), KeyboardInterrupt()])
def test_runner_always_restores(exc):
    lab = FakeLab(leftover={"sc-breaks-old", "other"})
    sc = Breaks(exc)
    if isinstance(exc, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            fw.run_scenario(lab, sc)
    else:
        res = fw.run_scenario(lab, sc)
        assert res.agrees is (exc is None)
        assert (res.error is None) is (exc is None)
    assert sc.undone == ["second", "first"]  # newest first
    assert lab.namespaces == {"other"}  # its own namespace and the stale one gone, nothing else
    assert ("apply", "Namespace", "sc-breaks-a") in lab.calls


def test_runner_refuses_without_a_mesh():
    class NoMesh(FakeLab):
        def call(self, op, **kw):
            if op == "get" and kw.get("kind") == "Pod":
                return {"items": []}
            return super().call(op, **kw)

    sc = Breaks(None)
    res = fw.run_scenario(NoMesh(), sc)
    assert "mesh is not ready" in res.error and not res.rows and sc.undone == []


# ---- plot and CLI ---------------------------------------------------------------------------------


def test_plot_timeline_and_bars(tmp_path):
    from scenarios.plot import plot

    res = fw.Result(
        "x",
        "s",
        timelines={"a": tl((0.2, 10, 10), (1.2, 10, 0), (2.2, 10, 10))},
        events=[{"t": 1.0, "label": "break"}, {"t": 2.0, "label": "restore"}],
    )
    p = plot(res, str(tmp_path / "t.png"))
    with open(p, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    res = fw.Result("y", "s", bars={"p50 latency (ms)": {"direct": 0.3, "L4": 1.4}})
    assert os.path.getsize(plot(res, str(tmp_path / "b.png"))) > 1000


def test_cli_scenario_list_and_unknown(capsys):
    assert main(["scenario", "list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["NAME", "SUMMARY"] and "ztunnel-down" in out
    assert main(["--lab", "nolabhere", "scenario", "run", "nope"]) == 1
    err = capsys.readouterr().err
    assert 'unknown scenario "nope"' in err and "hops" in err
    args = build_parser().parse_args(["scenario", "run", "hops", "--plot", "x.png", "-o", "json"])
    assert (args.name, args.plot, args.output) == ("hops", "x.png", "json")
