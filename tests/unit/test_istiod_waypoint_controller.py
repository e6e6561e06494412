"""istiod's waypoint controller over a real API server and store (no processes): the objects it
deploys pass the lab's validation, are created, kept and repaired, refused ones reported once;
plus the lab's garbage collector honouring any owner. The pure decisions: test_istiod_waypoints.py."""

from __future__ import annotations

import copy
import os
import random

import pytest
import trio
import yaml

from lab.apiserver import validation
from lab.apiserver.api import ApiServer
from lab.apiserver.errors import ApiError
from lab.apiserver.store import Store
from lab.client import LabError
from lab.controllers import workloads
from lab.runtime import images
from lab.testing import ARTICLE
from lab.topology import load_file
from mesh.istiod import waypoints as wp
from mesh.istiod.state import ClusterObjects, MeshState
from mesh.istiod.waypoint_controller import WaypointController
from mesh.istiod.waypoints import desired_objects

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def proxy_image(monkeypatch):
    """The catalog knows istio/proxyv2 (whether or not it does yet)."""
    real = images.lookup

    def lookup(image):
        if "istio/proxyv2" in image:
            return images.Image("istio/proxyv2", entrypoint=("true",))
        return real(image)

    monkeypatch.setattr(images, "lookup", lookup)


def test_desired_objects_pass_the_lab_validation(proxy_image):
    with open(os.path.join(ARTICLE, "waypoint.yaml")) as f:
        gw = yaml.safe_load(f)
    gw["metadata"]["uid"] = "uid-article-gw"
    assert len(validation.validate(desired_objects(gw), "istiod")) == 3


# ---- the controller over a real API server and store ----------------------------------------------------


class FakeLab:
    """The lab API's apply / update_status over a real ApiServer and Store; the watch is `sync`."""

    def __init__(self, tmp_path):
        self.store = Store()
        self.api = ApiServer(self.store, load_file(os.path.join(REPO, "topologies", "default.yaml")), str(tmp_path))
        self.calls: list[tuple[str, str]] = []
        self.sent = 0  # apply calls, refused ones included

    async def call(self, op, **params):
        try:
            if op == "apply":
                self.sent += 1
                results = self.api.apply(params["manifests"], params.get("source", "-"))
                self.calls.extend((op, r["action"]) for r in results)
                return results
            if op == "update_status":
                self.calls.append((op, params["name"]))
                obj = self.store.patch_status(params["kind"], params["namespace"], params["name"], params["status"])
                if obj is None:
                    raise ApiError(f'gateways "{params["name"]}" not found')
                return obj
        except ApiError as e:
            raise LabError(str(e)) from None
        raise AssertionError(op)

    def state(self, state: MeshState | None = None) -> MeshState:
        state = state or MeshState()
        fresh = ClusterObjects()
        for obj in self.store.all():
            fresh.apply("ADDED", obj)
        state.objects = fresh
        return state

    def reconcile(self, controller: WaypointController) -> None:
        """One pass over what the watch would show, then the watch catches up."""
        self.state(controller.state)
        trio.run(controller.reconcile)
        self.state(controller.state)

    def settle(self, controller: WaypointController) -> None:
        """Passes until nothing is written (what istiod's watch-driven passes come to)."""
        for _ in range(5):
            self.calls.clear()
            self.reconcile(controller)
            if all(action == "unchanged" for op, action in self.calls if op == "apply") and not any(
                op == "update_status" for op, _ in self.calls
            ):
                return
        raise AssertionError(f"still writing: {self.calls}")


@pytest.fixture
def lab(tmp_path, proxy_image):
    lab = FakeLab(tmp_path)
    lab.api.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ambient-apps\n")
    with open(os.path.join(ARTICLE, "waypoint.yaml")) as f:
        lab.api.apply(f.read(), "waypoint.yaml")
    return lab


NAME, NS = "httpbin-ambient-waypoint", "ambient-apps"


def test_controller_creates_owned_objects_and_reports_programmed(lab):
    controller = WaypointController(lab, lab.state())
    lab.reconcile(controller)
    assert lab.store.get("Gateway", NS, NAME)["status"]["conditions"][1]["reason"] == "Pending"
    lab.settle(controller)  # the watch brings the Service and its address
    gw = lab.store.get("Gateway", NS, NAME)
    for kind in ("ServiceAccount", "Service", "Deployment"):
        obj = lab.store.get(kind, NS, NAME)
        assert obj is not None, kind
        assert obj["metadata"]["ownerReferences"][0]["uid"] == gw["metadata"]["uid"]
    assert lab.store.get("Deployment", NS, NAME)["spec"]["replicas"] == 1
    status = gw["status"]
    programmed = next(c for c in status["conditions"] if c["type"] == "Programmed")
    assert programmed["status"] == "True"
    ip = lab.store.get("Service", NS, NAME)["spec"]["clusterIP"]
    assert status["addresses"][0] == {"type": "IPAddress", "value": ip}
    # A second pass changes nothing and writes nothing.
    lab.calls.clear()
    lab.sent = 0
    lab.reconcile(controller)
    assert lab.calls == [] and lab.sent == 0


