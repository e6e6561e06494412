"""The article's Steps 1-2 with sidecars: injection, and sidecar/ambient coexistence over HBONE
(issue 8 acceptance). The article's manifests are applied unchanged from topologies/article/;
`legacy-apps` is labelled for injection, `ambient-apps` for ambient, as the article says."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import yaml

from lab.testing import ARTICLE, article_manifest, eventually
from tests.conftest import curl_client, curl_container, deployment, policy
from tests.e2e.conftest import app_pod as pod
from tests.e2e.conftest import curl, ztunnel_log

LEGACY, AMBIENT, OUTSIDE = "legacy-apps", "ambient-apps", "sc-outside"
LEGACY_URL = "http://httpbin-legacy.legacy-apps:8000"
AMBIENT_URL = "http://httpbin-ambient.ambient-apps:8000"
TOKEN = article_manifest("demo.jwt").strip()


@pytest.fixture(scope="module")
def article(lab):
    lab.install_ambient()
    assert lab.lab("create", "ns", LEGACY).returncode == 0
    assert lab.lab("create", "ns", AMBIENT).returncode == 0
    assert lab.lab("create", "ns", OUTSIDE).returncode == 0
    assert lab.lab("label", "ns", LEGACY, "istio-injection=enabled").returncode == 0
    assert lab.lab("label", "ns", AMBIENT, "istio.io/dataplane-mode=ambient").returncode == 0
    args = []
    for f in ("httpbin-legacy.yaml", "httpbin-ambient.yaml", "sleep-ambient.yaml"):
        args += ["-f", os.path.join(ARTICLE, f)]
    r = lab.lab("apply", *args)
    assert r.returncode == 0, r.stderr
    lab.apply([curl_client(LEGACY, "curl"), curl_client(OUTSIDE, "curl")])
    for ns, app in (
        (LEGACY, "httpbin-legacy"),
        (LEGACY, "curl"),
        (OUTSIDE, "curl"),
        (AMBIENT, "httpbin-ambient"),
        (AMBIENT, "sleep-ambient"),
    ):
        lab.wait_ready(ns, f"app={app}")
    eventually(lambda: lab.all_enrolled(AMBIENT), timeout=30)
    eventually(lambda: curl(lab, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/get")[0] == 200, timeout=30, interval=0.3)
    yield lab
    for ns in (LEGACY, AMBIENT, OUTSIDE):
        lab.delete_namespace(ns)


def for_legacy_httpbin(name: str) -> dict:
    """The article's manifest NAME, pointed at the sidecar pod (httpbin-legacy) instead of the waypoint's."""
    doc = yaml.safe_load(article_manifest(name))
    doc["metadata"]["namespace"] = LEGACY
    doc["spec"]["selector"] = {"matchLabels": {"app": "httpbin-legacy"}}
    return doc


def test_injection_gives_legacy_pods_a_sidecar_and_ambient_pods_none(article):
    legacy = pod(article, LEGACY, "httpbin-legacy")
    assert [c["name"] for c in legacy["spec"]["containers"]] == ["httpbin", "istio-proxy"]
    assert [c["name"] for c in legacy["spec"]["initContainers"]] == ["istio-init"]
    assert legacy["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
    assert legacy["metadata"]["labels"]["networking.istio.io/tunnel"] == "http"
    assert "sidecar.istio.io/status" in legacy["metadata"]["annotations"]
    for app in ("httpbin-ambient", "sleep-ambient"):
        assert [c["name"] for c in pod(article, AMBIENT, app)["spec"]["containers"]] == [
            "httpbin" if app == "httpbin-ambient" else "sleep"
        ]
    r = article.lab("get", "pods", "-n", LEGACY, "-l", "app=httpbin-legacy")
    assert r.stdout.splitlines()[1].split()[1] == "2/2"
    r = article.lab("describe", "pod", legacy["metadata"]["name"], "-n", LEGACY)
    assert "istio-init" in r.stdout and "istio-proxy" in r.stdout
    proxy = next(c for c in legacy["spec"]["containers"] if c["name"] == "istio-proxy")
    assert proxy["securityContext"]["runAsUser"] == 1337


def test_sleep_calls_both_and_the_sidecar_adds_xfcc(article):
    status, body, _ = curl(article, AMBIENT, "sleep-ambient", f"{AMBIENT_URL}/headers")
    assert status == 200
    status, body, _ = curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/headers")
    assert status == 200
    xfcc = json.loads(body)["headers"]["X-Forwarded-Client-Cert"]
    assert xfcc.startswith("By=spiffe://cluster.local/ns/legacy-apps/sa/httpbin-legacy;Hash=")
    assert xfcc.endswith(';Subject="";URI=spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient')


def test_only_tls_crosses_the_nodes(article):
    sleep = pod(article, AMBIENT, "sleep-ambient")
    node = sleep["spec"]["nodeName"]
    # tcpdump on the client node's link to the fabric, printing payloads (-A).
    cap = subprocess.Popen(
        ["ip", "netns", "exec", f"al-{article.name}-node-{node}", "tcpdump", "-U", "-n", "-A", "-i", "eth0", "tcp"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # tcpdump is listening
        for url in (f"{AMBIENT_URL}/headers?capture=1", f"{LEGACY_URL}/headers?capture=1"):
            assert curl(article, AMBIENT, "sleep-ambient", url)[0] == 200
        time.sleep(1.0)
    finally:
        cap.terminate()
        out, _ = cap.communicate(timeout=10)
    assert ".15008" in out  # HBONE to both destinations
    assert "capture=1" not in out and "GET /headers" not in out  # no plaintext HTTP on the node link


def test_sidecar_client_reaches_ambient_server_over_hbone(article):
    status, body, _ = curl(article, LEGACY, "curl", f"{AMBIENT_URL}/headers?from=sidecar")
    assert status == 200
    httpbin = pod(article, AMBIENT, "httpbin-ambient")

    def logged():
        return [
            ln
            for ln in ztunnel_log(article, httpbin["spec"]["nodeName"])
            if 'direction="inbound"' in ln and 'src.identity="spiffe://cluster.local/ns/legacy-apps/sa/default"' in ln
        ]

    assert eventually(logged, timeout=10)
    r = article.lab("istioctl", "zc", "workloads", "-n", LEGACY)
    row = next(line for line in r.stdout.splitlines() if "httpbin-legacy" in line)
    assert row.split()[-1] == "HBONE"


def test_outside_client_strict_refused_permissive_accepted(article):
    assert curl(article, OUTSIDE, "curl", f"{LEGACY_URL}/get")[0] == 200  # PERMISSIVE by default
    article.apply(policy("strict", LEGACY, {"mtls": {"mode": "STRICT"}}, kind="PeerAuthentication"))
    try:
        eventually(lambda: curl(article, OUTSIDE, "curl", f"{LEGACY_URL}/get")[2] in (7, 56), timeout=15, interval=0.3)
        # mTLS clients are unaffected.
        assert curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/get")[0] == 200
    finally:
        article.lab("delete", "peerauthentication", "strict", "-n", LEGACY)
    eventually(lambda: curl(article, OUTSIDE, "curl", f"{LEGACY_URL}/get")[0] == 200, timeout=15, interval=0.3)


def test_path_policy_and_jwt_rules_on_the_sidecar(article):
    article.apply(
        policy(
            "only-ip",
            LEGACY,
            {
                "selector": {"matchLabels": {"app": "httpbin-legacy"}},
                "rules": [{"to": [{"operation": {"paths": ["/ip"]}}]}],
            },
        )
    )
    try:
        eventually(
            lambda: curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/headers")[0] == 403, timeout=15, interval=0.3
        )
        status, body, _ = curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/headers")
        assert (status, body) == (403, "RBAC: access denied")
        assert curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/ip")[0] == 200
    finally:
        article.lab("delete", "authorizationpolicy", "only-ip", "-n", LEGACY)
    # The article's JWT rules, pointed at the sidecar pod: the same answers as at the waypoint.
    article.apply([for_legacy_httpbin("jwt-policy.yaml"), for_legacy_httpbin("l7-authz-policy.yaml")])
    try:
        auth = ["-H", f"Authorization: Bearer {TOKEN}"]
        eventually(
            lambda: curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/ip")[0] == 403, timeout=15, interval=0.3
        )
        assert curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/headers", *auth)[0] == 403
        assert curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/ip", *auth)[0] == 200
        assert (
            curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/ip", "-H", "Authorization: Bearer deadbeef")[0]
            == 401
        )
        r = article.lab(
            "logs", pod(article, LEGACY, "httpbin-legacy")["metadata"]["name"], "-n", LEGACY, "-c", "istio-proxy"
        )
        assert 'decided_by="sidecar jwt_authn"' in r.stdout and 'decided_by="sidecar rbac"' in r.stdout
    finally:
        article.lab("delete", "authorizationpolicy", "allow-ip-path-with-jwt", "-n", LEGACY)
        article.lab("delete", "requestauthentication", "require-jwt-for-billing", "-n", LEGACY)


# An app that calls out once at start: it needs its sidecar ready by then.
HOLD_APP = deployment(
    "held",
    LEGACY,
    curl_container(
        "app",
        (
            "sh",
            "-c",
            "curl -sS --max-time 5 -o /dev/null -w '%{http_code}' http://httpbin-ambient.ambient-apps:8000/get "
            "> /tmp/held-$HOSTNAME; sleep infinity",
        ),
    ),
    annotations={"proxy.istio.io/config": '{"holdApplicationUntilProxyStarts": true}'},
)


def test_hold_application_until_proxy_starts(article):
    article.apply(HOLD_APP)
    try:
        held = article.wait_ready(LEGACY, "app=held")[0]
        names = [c["name"] for c in held["spec"]["containers"]]
        assert names == ["istio-proxy", "app"]
        assert held["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"] == ["pilot-agent", "wait"]
        started = {c["name"]: c["state"]["running"]["startedAt"] for c in held["status"]["containerStatuses"]}
        assert started["app"] >= started["istio-proxy"]
        result = f"/tmp/held-{held['metadata']['name']}"
        try:
            assert eventually(lambda: os.path.exists(result) and open(result).read(), timeout=15) == "200"
        finally:
            if os.path.exists(result):
                os.remove(result)
    finally:
        article.lab("delete", "deploy", "held", "-n", LEGACY)
        eventually(lambda: not article.pods(LEGACY, "app=held"), timeout=60, what="the held pod gone")


def test_a_crashed_sidecar_never_turns_into_plaintext_bypass(article):
    curl_pod = pod(article, LEGACY, "curl")
    proxy = next(c for c in curl_pod["status"]["containerStatuses"] if c["name"] == "istio-proxy")
    restarts = proxy.get("restartCount", 0)
    os.kill(proxy["pid"], 9)
    # Until the kubelet restarts it, the app's connections hit the redirect with nothing behind it.
    status, _, code = curl(article, LEGACY, "curl", f"{AMBIENT_URL}/get")
    assert status is None and code in (7, 56), (status, code)
    eventually(
        lambda: (
            next(
                c for c in pod(article, LEGACY, "curl")["status"]["containerStatuses"] if c["name"] == "istio-proxy"
            ).get("restartCount", 0)
            > restarts
        ),
        timeout=30,
    )
    eventually(lambda: curl(article, LEGACY, "curl", f"{AMBIENT_URL}/get")[0] == 200, timeout=30, interval=0.3)


def test_injection_template_error_refuses_the_pod(article):
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "bad-config",
            "namespace": LEGACY,
            "annotations": {"proxy.istio.io/config": "holdApplicationUntilProxyStarts: [not, a, bool"},
        },
        "spec": {"containers": [{"name": "app", "image": "curlimages/curl", "command": ["sleep", "infinity"]}]},
    }
    r = article.lab("apply", "-f", "-", input=json.dumps(bad))
    assert r.returncode != 0
    assert "sidecar-injector.istio.io" in r.stderr and "proxy.istio.io/config" in r.stderr
    assert article.lab("get", "pod", "bad-config", "-n", LEGACY).returncode != 0


def test_upgrade_reaches_sidecars_only_when_their_pods_restart(article):
    before = {p["metadata"]["uid"] for ns in (LEGACY, AMBIENT) for p in article.pods(ns)}
    r = article.lab("istioctl", "install", "--set", "profile=ambient", "--set", "tag=1.25.0", "-y", timeout=240)
    assert r.returncode == 0, r.stderr
    try:
        after = {p["metadata"]["uid"] for ns in (LEGACY, AMBIENT) for p in article.pods(ns)}
        assert after == before  # istiod and ztunnel were upgraded; no app pod was restarted
        legacy = pod(article, LEGACY, "httpbin-legacy")
        assert next(c for c in legacy["spec"]["containers"] if c["name"] == "istio-proxy")["image"].endswith(":1.24.0")
        r = eventually(
            lambda: (res := article.lab("istioctl", "proxy-status")) and "Version skew" in res.stdout and res,
            timeout=30,
        )
        assert "1.24.0" in r.stdout and "1.25.0" in r.stdout
        assert article.lab("rollout", "restart", "deploy/httpbin-legacy", "-n", LEGACY).returncode == 0
        new = eventually(
            lambda: [
                p
                for p in article.pods(LEGACY, "app=httpbin-legacy")
                if p["metadata"]["uid"] not in before and not p["metadata"].get("deletionTimestamp")
            ],
            timeout=60,
        )
        assert next(c for c in new[0]["spec"]["containers"] if c["name"] == "istio-proxy")["image"].endswith(":1.25.0")
        eventually(
            lambda: curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/get")[0] == 200, timeout=60, interval=0.3
        )
    finally:
        article.lab("istioctl", "install", "--set", "profile=ambient", "-y", timeout=240)


def test_sidecar_readiness_and_istio_request_metrics(article):
    article.wait_ready(LEGACY, "app=httpbin-legacy")  # one pod, after the upgrade test's rollout
    legacy = pod(article, LEGACY, "httpbin-legacy")
    # Right after the upgrade test reinstalls the mesh, the ztunnels may still be rolling.
    eventually(
        lambda: curl(article, AMBIENT, "sleep-ambient", f"{LEGACY_URL}/status/418")[0] == 418, timeout=30, interval=0.3
    )
    name = legacy["metadata"]["name"]
    r = article.exec(
        name,
        LEGACY,
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:15021/healthz/ready"],
        container="httpbin",
    )
    assert r.stdout == "200"
    for port in (15020, 15090):
        r = article.exec(name, LEGACY, ["curl", "-s", f"http://127.0.0.1:{port}/stats/prometheus"], container="httpbin")
        lines = [
            ln
            for ln in r.stdout.splitlines()
            if ln.startswith("istio_requests_total{") and 'response_code="418"' in ln and 'reporter="destination"' in ln
        ]
        assert lines and 'source_principal="spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"' in lines[0]
    assert "istio_request_duration_milliseconds_bucket" in r.stdout
