"""istiod in-process against labd's API in process (lab.testing.InProcessLabApi), over real TLS
on 127.0.0.1: trust bootstrap, CreateCertificate (own identity, impersonation, refusals), Subscribe
(full state, deltas, reconnect with `known`), policy statuses and readiness. The process's SIGTERM
exit: tests/integration/test_programs.py."""

from __future__ import annotations

import copy
import logging
import socket
from contextlib import aclosing
from typing import Any

import pytest
import trio

from lab.apiserver.tokens import TokenIssuer
from lab.client.protocol import encode
from lab.testing import InProcessLabApi
from mesh.identity.ca import make_csr, verify_chain
from mesh.identity.spiffe import Identity
from mesh.istiod.channel import client_context
from mesh.istiod.client import ConfigCache, IstiodRefused, IstiodUnavailable, create_certificate, subscribe
from mesh.istiod.server import serve
from tests.conftest import eventually

HOST = "127.0.0.1"
ZTUNNEL_SA = "spiffe://cluster.local/ns/istio-system/sa/ztunnel"


def pod(name: str, ns: str, sa: str, node: str, ip: str, labels: dict | None = None, **spec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{name}",
            "labels": labels or {},
            "annotations": {"ambient.istio.io/redirection": "enabled"},
        },
        "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [{"name": "c", "image": "x"}], **spec},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


ZTUNNEL_1 = pod("ztunnel-w1", "istio-system", "ztunnel", "worker1", "172.18.0.11", hostNetwork=True)
HTTPBIN = pod("httpbin-1", "demo", "httpbin", "worker1", "10.244.1.5", {"app": "httpbin"})
SLEEP = pod("sleep-1", "demo", "sleep", "worker2", "10.244.2.5", {"app": "sleep"})


def seed(api: InProcessLabApi) -> InProcessLabApi:
    for name, labels in (("istio-system", {}), ("demo", {"istio.io/dataplane-mode": "ambient"})):
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    for p in (ZTUNNEL_1, HTTPBIN, SLEEP):
        api.create(copy.deepcopy(p))  # as the kubelet has them: scheduled, running, ready
    api.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "httpbin", "namespace": "demo"},
                "spec": {
                    "clusterIP": "10.96.0.20",
                    "selector": {"app": "httpbin"},
                    "ports": [{"port": 8000, "targetPort": 80}],
                },
            },
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "allow-sleep", "namespace": "demo"},
                "spec": {
                    "selector": {"matchLabels": {"app": "httpbin"}},
                    "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/demo/sa/sleep"]}}]}],
                },
            },
        ]
    )
    return api


@pytest.fixture
async def api(lab_api: InProcessLabApi) -> InProcessLabApi:
    return seed(lab_api)


@pytest.fixture
async def address(nursery: trio.Nursery, api: InProcessLabApi) -> tuple[str, int]:
    with trio.fail_after(3):
        port = await nursery.start(serve, api.path, HOST, 0)
    return HOST, port


def token_of(api: InProcessLabApi, p: dict[str, Any]) -> str:
    return api.token(p["metadata"]["namespace"], p["metadata"]["name"])


def root_pem(api: InProcessLabApi) -> str:
    return api.get("ConfigMap", "istio-system", "istio-ca-root-cert")["data"]["root-cert.pem"]


async def certificate(api: InProcessLabApi, address, caller: dict, identity: str | None = None) -> list[Identity]:
    wanted = (
        Identity.parse(identity)
        if identity
        else Identity("cluster.local", caller["metadata"]["namespace"], caller["spec"]["serviceAccountName"])
    )
    _, csr = make_csr(wanted)
    chain = await create_certificate(address, root_pem(api), token_of(api, caller), csr, identity)
    return verify_chain(chain, root_pem(api))


# ---- trust bootstrap ------------------------------------------------------------------------------


async def test_bootstrap_creates_the_root_once(nursery: trio.Nursery, api: InProcessLabApi, address) -> None:
    secret = api.get("Secret", "istio-system", "istio-ca-secret")
    assert root_pem(api) == secret["data"]["ca-cert.pem"]
    assert "PRIVATE KEY" in secret["data"]["ca-key.pem"]
    with trio.fail_after(3):
        await nursery.start(serve, api.path, HOST, 0)  # a restarted istiod keeps the root
    assert api.get("Secret", "istio-system", "istio-ca-secret") is secret
    assert root_pem(api) == secret["data"]["ca-cert.pem"]


# ---- CreateCertificate ------------------------------------------------------------------------------


