"""istiod's sync status: the subscriber registry (who is connected, what it asked for, its version,
and per type SYNCED / STALE / NOT SENT), the Subscribe stream feeding it, and /debug/syncz."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from lab.client.protocol import LineDecoder
from mesh.contract import ADDRESS, AUTHORIZATION, PROXY_TYPES
from mesh.identity.caller import Caller
from mesh.istiod import debug
from mesh.istiod.client import image_tag, own_version
from mesh.istiod.proxyconfig import proxy_id
from mesh.istiod.translate import TYPES, versioned
from mesh.istiod.xds import (
    NOT_SENT,
    STALE,
    SYNCED_STATE,
    BadRequest,
    ConfigPublisher,
    ConfigStream,
    SubscriberRegistry,
    parse_version,
    type_version,
    view,
)


def resources(workload: str = "w1", policy: str = "p1", listener: str = "l1", other_listener: str = "x1"):
    """Published resources: ztunnel types, and Envoy types for waypoints demo/waypoint and demo/other."""
    return {
        ADDRESS: {"Kubernetes//Pod/demo/httpbin": versioned({"workload": workload})},
        AUTHORIZATION: {"demo/allow": versioned({"policy": policy})},
        "Listener": {
            "demo/waypoint/main_internal": versioned({"l": listener}),
            "demo/other/main_internal": versioned({"l": other_listener}),
        },
        "Cluster": {"demo/waypoint/c": versioned({"c": 1}), "demo/other/c": versioned({"c": 1})},
        "RouteConfiguration": {"demo/waypoint/r": versioned({"r": 1})},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


#: The subscribers `registry_with_two` connects: (namespace, service account, pod, node, version, proxy);
#: a proxy (a waypoint) subscribes to the Envoy types under its own prefix, ztunnel to its own types.
SUBSCRIBERS = (
    ("istio-system", "ztunnel", "ztunnel-abcde", "worker1", "1.24.0", None),
    ("demo", "waypoint", "waypoint-7d9f-xk2lp", "worker2", "1.23.2", "demo/waypoint"),
)


def registry_with_two() -> tuple[SubscriberRegistry, object, object]:
    reg = SubscriberRegistry("cluster.local", clock=Clock())
    zt, wp = (
        reg.connect(
            namespace=ns,
            service_account=sa,
            pod_name=pod,
            node=node,
            types=PROXY_TYPES if proxy else TYPES,
            proxy=proxy,
            prefix=proxy_id(ns, sa) if proxy else None,
            version=version,
        )
        for ns, sa, pod, node, version, proxy in SUBSCRIBERS
    )
    return reg, zt, wp


def states(entry: dict) -> dict[str, str]:
    return {t: v["state"] for t, v in entry["types"].items()}


def by_pod(reg: SubscriberRegistry, published) -> dict[str, dict]:
    return {e["pod"]: e for e in reg.syncz(published)}


def test_type_version_is_stable_and_follows_names_and_versions():
    a = resources()[ADDRESS]
    assert type_version(a) == type_version(dict(a)) and len(type_version(a)) == 16
    assert type_version(a) != type_version(resources(workload="w2")[ADDRESS])
    assert type_version({}) == type_version({})
    assert type_version({}) != type_version(a)


def test_nothing_sent_yet_is_not_sent_then_synced_then_stale():
    reg, zt, wp = registry_with_two()
    published = resources()
    entries = by_pod(reg, published)
    assert states(entries["istio-system/ztunnel-abcde"]) == {AUTHORIZATION: NOT_SENT, ADDRESS: NOT_SENT}
    assert states(entries["demo/waypoint-7d9f-xk2lp"]) == dict.fromkeys(PROXY_TYPES, NOT_SENT)

    reg.record_sent(zt, view(published, zt.types, zt.prefix))
    reg.record_sent(wp, view(published, wp.types, wp.prefix))
    entries = by_pod(reg, published)
    assert states(entries["istio-system/ztunnel-abcde"]) == {AUTHORIZATION: SYNCED_STATE, ADDRESS: SYNCED_STATE}
    assert states(entries["demo/waypoint-7d9f-xk2lp"]) == dict.fromkeys(PROXY_TYPES, SYNCED_STATE)

    newer = resources(workload="w2", listener="l2")  # istiod translated a change; not pushed yet
    entries = by_pod(reg, newer)
    assert states(entries["istio-system/ztunnel-abcde"]) == {AUTHORIZATION: SYNCED_STATE, ADDRESS: STALE}
    assert states(entries["demo/waypoint-7d9f-xk2lp"]) == {
        "Listener": STALE,
        "Cluster": SYNCED_STATE,
        "RouteConfiguration": SYNCED_STATE,
    }
    stale = entries["istio-system/ztunnel-abcde"]["types"][ADDRESS]
    assert stale["sent"] != stale["current"] and stale["resources"] == 1


def test_a_waypoint_is_compared_with_its_own_view_only():
    reg, _, wp = registry_with_two()
    published = resources()
    reg.record_sent(wp, view(published, wp.types, wp.prefix))
    other_changed = resources(other_listener="x2")  # another waypoint's listener
    assert states(by_pod(reg, other_changed)["demo/waypoint-7d9f-xk2lp"])["Listener"] == SYNCED_STATE
    assert by_pod(reg, published)["demo/waypoint-7d9f-xk2lp"]["types"]["Listener"]["resources"] == 1


def test_entries_name_the_caller_its_proxy_and_version_and_leave_on_disconnect():
    reg, zt, wp = registry_with_two()
    reg.record_sent(zt, view(resources(), zt.types, None))
    entries = by_pod(reg, resources())
    z, w = entries["istio-system/ztunnel-abcde"], entries["demo/waypoint-7d9f-xk2lp"]
    assert z["identity"] == "spiffe://cluster.local/ns/istio-system/sa/ztunnel"
    assert z["serviceAccount"] == "istio-system/ztunnel" and z["node"] == "worker1"
    assert z["proxy"] is None and z["version"] == "1.24.0"
    assert z["pushes"] == 1 and z["lastSentAt"] == "2027-01-15T08:00:00Z" == z["connectedAt"]
    assert w["proxy"] == "demo/waypoint" and w["version"] == "1.23.2" and w["pushes"] == 0
    assert w["lastSentAt"] is None and list(w["types"]) == list(PROXY_TYPES)
    assert len(reg) == 2
    reg.disconnect(zt)
    reg.disconnect(zt)  # twice is harmless
    assert [e["pod"] for e in reg.syncz(resources())] == ["demo/waypoint-7d9f-xk2lp"]


def test_a_change_nobody_sees_is_no_push():
    reg, zt, _ = registry_with_two()
    reg.record_sent(zt, view(resources(), zt.types, None))
    reg.record_sent(zt, view(resources(), zt.types, None), pushed=False)
    assert zt.pushes == 1


def test_before_the_first_translation_everything_is_not_sent_or_unknown():
    reg, zt, _ = registry_with_two()
    entry = by_pod(reg, None)["istio-system/ztunnel-abcde"]
    assert states(entry) == {AUTHORIZATION: NOT_SENT, ADDRESS: NOT_SENT}
    assert entry["types"][ADDRESS]["current"] is None


@pytest.mark.parametrize("value", ["", 5, "x" * 65, "1.24\n"])
def test_bad_versions_are_refused(value):
    with pytest.raises(BadRequest):
        parse_version(value)


def test_versions():
    assert parse_version(None) is None and parse_version("1.25.0-beta.1") == "1.25.0-beta.1"
    assert image_tag("docker.io/istio/proxyv2:1.25.0") == "1.25.0"
    assert image_tag("localhost:5000/istio/proxyv2") is None
    assert image_tag("docker.io/istio/proxyv2:1.24.0@sha256:abc") == "1.24.0"


class FakeApi:
    def __init__(self, pod: dict | None = None, fail: bool = False) -> None:
        self.pod, self.fail, self.calls = pod, fail, 0

    async def call(self, op, **kw):
        self.calls += 1
        if self.fail:
            raise OSError("no API")
        return self.pod


async def test_own_version_env_then_image_tag_then_default():
    pod = {
        "spec": {
            "containers": [
                {"name": "app", "image": "x:9"},
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.25.1"},
            ]
        }
    }
    env = {"LAB_POD_NAME": "p", "LAB_POD_NAMESPACE": "ns"}
    assert await own_version(FakeApi(pod), {**env, "ISTIO_META_ISTIO_VERSION": "1.26.0"}, "istio-proxy") == "1.26.0"
    assert await own_version(FakeApi(pod), env, "istio-proxy") == "1.25.1"
    assert await own_version(FakeApi(fail=True), env, "istio-proxy") == "1.24.0"
    api = FakeApi(pod)
    assert await own_version(api, {}, "istio-proxy") == "1.24.0" and api.calls == 0


# ---- the stream feeds the registry ----------------------------------------------------------------


class Reviewer:
    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    async def review(self, token):
        return self.caller


async def _lines(stream, decoder: LineDecoder, until: str) -> list[dict]:
    out: list[dict] = []
    while not any(m.get("type") == until for m in out):
        out += decoder.feed(await stream.receive_some(65536))
    return out


async def test_the_stream_registers_and_unregisters_its_subscriber():
    publisher = ConfigPublisher()
    publisher.publish(resources())
    caller = Caller("waypoint-7d9f-xk2lp", "uid-w", "demo", "waypoint", "worker2")
    stream = ConfigStream(publisher, Reviewer(caller))
    server_side, client_side = trio.testing.memory_stream_pair()
    request = {
        "op": "Subscribe",
        "token": "t",
        "node": "worker2",
        "types": list(PROXY_TYPES),
        "proxy": "demo/waypoint",
        "version": "1.23.2",
    }
    decoder = LineDecoder()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.serve, server_side, request)
        await _lines(client_side, decoder, "SYNCED")
        await trio.testing.wait_all_tasks_blocked()
        (entry,) = stream.registry.syncz(stream.published)
        assert entry["pod"] == "demo/waypoint-7d9f-xk2lp" and entry["proxy"] == "demo/waypoint"
        assert entry["version"] == "1.23.2" and states(entry) == dict.fromkeys(PROXY_TYPES, SYNCED_STATE)

        publisher.publish(resources(listener="l2"))
        assert states(stream.registry.syncz(stream.published)[0])["Listener"] == STALE  # not pushed yet
        await _lines(client_side, decoder, "Listener")
        await trio.testing.wait_all_tasks_blocked()
        assert states(stream.registry.syncz(stream.published)[0])["Listener"] == SYNCED_STATE

        await client_side.send_eof()
        await trio.testing.wait_all_tasks_blocked()
    assert len(stream.registry) == 0


async def test_a_bad_version_is_refused_and_not_registered():
    publisher = ConfigPublisher()
    publisher.publish(resources())
    stream = ConfigStream(publisher, Reviewer(Caller("z", "u", "istio-system", "ztunnel", "worker1")))
    server_side, client_side = trio.testing.memory_stream_pair()
    await stream.serve(server_side, {"op": "Subscribe", "token": "t", "version": 7})
    (reply,) = LineDecoder().feed(await client_side.receive_some(65536))
    assert reply["ok"] is False and "version" in reply["error"]
    assert len(stream.registry) == 0


# ---- /debug/syncz -----------------------------------------------------------------------------------


async def test_debug_syncz_over_http():
    reg, zt, _ = registry_with_two()
    reg.record_sent(zt, view(resources(), zt.types, None))
    me = {"pod": "istio-system/istiod-5f4c-9xq2z", "version": "1.24.0"}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(debug.serve_debug, "127.0.0.1", 0, reg, lambda: resources(), me)
        conn = await trio.open_tcp_stream("127.0.0.1", port)
        await conn.send_all(b"GET /debug/syncz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := await conn.receive_some(65536):
            data += chunk
        nursery.cancel_scope.cancel()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    if b"chunked" in head.lower():
        from mesh.istioctl.common import _dechunk

        body = _dechunk(body)
    doc = json.loads(body)
    assert doc["istiod"] == me
    assert {e["pod"]: states(e) for e in doc["subscribers"]}["istio-system/ztunnel-abcde"] == {
        AUTHORIZATION: SYNCED_STATE,
        ADDRESS: SYNCED_STATE,
    }


async def test_a_debug_port_that_cannot_be_bound_leaves_istiod_running():
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        async with trio.open_nursery() as nursery:
            assert (
                await nursery.start(debug.serve_debug, "127.0.0.1", port, SubscriberRegistry(), lambda: None, {})
                is None
            )
    finally:
        taken.close()
