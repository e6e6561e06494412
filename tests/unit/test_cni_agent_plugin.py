"""The istio-cni agent's answers to the kubelet's CNI ADD/DEL, with fakes for the kernel, ztunnel and
the lab API: who is captured before answering, "no ztunnel connection", and no double enrollment."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import trio

from mesh.cni import agent as agent_mod
from mesh.cni.agent import NO_ZTUNNEL, Agent
from mesh.cni.enrollment import REDIRECTION_ANNOTATION, ClusterView
from mesh.cni.plugin_server import PluginRequest
from mesh.zds import Ack, AddWorkload, DelWorkload, SnapshotSent
from tests.unit.cni_helpers import AMBIENT, NODE
from tests.unit.cni_helpers import pod as cni_pod


def pod(name: str, ns: str = "demo") -> dict[str, Any]:
    """A pod the kubelet is starting here: CNI ADD comes before it runs."""
    return cni_pod(name, ns, phase="Pending")


def request(command: str, p: dict) -> PluginRequest:
    md = p["metadata"]
    return PluginRequest(
        command,
        md["uid"],
        md["name"],
        md["namespace"],
        p["spec"]["serviceAccountName"],
        md["annotations"]["lab.ambient/netns"],
        p["status"].get("podIP", ""),
    )


class FakeLink:
    def __init__(self):
        self.version = "test"
        self.closed = trio.Event()
        self.sent: list = []

    async def request(self, message, fds=()):
        self.sent.append(message)
        return Ack()


class Harness:
    def __init__(self, agent: Agent):
        self.agent = agent
        self.enrolls: list[str] = []
        self.unenrolls: list[str] = []

    def apply(self, obj: dict, event: str = "MODIFIED") -> None:
        self.agent.view.apply(event, copy.deepcopy(obj))
        self.agent._poke()

    def namespace(self, name: str, labels: dict | None = None) -> None:
        self.apply({"kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}, "ADDED")

    def connect(self) -> FakeLink:
        link = FakeLink()
        self.agent.ztunnels.current = link
        self.agent._poke()
        return link


@pytest.fixture
async def harness(tmp_path, monkeypatch, nursery):
    fd_file = tmp_path / "netns"
    fd_file.write_text("")
    agent = Agent("/nonexistent/labd.sock", NODE, str(tmp_path / "zds.sock"))
    h = Harness(agent)
    monkeypatch.setattr(agent_mod.inpod, "enroll", h.enrolls.append)
    monkeypatch.setattr(agent_mod.inpod, "unenroll", h.unenrolls.append)
    monkeypatch.setattr(agent_mod.netns, "path", lambda name: str(fd_file))

    async def annotate(workload, value):  # the API call, and the watch event it causes
        current = agent.view.pod(workload.uid)
        if current is not None:
            current = copy.deepcopy(current)
            annotations = current["metadata"]["annotations"]
            annotations.pop(REDIRECTION_ANNOTATION, None)
            if value:
                annotations[REDIRECTION_ANNOTATION] = value
            h.apply(current)
        return True

    monkeypatch.setattr(agent, "_annotate", annotate)
    agent.view = ClusterView(NODE)
    agent.synced.set()
    nursery.start_soon(agent._reconcile_forever)
    return h


@pytest.mark.parametrize(
    "namespace, labels, name",
    [("plain", None, "web"), ("istio-system", AMBIENT, "istiod")],
    ids=["pod-not-for-ambient", "system-namespace-pod"],
)
async def test_pod_not_captured_gets_ok_at_once(harness, namespace, labels, name):
    harness.namespace(namespace, labels)
    harness.connect()
    p = pod(name, namespace)
    harness.apply(p, "ADDED")
    with trio.fail_after(1):
        assert await harness.agent.handle_plugin(request("ADD", p)) is None
    assert harness.enrolls == []


async def test_ambient_pod_is_captured_acked_and_annotated_before_ok(harness):
    harness.namespace("demo", AMBIENT)
    link = harness.connect()
    p = pod("web")
    answer = []

    async def add():
        answer.append(await harness.agent.handle_plugin(request("ADD", p)))

    async with trio.open_nursery() as n:
        n.start_soon(add)
        await trio.sleep(0.05)
        assert answer == []  # the watch has not shown the pod yet: no answer
        harness.apply(p, "ADDED")
    assert answer == [None]
    uid = p["metadata"]["uid"]
    assert harness.enrolls == ["al-x-pod-demo-web"]
    assert [m for m in link.sent if isinstance(m, AddWorkload)] == [AddWorkload(uid, link.sent[1].workload_info)]
    assert isinstance(link.sent[0], SnapshotSent)
    assert harness.agent.view.pod(uid)["metadata"]["annotations"][REDIRECTION_ANNOTATION] == "enabled"

    # Later watch events (the pod starting, getting Ready) and a repeated ADD change nothing.
    running = copy.deepcopy(harness.agent.view.pod(uid))
    running["status"]["phase"] = "Running"
    harness.apply(running)
    await trio.sleep(0.05)
    with trio.fail_after(1):
        assert await harness.agent.handle_plugin(request("ADD", p)) is None
    await trio.sleep(0.05)
    assert harness.enrolls == ["al-x-pod-demo-web"]
    assert len([m for m in link.sent if isinstance(m, AddWorkload)]) == 1


async def test_no_ztunnel_is_an_error_until_it_connects(harness):
    harness.namespace("demo", AMBIENT)
    p = pod("web")
    harness.apply(p, "ADDED")
    with trio.fail_after(1):
        assert await harness.agent.handle_plugin(request("ADD", p)) == NO_ZTUNNEL
    link = harness.connect()
    with trio.fail_after(1):
        assert await harness.agent.handle_plugin(request("ADD", p)) is None
    assert [type(m) for m in link.sent] == [AddWorkload, SnapshotSent]  # it came with the snapshot
    assert harness.enrolls == ["al-x-pod-demo-web"]


async def test_del_releases_and_the_watch_does_not_capture_again(harness):
    harness.namespace("demo", AMBIENT)
    link = harness.connect()
    p = pod("web")
    harness.apply(p, "ADDED")
    with trio.fail_after(1):
        assert await harness.agent.handle_plugin(request("ADD", p)) is None
        assert await harness.agent.handle_plugin(request("DEL", p)) is None
    uid = p["metadata"]["uid"]
    assert harness.unenrolls == ["al-x-pod-demo-web"] and uid not in harness.agent.enrolled
    assert DelWorkload(uid) in link.sent
    terminating = copy.deepcopy(harness.agent.view.pod(uid))
    terminating["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    harness.apply(terminating)  # still in the view, still "wanted" by the watch's rules
    await trio.sleep(0.05)
    assert harness.enrolls == ["al-x-pod-demo-web"]
    harness.apply(terminating, "DELETED")
    await trio.sleep(0.05)
    assert harness.agent._deleted == set()  # forgotten once the pod is gone


async def test_add_gives_up_when_the_pod_never_shows(harness, monkeypatch):
    monkeypatch.setattr(agent_mod, "ADD_DEADLINE", 0.1)
    harness.connect()
    with trio.fail_after(1):
        error = await harness.agent.handle_plugin(request("ADD", pod("ghost")))
    assert error == "pod not seen by the agent within 0.1s"
