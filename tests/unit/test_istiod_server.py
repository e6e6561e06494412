"""istiod in-process against a fake lab API on a Unix socket, over real TLS on 127.0.0.1:
trust bootstrap, CreateCertificate (own identity, impersonation, refusals), Subscribe (full state,
deltas, reconnect with `known`), policy statuses, readiness, and the process's SIGTERM exit."""
from __future__ import annotations

import copy
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing
from typing import Any

import pytest
import trio
import yaml

from lab.apiserver import endpoint as api_server
from lab.client.protocol import encode, error, ok
from mesh.identity.ca import make_csr, verify_chain
from mesh.identity.spiffe import Identity
from lab.apiserver.tokens import InvalidToken, TokenIssuer
from mesh.istiod.channel import client_context
from mesh.istiod.client import ConfigCache, IstiodRefused, IstiodUnavailable, create_certificate, subscribe
from mesh.istiod.server import serve

HOST = "127.0.0.1"
ZTUNNEL_SA = "spiffe://cluster.local/ns/istio-system/sa/ztunnel"


def pod(name: str, ns: str, sa: str, node: str, ip: str, labels: dict | None = None, **spec) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels or {},
                         "annotations": {"ambient.istio.io/redirection": "enabled"}},
            "spec": {"nodeName": node, "serviceAccountName": sa, "containers": [{"name": "c", "image": "x"}], **spec},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class FakeLabAPI:
    """labd's ops istiod uses, over a dict: get, watch, apply, update_status, token_review."""

    def __init__(self, path: str):
        self.path = path
        self.issuer = TokenIssuer.generate()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.sync_gate = trio.Event()
        self.sync_gate.set()
        self._version = 0
        self._live: list[trio.MemorySendChannel[dict[str, Any]]] = []
        self._watches: set[trio.CancelScope] = set()

    # -- the store --
    def store(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Changes an object without telling current watchers (as if missed while away)."""
        self._version += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._version)
        meta.setdefault("namespace", "default" if obj["kind"] != "Namespace" else None)
        self.objects[obj["kind"], meta.get("namespace") or "", meta["name"]] = obj
        return obj

    def find(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, ns, name))

    def emit(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            self.objects.pop((obj["kind"], obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
        else:
            self.store(obj)
        for channel in self._live:
            channel.send_nowait({"type": event_type, "object": obj})

    def drop_watchers(self) -> None:
        for scope in self._watches:
            scope.cancel()

    def token(self, p: dict[str, Any]) -> str:
        md = p["metadata"]
        return self.issuer.issue(md["namespace"], p["spec"]["serviceAccountName"], md["name"], md["uid"])

    def ops(self) -> list[str]:
        return [r["op"] for r in self.requests]

    # -- the API --
    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await api_server.serve(self.path, self.handle, task_status=task_status)

    async def handle(self, request: dict[str, Any], send: Callable[[dict], Awaitable[None]]) -> Any:
        self.requests.append(request)
        params = dict(request)
        op = params.pop("op")
        if op == "watch":
            await self._watch(params["kinds"], send)
            return api_server.STREAMING
        try:
            return ok(getattr(self, f"op_{op}")(**params))
        except LookupError as e:
            return error(str(e))

    def op_get(self, kind: str, namespace: str | None = None, name: str | None = None, selector: None = None) -> Any:
        if name:
            obj = self.find(kind, namespace or "", name)
            if obj is None:
                raise LookupError(f'Error from server (NotFound): "{name}" not found')
            return obj
        return {"kind": "List", "items": [o for (k, ns, _), o in self.objects.items()
                                           if k == kind and namespace in (None, ns)]}

    def op_apply(self, manifests: str, source: str) -> list[dict[str, Any]]:
        results = []
        for doc in yaml.safe_load_all(manifests):
            md = doc["metadata"]
            old = self.find(doc["kind"], md.get("namespace", "default"), md["name"])
            action = "created" if old is None else "unchanged" if old.get("data") == doc.get("data") else "configured"
            if action != "unchanged":
                self.emit("ADDED" if old is None else "MODIFIED", doc)
            results.append({"kind": doc["kind"], "namespace": md.get("namespace"), "name": md["name"], "action": action})
        return results

    def op_update_status(self, kind: str, namespace: str, name: str, status: dict) -> dict[str, Any]:
        obj = self.find(kind, namespace, name)
        if obj is None:
            raise LookupError(f"{kind} {namespace}/{name} not found")
        obj = {**obj, "status": status}
        self.emit("MODIFIED", obj)
        return obj

    def op_token_review(self, token: str, audience: str) -> dict[str, Any]:
        try:
            caller = self.issuer.review(token, audience)
        except InvalidToken as e:
            raise LookupError(f"token review failed: {e}") from None
        p = self.find("Pod", caller.namespace, caller.pod_name)
        if p is None or p["metadata"]["uid"] != caller.pod_uid:
            raise LookupError("token review failed: the pod no longer exists")
        return {"authenticated": True, "user": {"namespace": caller.namespace, "serviceAccount": caller.service_account,
                                                "podName": caller.pod_name, "podUID": caller.pod_uid,
                                                "nodeName": p["spec"]["nodeName"]}}

    async def _watch(self, kinds: list[str], send: Callable[[dict], Awaitable[None]]) -> None:
        tx, rx = trio.open_memory_channel[dict[str, Any]](math.inf)
        with trio.CancelScope() as scope:
            self._watches.add(scope)
            self._live.append(tx)
            try:
                for (kind, _, _), obj in list(self.objects.items()):
                    if kind in kinds:
                        await send({"type": "ADDED", "object": obj})
                await self.sync_gate.wait()
                await send({"type": "SYNCED", "resourceVersion": str(self._version)})
                async for event in rx:
                    if event["object"]["kind"] in kinds:
                        await send(event)
            finally:
                self._live.remove(tx)
                self._watches.discard(scope)


ZTUNNEL_1 = pod("ztunnel-w1", "istio-system", "ztunnel", "worker1", "172.18.0.11", hostNetwork=True)
HTTPBIN = pod("httpbin-1", "demo", "httpbin", "worker1", "10.244.1.5", {"app": "httpbin"})
SLEEP = pod("sleep-1", "demo", "sleep", "worker2", "10.244.2.5", {"app": "sleep"})


def seed(api: FakeLabAPI) -> None:
    for name, labels in (("istio-system", {}), ("demo", {"istio.io/dataplane-mode": "ambient"})):
        api.store({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    for p in (ZTUNNEL_1, HTTPBIN, SLEEP):
        api.store(copy.deepcopy(p))
    api.store({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "httpbin", "namespace": "demo"},
               "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "httpbin"}, "ports": [{"port": 8000, "targetPort": 80}]}})
    api.store({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": "allow-sleep", "namespace": "demo", "generation": 1},
               "spec": {"selector": {"matchLabels": {"app": "httpbin"}},
                        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/demo/sa/sleep"]}}]}]}})


@pytest.fixture
def socket_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="istiod") as d:  # short: Unix socket paths are limited
        yield d


@pytest.fixture
async def api(nursery: trio.Nursery, socket_dir: str) -> FakeLabAPI:
    fake = FakeLabAPI(os.path.join(socket_dir, "labd.sock"))
    seed(fake)
    await nursery.start(fake.serve)
    return fake


@pytest.fixture
async def address(nursery: trio.Nursery, api: FakeLabAPI) -> tuple[str, int]:
    with trio.fail_after(3):
        port = await nursery.start(serve, api.path, HOST, 0)
    return HOST, port


def root_pem(api: FakeLabAPI) -> str:
    return api.find("ConfigMap", "istio-system", "istio-ca-root-cert")["data"]["root-cert.pem"]


async def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.005)


async def certificate(api: FakeLabAPI, address, caller: dict, identity: str | None = None) -> list[Identity]:
    wanted = Identity.parse(identity) if identity else Identity("cluster.local", caller["metadata"]["namespace"],
                                                                 caller["spec"]["serviceAccountName"])
    _, csr = make_csr(wanted)
    chain = await create_certificate(address, root_pem(api), api.token(caller), csr, identity)
    return verify_chain(chain, root_pem(api))


# ---- trust bootstrap ------------------------------------------------------------------------------

async def test_bootstrap_creates_the_root_once(nursery: trio.Nursery, api: FakeLabAPI, address) -> None:
    secret = api.find("Secret", "istio-system", "istio-ca-secret")
    assert root_pem(api) == secret["data"]["ca-cert.pem"]
    assert "PRIVATE KEY" in secret["data"]["ca-key.pem"]
    with trio.fail_after(3):
        await nursery.start(serve, api.path, HOST, 0)  # a restarted istiod keeps the root
    assert api.find("Secret", "istio-system", "istio-ca-secret") is secret
    assert root_pem(api) == secret["data"]["ca-cert.pem"]


# ---- CreateCertificate ------------------------------------------------------------------------------

async def test_certificates_own_and_impersonated(api: FakeLabAPI, address, caplog) -> None:
    caplog.set_level(logging.INFO)
    assert await certificate(api, address, HTTPBIN) == [Identity("cluster.local", "demo", "httpbin")]
    assert await certificate(api, address, ZTUNNEL_1, "spiffe://cluster.local/ns/demo/sa/httpbin") == [
        Identity("cluster.local", "demo", "httpbin")]
    assert await certificate(api, address, ZTUNNEL_1) == [Identity.parse(ZTUNNEL_SA)]
    issued = [r.getMessage() for r in caplog.records if r.name == "istiod.ca"]
    assert issued[1].startswith("issued spiffe://cluster.local/ns/demo/sa/httpbin for ztunnel on worker1 "
                                "(pod istio-system/ztunnel-w1, serial ")


async def test_certificates_refused(api: FakeLabAPI, address, caplog) -> None:
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


async def test_subscribe_full_state_deltas_and_reconnect(api: FakeLabAPI, address) -> None:
    token, cache = api.token(ZTUNNEL_1), ConfigCache()
    async with aclosing(subscribe(address, root_pem(api), token, "worker1", {})) as stream:
        first = await next_batch(stream, cache)
        assert [m["type"] for m in first] == ["Authorization", "Address", "SYNCED"]
        assert sorted(cache.resources["Address"]) == [
            "Kubernetes//Pod/demo/httpbin-1", "Kubernetes//Pod/demo/sleep-1",
            "Kubernetes//Pod/istio-system/ztunnel-w1", "demo/httpbin.demo.svc.cluster.local"]
        httpbin = cache.resources["Address"]["Kubernetes//Pod/demo/httpbin-1"]["workload"]
        assert (httpbin["protocol"], httpbin["authorizationPolicies"]) == ("HBONE", ["demo/allow-sleep"])
        assert httpbin["services"] == {"demo/httpbin.demo.svc.cluster.local": {"8000": 80}}
        assert list(cache.resources["Authorization"]) == ["demo/allow-sleep"]

        api.emit("ADDED", pod("httpbin-2", "demo", "httpbin", "worker2", "10.244.2.6", {"app": "httpbin"}))
        [delta] = await next_batch(stream, cache)
        assert (delta["type"], delta["removed"]) == ("Address", [])
        assert [r["name"] for r in delta["resources"]] == ["Kubernetes//Pod/demo/httpbin-2"]

        api.emit("DELETED", api.find("Pod", "demo", "httpbin-2"))
        [delta] = await next_batch(stream, cache)
        assert (delta["resources"], delta["removed"]) == ([], ["Kubernetes//Pod/demo/httpbin-2"])

    # While away: sleep-1 is deleted, a policy is added, the namespace leaves ambient.
    known = cache.known()
    del api.objects["Pod", "demo", "sleep-1"]
    api.emit("ADDED", {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                       "metadata": {"name": "deny-9", "namespace": "demo", "generation": 1},
                       "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["9000"]}}]}]}})
    api.emit("MODIFIED", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": {}}})
    api.drop_watchers()  # istiod re-lists, and so learns of the deletion it missed
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


async def test_subscribe_refuses_a_bad_token(api: FakeLabAPI, address) -> None:
    with pytest.raises(IstiodRefused, match="request authenticate failure"):
        async with aclosing(subscribe(address, root_pem(api), "not-a-token", "worker1", {})) as stream:
            async for _ in stream:
                pass


async def open_stuck_subscriber(address, root: str, token: str) -> trio.SSLStream:
    """A subscriber with a tiny receive buffer that never reads: istiod's sends to it block."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # also turns receive autotuning off
    await sock.connect(address)
    conn = trio.SSLStream(trio.SocketStream(sock), client_context(root), server_hostname=None,
                          https_compatible=True)
    await conn.send_all(encode({"op": "Subscribe", "token": token, "node": "stuck", "known": {}}))
    return conn


async def test_a_stuck_subscriber_does_not_hold_back_others(api: FakeLabAPI, address, caplog) -> None:
    caplog.set_level(logging.INFO)
    token = api.token(ZTUNNEL_1)
    async with await open_stuck_subscriber(address, root_pem(api), token):
        cache = ConfigCache()
        async with aclosing(subscribe(address, root_pem(api), token, "worker1", {})) as healthy:
            await next_batch(healthy, cache)
            # 8 MB for every subscriber: more than the stuck one's socket buffers can take
            api.emit("ADDED", pod("big", "demo", "x", "worker1", "10.244.1.50", {"app": "x" * 8_000_000}))
            await next_batch(healthy, cache)
            api.emit("ADDED", pod("small", "demo", "x", "worker1", "10.244.1.51"))
            [delta] = await next_batch(healthy, cache)
            assert [r["name"] for r in delta["resources"]] == ["Kubernetes//Pod/demo/small"]
    pushes = [r.getMessage() for r in caplog.records if r.name == "istiod.xds" and "pushed" in r.getMessage()]
    assert [p for p in pushes if p.endswith("to ztunnel stuck (synced)")]  # its first push went out...
    assert not [p for p in pushes if p.endswith("to ztunnel stuck")]      # ...the 8 MB one never completed


# ---- statuses and readiness -----------------------------------------------------------------------

async def test_policy_status_is_written_once(api: FakeLabAPI, address) -> None:
    def condition() -> dict | None:
        status = api.find("AuthorizationPolicy", "demo", "allow-sleep").get("status") or {}
        return next(iter(status.get("conditions") or []), None)
    await eventually(lambda: condition() is not None)
    assert {k: v for k, v in condition().items() if k != "lastTransitionTime"} == {
        "type": "ZtunnelAccepted", "status": "True", "reason": "Accepted", "message": "attached to ztunnel",
        "observedGeneration": 1}
    api.emit("ADDED", pod("other", "demo", "x", "worker1", "10.244.1.9"))
    await trio.sleep(0.1)
    assert api.ops().count("update_status") == 1


async def test_listens_only_after_the_first_translation(nursery: trio.Nursery, api: FakeLabAPI) -> None:
    with trio.socket.socket() as probe:  # a port that is free now
        await probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    api.sync_gate = trio.Event()
    nursery.start_soon(serve, api.path, HOST, port)
    await eventually(lambda: "watch" in api.ops())
    await trio.sleep(0.05)
    with pytest.raises(OSError):
        await trio.open_tcp_stream(HOST, port)
    api.sync_gate.set()
    _, csr = make_csr(Identity("cluster.local", "demo", "httpbin"))
    with trio.fail_after(2):
        while True:
            try:
                await create_certificate((HOST, port), root_pem(api), api.token(HTTPBIN), csr)
                break
            except IstiodUnavailable:
                await trio.sleep(0.01)


# ---- the process -------------------------------------------------------------------------------------

async def test_process_exits_promptly_on_sigterm(api: FakeLabAPI) -> None:
    env = {**os.environ, "LAB_API_SOCKET": api.path}
    argv = [sys.executable, "-m", "mesh.istiod", "--host", HOST, "--port", "0"]
    process = await trio.lowlevel.open_process(argv, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    async with process.stderr:
        try:
            log = b""
            with trio.fail_after(5):
                while b"serving CA and config on" not in log:
                    chunk = await process.stderr.receive_some(4096)
                    assert chunk, log
                    log += chunk
            assert b" info server: serving CA and config on 127.0.0.1:" in log
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(2):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
