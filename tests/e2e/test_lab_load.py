"""`lab load` and lab.load in a real lab: load from a curl pod at the echo app, 503s counted, the
Python API with a run in the background, out-of-lab URLs refused, and the generator at full speed
against a direct (no mesh) echo."""

from __future__ import annotations

import json

import pytest

from lab import load as labload
from lab.load import LoadError
from tests.conftest import curl_client, echo_app
from tests.e2e.conftest import app_namespaces

NS = "load-tests"


@pytest.fixture(scope="module")
def apps(lab):
    """(namespace, client pod) with the echo app behind Service echo:8080, in a namespace outside the mesh."""
    apps = [*echo_app(NS, port=8080, node="worker1"), curl_client(NS, node="worker2")]
    with app_namespaces(lab, {NS: None}, apps, ready=((NS, "echo"), (NS, "client"))) as pods:
        yield NS, pods["client"]["metadata"]["name"]


def test_lab_load_counts_503s(lab, apps):
    ns, client = apps
    r = lab.lab(
        "load",
        "--from",
        client,
        "-n",
        ns,
        "http://echo:8080/?codes=503:1,200:9",
        "--qps",
        "50",
        "--duration",
        "2",
        "-o",
        "json",
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["requests"] == 100
    assert 0.75 <= report["success_rate"] <= 0.99, report
    assert report["errors"] == {"http 503": 100 - report["successes"]}
    assert report["codes"]["200"] == report["successes"]
    assert report["latency_ms"]["p50"] > 0
    assert (
        report["latency_ms"]["p50"]
        <= report["latency_ms"]["p90"]
        <= report["latency_ms"]["p99"]
        <= report["latency_ms"]["max"]
    )
    assert [s["second"] for s in report["timeline"]] == [0, 1]
    assert sum(s["requests"] for s in report["timeline"]) == 100
    assert report["address"].startswith("10.96.")  # the Service's ClusterIP, resolved in the pod


def test_lab_load_table(lab, apps):
    ns, client = apps
    r = lab.lab(
        "load",
        "--from",
        "deploy/client",
        "-n",
        ns,
        "http://echo.load-tests.svc.cluster.local:8080/",
        "--qps",
        "20",
        "--duration",
        "1s",
        "-H",
        "X-Load: yes",
        "--connections",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "success    20/20 (100.0%)" in r.stdout
    assert "SECOND   REQUESTS   OK   ERRORS   P50(ms)" in r.stdout
    logs = lab.client.call("logs", namespace=ns, pod=lab.pods(ns, "app=echo")[0]["metadata"]["name"])
    assert "GET / 200" in logs


def test_python_api_runs_in_the_background(lab, apps):
    ns, client = apps
    echo_ip = lab.pods(ns, "app=echo")[0]["status"]["podIP"]
    with labload.start(
        lab.client, ns, client, f"http://{echo_ip}:8080/?codes=200:1,404:1", qps=40, duration=1.5
    ) as run:
        assert not run.done()  # the caller can break something now
        report = run.wait()
    assert report.requests == 60
    assert report.address == echo_ip
    assert set(report.errors) == {"http 404"}
    assert report.successes + report.errors["http 404"] == 60
    assert len(report.timeline) == 2
    again = labload.run(lab.client, ns, client, f"http://{echo_ip}:8081/", qps=10, duration=0.5)
    assert again.errors == {"refused": 5}


@pytest.mark.parametrize(
    "url, message",
    [
        (
            "http://8.8.8.8/",
            "error: 8.8.8.8 is outside the lab (allowed: 10.244.0.0/16, 10.96.0.0/16); load goes "
            "only to the lab's own addresses",
        ),
        ("http://example.com/", "error: cannot resolve 'example.com' in the client pod"),
        ("http://172.18.0.11:10250/", "error: 172.18.0.11 is outside the lab"),
    ],
)
def test_outside_the_lab_is_refused(lab, apps, url, message):
    ns, client = apps
    r = lab.lab("load", "--from", client, "-n", ns, url, "--qps", "10", "--duration", "1")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith(message), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_outside_the_lab_is_refused_before_the_pod_is_entered(lab, apps):
    ns, client = apps

    class Watching:
        calls: list[str] = []

        def call(self, op, **kw):
            self.calls.append(op)
            return lab.client.call(op, **kw)

    watching = Watching()
    with pytest.raises(LoadError, match="8.8.8.8 is outside the lab"):
        labload.start(watching, ns, client, "http://8.8.8.8/", qps=10, duration=1)
    assert "exec" not in watching.calls


def test_generator_at_full_speed_against_the_direct_echo(lab, apps):
    """qps 0: as fast as 8 connections go, every request answered (the rate: `make bench`)."""
    ns, client = apps
    echo_ip = lab.pods(ns, "app=echo")[0]["status"]["podIP"]
    report = labload.run(lab.client, ns, client, f"http://{echo_ip}:8080/", qps=0, duration=1, connections=8)
    assert report.errors == {}
    assert report.requests == report.successes > 0
