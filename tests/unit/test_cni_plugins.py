"""The kubelet's CNI plugin calls (lab.runtime.cniplugins): messages, answers, sockets, retries."""

from __future__ import annotations

import json
import os
import socket

import pytest
import trio

from lab.client.paths import cni_plugin_dir
from lab.client.protocol import encode
from lab.runtime import cniplugins
from mesh.cni.plugin_server import PluginServer, parse_request

NETNS = "al-x-pod-demo_web-1"
ANNOTATIONS = {"lab.ambient/netns": NETNS}
METADATA = {"name": "web-1", "namespace": "demo", "uid": "u-1", "labels": {"app": "web"}, "annotations": ANNOTATIONS}
POD = {"kind": "Pod", "metadata": METADATA, "spec": {"serviceAccountName": "web-sa", "nodeName": "worker1"}}


def test_request_shape():
    msg = cniplugins.request("ADD", POD, NETNS, "10.244.1.5")
    assert msg == {
        "command": "ADD",
        "pod": {**METADATA, "serviceAccount": "web-sa"},  # the pod's identity, labels and annotations as they are
        "netns": NETNS,
        "podIP": "10.244.1.5",
    }
    assert json.loads(encode(msg)) == msg and encode(msg).endswith(b"\n") and encode(msg).count(b"\n") == 1


def test_request_defaults_and_unknown_command():
    bare = {"metadata": {"name": "p", "uid": "u"}, "spec": {}}
    msg = cniplugins.request("DEL", bare, "ns", None)
    assert msg["pod"]["namespace"] == "default" and msg["pod"]["serviceAccount"] == "default"
    assert msg["pod"]["labels"] == {} and msg["podIP"] == ""
    with pytest.raises(ValueError):
        cniplugins.request("CHECK", POD, "ns", "10.0.0.1")


def test_the_agent_reads_what_the_kubelet_writes():
    req = parse_request(cniplugins.request("ADD", POD, NETNS, "10.244.1.5"))
    assert (req.command, req.uid, req.namespace, req.name, req.service_account) == (
        "ADD",
        "u-1",
        "demo",
        "web-1",
        "web-sa",
    )
    assert (req.netns, req.pod_ip) == (NETNS, "10.244.1.5")
    with pytest.raises(ValueError, match="pod.uid"):
        parse_request({"command": "ADD", "pod": {"name": "a", "namespace": "b"}, "netns": "n"})
    with pytest.raises(ValueError, match="command"):
        parse_request({"command": "VERSION"})


@pytest.mark.parametrize(
    "answer, error",
    [
        ({"ok": True}, None),
        ({"ok": False, "error": "no ztunnel connection"}, "no ztunnel connection"),
        ({"ok": False, "error": "two\n  lines"}, "two lines"),
        ({"ok": False}, "failed without a message"),
        ({"result": 1}, 'malformed answer: no "ok" field'),
        ({"ok": "yes"}, 'malformed answer: no "ok" field'),
        ([1], "malformed answer: not a JSON object"),
    ],
)
def test_parse_result(answer, error):
    assert cniplugins.parse_result(answer) == error


def test_failure_message_is_the_kubelets():
    text = cniplugins.failure_message(POD, "istio-cni", "ADD", "no ztunnel connection")
    assert text.startswith("Failed to create pod sandbox: ")
    assert '"demo/web-1"' in text and 'plugin type="istio-cni" failed (add): no ztunnel connection' in text


def test_plugin_sockets_lists_only_sockets_in_name_order(tmp_path):
    d = tmp_path / "cni" / "worker1"
    assert cniplugins.plugin_sockets(str(d)) == []  # no directory: no plugin
    d.mkdir(parents=True)
    socks = []
    for name in ("b.sock", "a.sock"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(d / name))
        socks.append(s)
    (d / "c.sock").write_text("not a socket")
    (d / "readme").write_text("")
    try:
        assert cniplugins.plugin_sockets(str(d)) == [str(d / "a.sock"), str(d / "b.sock")]
        assert cniplugins.plugin_name(str(d / "a.sock")) == "a"
    finally:
        for s in socks:
            s.close()


def test_plugin_dir_is_per_node_inside_the_lab():
    assert cni_plugin_dir("x", "worker1").endswith(os.path.join("x", "cni", "worker1"))


async def _serving(nursery, path, handler):
    server = PluginServer(path, handler)
    await nursery.start(server.serve)
    return server


async def test_round_trip_and_socket_mode(tmp_path):
    path = str(tmp_path / "cni" / "istio-cni.sock")
    seen = []

    async def handler(req):
        seen.append(req)
        return None if req.name == "web-1" else "no ztunnel connection"

    async with trio.open_nursery() as nursery:
        await _serving(nursery, path, handler)
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert await cniplugins.call(path, cniplugins.request("ADD", POD, "n", "10.0.0.1"), 2) is None
        other = {**POD, "metadata": {**POD["metadata"], "name": "web-2"}}
        assert (
            await cniplugins.call(path, cniplugins.request("ADD", other, "n", "10.0.0.2"), 2) == "no ztunnel connection"
        )
        nursery.cancel_scope.cancel()
    assert [r.name for r in seen] == ["web-1", "web-2"]
    assert not os.path.exists(path)  # removed when the server stops


async def test_call_timeout_and_gone(tmp_path):
    path = str(tmp_path / "slow.sock")

    async def handler(req):
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await _serving(nursery, path, handler)
        assert await cniplugins.call(path, cniplugins.request("ADD", POD, "n", ""), 0.2) == "no answer within 0.2s"
        nursery.cancel_scope.cancel()
    with pytest.raises(cniplugins.PluginGone):
        await cniplugins.call(path, cniplugins.request("ADD", POD, "n", ""), 0.2)


async def test_add_retries_until_ok_and_reports_each_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(cniplugins, "RETRY_INITIAL", 0.01)
    d = str(tmp_path / "cni")
    answers = ["no ztunnel connection", "no ztunnel connection", None]
    failures = []

    async def handler(req):
        return answers.pop(0)

    async with trio.open_nursery() as nursery:
        await _serving(nursery, os.path.join(d, "istio-cni.sock"), handler)
        with trio.fail_after(5):
            await cniplugins.add(d, POD, "n", "10.0.0.1", failures.append)
        nursery.cancel_scope.cancel()
    assert len(failures) == 2 and all("no ztunnel connection" in f for f in failures)
    assert answers == []


async def test_add_and_delete_without_plugins_do_nothing(tmp_path):
    with trio.fail_after(1):
        await cniplugins.add(str(tmp_path / "none"), POD, "n", "10.0.0.1", pytest.fail)
        await cniplugins.delete(str(tmp_path / "none"), POD, "n", "10.0.0.1")


async def test_bad_request_gets_an_error_answer(tmp_path):
    path = str(tmp_path / "p.sock")

    async def handler(req):
        return None

    async with trio.open_nursery() as nursery:
        await _serving(nursery, path, handler)
        stream = await trio.open_unix_socket(path)
        async with stream:
            await stream.send_all(b'{"command": "ADD"}\n')
            data = await stream.receive_some(4096)
        assert json.loads(data) == {"ok": False, "error": "bad request: no pod in the request"}
        nursery.cancel_scope.cancel()
