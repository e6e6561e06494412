"""The article's Step 3 and its billing-API scenario, verbatim, on a real lab (issue 7 acceptance).

The manifests are read from topologies/article/ and applied unchanged. Traffic is real curl in the
sleep pod, through its node's ztunnel, the waypoint pod and the destination node's ztunnel, to
the real httpbin. The waypoint's decisions are read from its access log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lab.testing import ARTICLE, article_manifest, eventually
from tests.conftest import deployment, echo_container, service
from tests.e2e.conftest import AMBIENT, app_namespaces, app_pod, curl

NS = "ambient-apps"
OTHER = "wp-other"
WAYPOINT = "httpbin-ambient-waypoint"
URL = "http://httpbin-ambient.ambient-apps:8000"
TOKEN = article_manifest("demo.jwt").strip()
APPS = ["httpbin-ambient.yaml", "sleep-ambient.yaml", "rogue-client.yaml"]


def echo(ns: str) -> list[dict]:
    """The echo app with HTTP on Service port 80 and a TCP echo on 9000."""
    return [
        deployment("echo", ns, echo_container("--port", "8080", "--tcp-port", "9000", ports=(8080, 9000))),
        service("echo", ns, ("http", 80, 8080), ("tcp", 9000, 9000)),
    ]


def article_files(verb: str, lab, *names: str):
    """`lab VERB -f topologies/article/NAME ...`."""
    return lab.lab(verb, *(arg for name in names for arg in ("-f", os.path.join(ARTICLE, name))))


def apply_article(lab, *names: str) -> None:
    r = article_files("apply", lab, *names)
    assert r.returncode == 0, r.stderr


def delete_article(lab, *names: str) -> None:
    article_files("delete", lab, *names)


@pytest.fixture(scope="module")
def article(lab):
    ready = (*((NS, app) for app in ("httpbin-ambient", "sleep-ambient", "rogue-client", "echo")), (OTHER, "echo"))
    with app_namespaces(
        lab,
        {NS: AMBIENT, OTHER: AMBIENT},
        *(os.path.join(ARTICLE, f) for f in APPS),
        [*echo(OTHER), *echo(NS)],
        ready=ready,
        mesh=True,
    ):
        before = {p["metadata"]["uid"]: p for p in lab.pods(NS)}
        apply_article(lab, "waypoint.yaml")
        lab.wait_ready(NS, f"gateway.networking.k8s.io/gateway-name={WAYPOINT}")
        lab.before = before
        # The ztunnels route through the waypoint once its workload is Healthy in their config.
        eventually(
            lambda: curl(lab, NS, "sleep-ambient", f"{URL}/headers")[0] == 200 and waypoint_log(lab, "/headers"),
            timeout=30,
            interval=0.3,
        )
        yield lab


def pod(lab, app: str) -> str:
    return app_pod(lab, NS, app)["metadata"]["name"]


def waypoint_log(lab, needle: str) -> list[str]:
    r = lab.lab("logs", f"deploy/{WAYPOINT}", "-n", NS)
    return [line for line in r.stdout.splitlines() if needle in line]


def test_step3_waypoint_deployment_appears_and_no_app_pod_restarts(article):
    r = article.lab("get", "deploy", "-n", NS)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()[1:]}
    assert rows[WAYPOINT] == "1/1"
    assert rows["httpbin-ambient"] == "1/1" and rows["sleep-ambient"] == "1/1"
    now = {p["metadata"]["uid"]: p for p in article.pods(NS) if not p["metadata"]["name"].startswith(WAYPOINT)}
    assert set(now) == set(article.before)
    assert all(c.get("restartCount", 0) == 0 for p in now.values() for c in p["status"].get("containerStatuses", []))


def test_traffic_goes_through_the_waypoint_and_ztunnel_config_shows_it(article):
    status, body, _ = curl(article, NS, "sleep-ambient", f"{URL}/headers?via=waypoint&show_env=1")
    assert status == 200
    headers = json.loads(body)["headers"]
    assert headers["Host"] == "httpbin-ambient.ambient-apps:8000"
    assert headers["X-Forwarded-Client-Cert"].endswith("URI=spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient")
    assert "X-Request-Id" in headers
    lines = eventually(lambda: waypoint_log(article, "via=waypoint"), timeout=10)
    assert 'src.identity="spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"' in lines[-1]
    assert "status=200" in lines[-1]
    r = article.lab("istioctl", "ztunnel-config", "workloads", "-n", NS)
    assert r.returncode == 0, r.stderr
    httpbin_rows = [
        line
        for line in r.stdout.splitlines()
        if line.split()[1].startswith("httpbin-ambient-") and not line.split()[1].startswith(WAYPOINT)
    ]
    assert httpbin_rows and all(WAYPOINT in row for row in httpbin_rows)


def test_l4_policy_still_allows_sleep_and_denies_rogue(article):
    apply_article(article, "l4-policy.yaml")
    try:
        eventually(lambda: curl(article, NS, "rogue-client", f"{URL}/headers")[2] in (7, 56), timeout=15, interval=0.3)
        status, _, _ = curl(article, NS, "sleep-ambient", f"{URL}/headers")
        assert status == 200
        _, _, code = curl(article, NS, "rogue-client", f"{URL}/headers?rogue=1")
        assert code in (7, 56)  # a reset, at once: the waypoint refused the tunnel
        lines = eventually(
            lambda: [ln for ln in waypoint_log(article, "rogue-sa") if 'decision="deny"' in ln], timeout=10
        )
        assert 'decided_by="waypoint rbac (L4)"' in lines[-1]
        assert 'policy="ambient-apps/require-sleep-identity"' in lines[-1]
    finally:
        delete_article(article, "l4-policy.yaml")


@pytest.fixture
def jwt_rules(article):
    apply_article(article, "jwt-policy.yaml", "l7-authz-policy.yaml")
    eventually(lambda: curl(article, NS, "sleep-ambient", f"{URL}/ip")[0] == 403, timeout=15, interval=0.3)
    yield article
    delete_article(article, "jwt-policy.yaml", "l7-authz-policy.yaml")


def test_article_jwt_and_path_scenario(jwt_rules):
    lab = jwt_rules
    auth = ["-H", f"Authorization: Bearer {TOKEN}"]
    assert curl(lab, NS, "sleep-ambient", f"{URL}/headers", *auth)[0] == 403
    status, body, _ = curl(lab, NS, "sleep-ambient", f"{URL}/ip")
    assert (status, body) == (403, "RBAC: access denied")
    status, body, _ = curl(lab, NS, "sleep-ambient", f"{URL}/ip", *auth)
    assert status == 200
    sleep_ip = lab.pods(NS, "app=sleep-ambient")[0]["status"]["podIP"]
    assert json.loads(body)["origin"].split(",")[0].strip() == sleep_ip
    status, body, _ = curl(lab, NS, "sleep-ambient", f"{URL}/ip", "-H", "Authorization: Bearer deadbeef")
    assert status == 401 and body.startswith("Jwt is not in the form of Header.Payload.Signature")
    lines = waypoint_log(lab, 'path="/ip"')
    assert any(
        "status=200" in ln and 'request.auth.principal="testing@secure.istio.io/testing@secure.istio.io"' in ln
        for ln in lines
    )
    assert any("status=401" in ln and 'decided_by="waypoint jwt_authn"' in ln for ln in lines)
    assert any("status=403" in ln and 'policy="ambient-apps/allow-ip-path-with-jwt"' in ln for ln in lines)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_tokens_minted_by_the_test(jwt_rules):
    """Our own issuer, keys and tokens: each bad token is 401 before any policy decides."""
    lab = jwt_rules
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "lab"
    lab.apply(
        json.dumps(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "RequestAuthentication",
                "metadata": {"name": "lab-issuer", "namespace": NS},
                "spec": {
                    "selector": {"matchLabels": {"app": "httpbin-ambient"}},
                    "jwtRules": [
                        {"issuer": "lab-tests", "audiences": ["billing"], "jwks": json.dumps({"keys": [jwk]})}
                    ],
                },
            }
        )
    )
    now = int(time.time())
    good = {"iss": "lab-tests", "sub": "alice", "aud": "billing", "exp": now + 600}
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    valid = pyjwt.encode(good, key, algorithm="RS256", headers={"kid": "lab"})
    h, p, s = valid.split(".")
    # Algorithm confusion: HS256 keyed with the RSA public key (PyJWT itself refuses to make one).
    confused = f"{_b64(json.dumps({'alg': 'HS256', 'kid': 'lab', 'typ': 'JWT'}).encode())}.{p}"
    confused += "." + _b64(hmac.new(pem, confused.encode(), hashlib.sha256).digest())
    bad = {
        "expired": pyjwt.encode({**good, "exp": now - 3600}, key, algorithm="RS256", headers={"kid": "lab"}),
        "not yet valid": pyjwt.encode({**good, "nbf": now + 3600}, key, algorithm="RS256", headers={"kid": "lab"}),
        "wrong issuer": pyjwt.encode({**good, "iss": "someone-else"}, key, algorithm="RS256", headers={"kid": "lab"}),
        "wrong key": pyjwt.encode(good, other, algorithm="RS256", headers={"kid": "lab"}),
        "unknown kid": pyjwt.encode(good, key, algorithm="RS256", headers={"kid": "nope"}),
        "alg none": f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{p}.",
        "HS256 with the public key": confused,
        "tampered": f"{h}.{_b64(json.dumps({**good, 'sub': 'mallory'}).encode())}.{s}",
    }
    try:
        eventually(
            lambda: curl(lab, NS, "sleep-ambient", f"{URL}/ip", "-H", f"Authorization: Bearer {valid}")[0] == 403,
            timeout=15,
            interval=0.3,
        )  # authenticated, then denied: the policy wants the article's issuer
        for name, token in bad.items():
            status, body, _ = curl(lab, NS, "sleep-ambient", f"{URL}/headers", "-H", f"Authorization: Bearer {token}")
            assert status == 401, (name, status, body)
        wrong_audience = pyjwt.encode({**good, "aud": "other"}, key, algorithm="RS256", headers={"kid": "lab"})
        status, body, _ = curl(lab, NS, "sleep-ambient", f"{URL}/ip", "-H", f"Authorization: Bearer {wrong_audience}")
        assert (status, body) == (403, "Audiences in Jwt are not allowed")
        status, _, _ = curl(lab, NS, "sleep-ambient", f"{URL}/ip?access_token={TOKEN}")
        assert status == 200
    finally:
        lab.lab("delete", "requestauthentication", "lab-issuer", "-n", NS)


def sleep_curl(lab, *args: str, input: str | None = None):
    """curl ARGS from the sleep pod (no -w of its own, unlike `curl`)."""
    return lab.exec(pod(lab, "sleep-ambient"), NS, ["curl", "-sS", "--max-time", "10", *args], input=input)


def test_http2_keepalive_chunked_and_tcp_through_the_waypoint(article):
    sleep = pod(article, "sleep-ambient")
    r = sleep_curl(
        article, "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", f"{URL}/get"
    )
    assert r.stdout == "200 2", r.stderr
    no_body = ["-o", "/dev/null"]
    r = sleep_curl(article, *no_body, *no_body, "-w", "%{http_code} %{num_connects}\n", f"{URL}/get", f"{URL}/get")
    assert r.stdout.split("\n")[:2] == ["200 1", "200 0"], r.stdout  # the second reuses the connection
    chunked = ["-H", "Transfer-Encoding: chunked", "-H", "Content-Type: text/plain", "--data-binary", "@-"]
    r = sleep_curl(article, *chunked, f"{URL}/post", input="x" * 20000)
    assert json.loads(r.stdout)["data"] == "x" * 20000
    # Raw TCP passes through the waypoint as TCP (the implicit waypoint serves the whole namespace),
    # and in a namespace without a waypoint it goes from ztunnel to ztunnel.
    for ns in (NS, OTHER):
        r = article.exec(sleep, NS, ["sh", "-c", f"printf hello-{ns} | curl -sS --max-time 5 telnet://echo.{ns}:9000"])
        assert r.stdout == f"hello-{ns}", r.stderr
    lines = eventually(
        lambda: [ln for ln in waypoint_log(article, "connection complete") if ':9000"' in ln], timeout=10
    )
    assert 'protocol="TCP"' in lines[-1] and 'decision="allow"' in lines[-1]


def test_bad_input_fails_closed(article):
    # Headers over Envoy's 60 KiB: 431 from the waypoint, never a crash.
    r = sleep_curl(article, "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Big: " + "a" * 70000, f"{URL}/get")
    assert r.stdout == "431"
    # A jwks that is not JSON is refused at apply, and nothing is created.
    bad = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "bad-jwks", "namespace": NS},
        "spec": {"jwtRules": [{"issuer": "x", "jwks": "{not json"}]},
    }
    r = article.lab("apply", "-f", "-", input=json.dumps(bad))
    assert r.returncode != 0 and "jwks" in r.stderr
    assert article.lab("get", "requestauthentication", "bad-jwks", "-n", NS).returncode != 0
    # A jwksUri the lab cannot reach: every token of that issuer is 401, never a pass.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unreachable = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "unreachable", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "httpbin-ambient"}},
            "jwtRules": [{"issuer": "nowhere", "jwksUri": "https://keys.invalid/jwks.json"}],
        },
    }
    article.apply(json.dumps(unreachable))
    try:
        token = pyjwt.encode({"iss": "nowhere", "sub": "x", "exp": int(time.time()) + 600}, key, algorithm="RS256")
        status, body, _ = eventually(
            lambda: (
                (res := curl(article, NS, "sleep-ambient", f"{URL}/get", "-H", f"Authorization: Bearer {token}"))
                and res[0] == 401
                and res
            ),
            timeout=15,
            interval=0.3,
        )
        assert body == "Jwks remote fetch is failed"
    finally:
        article.lab("delete", "requestauthentication", "unreachable", "-n", NS)


def test_waypoint_failure_two_replicas_keep_99_percent(article):
    lab = article
    assert lab.lab("scale", f"deploy/{WAYPOINT}", "--replicas", "2", "-n", NS).returncode == 0
    try:
        lab.wait_ready(NS, f"gateway.networking.k8s.io/gateway-name={WAYPOINT}", count=2)
        eventually(lambda: len(waypoint_pods_serving(lab)) == 2, timeout=20)
        # 20 requests/s for 5 s, one replica deleted after 1 s.
        script = (
            "i=0; while [ $i -lt 100 ]; do curl -s -o /dev/null -w '%{http_code}\\n' --max-time 3 "
            f"{URL}/status/200 & sleep 0.05; i=$((i+1)); done; wait"
        )
        import subprocess
        import threading

        target = lab.client.call("exec", namespace=NS, pod=pod(lab, "sleep-ambient"), container=None)
        result = {}

        def load():
            result["r"] = subprocess.run(
                ["ip", "netns", "exec", target["netns"], "sh", "-c", script],
                env=target["env"],
                capture_output=True,
                text=True,
                timeout=60,
            )

        t = threading.Thread(target=load)
        t.start()
        time.sleep(1)
        victim = lab.pods(NS, f"gateway.networking.k8s.io/gateway-name={WAYPOINT}")[0]["metadata"]["name"]
        assert lab.lab("delete", "pod", victim, "-n", NS).returncode == 0
        t.join()
        codes = result["r"].stdout.split()
        assert len(codes) == 100
        assert codes.count("200") >= 99, codes
    finally:
        lab.lab("scale", f"deploy/{WAYPOINT}", "--replicas", "1", "-n", NS)


def waypoint_pods_serving(lab) -> list[str]:
    return [
        p["metadata"]["name"]
        for p in lab.pods(NS, f"gateway.networking.k8s.io/gateway-name={WAYPOINT}")
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]


def test_only_replica_gone_fails_closed_for_its_services_only(article):
    lab = article
    assert lab.lab("scale", f"deploy/{WAYPOINT}", "--replicas", "0", "-n", NS).returncode == 0
    try:
        eventually(lambda: curl(lab, NS, "sleep-ambient", f"{URL}/get")[2] in (7, 56), timeout=20, interval=0.3)
        # Other mesh traffic from the same pod, on the same nodes, still flows.
        status, _, _ = curl(lab, NS, "sleep-ambient", f"http://echo.{OTHER}/")
        assert status == 200
    finally:
        assert lab.lab("scale", f"deploy/{WAYPOINT}", "--replicas", "1", "-n", NS).returncode == 0
    eventually(lambda: curl(lab, NS, "sleep-ambient", f"{URL}/get")[0] == 200, timeout=30, interval=0.3)
