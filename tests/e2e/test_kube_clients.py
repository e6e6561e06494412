"""The Kubernetes Python clients against the lab's endpoint: the official `kubernetes` client and kr8s
create, list, watch, patch and delete pods and a custom resource (the article's
AuthorizationPolicy), as a suite written for a cluster would.

These tests use only the `cluster` fixture's kubeconfig, so they run on any cluster with Istio's
CRDs (`pytest --kubeconfig FILE`); what looks inside labd (its sockets, after a watch hangs up) and
`lab kubectl` are the lab's alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import yaml

from lab.cluster import Cluster
from lab.testing import ARTICLE, eventually

kubernetes = pytest.importorskip("kubernetes")
kr8s = pytest.importorskip("kr8s")

from kubernetes import client, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

GROUP, VERSION, PLURAL = "security.istio.io", "v1", "authorizationpolicies"


@pytest.fixture
def kns(kube_api):
    """A fresh namespace made and deleted through the official client."""
    core = client.CoreV1Api(kube_api)
    name = f"t-clients-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)
        eventually(lambda: _gone(lambda: core.read_namespace(name)), timeout=120, what=f"namespace {name} gone")


def _gone(read) -> bool:
    try:
        read()
    except ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def sleeper(name: str, ns: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {
            "containers": [{"name": "sleep", "image": "curlimages/curl", "command": ["/bin/sleep", "3650d"]}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def article_policy(ns: str) -> dict:
    with open(os.path.join(ARTICLE, "l4-policy.yaml")) as f:
        policy = yaml.safe_load(f)
    policy["metadata"]["namespace"] = ns
    return policy


def _ready(pod: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in (pod.get("status") or {}).get("conditions") or []
    )


def test_official_client_pods(kube_api, kns):
    core = client.CoreV1Api(kube_api)
    made = core.create_namespaced_pod(kns, sleeper("sleepy", kns))
    assert made.metadata.uid and made.metadata.resource_version
    listed = core.list_namespaced_pod(kns, label_selector="app=sleepy")
    assert [p.metadata.name for p in listed.items] == ["sleepy"]
    assert core.list_namespaced_pod(kns, label_selector="app=other").items == []
    assert [p.metadata.name for p in core.list_namespaced_pod(kns, field_selector="metadata.name=sleepy").items] == [
        "sleepy"
    ]

    # watch: the current pod first, then its changes until it is Ready
    w, seen = watch.Watch(), []
    for event in w.stream(core.list_namespaced_pod, kns, timeout_seconds=60, _preload_content=False):
        seen.append(event["type"])
        if _ready(event["raw_object"]):
            w.stop()
    assert seen[0] == "ADDED" and set(seen) <= {"ADDED", "MODIFIED"}

    # strategic merge (the client's default for a built-in kind): `$patch: replace` is a directive
    core.patch_namespaced_pod("sleepy", kns, {"metadata": {"labels": {"$patch": "replace", "app": "sleepy", "s": "1"}}})
    assert core.read_namespaced_pod("sleepy", kns).metadata.labels == {"app": "sleepy", "s": "1"}
    # JSON merge patch: null removes a key
    merge = "application/merge-patch+json"
    core.patch_namespaced_pod(
        "sleepy", kns, {"metadata": {"labels": {"s": None, "m": "2"}, "annotations": {"a": "b"}}}, _content_type=merge
    )
    pod = core.read_namespaced_pod("sleepy", kns)
    assert pod.metadata.labels == {"app": "sleepy", "m": "2"} and pod.metadata.annotations["a"] == "b"
    # JSON patch (a list); a failing `test` op is refused and changes nothing
    core.patch_namespaced_pod("sleepy", kns, [{"op": "add", "path": "/metadata/labels/j", "value": "3"}])
    with pytest.raises(ApiException) as e:
        core.patch_namespaced_pod("sleepy", kns, [{"op": "test", "path": "/metadata/labels/j", "value": "x"}])
    assert e.value.status in (409, 422)
    pod = core.read_namespaced_pod("sleepy", kns)
    assert pod.metadata.labels["j"] == "3"

    # a watch from that resourceVersion sees the deletion
    rv = pod.metadata.resource_version
    core.delete_namespaced_pod(
        "sleepy", kns, body=client.V1DeleteOptions(propagation_policy="Background", grace_period_seconds=0)
    )
    events = []
    for event in w.stream(
        core.list_namespaced_pod, kns, resource_version=rv, timeout_seconds=60, _preload_content=False
    ):
        events.append((event["type"], event["raw_object"]["metadata"]["name"]))
        if event["type"] == "DELETED":
            w.stop()
    assert events[-1] == ("DELETED", "sleepy")
    eventually(lambda: _gone(lambda: core.read_namespaced_pod("sleepy", kns)), timeout=60)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("sleepy", kns)
    assert e.value.status == 404 and '"reason":"NotFound"' in e.value.body.replace(" ", "")


def test_official_client_custom_resource(kube_api, kns):
    custom = client.CustomObjectsApi(kube_api)
    made = custom.create_namespaced_custom_object(GROUP, VERSION, kns, PLURAL, article_policy(kns))
    assert made["kind"] == "AuthorizationPolicy" and made["metadata"]["uid"]
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, kns, PLURAL)
    assert [p["metadata"]["name"] for p in listed["items"]] == ["require-sleep-identity"]
    rv = listed["metadata"]["resourceVersion"]

    # merge patch (the client's default for custom objects): lists are replaced whole
    rules = [{"to": [{"operation": {"methods": ["GET"]}}]}]
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, kns, PLURAL, "require-sleep-identity", {"spec": {"rules": rules}}
    )
    got = custom.get_namespaced_custom_object(GROUP, VERSION, kns, PLURAL, "require-sleep-identity")
    assert got["spec"]["rules"] == rules and got["spec"]["action"] == "ALLOW"
    # strategic merge needs a built-in kind's schema: refused for a custom resource, as upstream
    with pytest.raises(ApiException) as e:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            kns,
            PLURAL,
            "require-sleep-identity",
            {"spec": {"action": "DENY"}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert e.value.status == 415
    # an invalid value is refused with the field named, and nothing is kept
    with pytest.raises(ApiException) as e:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, kns, PLURAL, "require-sleep-identity", {"spec": {"action": "MAYBE"}}
        )
    assert e.value.status == 422 and "action" in e.value.body
    assert (
        custom.get_namespaced_custom_object(GROUP, VERSION, kns, PLURAL, "require-sleep-identity")["spec"]["action"]
        == "ALLOW"
    )

    custom.delete_namespaced_custom_object(GROUP, VERSION, kns, PLURAL, "require-sleep-identity")
    w, events = watch.Watch(), []
    for event in w.stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, kns, PLURAL, resource_version=rv, timeout_seconds=30
    ):
        events.append(event["type"])
        if event["type"] == "DELETED":
            w.stop()
    assert events == ["MODIFIED", "DELETED"]
    assert custom.list_namespaced_custom_object(GROUP, VERSION, kns, PLURAL)["items"] == []


def test_kr8s_pods_and_custom_resource(cluster: Cluster, kns):
    from kr8s.objects import Pod, new_class

    api = kr8s.api(kubeconfig=cluster.kubeconfig, context=cluster.context)
    pod = Pod(sleeper("kr8s-sleepy", kns), api=api)
    pod.create()
    pod.wait("condition=Ready", timeout=60)
    assert [p.name for p in api.get("pods", namespace=kns, label_selector={"app": "kr8s-sleepy"})] == ["kr8s-sleepy"]
    pod.patch({"metadata": {"labels": {"patched": "merge"}}})
    pod.patch([{"op": "add", "path": "/metadata/annotations", "value": {"via": "json-patch"}}], type="json")
    pod.refresh()
    assert pod.labels["patched"] == "merge" and pod.annotations["via"] == "json-patch"

    Policy = new_class(kind="AuthorizationPolicy", version=f"{GROUP}/{VERSION}", namespaced=True, plural=PLURAL)
    policy = Policy(article_policy(kns), api=api)
    policy.create()
    found = list(api.get(PLURAL, namespace=kns))
    assert [p.name for p in found] == ["require-sleep-identity"] and found[0].kind == "AuthorizationPolicy"
    policy.patch({"spec": {"action": "DENY"}})
    policy.refresh()
    assert policy.spec["action"] == "DENY" and policy.spec["rules"] == article_policy(kns)["spec"]["rules"]

    pod.delete()
    policy.delete()
    seen = set()
    for event, obj in api.watch("pods", namespace=kns):
        seen.add((event, obj.name))
        if event == "DELETED":
            break
    assert ("DELETED", "kr8s-sleepy") in seen
    eventually(lambda: not list(api.get("pods", namespace=kns)) and not list(api.get(PLURAL, namespace=kns)))


def _tcp_states(port: int, peer_port: int) -> list[str]:
    """States (hex, /proc/net/tcp) of the sockets on this host whose local port is PORT and remote
    port PEER_PORT: the server's side of one client connection."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == port and int(remote.rsplit(":", 1)[1], 16) == peer_port:
                states.append(state)
    return states