async def test_certificates_own_and_impersonated(api: InProcessLabApi, address, caplog) -> None:
    caplog.set_level(logging.INFO)
    assert await certificate(api, address, HTTPBIN) == [Identity("cluster.local", "demo", "httpbin")]
    assert await certificate(api, address, ZTUNNEL_1, "spiffe://cluster.local/ns/demo/sa/httpbin") == [
        Identity("cluster.local", "demo", "httpbin")
    ]
    assert await certificate(api, address, ZTUNNEL_1) == [Identity.parse(ZTUNNEL_SA)]
    issued = [r.getMessage() for r in caplog.records if r.name == "istiod.ca"]
    assert issued[1].startswith(
        "issued spiffe://cluster.local/ns/demo/sa/httpbin for ztunnel on worker1 (pod istio-system/ztunnel-w1, serial "
    )


async def test_certificates_refused(api: InProcessLabApi, address, caplog) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(IstiodRefused, match="^request impersonation authentication failure$"):
        await certificate(api, address, ZTUNNEL_1, "spiffe://cluster.local/ns/demo/sa/sleep")  # sleep is on worker2
    with pytest.raises(IstiodRefused, match="^request impersonation authentication failure$"):
        await certificate(api, address, HTTPBIN, "spiffe://cluster.local/ns/demo/sa/sleep")  # not a node proxy
    _, csr = make_csr(Identity.parse(ZTUNNEL_SA))
    forged = TokenIssuer.generate().issue("istio-system", "ztunnel", "ztunnel-w1", "uid-ztunnel-w1")
    with pytest.raises(IstiodRefused, match="^request authenticate failure$"):
        await create_certificate(address, root_pem(api), forged, csr)
    refusals = [r.getMessage() for r in caplog.records if r.name == "istiod.ca" and r.levelno == logging.WARNING]
    assert 'no instances of "demo/sleep" found on node "worker1"' in refusals[0]
    assert "not allowed to impersonate" in refusals[1]
    assert "authentication failed: token review failed: invalid signature" in refusals[2]


# ---- Subscribe ---------------------------------------------------------------------------------------


async def next_batch(stream, cache: ConfigCache) -> list[dict]:
    """Lines up to SYNCED on first use, else one line; applied to the cache."""
    lines = []
    with trio.fail_after(2):
        async for message in stream:
            cache.apply(message)
            lines.append(message)
            if message["type"] == "SYNCED" or cache.synced:
                return lines
    raise AssertionError(f"stream ended after {lines}")


async def test_subscribe_full_state_deltas_and_reconnect(api: InProcessLabApi, address) -> None:
    token, cache = token_of(api, ZTUNNEL_1), ConfigCache()
    async with aclosing(subscribe(address, root_pem(api), token, "worker1", {})) as stream:
        first = await next_batch(stream, cache)
        assert [m["type"] for m in first] == ["Authorization", "Address", "SYNCED"]
        assert sorted(cache.resources["Address"]) == [
            "Kubernetes//Pod/demo/httpbin-1",
            "Kubernetes//Pod/demo/sleep-1",
            "Kubernetes//Pod/istio-system/ztunnel-w1",
            "demo/httpbin.demo.svc.cluster.local",
        ]
        httpbin = cache.resources["Address"]["Kubernetes//Pod/demo/httpbin-1"]["workload"]
        assert (httpbin["protocol"], httpbin["authorizationPolicies"]) == ("HBONE", ["demo/allow-sleep"])
        assert httpbin["services"] == {"demo/httpbin.demo.svc.cluster.local": {"8000": 80}}
        assert list(cache.resources["Authorization"]) == ["demo/allow-sleep"]

        api.create(pod("httpbin-2", "demo", "httpbin", "worker2", "10.244.2.6", {"app": "httpbin"}))
        [delta] = await next_batch(stream, cache)
        assert (delta["type"], delta["removed"]) == ("Address", [])
        assert [r["name"] for r in delta["resources"]] == ["Kubernetes//Pod/demo/httpbin-2"]

        api.store.delete("Pod", "demo", "httpbin-2")
        [delta] = await next_batch(stream, cache)
        assert (delta["resources"], delta["removed"]) == ([], ["Kubernetes//Pod/demo/httpbin-2"])

    # While away: sleep-1 is deleted, a policy is added, the namespace leaves ambient.
    known = cache.known()
    with api.watchers_away():  # istiod re-lists after, and so learns of what it missed
        api.store.delete("Pod", "demo", "sleep-1")
        api.apply(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "deny-9", "namespace": "demo"},
                "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["9000"]}}]}]},
            }
        )
        api.label("Namespace", None, "demo", {"istio.io/dataplane-mode": None})
    await eventually(lambda: api.ops().count("watch") >= 2)
    await trio.sleep(0.1)
    again = ConfigCache()
    async with aclosing(subscribe(address, root_pem(api), token, "worker1", known)) as stream:
        lines = await next_batch(stream, again)
    assert lines[-1] == {"type": "SYNCED"}
    by_type = {m["type"]: m for m in lines[:-1]}
    assert [r["name"] for r in by_type["Authorization"]["resources"]] == ["demo/deny-9"]
    assert by_type["Address"]["removed"] == ["Kubernetes//Pod/demo/sleep-1"]
    assert [r["name"] for r in by_type["Address"]["resources"]] == ["Kubernetes//Pod/demo/httpbin-1"]
    assert by_type["Address"]["resources"][0]["resource"]["workload"]["protocol"] == "TCP"


