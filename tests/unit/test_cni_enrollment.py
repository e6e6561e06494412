"""Which pods the agent captures, the view built from watch events, and the reconcile plan. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.cni.enrollment import ClusterView, Plan, Workload, plan, should_capture, workload_of
from tests.unit.cni_helpers import AMBIENT, NODE, pod


def namespace(name: str, labels: dict | None = None) -> dict[str, Any]:
    return {"kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


@pytest.mark.parametrize(
    "obj, ns_labels, captured",
    [
        (pod(), AMBIENT, True),
        (pod(), {}, False),
        (pod(labels=AMBIENT), {}, True),  # the pod itself opts in
        (pod(labels={"istio.io/dataplane-mode": "none"}), AMBIENT, False),  # ... or out
        (pod(labels={"istio.io/dataplane-mode": "sidecar"}), AMBIENT, True),  # only "none" opts out
        (pod(node="worker2"), AMBIENT, False),
        (pod(host_network=True), AMBIENT, False),
        (pod(ns="istio-system"), AMBIENT, False),
        (pod(ns="kube-system", labels=AMBIENT), {}, False),
        (pod(ip=None), AMBIENT, False),  # not wired yet
        (pod(phase="Succeeded"), AMBIENT, False),
        (pod(phase="Failed"), AMBIENT, False),
        (pod(phase="Pending"), AMBIENT, True),  # running init containers are captured too
    ],
)
def test_selection(obj: dict, ns_labels: dict, captured: bool) -> None:
    assert should_capture(obj, ns_labels, NODE) is captured


def test_no_netns_annotation_means_not_yet() -> None:
    obj = pod()
    del obj["metadata"]["annotations"]["lab.ambient/netns"]
    assert not should_capture(obj, AMBIENT, NODE)


def test_workload_carries_zds_identity_and_netns() -> None:
    assert workload_of(pod()) == Workload("uid-demo-web", "web", "demo", "web-sa", "al-x-pod-demo-web")
    assert workload_of(pod(sa=None)).service_account == "default"
    assert str(workload_of(pod())) == "demo/web"


def test_view_follows_events() -> None:
    view = ClusterView(NODE)
    view.apply("ADDED", pod())
    view.apply("ADDED", pod("other", node="worker2"))
    assert view.wanted() == {}
    view.apply("ADDED", namespace("demo", AMBIENT))
    assert list(view.wanted()) == ["uid-demo-web"]
    view.apply("MODIFIED", namespace("demo"))
    assert view.wanted() == {}
    view.apply("MODIFIED", pod(labels=AMBIENT))
    assert list(view.wanted()) == ["uid-demo-web"]
    view.apply("DELETED", pod())
    assert view.wanted() == {} and view.pod("uid-demo-web") is None
    view.apply("ADDED", {"kind": "Service", "metadata": {"name": "x"}})  # ignored


def test_marked_pods_are_those_of_this_node_with_the_annotation() -> None:
    view = ClusterView(NODE)
    marked = {"ambient.istio.io/redirection": "enabled"}
    view.apply("ADDED", pod("a", annotations=marked))
    view.apply("ADDED", pod("b"))
    view.apply("ADDED", pod("c", node="worker2", annotations=marked))
    view.apply("ADDED", pod("d", host_network=True, annotations=marked))
    assert list(view.marked()) == ["uid-demo-a"]


def w(name: str) -> Workload:
    return Workload(f"uid-{name}", name, "demo", "sa", f"ns-{name}")


def test_plan_captures_new_releases_stale_and_keeps_the_rest() -> None:
    wanted = {"uid-a": w("a"), "uid-b": w("b")}
    enrolled = {"uid-b": w("b"), "uid-c": w("c")}
    marked = {"uid-a": w("a"), "uid-d": w("d")}  # a: marked by an earlier agent, still wanted
    assert plan(wanted, enrolled, marked) == Plan(release=(w("d"), w("c")), capture=(w("a"),))
    assert plan({}, {}, {}) == Plan((), ())