def test_a_watch_that_hangs_up_is_let_go(cluster: Cluster, kube_api, kns):
    """The lab's side of a watch that its client drops ends at once (its connection closes), not
    at the next event; after many such watches the endpoint serves as before."""
    from urllib.parse import urlsplit

    core = client.CoreV1Api(kube_api)
    port = urlsplit(kube_api.configuration.host).port
    cluster.lab_only("reads labd's sockets")
    for _ in range(20):
        resp = core.list_namespaced_pod(kns, watch=True, timeout_seconds=300, _preload_content=False)
        client_port = resp.connection.sock.getsockname()[1]
        assert _tcp_states(port, client_port) == ["01"]  # ESTABLISHED on the server's side
        resp.close()
        eventually(lambda: not _tcp_states(port, client_port), timeout=10, what="labd closed the watch")
    core.create_namespaced_pod(kns, sleeper("after", kns))
    assert [p.metadata.name for p in core.list_namespaced_pod(kns).items] == ["after"]


def test_lab_kubectl_runs_the_pinned_kubectl(cluster: Cluster, kns):
    """`lab kubectl ARGS` passes ARGS (with `--` and stdin) to kubectl and exits with its code."""
    lab = cluster.lab_only("the `lab kubectl` verb")
    r = lab.lab("kubectl", "version", "-o", "yaml")
    assert r.returncode == 0 and "clientVersion" in r.stdout and "serverVersion" in r.stdout, r.stderr
    r = lab.lab("kubectl", "apply", "-f", "-", input=yaml.safe_dump(sleeper("via-lab", kns)))
    assert r.stdout == "pod/via-lab created\n", r.stderr
    r = lab.lab("kubectl", "wait", "--for=condition=Ready", "pod/via-lab", "-n", kns, "--timeout=60s")
    assert r.returncode == 0, r.stderr
    r = lab.lab("kubectl", "exec", "-i", "via-lab", "-n", kns, "--", "sh", "-c", "cat; exit 5", input="through\n")
    assert (r.returncode, r.stdout) == (5, "through\n"), r.stderr
    r = lab.lab("kubectl", "get", "pod", "no-such-pod", "-n", kns)
    assert r.returncode == 1 and 'pods "no-such-pod" not found' in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "lab.cli", "--lab", "nosuchlab", "kubectl", "get", "pods"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "is it running?" in r.stderr
