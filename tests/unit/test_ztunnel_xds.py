"""The config stream: applying pushes, SYNCED, keeping the state through an istiod outage, resync."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mesh.ztunnel.state import StateHandle
from mesh.ztunnel.testing import FakeControlPlane, address_push, authorization, authorization_push, workload
from mesh.ztunnel.xds import RECONNECT_MAX, XdsClient


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


async def test_sync_outage_and_resync(autojump_clock):
    cp = FakeControlPlane()
    cp.push(address_push(workload("sleep-1", "10.244.1.5")))
    down = False
    calls = []

    def subscribe(known):
        calls.append(trio.current_time())
        if down:
            raise ConnectionRefusedError("istiod is down")
        return cp.subscribe("", known)

    handle = StateHandle()
    synced = []
    client = XdsClient(handle, subscribe, on_synced=lambda: synced.append(trio.current_time()))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        await trio.sleep(1)
        assert len(synced) == 1 and client.connected
        assert handle.state.find_workload_by_ip("10.244.1.5") is not None
        cp.push(authorization_push(authorization("deny", "default", "DENY", ["cluster.local/ns/x/sa/y"])))
        await trio.sleep(0.1)
        assert "default/deny" in handle.state.policies

        # istiod goes away: the state stays, reconnects back off to 15 s.
        down = True
        cp.disconnect()
        await trio.sleep(120)
        assert not client.connected and "ConnectionRefusedError" in client.last_error
        assert handle.state.find_workload_by_ip("10.244.1.5") is not None
        gaps = [b - a for a, b in zip(calls, calls[1:])]
        assert max(gaps) == pytest.approx(RECONNECT_MAX)

        # It comes back: the client tells what it knows; SYNCED does not re-fire readiness.
        down = False
        cp.initial = [
            address_push(workload("httpbin-1", "10.244.1.7"), removed=["Kubernetes//Pod/default/sleep-1"], version="2")
        ]
        await trio.sleep(RECONNECT_MAX + 1)
        assert client.connected and len(synced) == 1
        assert cp.subscriptions[-1]["Address"] == {"Kubernetes//Pod/default/sleep-1": "1"}
        assert cp.subscriptions[-1]["Authorization"] == {"default/deny": "1"}
        assert handle.state.find_workload_by_ip("10.244.1.5") is None
        assert handle.state.find_workload_by_ip("10.244.1.7") is not None
        nursery.cancel_scope.cancel()


async def test_bad_messages_do_not_break_the_stream(autojump_clock):
    cp = FakeControlPlane()
    cp.push({"type": "Address", "resources": [{"name": "x", "version": "1", "resource": {}}]})
    cp.push(address_push(workload("sleep-1", "10.244.1.5")))
    handle = StateHandle()
    client = XdsClient(handle, lambda known: cp.subscribe("", known))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        await trio.sleep(1)
        assert client.synced and handle.state.find_workload_by_ip("10.244.1.5") is not None
        assert len(cp.subscriptions) == 1
        nursery.cancel_scope.cancel()
