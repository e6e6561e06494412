"""WATCH over a real Store: what kubectl, informers and WatchList clients rely on.

Time is trio's autojump clock (bookmarks and timeouts without real waiting).
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from lab.apiserver import store as store_mod
from lab.apiserver.rest import fieldselector, watch
from lab.apiserver.store import Store


def pod(name: str, ns: str = "default", labels: dict[str, str] | None = None, phase: str = "Pending") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {"containers": [{"name": "c", "image": "x"}], "nodeName": "node-0"},
        "status": {"phase": phase},
    }


def relabel(store: Store, name: str, labels: dict[str, str], ns: str = "default") -> dict:
    obj = store.get("Pod", ns, name)
    assert obj is not None
    return store.update(dict(obj, metadata=dict(obj["metadata"], labels=labels)))


def brief(ev: dict) -> tuple[str, str, str]:
    md = ev["object"]["metadata"]
    return ev["type"], md.get("name", ""), md["resourceVersion"]


async def take(events: AsyncIterator[dict], n: int, timeout: float = 5) -> list[dict]:
    out = []
    with trio.fail_after(timeout):
        async for ev in events:
            out.append(ev)
            if len(out) == n:
                break
    return out


async def drain(events: AsyncIterator[dict], timeout: float = 1000) -> list[dict]:
    """Every event up to the end of the stream."""
    with trio.fail_after(timeout):
        return [ev async for ev in events]


@pytest.fixture
def store() -> Store:
    s = Store()
    s.create(pod("a", labels={"app": "x"}))
    s.create(pod("b", labels={"app": "y"}))
    s.create(pod("c", ns="other", labels={"app": "x"}))
    return s


def watching(store: Store, ns: str | None = "default", kind: str = "Pod", **params: Any) -> Any:
    return aclosing(watch.stream(store, kind, ns, {k: str(v) for k, v in params.items()}))


async def test_initial_objects_are_added_then_changes(store: Store) -> None:
    async with watching(store) as events:
        first = await take(events, 2)
        assert [brief(e) for e in first] == [("ADDED", "a", "1"), ("ADDED", "b", "2")]
        store.patch_status("Pod", "default", "a", {"phase": "Running"})
        store.create(pod("d", ns="other"))  # another namespace: not seen
        store.delete("Pod", "default", "b")
        assert [brief(e) for e in await take(events, 2)] == [("MODIFIED", "a", "4"), ("DELETED", "b", "6")]


async def test_resource_version_zero_is_like_unset_and_all_namespaces(store: Store) -> None:
    async with watching(store, ns=None, resourceVersion="0") as events:
        assert [brief(e) for e in await take(events, 3)] == [
            ("ADDED", "a", "1"),
            ("ADDED", "b", "2"),
            ("ADDED", "c", "3"),
        ]


async def test_from_a_resource_version_only_later_changes(store: Store) -> None:
    store.patch_status("Pod", "default", "a", {"phase": "Running"})  # rv 4
    store.delete("Pod", "default", "b")  # rv 5
    async with watching(store, resourceVersion="3") as events:
        got = await take(events, 2)
        assert [brief(e) for e in got] == [("MODIFIED", "a", "4"), ("DELETED", "b", "5")]
        store.create(pod("e"))
        assert [brief(e) for e in await take(events, 1)] == [("ADDED", "e", "6")]


async def test_label_selector_entering_and_leaving(store: Store) -> None:
    async with watching(store, labelSelector="app=x") as events:
        assert [brief(e) for e in await take(events, 1)] == [("ADDED", "a", "1")]
        relabel(store, "b", {"app": "x"})  # enters: ADDED
        relabel(store, "a", {"app": "z"})  # leaves: DELETED, its last matching state at the new rv
        relabel(store, "a", {"app": "q"})  # stays out: nothing
        store.delete("Pod", "default", "b")  # a matching one deleted
        got = await take(events, 3)
        assert [brief(e) for e in got] == [("ADDED", "b", "4"), ("DELETED", "a", "5"), ("DELETED", "b", "7")]
        assert got[1]["object"]["metadata"]["labels"] == {"app": "x"}


async def test_field_selector_as_kubectl_delete_and_wait_use_it(store: Store) -> None:
    async with watching(store, fieldSelector="metadata.name=b", resourceVersion="0") as events:
        assert [brief(e) for e in await take(events, 1)] == [("ADDED", "b", "2")]
        store.patch_status("Pod", "default", "a", {"phase": "Running"})
        store.patch_status("Pod", "default", "b", {"phase": "Running"})
        assert [brief(e) for e in await take(events, 1)] == [("MODIFIED", "b", "5")]
    async with watching(store, fieldSelector="status.phase!=Running") as events:
        store.create(pod("f"))
        assert [brief(e) for e in await take(events, 1)] == [("ADDED", "f", "6")]


def test_field_selectors_refuse_what_the_kube_apiserver_refuses() -> None:
    with pytest.raises(fieldselector.FieldSelectorError, match="field label not supported: spec.image"):
        fieldselector.parse("Pod", "spec.image=x")
    with pytest.raises(fieldselector.FieldSelectorError, match="not a known field selector"):
        fieldselector.parse("AuthorizationPolicy", "spec.action=DENY")
    match = fieldselector.parse("Pod", r"metadata.name==a\,b,spec.hostNetwork=false")
    assert match is not None and match(pod("a,b")) and not match(pod("a"))
    assert fieldselector.parse("Pod", "") is None


async def test_too_old_resource_version_is_gone(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "HISTORY", 4)
    small = Store()
    for i in range(10):
        small.create(pod(f"p{i}"))
    assert small.oldest_watchable == 6
    with pytest.raises(watch.Gone, match=r"too old resource version: 2 \(6\)") as err:
        watch.check(small, "Pod", "default", {"resourceVersion": "2"})
    assert err.value.status()["code"] == 410 and err.value.status()["reason"] == "Expired"
    with pytest.raises(watch.Gone):
        async with watching(small, resourceVersion="5") as events:
            await take(events, 1)
    async with watching(small, resourceVersion="6") as events:
        assert [brief(e) for e in await take(events, 4)][0] == ("ADDED", "p6", "7")
    assert watch.error_event(watch.Gone("x"))["object"]["code"] == 410


async def test_bad_parameters(store: Store) -> None:
    for params, err in [
        ({"resourceVersion": "abc"}, watch.BadRequest),
        ({"labelSelector": "a in (b"}, watch.BadRequest),
        ({"allowWatchBookmarks": "yes"}, watch.BadRequest),
        ({"timeoutSeconds": "x"}, watch.BadRequest),
        ({"resourceVersionMatch": "NotOlderThan"}, watch.Invalid),
        ({"sendInitialEvents": "true", "allowWatchBookmarks": "true"}, watch.Invalid),
        ({"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}, watch.Invalid),
    ]:
        with pytest.raises(err):
            watch.check(store, "Pod", None, params)
    assert watch.Invalid("x").status()["code"] == 422


async def test_bookmarks_carry_the_latest_resource_version(store: Store, autojump_clock: Any) -> None:
    async with watching(store, resourceVersion="3", allowWatchBookmarks="true") as events:
        store.create(pod("z", ns="other"))  # another namespace moves the resourceVersion on
        ev = (await take(events, 1, timeout=watch.BOOKMARK_INTERVAL + 5))[0]
        assert ev == {
            "type": "BOOKMARK",
            "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "4"}},
        }
        store.create(pod("y"))
        assert [brief(e) for e in await take(events, 1)] == [("ADDED", "y", "5")]
    async with watching(store, resourceVersion="5") as events:  # not asked for: none
        with trio.move_on_after(watch.BOOKMARK_INTERVAL * 3) as scope:
            await take(events, 1, timeout=1e9)
        assert scope.cancelled_caught


async def test_watch_list_ends_initial_events_with_the_annotated_bookmark(store: Store) -> None:
    params = {
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
        "fieldSelector": "metadata.name=a",
    }
    async with watching(store, **params) as events:
        got = await take(events, 2)
        assert brief(got[0]) == ("ADDED", "a", "1")
        assert got[1] == {
            "type": "BOOKMARK",
            "object": {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": "3", "annotations": {"k8s.io/initial-events-end": "true"}},
            },
        }
        store.patch_status("Pod", "default", "a", {"phase": "Running"})
        assert [brief(e) for e in await take(events, 1)] == [("MODIFIED", "a", "4")]
    # An empty selection still gets the closing bookmark (kubectl wait on a missing object).
    async with watching(store, **dict(params, fieldSelector="metadata.name=nope")) as events:
        assert (await take(events, 1))[0]["object"]["metadata"]["annotations"] == {watch.INITIAL_EVENTS_END: "true"}
    # sendInitialEvents=false: only the changes after the resourceVersion.
    async with watching(store, **dict(params, sendInitialEvents="false", resourceVersion="3")) as events:
        assert [brief(e) for e in await take(events, 1)] == [("MODIFIED", "a", "4")]


async def test_timeout_ends_the_stream(store: Store, autojump_clock: Any) -> None:
    async with watching(store, timeoutSeconds=30, allowWatchBookmarks="true") as events:
        start = trio.current_time()
        got = await drain(events)
        assert [e["type"] for e in got] == ["ADDED", "ADDED", "BOOKMARK"]  # the last bookmark before the end
        assert 30 - watch.BOOKMARK_BEFORE_TIMEOUT <= trio.current_time() - start <= 30.01


async def test_a_consumer_that_stops_leaves_no_subscription(store: Store, autojump_clock: Any) -> None:
    before = len(store._subscribers)
    async with watching(store) as events:
        await take(events, 1)
        assert len(store._subscribers) == before + 1
    assert len(store._subscribers) == before
    # Cancelled while waiting for a change.
    with trio.move_on_after(0.05):
        async with watching(store, resourceVersion="3") as events:
            await take(events, 1, timeout=10)
    assert len(store._subscribers) == before


async def test_a_watcher_too_far_behind_is_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "HISTORY", 5)
    small = Store()
    small.create(pod("a"))
    async with watching(small) as events:
        await take(events, 1)
        for i in range(10):
            small.create(pod(f"p{i}"))
        assert await drain(events, timeout=5) == []
    assert small._subscribers == []


async def test_a_quiet_watcher_does_not_drift_out_of_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "HISTORY", 5)
    small = Store()
    got: list[dict] = []
    async with watching(small, ns="quiet", resourceVersion="0") as events:
        async with trio.open_nursery() as nursery:

            async def consume() -> None:
                got.extend(await take(events, 1))

            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()  # subscribed, waiting for a change
            for i in range(20):
                small.create(pod(f"p{i}"))  # another namespace: the cursor moves on
            small.create(pod("q", ns="quiet"))
    assert [brief(e) for e in got] == [("ADDED", "q", "21")]
