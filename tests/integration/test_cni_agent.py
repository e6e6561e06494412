"""The istio-cni agent's trio core, in-process, against labd's API in process
(lab.testing.InProcessLabApi) and a fake ztunnel speaking ZDS over the real socket, enrolling a
real network namespace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import pytest
import trio

from lab.client import netns
from lab.testing import InProcessLabApi
from mesh.cni import inpod
from mesh.cni.agent import Agent
from mesh.zds import Ack, AddWorkload, DelWorkload, SnapshotSent, WorkloadInfo, ZdsClosed, ZdsHello, connect_zds
from tests.conftest import eventually

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

NODE = "worker1"
AMBIENT = "istio.io/dataplane-mode"
REDIRECTION = "ambient.istio.io/redirection"


class FakeZtunnel:
    """Connects, says hello, acks everything, and records what it got; checks each netns fd."""

    def __init__(self, path: str):
        self.path = path
        self.received: list[Any] = []
        self.fd_inodes: dict[str, int] = {}
        self.closed_by_agent = trio.Event()
        self.connected = trio.Event()

    async def run(self) -> None:
        async with await connect_zds(self.path) as conn:
            await conn.send(ZdsHello())
            self.connected.set()
            while True:
                try:
                    request, fd = await conn.receive_request()
                except ZdsClosed:
                    self.closed_by_agent.set()
                    return
                if fd is not None:
                    try:
                        with netns.entered_fd(fd):  # a working netns fd: we can enter it
                            self.fd_inodes[request.uid] = os.stat("/proc/thread-self/ns/net").st_ino
                    finally:
                        os.close(fd)
                self.received.append(request)
                await conn.send(Ack())


def enrolled(name: str) -> Awaitable[bool]:
    return trio.to_thread.run_sync(inpod.is_enrolled, name)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def pod_netns() -> Iterator[str]:
    name = f"al-c{os.getpid()}-agent"
    netns.create(name)
    try:
        yield name
    finally:
        netns.remove(name)


def pod_object(netns_name: str, name: str = "web", node: str = NODE) -> dict[str, Any]:
    """A running pod as the kubelet has it (its network namespace in an annotation)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "demo",
            "uid": f"uid-{name}",
            "annotations": {"lab.ambient/netns": netns_name},
        },
        "spec": {"nodeName": node, "serviceAccountName": "web-sa", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.5"},
    }


@pytest.fixture
async def api(lab_api: InProcessLabApi, pod_netns: str) -> InProcessLabApi:
    lab_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}})
    lab_api.create(pod_object(pod_netns))
    lab_api.create(pod_object(pod_netns, "elsewhere", node="worker2"))  # not ours
    return lab_api


@pytest.fixture
def zds_path(socket_dir: str) -> str:
    return os.path.join(socket_dir, "node", "ztunnel.sock")  # the agent makes the directory


@pytest.fixture
async def agent(nursery: trio.Nursery, api: InProcessLabApi, zds_path: str, pod_netns: str) -> AsyncIterator[Agent]:
    agent = Agent(api.path, NODE, zds_path)
    await nursery.start(agent.run)
    try:
        yield agent
    finally:
        await trio.to_thread.run_sync(inpod.unenroll, pod_netns)


async def ztunnel_connected(nursery: trio.Nursery, zds_path: str) -> FakeZtunnel:
    ztunnel = FakeZtunnel(zds_path)
    nursery.start_soon(ztunnel.run)
    await eventually(lambda: SnapshotSent() in ztunnel.received)
    return ztunnel


def label_namespace(api: InProcessLabApi, value: str | None) -> None:
    api.label("Namespace", None, "demo", {AMBIENT: value})


def annotation(api: InProcessLabApi) -> str | None:
    return api.get("Pod", "demo", "web")["metadata"]["annotations"].get(REDIRECTION)


WEB = AddWorkload("uid-web", WorkloadInfo("web", "demo", "web-sa"))


# --- tests ---------------------------------------------------------------------------------------


async def test_labelling_the_namespace_enrolls_the_running_pod_and_unlabelling_releases_it(
    nursery: trio.Nursery, api: InProcessLabApi, agent: Agent, zds_path: str, pod_netns: str
) -> None:
    ztunnel = await ztunnel_connected(nursery, zds_path)
    assert ztunnel.received == [SnapshotSent()]  # nothing selected yet
    assert not await enrolled(pod_netns)

    label_namespace(api, "ambient")
    await eventually(lambda: annotation(api) == "enabled")
    assert ztunnel.received == [SnapshotSent(), WEB]
    assert ztunnel.fd_inodes["uid-web"] == os.stat(netns.path(pod_netns)).st_ino
    assert await enrolled(pod_netns)  # rules before the add, the annotation after its ack

    label_namespace(api, None)
    await eventually(lambda: annotation(api) is None)
    assert ztunnel.received[-1] == DelWorkload("uid-web")
    assert not await enrolled(pod_netns)


