"""ZDS message handling: the snapshot protocol as ztunnel's `WorkloadProxyManagerState` keeps it.

Starting real proxies is the integration test's job; here `add`/`delete` only record.
"""

from __future__ import annotations

import os

import pytest

from mesh import zds
from mesh.ztunnel.config import Config
from mesh.ztunnel.inpod import ProtocolError, ProxyFactory, WorkloadProxyManager


class Recorder(WorkloadProxyManager):
    def __init__(self):
        factory = ProxyFactory(Config(), state=None, secrets=None, metrics=None, log=print)
        super().__init__(factory, path="/nonexistent", on_snapshot=lambda: self.events.append("ready"))
        self.events: list[str] = []

    async def add(self, uid, info, netns):
        netns.close()
        self.events.append(f"add {uid}")
        self.pods.running[uid] = object()  # stands for a PodProxy

    def delete(self, uid):
        self.events.append(f"del {uid}")
        self.pods.running.pop(uid, None)


def netns_fd() -> int:
    return os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


INFO = zds.WorkloadInfo("sleep-1", "default", "sleep")


@pytest.fixture
def manager():
    return Recorder()


async def test_snapshot_drops_pods_it_does_not_name(manager):
    for uid in ("a", "b", "c"):
        await manager.process(zds.AddWorkload(uid, INFO), netns_fd())
    await manager.process(zds.SnapshotSent(), None)
    assert manager.events == ["add a", "add b", "add c", "ready"]
    # The agent restarts: it re-sends a, keeps b, and says nothing of c.
    manager.pods.reset_snapshot()
    manager.events.clear()
    await manager.process(zds.AddWorkload("a", INFO), netns_fd())
    await manager.process(zds.KeepWorkload("b"), None)
    await manager.process(zds.SnapshotSent(), None)
    assert manager.events == ["add a", "del c", "ready"]
    assert sorted(manager.pods.running) == ["a", "b"]


async def test_protocol_errors_are_nacks(manager):
    fd = netns_fd()
    with pytest.raises(ProtocolError, match="workload_info is required"):
        await manager.process(zds.AddWorkload("a", None), fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # the fd that came with the bad message was closed
    await manager.process(zds.SnapshotSent(), None)
    with pytest.raises(ProtocolError, match="already"):
        await manager.process(zds.SnapshotSent(), None)
    with pytest.raises(ProtocolError, match="keep received after snapshot"):
        await manager.process(zds.KeepWorkload("a"), None)


async def test_delete_before_the_snapshot_forgets_the_name(manager):
    await manager.process(zds.AddWorkload("a", INFO), netns_fd())
    await manager.process(zds.DelWorkload("a"), None)
    await manager.process(zds.SnapshotSent(), None)
    assert manager.events == ["add a", "del a", "ready"] and not manager.pods.running
