"""The REST endpoint's handlers in process (no sockets): the real Store and ApiServer behind them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from lab import addons
from lab.apiserver.api import ApiServer
from lab.apiserver.rest import certs
from lab.apiserver.rest.app import RestApp
from lab.apiserver.rest.messages import Request, Response, Streaming
from lab.apiserver.rest.target import Context
from lab.apiserver.store import Store
from lab.testing import DEFAULT_TOPOLOGY
from lab.topology import load_file

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
PODS = "/api/v1/namespaces/default/pods"


def pod(name: str = "p", labels: dict | None = None, **extra: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "curlimages/curl", "command": ["sleep", "1d"]}], **extra},
    }


def deployment(name: str = "web", replicas: int = 1) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "curlimages/curl"}]},
            },
        },
    }


class Client:
    def __init__(self, app: RestApp, store: Store):
        self.app, self.store = app, store

    async def call(
        self,
        method: str,
        target: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
        user: str | None = "lab-admin",
        groups: tuple[str, ...] = (certs.ADMIN_GROUP,),
    ) -> tuple[int, Any, Response]:
        from lab.apiserver.rest.server import parse_target

        path, query = parse_target(target)
        raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        request = Request(method, path, query, {"content-type": content_type, "accept": accept}, raw, user, groups)
        from lab.apiserver.rest import status

        try:
            result = await self.app(request)
        except status.StatusError as e:
            result = status.response(e)
        assert isinstance(result, Response), result
        parsed = json.loads(result.body) if result.content_type.startswith("application/json") else result.body
        return result.status, parsed, result


@pytest.fixture
def client(tmp_path: Any) -> Client:
    store = Store()
    api = ApiServer(
        store,
        load_file(DEFAULT_TOPOLOGY),
        str(tmp_path),
        extra_validators=addons.validators(),
        extra_warners=addons.warners(),
    )
    store.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    return Client(RestApp(Context(api)), store)


async def test_authentication_and_authorization(client: Client) -> None:
    code, body, _ = await client.call("GET", "/api/v1/pods", user=None, groups=())
    assert (code, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")
    code, body, _ = await client.call("GET", "/api/v1/pods", user="someone", groups=("devs",))
    assert (code, body["reason"]) == (403, "Forbidden")


async def test_version_discovery_and_unknown_paths(client: Client) -> None:
    code, body, _ = await client.call("GET", "/version")
    assert (code, body["major"], body["minor"]) == (200, "1", "30")
    v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    code, body, resp = await client.call("GET", "/apis/", accept=f"{v2},application/json")
    assert code == 200 and resp.content_type == v2 and body["kind"] == "APIGroupDiscoveryList"
    code, body, resp = await client.call("GET", "/api")
    assert body["kind"] == "APIVersions"
    assert (await client.call("GET", "/apis/nothing.example.com/v1"))[0] == 404
    assert (await client.call("GET", "/api/v1/namespaces/default/widgets"))[0] == 404
    assert (await client.call("GET", "/api/v1/namespaces/default/namespaces"))[0] == 404  # cluster-scoped
    code, body, _ = await client.call("POST", "/version")
    assert (code, body["reason"]) == (405, "MethodNotAllowed")


async def test_create_get_list_and_table(client: Client) -> None:
    code, created, _ = await client.call("POST", PODS, pod("a"))
    assert code == 201 and created["metadata"]["uid"] and created["status"] == {"phase": "Pending"}
    code, body, _ = await client.call("POST", PODS, pod("a"))
    assert (code, body["reason"], body["message"]) == (409, "AlreadyExists", 'pods "a" already exists')
    await client.call("POST", PODS, pod("b", {"app": "b", "tier": "x"}))
    code, got, _ = await client.call("GET", f"{PODS}/a")
    assert code == 200 and got["metadata"]["name"] == "a" and got["kind"] == "Pod"
    code, body, _ = await client.call("GET", "/api/v1/pods?labelSelector=tier%3Dx")
    assert body["kind"] == "PodList" and [p["metadata"]["name"] for p in body["items"]] == ["b"]
    code, body, _ = await client.call("GET", "/api/v1/pods?fieldSelector=metadata.name%3Da")
    assert [p["metadata"]["name"] for p in body["items"]] == ["a"]
    code, body, _ = await client.call("GET", "/api/v1/pods?fieldSelector=spec.foo%3D1")
    assert (code, body["reason"]) == (400, "BadRequest")
    code, table, _ = await client.call("GET", f"{PODS}?limit=500", accept=TABLE)
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:3] == ["NAME", "READY", "STATUS"]
    assert [c["priority"] for c in table["columnDefinitions"] if c["name"] == "IP"] == [1]
    row = table["rows"][0]
    assert row["cells"][0] == "a" and row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["namespace"] == "default"
    _, table, _ = await client.call("GET", f"{PODS}?includeObject=Object", accept=TABLE)
    assert table["rows"][0]["object"]["spec"]["containers"][0]["name"] == "c"
    _, table, _ = await client.call("GET", f"{PODS}/a", accept=TABLE)
    assert len(table["rows"]) == 1
    code, _, _ = await client.call("GET", PODS, accept="application/json;as=Nope;v=v1;g=meta.k8s.io")
    assert code == 406


async def test_limit_and_continue(client: Client) -> None:
    for n in "abcde":
        await client.call("POST", PODS, pod(n))
    names: list[str] = []
    target = f"{PODS}?limit=2"
    while True:
        _, body, _ = await client.call("GET", target)
        names += [p["metadata"]["name"] for p in body["items"]]
        token = body["metadata"].get("continue")
        if not token:
            break
        target = f"{PODS}?limit=2&continue={token}"
    assert names == list("abcde")
    code, body, _ = await client.call("GET", f"{PODS}?limit=2&continue=garbage")
    assert (code, body["reason"]) == (400, "BadRequest")


async def test_field_validation_and_dry_run_store_nothing(client: Client) -> None:
    bad = pod("s", extra_field=None)
    bad["spec"]["containers"][0]["imagee"] = "x"
    code, body, _ = await client.call("POST", f"{PODS}?fieldValidation=Strict", bad)
    assert (code, body["reason"]) == (400, "BadRequest")
    assert (
        body["message"] == 'strict decoding error: unknown field "spec.containers[0].imagee", '
        'unknown field "spec.extra_field"'
    )
    assert client.store.get("Pod", "default", "s") is None
    code, body, resp = await client.call("POST", PODS, bad)  # the default: Warn
    assert code == 201 and "imagee" not in body["spec"]["containers"][0]
    assert ("Warning", '299 - "unknown field \\"spec.containers[0].imagee\\""') in resp.headers
    code, body, _ = await client.call("POST", f"{PODS}?dryRun=All", pod("dry"))
    assert code == 201 and body["metadata"]["uid"] and client.store.get("Pod", "default", "dry") is None
    code, body, _ = await client.call("POST", f"{PODS}?dryRun=Some", pod("dry"))
    assert code == 422
    code, body, _ = await client.call(
        "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": []}}
    )
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.containers"
    assert client.store.get("Pod", "default", "x") is None
    code, body, _ = await client.call("POST", PODS, b"{not json")
    assert code == 400
    code, body, _ = await client.call("POST", PODS, pod("y"), content_type="text/plain")
    assert (code, body["reason"]) == (415, "UnsupportedMediaType")
    other = pod("z")
    other["metadata"]["namespace"] = "elsewhere"
    assert (await client.call("POST", PODS, other))[0] == 400
    assert (await client.call("POST", "/api/v1/namespaces/nope/pods", pod("z")))[0] == 404


async def test_put_conflict_status_and_no_op(client: Client) -> None:
    _, ns, _ = await client.call("POST", "/api/v1/namespaces", {"metadata": {"name": "demo"}})
    stale = ns["metadata"]["resourceVersion"]
    ns["metadata"]["labels"] = {"x": "1"}
    code, updated, _ = await client.call("PUT", "/api/v1/namespaces/demo", ns)
    assert code == 200 and updated["metadata"]["labels"] == {"x": "1"}
    assert updated["metadata"]["resourceVersion"] != stale
    ns["metadata"]["labels"] = {"x": "2"}
    code, body, _ = await client.call("PUT", "/api/v1/namespaces/demo", ns)
    assert (code, body["reason"]) == (409, "Conflict")
    assert client.store.get("Namespace", None, "demo")["metadata"]["labels"] == {"x": "1"}
    same = dict(updated)
    code, again, _ = await client.call("PUT", "/api/v1/namespaces/demo", same)
    assert again["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]
    with_status = dict(again, status={"phase": "Terminating"})
    _, kept, _ = await client.call("PUT", "/api/v1/namespaces/demo", with_status)
    assert kept.get("status", {}).get("phase") != "Terminating"  # the main resource keeps status
    code, body, _ = await client.call("PUT", "/api/v1/namespaces/demo/status", dict(kept, status={"phase": "Active"}))
    assert code == 200 and body["status"] == {"phase": "Active"}
    code, body, _ = await client.call("PUT", "/api/v1/namespaces/other", dict(kept))
    assert code == 400  # the name in the body is not the URL's


async def test_patches(client: Client) -> None:
    await client.call("POST", PODS, pod("p"))
    merge = "application/merge-patch+json"
    code, body, _ = await client.call(
        "PATCH", f"{PODS}/p", {"metadata": {"labels": {"x": "y", "app": None}}}, content_type=merge
    )
    assert code == 200 and body["metadata"]["labels"] == {"x": "y"}
    code, body, _ = await client.call(
        "PATCH",
        f"{PODS}/p",
        [{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}],
        content_type="application/json-patch+json",
    )
    assert code == 200 and body["metadata"]["annotations"] == {"k": "v"}
    before = client.store.get("Pod", "default", "p")
    code, body, _ = await client.call(
        "PATCH", f"{PODS}/p", [{"op": "remove", "path": "/nothing"}], content_type="application/json-patch+json"
    )
    assert code >= 400 and client.store.get("Pod", "default", "p") is before
    code, body, _ = await client.call(
        "PATCH",
        f"{PODS}/p",
        {"spec": {"containers": [{"name": "c", "image": "x"}]}},
        content_type="application/strategic-merge-patch+json",
    )
    assert (code, body["reason"]) == (422, "Invalid")  # pods' specs do not change
    code, body, _ = await client.call(
        "PATCH", f"{PODS}/p?fieldValidation=Strict", {"spec": {"bogus": 1}}, content_type=merge
    )
    assert code == 400 and "spec.bogus" in body["message"]
    code, body, _ = await client.call("PATCH", f"{PODS}/missing", {}, content_type=merge)
    assert code == 404
    code, body, _ = await client.call("PATCH", f"{PODS}/p", {}, content_type="application/foo")
    assert code == 415


async def test_server_side_apply_creates_then_updates(client: Client) -> None:
    apply = "application/apply-patch+yaml"
    url = "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=kubectl&force=false"
    code, body, _ = await client.call("PATCH", url, deployment("web"), content_type=apply)
    assert code == 201 and body["metadata"]["managedFields"][0]["manager"] == "kubectl"
    code, body, _ = await client.call("PATCH", url, deployment("web", 3), content_type=apply)
    assert code == 200 and body["spec"]["replicas"] == 3
    code, body, _ = await client.call("PATCH", url.split("?")[0], deployment("web"), content_type=apply)
    assert code == 422  # apply needs a field manager


async def test_scale_subresource(client: Client) -> None:
    await client.call("POST", "/apis/apps/v1/namespaces/default/deployments", deployment("web"))
    url = "/apis/apps/v1/namespaces/default/deployments/web/scale"
    code, scale, _ = await client.call("GET", url)
    assert (code, scale["kind"], scale["spec"], scale["status"]["selector"]) == (
        200,
        "Scale",
        {"replicas": 1},
        "app=web",
    )
    code, scale, _ = await client.call(
        "PATCH", url, {"spec": {"replicas": 4}}, content_type="application/merge-patch+json"
    )
    assert code == 200 and scale["spec"]["replicas"] == 4
    assert client.store.get("Deployment", "default", "web")["spec"]["replicas"] == 4
    scale["spec"]["replicas"] = -1
    assert (await client.call("PUT", url, scale))[0] == 422
    assert (await client.call("GET", "/apis/apps/v1/namespaces/default/daemonsets/x/scale"))[0] == 404


async def test_delete_with_propagation(client: Client) -> None:
    await client.call("POST", PODS, pod("p"))
    code, body, _ = await client.call("DELETE", f"{PODS}/p", {"propagationPolicy": "Background"})
    assert code == 200 and body["metadata"]["deletionTimestamp"]  # the kubelet finishes it
    _, web, _ = await client.call("POST", "/apis/apps/v1/namespaces/default/deployments", deployment("web"))
    child = deployment("web-rs")
    child.update(kind="ReplicaSet")
    child["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "web",
            "uid": web["metadata"]["uid"],
            "controller": True,
        }
    ]
    await client.call("POST", "/apis/apps/v1/namespaces/default/replicasets", child)
    code, body, _ = await client.call("DELETE", "/apis/apps/v1/namespaces/default/deployments/web?dryRun=All")
    assert code == 200 and client.store.get("Deployment", "default", "web") is not None
    code, body, _ = await client.call(
        "DELETE", "/apis/apps/v1/namespaces/default/deployments/web", {"propagationPolicy": "Orphan"}
    )
    assert (code, body["kind"], body["status"]) == (200, "Status", "Success")
    rs = client.store.get("ReplicaSet", "default", "web-rs")
    assert rs is not None and "ownerReferences" not in rs["metadata"]
    code, body, _ = await client.call(
        "DELETE", "/apis/apps/v1/namespaces/default/replicasets/web-rs", {"propagationPolicy": "Sideways"}
    )
    assert code == 422 and client.store.get("ReplicaSet", "default", "web-rs") is not None
    code, body, _ = await client.call("DELETE", "/api/v1/namespaces/default")
    assert (code, body["reason"]) == (403, "Forbidden")
    code, body, _ = await client.call("DELETE", f"{PODS}/nope")
    assert (code, body["reason"], body["message"]) == (404, "NotFound", 'pods "nope" not found')


async def test_custom_kind_versions(client: Client) -> None:
    ap = {
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny"},
        "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]},
    }
    base = "/apis/security.istio.io/{}/namespaces/default/authorizationpolicies"
    code, body, _ = await client.call("POST", base.format("v1beta1"), ap)
    assert code == 201
    code, body, _ = await client.call("GET", base.format("v1") + "/deny")
    assert body["apiVersion"] == "security.istio.io/v1" and body["spec"]["action"] == "DENY"
    code, body, _ = await client.call(
        "PATCH",
        base.format("v1") + "/deny",
        {"spec": {"action": "ALLOW"}},
        content_type="application/strategic-merge-patch+json",
    )
    assert code == 415  # custom kinds take JSON and merge patches only
    code, body, _ = await client.call("DELETE", base.format("v1") + "/deny")
    assert code == 200 and body["kind"] == "AuthorizationPolicy"


async def test_watch_streams_events(client: Client, autojump_clock: trio.abc.Clock) -> None:
    await client.call("POST", PODS, pod("a"))
    path, query = "/api/v1/namespaces/default/pods", {"watch": ["true"], "timeoutSeconds": ["5"]}
    request = Request("GET", path, query, {"accept": "application/json"}, b"", "lab-admin", (certs.ADMIN_GROUP,))
    result = await client.app(request)
    assert isinstance(result, Streaming)
    chunks: list[bytes] = []

    async def write(data: bytes) -> None:
        chunks.append(data)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(result.body, write, trio.Event())
        await trio.sleep(1)
        await client.call("POST", PODS, pod("b"))
    events = [json.loads(c) for c in chunks]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("ADDED", "b")]
    code, body, _ = await client.call("GET", f"{PODS}?watch=true&resourceVersion=abc")
    assert code == 400


async def test_server_side_apply_after_client_side_apply(client: Client) -> None:
    """What `kubectl apply --server-side` sends over objects `kubectl apply` made (k8s.io/kubectl
    apply.go): an apply, the annotation applied alone as `kubectl-last-applied`, the JSON patch moving
    the client-side manager's fields into `kubectl`'s Apply entry (client-go util/csaupgrade), and the
    apply again. Nothing may be lost on the way, and a further apply changes nothing."""
    last = "kubectl.kubernetes.io/last-applied-configuration"
    apply, json_patch = "application/apply-patch+yaml", "application/json-patch+json"
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"ports": [{"name": "http", "port": 8000, "targetPort": 80}], "selector": {"app": "web"}},
    }
    web = deployment("web")
    web["metadata"]["namespace"] = "default"

    def union(a: dict, b: dict) -> dict:
        return {**a, **{k: union(a.get(k, {}), v) for k, v in b.items()}}

    for url, obj in (
        ("/api/v1/namespaces/default/services", service),
        ("/apis/apps/v1/namespaces/default/deployments", web),
    ):
        text = json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"
        created = json.loads(json.dumps(obj))
        created["metadata"]["annotations"] = {last: text}
        code, _, _ = await client.call("POST", f"{url}?fieldManager=kubectl-client-side-apply", created)
        assert code == 201
        url += "/web"
        code, live, _ = await client.call("PATCH", f"{url}?fieldManager=kubectl&force=false", obj, content_type=apply)
        assert code == 200 and live["metadata"]["annotations"] == {last: text}
        just = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {"name": "web", "namespace": "default", "annotations": {last: text}},
        }
        code, live, _ = await client.call("PATCH", f"{url}?fieldManager=kubectl-last-applied", just, content_type=apply)
        assert code == 200
        entries = live["metadata"]["managedFields"]
        csa = next(e for e in entries if e["manager"] == "kubectl-client-side-apply")
        mine = next(e for e in entries if e["manager"] == "kubectl")
        mine["fieldsV1"] = union(mine["fieldsV1"], csa["fieldsV1"])
        migration = [
            {"op": "replace", "path": "/metadata/managedFields", "value": [e for e in entries if e is not csa]},
            {"op": "replace", "path": "/metadata/resourceVersion", "value": live["metadata"]["resourceVersion"]},
        ]
        code, live, _ = await client.call("PATCH", f"{url}?fieldManager=kubectl", migration, content_type=json_patch)
        assert code == 200 and {e["manager"] for e in live["metadata"]["managedFields"]} == {
            "kubectl",
            "kubectl-last-applied",
        }
        code, out, _ = await client.call("PATCH", f"{url}?fieldManager=kubectl&force=false", obj, content_type=apply)
        assert code == 200, out
        assert out["metadata"].get("labels") == obj["metadata"].get("labels")
        assert out["metadata"]["annotations"] == {last: text}
        if obj is service:
            assert out["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": 80, "protocol": "TCP"}]
        else:
            assert out["spec"]["template"] == obj["spec"]["template"]
        code, again, _ = await client.call("PATCH", f"{url}?fieldManager=kubectl&force=false", obj, content_type=apply)
        assert code == 200 and again == out