async def test_subscribe_refuses_a_bad_token(api: InProcessLabApi, address) -> None:
    with pytest.raises(IstiodRefused, match="request authenticate failure"):
        async with aclosing(subscribe(address, root_pem(api), "not-a-token", "worker1", {})) as stream:
            async for _ in stream:
                pass


async def open_stuck_subscriber(address, root: str, token: str) -> trio.SSLStream:
    """A subscriber with a tiny receive buffer that never reads: istiod's sends to it block."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # also turns receive autotuning off
    await sock.connect(address)
    conn = trio.SSLStream(trio.SocketStream(sock), client_context(root), server_hostname=None, https_compatible=True)
    await conn.send_all(encode({"op": "Subscribe", "token": token, "node": "stuck", "known": {}}))
    return conn


async def test_a_stuck_subscriber_does_not_hold_back_others(api: InProcessLabApi, address, caplog) -> None:
    caplog.set_level(logging.INFO)
    token = token_of(api, ZTUNNEL_1)
    async with await open_stuck_subscriber(address, root_pem(api), token):
        cache = ConfigCache()
        async with aclosing(subscribe(address, root_pem(api), token, "worker1", {})) as healthy:
            await next_batch(healthy, cache)
            # 8 MB for every subscriber: more than the stuck one's socket buffers can take
            api.create(pod("big", "demo", "x", "worker1", "10.244.1.50", {"app": "x" * 8_000_000}))
            await next_batch(healthy, cache)
            api.create(pod("small", "demo", "x", "worker1", "10.244.1.51"))
            [delta] = await next_batch(healthy, cache)
            assert [r["name"] for r in delta["resources"]] == ["Kubernetes//Pod/demo/small"]
    pushes = [r.getMessage() for r in caplog.records if r.name == "istiod.xds" and "pushed" in r.getMessage()]
    assert [p for p in pushes if p.endswith("to ztunnel stuck (synced)")]  # its first push went out...
    assert not [p for p in pushes if p.endswith("to ztunnel stuck")]  # ...the 8 MB one never completed


# ---- statuses and readiness -----------------------------------------------------------------------


async def test_policy_status_is_written_once(api: InProcessLabApi, address) -> None:
    def condition() -> dict | None:
        status = api.get("AuthorizationPolicy", "demo", "allow-sleep").get("status") or {}
        return next(iter(status.get("conditions") or []), None)

    await eventually(lambda: condition() is not None)
    assert {k: v for k, v in condition().items() if k != "lastTransitionTime"} == {
        "type": "ZtunnelAccepted",
        "status": "True",
        "reason": "Accepted",
        "message": "attached to ztunnel",
        "observedGeneration": 1,
    }
    api.create(pod("other", "demo", "x", "worker1", "10.244.1.9"))
    await trio.sleep(0.1)
    assert api.ops().count("update_status") == 1


async def test_listens_only_after_the_first_translation(nursery: trio.Nursery, api: InProcessLabApi) -> None:
    with trio.socket.socket() as probe:  # a port that is free now
        await probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    with api.watchers_away():
        nursery.start_soon(serve, api.path, HOST, port)
        await eventually(lambda: "watch" in api.ops())
        await trio.sleep(0.05)
        with pytest.raises(OSError):
            await trio.open_tcp_stream(HOST, port)
    _, csr = make_csr(Identity("cluster.local", "demo", "httpbin"))
    with trio.fail_after(2):
        while True:
            try:
                await create_certificate((HOST, port), root_pem(api), token_of(api, HTTPBIN), csr)
                break
            except IstiodUnavailable:
                await trio.sleep(0.01)
