"""The article's app manifests, applied verbatim in namespaces without mesh labels, driven through
the `lab` command exactly as the article's kubectl commands (issue 2 acceptance)."""

from __future__ import annotations

import json
import os

import pytest

from lab.testing import ARTICLE, eventually

APPS = [os.path.join(ARTICLE, f) for f in ("httpbin-legacy.yaml", "httpbin-ambient.yaml", "sleep-ambient.yaml")]


@pytest.fixture(scope="module")
def article(lab):
    for ns in ("legacy-apps", "ambient-apps"):
        r = lab.lab("create", "ns", ns)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"namespace/{ns} created"
    args = []
    for f in APPS:
        args += ["-f", f]
    r = lab.lab("apply", *args)
    assert r.returncode == 0, r.stderr
    assert "deployment.apps/httpbin-legacy created" in r.stdout
    assert "service/httpbin-ambient created" in r.stdout
    assert "serviceaccount/sleep-ambient created" in r.stdout
    r = lab.lab(
        "wait", "--for=condition=Ready", "pod", "-l", "app=sleep-ambient", "-n", "ambient-apps", "--timeout=60s"
    )
    assert r.returncode == 0, r.stderr
    lab.wait_ready("ambient-apps", "app=httpbin-ambient")
    lab.wait_ready("legacy-apps", "app=httpbin-legacy")
    yield lab
    for ns in ("legacy-apps", "ambient-apps"):
        lab.delete_namespace(ns)


def test_deployments_ready_like_kubectl(article):
    r = article.lab("get", "deploy", "-n", "ambient-apps")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
    assert rows["httpbin-ambient"] == ["1/1", "1", "1"]
    assert rows["sleep-ambient"] == ["1/1", "1", "1"]


def test_pods_table_and_wide(article):
    r = article.lab("get", "pods", "-n", "ambient-apps", "-o", "wide")
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and "IP" in header and "NODE" in header
    for line in r.stdout.splitlines()[1:]:
        cols = line.split()
        assert cols[1] == "1/1" and cols[2] == "Running" and cols[3] == "0"
        assert cols[5].startswith("10.244.")


@pytest.mark.parametrize("service", ["httpbin-ambient.ambient-apps", "httpbin-legacy.legacy-apps"])
def test_sleep_calls_both_services_across_nodes(article, service):
    r = article.lab(
        "get", "pod", "-n", "ambient-apps", "-l", "app=sleep-ambient", "-o", "jsonpath={.items[0].metadata.name}"
    )
    assert r.returncode == 0, r.stderr
    sleep_pod = r.stdout
    assert sleep_pod.startswith("sleep-ambient-")
    r = article.lab(
        "exec",
        sleep_pod,
        "-n",
        "ambient-apps",
        "-c",
        "sleep",
        "--",
        "curl",
        "-sS",
        "--max-time",
        "10",
        f"http://{service}:8000/headers",
    )
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["headers"]["Host"] == f"{service}:8000"
    assert body["headers"]["User-Agent"].startswith("curl/")
    # The client and the server run on different nodes.
    name, ns = service.split(".")
    client_node = article.get("Pod", sleep_pod, "ambient-apps")["spec"]["nodeName"]
    server_node = article.pods(ns, f"app={name}")[0]["spec"]["nodeName"]
    assert client_node != server_node


def test_httpbin_sees_the_client_pod_ip(article):
    sleep = article.pods("ambient-apps", "app=sleep-ambient")[0]
    r = article.exec(
        sleep["metadata"]["name"],
        "ambient-apps",
        ["curl", "-sS", "--max-time", "10", "http://httpbin-ambient.ambient-apps:8000/ip"],
    )
    assert r.returncode == 0, r.stderr
    # kube-proxy DNATs without SNAT for pod-to-pod traffic: the server sees the pod's own IP.
    assert json.loads(r.stdout)["origin"] == sleep["status"]["podIP"]


def test_exec_passes_exit_code_and_stdin(article):
    sleep_pod = article.pods("ambient-apps", "app=sleep-ambient")[0]["metadata"]["name"]
    r = article.lab("exec", sleep_pod, "-n", "ambient-apps", "--", "sh", "-c", "exit 7")
    assert r.returncode == 7
    r = article.lab("exec", "-i", sleep_pod, "-n", "ambient-apps", "--", "cat", input="hello from stdin")
    assert r.returncode == 0 and r.stdout == "hello from stdin"
    r = article.lab("exec", sleep_pod, "-n", "ambient-apps", "--", "sh", "-c", "echo $HOSTNAME")
    assert r.returncode == 0 and r.stdout.strip() == sleep_pod


def test_logs_of_a_deployment(article):
    sleep_pod = article.pods("ambient-apps", "app=sleep-ambient")[0]["metadata"]["name"]
    article.exec(sleep_pod, "ambient-apps", ["curl", "-s", "http://httpbin-ambient.ambient-apps:8000/status/418"])
    r = eventually(
        lambda: (
            (res := article.lab("logs", "deploy/httpbin-ambient", "-n", "ambient-apps"))
            and "/status/418" in res.stdout
            and res
        ),
        timeout=10,
    )
    assert r.returncode == 0


def test_capture_and_graph(article):
    import subprocess
    import sys

    from lab.testing import REPO

    httpbin = article.pods("ambient-apps", "app=httpbin-ambient")[0]
    sleep_pod = article.pods("ambient-apps", "app=sleep-ambient")[0]["metadata"]["name"]
    cap = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.cli",
            "--lab",
            article.name,
            "capture",
            httpbin["metadata"]["name"],
            "-n",
            "ambient-apps",
            "-c",
            "1",
            "--",
            "tcp",
            "port",
            "80",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:

        def captured():
            article.exec(sleep_pod, "ambient-apps", ["curl", "-s", "http://httpbin-ambient.ambient-apps:8000/ip"])
            return cap.poll() is not None

        eventually(captured, timeout=15, interval=0.3)
        out = cap.stdout.read()
        assert f"{httpbin['status']['podIP']}.80" in out
    finally:
        cap.kill()
        cap.wait()
    r = article.lab("graph")
    assert r.returncode == 0 and r.stdout.startswith("graph LR")
    assert httpbin["metadata"]["name"] in r.stdout
