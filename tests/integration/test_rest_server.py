"""The Kubernetes endpoint over real TLS on 127.0.0.1, driven by the official `kubernetes` client.

The server runs in its own thread (trio), over the real Store and ApiServer, as labd wires it
(lab/apiserver/rest/service.py); the client is the one users and suites use, configured from the
kubeconfig the endpoint writes.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import threading
import uuid
from typing import Any, Iterator

import pytest
import trio

from lab import addons
from lab.apiserver.admission import AdmittingStore
from lab.apiserver.api import ApiServer
from lab.apiserver.dispatch import Dispatcher
from lab.apiserver.rest import certs, service
from lab.apiserver.tokens import TokenIssuer
from lab.client.paths import container_log_path, lab_dir, pod_dir
from lab.testing import DEFAULT_TOPOLOGY
from lab.topology import load_file

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402


class Endpoint:
    """The REST endpoint of an in-process lab API, served from a thread."""

    def __init__(self, directory: str):
        self.directory = directory
        self.store = AdmittingStore()
        # A lab name of its own: pod logs are read from that lab's directory (lab.client.paths).
        self.topology = load_file(DEFAULT_TOPOLOGY).with_name("rt" + uuid.uuid4().hex[:8])
        self.api = ApiServer(
            self.store, self.topology, directory, extra_validators=addons.validators(), extra_warners=addons.warners()
        )
        for name in ("default", "kube-system"):
            self.store.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "status": {"phase": "Active"}}
            )
        self.dispatcher = Dispatcher(self.api, TokenIssuer.generate())
        self.port = 0
        self._ready = threading.Event()
        self._scope: trio.CancelScope | None = None
        self._token: Any = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        with trio.CancelScope() as scope:
            self._scope, self._token = scope, trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self.port = await nursery.start(service.serve, self.api, self.dispatcher, "it", self.directory)
                self._ready.set()

    def __enter__(self) -> "Endpoint":
        self._thread.start()
        assert self._ready.wait(30), "the endpoint did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._scope is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)
        assert not self._thread.is_alive()

    @property
    def kubeconfig(self) -> str:
        return os.path.join(self.directory, "kubeconfig")


@pytest.fixture
def endpoint(tmp_path: Any) -> Iterator[Endpoint]:
    with Endpoint(str(tmp_path)) as e:
        yield e


@pytest.fixture
def api_client(endpoint: Endpoint) -> Iterator[Any]:
    with k8s_config.new_client_from_config(config_file=endpoint.kubeconfig, context="it") as c:
        yield c


def test_kubeconfig_and_files(endpoint: Endpoint) -> None:
    with open(endpoint.kubeconfig) as f:
        text = f.read()
    assert f"server: https://127.0.0.1:{endpoint.port}" in text and "current-context: it" in text
    assert os.stat(endpoint.kubeconfig).st_mode & 0o777 == 0o600
    for key in ("ca.key", "apiserver.key", "admin.key"):
        assert os.stat(os.path.join(endpoint.directory, "pki", key)).st_mode & 0o777 == 0o600
    with open(os.path.join(endpoint.directory, "kube-api.port")) as f:
        assert int(f.read()) == endpoint.port


def test_namespace_lifecycle(api_client: Any) -> None:
    core = k8s.CoreV1Api(api_client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="demo", labels={"a": "b"})))
    names = [n.metadata.name for n in core.list_namespace(label_selector="a=b").items]
    assert names == ["demo"]
    core.patch_namespace("demo", {"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}})
    ns = core.read_namespace("demo")
    assert ns.metadata.labels == {"a": "b", "istio.io/dataplane-mode": "ambient"}
    with pytest.raises(ApiException) as e:
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name="demo")))
    assert e.value.status == 409 and json.loads(e.value.body)["reason"] == "AlreadyExists"
    deleted = core.delete_namespace("demo")  # typed V1Status: the Namespace comes back as a dict
    assert deleted["metadata"]["deletionTimestamp"] and deleted["status"]["phase"] == "Terminating"
    with pytest.raises(ApiException) as e:
        core.delete_namespace("default")
    assert e.value.status == 403


def test_pod_lifecycle_and_watch(api_client: Any, endpoint: Endpoint) -> None:
    core = k8s.CoreV1Api(api_client)
    body = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="sleep", labels={"app": "sleep"}),
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(name="sleep", image="curlimages/curl", command=["sleep", "1d"])]
        ),
    )
    created = core.create_namespaced_pod("default", body)
    assert created.metadata.uid and created.status.phase == "Pending"
    pods = core.list_namespaced_pod("default", label_selector="app=sleep", field_selector="metadata.name=sleep")
    assert [p.metadata.name for p in pods.items] == ["sleep"]
    assert core.read_namespaced_pod("sleep", "default").spec.containers[0].image == "curlimages/curl"
    patched = core.patch_namespaced_pod("sleep", "default", {"metadata": {"labels": {"version": "v1"}}})
    assert patched.metadata.labels == {"app": "sleep", "version": "v1"}
    events = []
    for event in k8s_watch.Watch().stream(core.list_namespaced_pod, "default", timeout_seconds=1):
        events.append((event["type"], event["object"].metadata.name))
    assert events == [("ADDED", "sleep")]
    deleted = core.delete_namespaced_pod("sleep", "default")
    assert deleted.metadata.deletion_timestamp is not None  # labd's kubelet would finish it
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("nope", "default")
    assert e.value.status == 404


def test_authorization_policy_as_custom_object(api_client: Any) -> None:
    custom = k8s.CustomObjectsApi(api_client)
    group, version, plural = "security.istio.io", "v1", "authorizationpolicies"
    policy = {
        "apiVersion": f"{group}/{version}",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "require-sleep"},
        "spec": {
            "selector": {"matchLabels": {"app": "httpbin"}},
            "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}],
        },
    }
    custom.create_namespaced_custom_object(group, version, "default", plural, policy)
    listed = custom.list_namespaced_custom_object(group, version, "default", plural)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["require-sleep"]
    patched = custom.patch_namespaced_custom_object(
        group, version, "default", plural, "require-sleep", {"spec": {"action": "DENY"}}
    )
    assert patched["spec"]["action"] == "DENY"
    assert (
        custom.get_namespaced_custom_object(group, version, "default", plural, "require-sleep")["spec"]["rules"]
        == policy["spec"]["rules"]
    )
    with pytest.raises(ApiException) as e:
        custom.create_namespaced_custom_object(
            group, version, "default", plural, dict(policy, metadata={"name": "bad"}, spec={"action": "MAYBE"})
        )
    assert e.value.status == 422
    custom.delete_namespaced_custom_object(group, version, "default", plural, "require-sleep")
    assert custom.list_namespaced_custom_object(group, version, "default", plural)["items"] == []


def _raw(endpoint: Endpoint, path: str, *, with_cert: bool) -> tuple[int, dict]:
    pki = certs.load(os.path.join(endpoint.directory, "pki"))
    assert pki is not None
    conn = http.client.HTTPSConnection(
        "127.0.0.1", endpoint.port, context=certs.client_context(pki, with_cert), timeout=10
    )
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_no_client_certificate_is_unauthorized(endpoint: Endpoint) -> None:
    code, body = _raw(endpoint, "/api/v1/namespaces", with_cert=False)
    assert (code, body["kind"], body["reason"]) == (401, "Status", "Unauthorized")
    code, body = _raw(endpoint, "/api/v1/namespaces", with_cert=True)
    assert code == 200 and body["kind"] == "NamespaceList"


def test_a_foreign_certificate_is_refused(endpoint: Endpoint, tmp_path: Any) -> None:
    other = certs.generate(str(tmp_path / "other"), "other")
    ctx = ssl.create_default_context(cadata=certs.load(os.path.join(endpoint.directory, "pki")).ca_cert.decode())
    ctx.load_cert_chain(other.path("admin.crt"), other.path("admin.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", endpoint.port, context=ctx, timeout=10)
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)):
        conn.request("GET", "/api")
        conn.getresponse().read()
    conn.close()


def test_a_watcher_that_hangs_up_leaves_nothing_behind(endpoint: Endpoint) -> None:
    """The watch's store subscription (its task's) ends when the client closes, without an event."""
    import socket
    import time

    pki = certs.load(os.path.join(endpoint.directory, "pki"))
    assert pki is not None
    subscribers = endpoint.store._subscribers
    before = len(subscribers)
    raw = socket.create_connection(("127.0.0.1", endpoint.port), timeout=10)
    tls = certs.client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1")
    tls.sendall(b"GET /api/v1/namespaces/default/pods?watch=true HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += tls.recv(4096)
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    deadline = time.monotonic() + 5
    while len(subscribers) == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(subscribers) == before + 1
    tls.close()
    deadline = time.monotonic() + 5
    while len(subscribers) != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(subscribers) == before


def test_pod_logs(api_client: Any, endpoint: Endpoint) -> None:
    """`pods/log` reads the file the kubelet writes; `follow` streams what is appended."""
    core = k8s.CoreV1Api(api_client)
    spec = k8s.V1PodSpec(containers=[k8s.V1Container(name="app", image="curlimages/curl")])
    pod = core.create_namespaced_pod("default", k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="talker"), spec=spec))
    directory = pod_dir(endpoint.topology.name, "default", "talker", pod.metadata.uid)
    os.makedirs(directory)
    try:
        path = container_log_path(directory, "app", 0)
        with open(path, "w") as f:
            f.write("one\ntwo\nthree\n")
        assert core.read_namespaced_pod_log("talker", "default") == "one\ntwo\nthree\n"
        assert core.read_namespaced_pod_log("talker", "default", tail_lines=1) == "three\n"
        with pytest.raises(ApiException) as e:
            core.read_namespaced_pod_log("talker", "default", container="nope")
        assert e.value.status == 400
        resp = core.read_namespaced_pod_log("talker", "default", follow=True, tail_lines=0, _preload_content=False)
        try:
            with open(path, "a") as f:
                f.write("four\n")
            assert resp.read1(64) == b"four\n"
        finally:
            resp.release_conn()
    finally:
        shutil.rmtree(lab_dir(endpoint.topology.name), ignore_errors=True)


def test_upgrade_hands_the_connection_over(tmp_path: Any) -> None:
    """An Upgrade answer gives the handler the TLS stream, what the client sent after the request
    and the headers (the WebSocket exec path); other requests on the server are unaffected."""
    import socket

    from lab.apiserver.rest.messages import Request, Response, Upgrade
    from lab.apiserver.rest.server import RestServer

    pki = certs.generate(str(tmp_path / "pki"), "up")

    async def app(request: Request) -> Any:
        if request.header("upgrade") != "websocket":
            return Response(200, b"plain", "text/plain")

        async def handler(stream: trio.abc.Stream, leftover: bytes, headers: Any) -> None:
            await stream.send_all(
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + leftover + b"|" + headers["x-hello"].encode() + b"|"
            )
            await stream.send_all(await stream.receive_some(100))

        return Upgrade(handler)

    server = RestServer(app, certs.server_context(pki))
    ready, token, scope_box = threading.Event(), [], []

    async def main() -> None:
        with trio.CancelScope() as scope:
            scope_box.append(scope)
            token.append(trio.lowlevel.current_trio_token())
            async with trio.open_nursery() as nursery:
                await nursery.start(server.serve)
                ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        tls = certs.client_context(pki).wrap_socket(raw, server_hostname="127.0.0.1")
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(
            b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Hello: there\r\n\r\nearly"
        )
        got = b""
        while not got.endswith(b"|there|"):
            got += tls.recv(4096)
        assert got == b"HTTP/1.1 101 Switching Protocols\r\n\r\nearly|there|"
        tls.sendall(b"echo")
        assert tls.recv(100) == b"echo"
        tls.close()
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=certs.client_context(pki), timeout=10)
        for _ in range(2):  # keep-alive: two requests, one connection
            conn.request("GET", "/plain")
            assert conn.getresponse().read() == b"plain"
        conn.close()
    finally:
        trio.from_thread.run_sync(scope_box[0].cancel, trio_token=token[0])
        thread.join(10)
