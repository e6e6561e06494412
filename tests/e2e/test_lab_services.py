"""Services and DNS: every Kubernetes name form, headless services, a VIP spreading over replicas
on different nodes (issue 2 acceptance)."""

from __future__ import annotations

import collections

import pytest

from lab.testing import eventually
from tests.conftest import curl_client, echo_app, service
from tests.e2e.conftest import app_namespaces

NS = "svc-tests"
APPS = [
    *echo_app(NS, replicas=3),
    service("echo-headless", NS, ("http", 8080, 8080), selector="echo", headless=True),
    curl_client(NS),
]


@pytest.fixture(scope="module")
def echo(lab):
    with app_namespaces(lab, {NS: None}, APPS, ready=((NS, "client"),)) as pods:
        yield lab, NS, lab.wait_ready(NS, "app=echo", count=3), pods["client"]["metadata"]["name"]


def _resolve(lab, ns, client, name):
    r = lab.exec(client, ns, ["getent", "ahostsv4", name])
    return sorted({line.split()[0] for line in r.stdout.splitlines()}) if r.returncode == 0 else []


@pytest.mark.parametrize("name", ["echo", "echo.svc-tests", "echo.svc-tests.svc", "echo.svc-tests.svc.cluster.local"])
def test_every_dns_form_resolves_to_the_vip(echo, name):
    lab, ns, _, client = echo
    vip = lab.get("Service", "echo", ns)["spec"]["clusterIP"]
    assert _resolve(lab, ns, client, name) == [vip]


def test_other_namespaces_resolve_by_namespace_name(echo):
    lab, ns, _, client = echo
    dns_ip = lab.get("Service", "kube-dns", "kube-system")["spec"]["clusterIP"]
    assert _resolve(lab, ns, client, "kube-dns.kube-system") == [dns_ip]
    assert _resolve(lab, ns, client, "no-such-service") == []


def test_headless_service_returns_pod_ips(echo):
    lab, ns, pods, client = echo
    want = sorted(p["status"]["podIP"] for p in pods)
    assert eventually(lambda: _resolve(lab, ns, client, "echo-headless") == want, timeout=10)


def test_vip_spreads_over_replicas_on_different_nodes(echo):
    lab, ns, pods, client = echo
    assert len({p["spec"]["nodeName"] for p in pods}) == 3
    hits = collections.Counter()
    for _ in range(30):
        r = lab.exec(client, ns, ["curl", "-sS", "--max-time", "5", "http://echo/"])
        assert r.returncode == 0, r.stderr
        fields = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
        hits[fields["Hostname"]] += 1
    assert set(hits) == {p["metadata"]["name"] for p in pods}, hits


def test_endpoints_and_service_tables(echo):
    lab, ns, pods, _ = echo
    r = lab.lab("get", "svc", "-n", ns)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["echo"][1] == "ClusterIP" and rows["echo"][4] == "80/TCP"
    assert rows["echo-headless"][2] == "None"
    r = lab.lab("get", "endpoints", "echo", "-n", ns, "-o", "jsonpath={.subsets[0].addresses[*].ip}")
    assert sorted(r.stdout.split()) == sorted(p["status"]["podIP"] for p in pods)