def test_controller_keeps_scaled_replicas_and_repairs_drift(lab):
    controller = WaypointController(lab, lab.state())
    lab.reconcile(controller)
    lab.api.scale("deploy", NAME, NS, 2)
    lab.reconcile(controller)
    assert lab.store.get("Deployment", NS, NAME)["spec"]["replicas"] == 2
    tampered = copy.deepcopy(lab.store.get("Deployment", NS, NAME))
    tampered["spec"]["template"]["spec"]["containers"][0]["args"] = ["tampered"]
    lab.store.update(tampered)
    lab.api.rollout_restart("deploy", NAME, NS)
    lab.reconcile(controller)
    deploy = lab.store.get("Deployment", NS, NAME)
    assert deploy["spec"]["template"]["spec"]["containers"][0]["args"] == ["proxy", "waypoint"]
    assert deploy["spec"]["replicas"] == 2
    assert wp.RESTARTED_AT in deploy["spec"]["template"]["metadata"]["annotations"]


def test_controller_reports_a_refused_object_once(lab, monkeypatch):
    def lookup(image):
        raise images.UnknownImage(f'unknown image "{image}"')

    monkeypatch.setattr(images, "lookup", lookup)
    controller = WaypointController(lab, lab.state())
    lab.settle(controller)
    assert lab.store.get("Deployment", NS, NAME) is None
    assert lab.store.get("Service", NS, NAME) is not None
    programmed = lab.store.get("Gateway", NS, NAME)["status"]["conditions"][1]
    assert (programmed["status"], programmed["reason"]) == ("False", "Invalid")
    assert "unknown image" in programmed["message"]
    lab.calls.clear()
    lab.sent = 0
    lab.reconcile(controller)
    assert lab.calls == [] and lab.sent == 0  # the same refused object is not sent again


def test_controller_leaves_objects_it_does_not_own(lab):
    lab.api.apply(f"apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {NAME}\n  namespace: {NS}\n")
    controller = WaypointController(lab, lab.state())
    lab.reconcile(controller)
    assert "ownerReferences" not in lab.store.get("ServiceAccount", NS, NAME)["metadata"]
    programmed = lab.store.get("Gateway", NS, NAME)["status"]["conditions"][1]
    assert programmed["status"] == "False" and "not owned" in programmed["message"]


def test_non_waypoint_gateways_are_ignored(lab):
    lab.api.apply(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: ingress\n"
        "  namespace: ambient-apps\nspec:\n  gatewayClassName: istio\n  listeners:\n"
        "  - {name: http, port: 80, protocol: HTTP}\n"
    )
    controller = WaypointController(lab, lab.state())
    lab.reconcile(controller)
    assert lab.store.get("Deployment", NS, "ingress") is None
    assert lab.store.get("Gateway", NS, "ingress")["status"] == {}


def test_deleting_the_gateway_collects_its_objects(lab):
    controller = WaypointController(lab, lab.state())
    lab.reconcile(controller)
    workloads.reconcile_deployments(lab.store)
    workloads.reconcile_replicasets(lab.store, random.Random(1))
    assert lab.store.list("Pod", NS)
    lab.api.delete("Gateway", NAME, NS)
    for _ in range(3):  # Deployment, then its ReplicaSet, then its pods
        workloads.collect_garbage(lab.store)
    for kind in ("ServiceAccount", "Service", "Deployment", "ReplicaSet"):
        assert lab.store.list(kind, NS) == [], kind
    assert all(p["metadata"].get("deletionTimestamp") for p in lab.store.list("Pod", NS))  # gracefully


# ---- the garbage collector honours any owner -----------------------------------------------------------


def test_garbage_collector_generic_owner_references():
    store = Store()
    owner = store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner", "namespace": "a"}})

    def dependent(name: str, kind: str, ref: dict) -> dict:
        return store.create(
            {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "a", "ownerReferences": [ref]}}
        )

    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    dependent("kept", "Secret", ref)
    dependent("orphan", "Secret", {**ref, "uid": "gone"})
    dependent("not-controller", "Secret", {**ref, "uid": "gone", "controller": False})
    dependent("unknown-kind", "Secret", {**ref, "kind": "Mystery", "uid": "gone"})
    dependent("same-name-new-owner", "ServiceAccount", {**ref, "uid": "old-uid"})  # uid, not name, decides
    workloads.collect_garbage(store)
    assert sorted(o["metadata"]["name"] for o in store.all(("Secret", "ServiceAccount"))) == [
        "kept",
        "not-controller",
        "unknown-kind",
    ]
    store.delete("ConfigMap", "a", "owner")
    workloads.collect_garbage(store)
    assert sorted(o["metadata"]["name"] for o in store.all(("Secret",))) == ["not-controller", "unknown-kind"]