async def test_a_new_ztunnel_replaces_the_old_and_gets_a_snapshot(
    nursery: trio.Nursery, api: InProcessLabApi, agent: Agent, zds_path: str, pod_netns: str
) -> None:
    label_namespace(api, "ambient")
    first = await ztunnel_connected(nursery, zds_path)
    assert first.received == [WEB, SnapshotSent()]
    second = await ztunnel_connected(nursery, zds_path)
    assert second.received == [WEB, SnapshotSent()]
    assert second.fd_inodes["uid-web"] == os.stat(netns.path(pod_netns)).st_ino
    with trio.fail_after(2):
        await first.closed_by_agent.wait()

    api.store.delete("Pod", "demo", "web")  # the pod goes away: only the new one hears
    await eventually(lambda: DelWorkload("uid-web") in second.received)
    assert DelWorkload("uid-web") not in first.received
    await eventually(lambda: agent.enrolled == {})
    assert not await enrolled(pod_netns)


async def test_without_ztunnel_rules_are_written_and_the_add_waits_for_it(
    nursery: trio.Nursery, api: InProcessLabApi, agent: Agent, zds_path: str, pod_netns: str
) -> None:
    api.label("Pod", "demo", "web", {AMBIENT: "ambient"})  # the pod opts in itself
    await eventually(lambda: "uid-web" in agent.enrolled)
    assert await enrolled(pod_netns)  # captured, failing closed: nothing listens yet
    assert annotation(api) is None  # istiod must not treat it as HBONE before ztunnel has it

    ztunnel = await ztunnel_connected(nursery, zds_path)
    assert ztunnel.received == [WEB, SnapshotSent()]
    await eventually(lambda: annotation(api) == "enabled")


async def test_a_restarted_agent_keeps_the_rules_and_rebuilds_from_the_api(
    nursery: trio.Nursery, api: InProcessLabApi, zds_path: str, pod_netns: str
) -> None:
    label_namespace(api, "ambient")
    try:
        async with trio.open_nursery() as first_run:
            await first_run.start(Agent(api.path, NODE, zds_path).run)
            await ztunnel_connected(first_run, zds_path)
            await eventually(lambda: annotation(api) == "enabled")
            first_run.cancel_scope.cancel()
        assert not os.path.exists(zds_path)  # socket removed on exit ...
        assert await enrolled(pod_netns)  # ... pod rules left in place

        label_namespace(api, None)  # changed while no agent runs
        await nursery.start(Agent(api.path, NODE, zds_path).run)
        await eventually(lambda: annotation(api) is None)  # released from its marked state
        assert not await enrolled(pod_netns)
    finally:
        await trio.to_thread.run_sync(inpod.unenroll, pod_netns)


async def test_the_watch_reconnects_and_forgets_what_it_missed(
    nursery: trio.Nursery, api: InProcessLabApi, agent: Agent, zds_path: str, pod_netns: str
) -> None:
    ztunnel = await ztunnel_connected(nursery, zds_path)
    label_namespace(api, "ambient")
    await eventually(lambda: annotation(api) == "enabled")
    with api.watchers_away():
        label_namespace(api, None)  # unlabelled while away
    await eventually(lambda: DelWorkload("uid-web") in ztunnel.received)
    await eventually(lambda: annotation(api) is None)
    assert not await enrolled(pod_netns)


async def test_the_program_serves_zds_and_exits_promptly_on_sigterm(
    api: InProcessLabApi, zds_path: str, pod_netns: str
) -> None:
    label_namespace(api, "ambient")
    env = {**os.environ, "LAB_API_SOCKET": api.path, "LAB_NODE_NAME": NODE, "LAB_NAME": "unused"}
    # No CNI plugin socket: this test has no lab directory to put it in.
    argv = [sys.executable, "-m", "mesh.cni", "--zds-socket", zds_path, "--plugin-socket", "none"]
    process = await trio.lowlevel.open_process(argv, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    log = b""

    async def read_log_until(text: bytes) -> None:
        nonlocal log
        with trio.fail_after(5):
            while text not in log:
                chunk = await process.stderr.receive_some(65536)
                assert chunk, log.decode()
                log += chunk

    try:
        await read_log_until(b"serving ZDS on")
        async with trio.open_nursery() as nursery:
            ztunnel = await ztunnel_connected(nursery, zds_path)
            assert ztunnel.received == [WEB, SnapshotSent()]
            await read_log_until(b"ztunnel connected")
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(3):
                assert await process.wait() == 0
        await read_log_until(b"SIGTERM: exiting")
        assert b"enrolled pod demo/web" in log
        assert not os.path.exists(zds_path)
        assert await enrolled(pod_netns)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stderr.aclose()
        await trio.to_thread.run_sync(inpod.unenroll, pod_netns)


async def test_a_misbehaving_ztunnel_is_dropped_and_the_next_one_served(
    nursery: trio.Nursery, api: InProcessLabApi, agent: Agent, zds_path: str
) -> None:
    async with await connect_zds(zds_path) as garbage:
        await garbage.send_raw(b"not a hello")
        with pytest.raises(ZdsClosed), trio.fail_after(2):
            await garbage.receive_raw()
    async with await connect_zds(zds_path) as eager:
        await eager.send(ZdsHello())
        assert await eager.receive_request() == (SnapshotSent(), None)
        await eager.send(Ack())
        await eager.send(Ack())  # an ack for nothing: protocol error
        with pytest.raises(ZdsClosed), trio.fail_after(2):
            await eager.receive_raw()
    label_namespace(api, "ambient")
    ztunnel = await ztunnel_connected(nursery, zds_path)
    assert ztunnel.received == [WEB, SnapshotSent()]
