"""Mutating admission webhooks (lab/admission.py): matching, failure policies, handler imports,
mutation applied on every Pod CREATE, and a refusal that leaves nothing behind."""

from __future__ import annotations

import copy
import sys
import types

import pytest

from lab.apiserver import admission
from lab.apiserver.api import ApiServer
from lab.apiserver.errors import ApiError
from lab.apiserver.store import Store
from lab.apiserver.validation import ManifestError, load
from lab.controllers import workloads
from lab.topology import Topology, load_file

# --- a fake handler module, importable by name while these tests run -------------------------

FAKE = "tests_fake_admission_handlers"
CALLS: list[tuple[dict, dict, dict]] = []


def _add_sidecar(pod: dict, namespace: dict, webhook: dict) -> dict | None:
    CALLS.append((pod, namespace, webhook))
    if any(c["name"] == "proxy" for c in pod["spec"]["containers"]):
        return None
    pod["spec"]["containers"].append({"name": "proxy", "image": "registry.k8s.io/pause"})
    pod["metadata"].setdefault("labels", {})["injected"] = "true"
    return pod


def _refuse(pod: dict, namespace: dict, webhook: dict) -> dict | None:
    raise ValueError("no pods named " + pod["metadata"]["name"])


def _crash(pod: dict, namespace: dict, webhook: dict) -> dict | None:
    raise KeyError("oops")


def _rename(pod: dict, namespace: dict, webhook: dict) -> dict | None:
    pod["metadata"]["name"] = "other"
    return pod


def _break(pod: dict, namespace: dict, webhook: dict) -> dict | None:
    pod["spec"]["containers"].append({"name": "bad", "image": "no/such-image"})
    return pod


@pytest.fixture(autouse=True)
def fake_module(monkeypatch):
    module = types.ModuleType(FAKE)
    for name, fn in (
        ("add_sidecar", _add_sidecar),
        ("refuse", _refuse),
        ("crash", _crash),
        ("rename", _rename),
        ("break_pod", _break),
    ):
        setattr(module, name, fn)
    monkeypatch.setitem(sys.modules, FAKE, module)
    CALLS.clear()
    yield module


def config(
    name: str = "injector", handler: str = "add_sidecar", *, webhook: str = "sidecar-injector.lab.test", **fields
) -> dict:
    """A MutatingWebhookConfiguration NAME whose one webhook, WEBHOOK, calls the fake module's HANDLER
    on pod CREATE; FIELDS are more of the webhook's own (failurePolicy, namespaceSelector, rules...)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "annotations": {admission.HANDLER_ANNOTATION: f"{FAKE}:{handler}"}},
        "webhooks": [
            {
                "name": webhook,
                "clientConfig": {"service": {"name": "istiod", "namespace": "istio-system", "path": "/inject"}},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                **fields,
            }
        ],
    }


def pod(name: str = "web", namespace: str = "apps", labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": {"containers": [{"name": "app", "image": "ambient-lab/echo"}]},
    }


def ns(name: str = "apps", labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}}


REVIEW = admission.Registry()

# --- matching ---------------------------------------------------------------------------------


def test_matching_webhook_mutates_and_sees_copies():
    p = pod()
    r = REVIEW.review(p, ns(), [config()])
    assert [c["name"] for c in r.pod["spec"]["containers"]] == ["app", "proxy"]
    assert r.pod["metadata"]["labels"] == {"injected": "true"}
    assert r.mutated_by == ["sidecar-injector.lab.test"] and r.ignored == []
    assert p["spec"]["containers"] == [{"name": "app", "image": "ambient-lab/echo"}]  # caller's pod untouched
    seen_pod, seen_ns, seen_webhook = CALLS[0]
    assert seen_ns["metadata"]["name"] == "apps" and seen_webhook["name"] == "sidecar-injector.lab.test"


@pytest.mark.parametrize(
    "selector, labels, hit",
    [
        ({"matchLabels": {"istio-injection": "enabled"}}, {"istio-injection": "enabled"}, True),
        ({"matchLabels": {"istio-injection": "enabled"}}, {}, False),
        (
            {"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]},
            {"istio-injection": "enabled"},
            True,
        ),
        ({"matchExpressions": [{"key": "istio-injection", "operator": "DoesNotExist"}]}, {}, True),
        (
            {"matchExpressions": [{"key": "istio-injection", "operator": "NotIn", "values": ["disabled"]}]},
            {},
            True,
        ),  # NotIn also matches a namespace without the key, as Kubernetes
        ({"matchExpressions": [{"key": "istio-injection", "operator": "Exists"}]}, {}, False),
        # Kubernetes labels every namespace with its name.
        ({"matchLabels": {"kubernetes.io/metadata.name": "apps"}}, {}, True),
        ({}, {}, True),
    ],
)
def test_namespace_selector(selector, labels, hit):
    r = REVIEW.review(pod(), ns(labels=labels), [config(namespaceSelector=selector)])
    assert bool(r.mutated_by) is hit


def test_object_selector_and_absent_selectors():
    sel = {"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]}
    assert REVIEW.review(pod(labels={"app": "x"}), ns(), [config(objectSelector=sel)]).mutated_by
    assert not REVIEW.review(
        pod(labels={"sidecar.istio.io/inject": "false"}), ns(), [config(objectSelector=sel)]
    ).mutated_by
    assert REVIEW.review(pod(), None, [config()]).mutated_by  # no selectors: every pod


def test_webhook_without_pod_create_rules_is_not_called():
    assert not REVIEW.review(pod(), ns(), [config(rules=[])]).mutated_by
    assert CALLS == []


def test_webhooks_run_in_configuration_name_order_and_see_earlier_changes():
    second = config("b-second", webhook="second.lab.test", objectSelector={"matchLabels": {"injected": "true"}})
    second["metadata"]["annotations"][admission.HANDLER_ANNOTATION] = f"{FAKE}:refuse"
    with pytest.raises(admission.AdmissionDenied, match='"second.lab.test"'):
        REVIEW.review(pod(), ns(), [second, config("a-first")])  # a-first labels, then b-second sees it


# --- failures ---------------------------------------------------------------------------------


def test_refusal_fail_policy_names_the_webhook():
    with pytest.raises(admission.AdmissionDenied) as e:
        REVIEW.review(pod(), ns(), [config(handler="refuse")])
    assert str(e.value) == 'admission webhook "sidecar-injector.lab.test" denied the request: no pods named web'


def test_refusal_ignore_policy_passes_unmutated_and_says_why():
    r = REVIEW.review(pod(), ns(), [config(handler="refuse", failurePolicy="Ignore")])
    assert r.pod == pod() and r.mutated_by == []
    assert r.ignored == ['admission webhook "sidecar-injector.lab.test" denied the request: no pods named web']


def test_handler_bug_is_a_failed_call():
    with pytest.raises(
        admission.AdmissionDenied, match=r'failed calling webhook "sidecar-injector.lab.test": KeyError'
    ):
        REVIEW.review(pod(), ns(), [config(handler="crash")])
    with pytest.raises(admission.AdmissionDenied, match="changed metadata.name"):
        REVIEW.review(pod(), ns(), [config(handler="rename")])


def test_mutated_pod_is_validated_again():
    with pytest.raises(
        admission.AdmissionDenied, match=r'invalid after admission webhook .*unknown image "no/such-image"'
    ):
        REVIEW.review(pod(), ns(), [config(handler="break_pod")])


def test_handler_import_errors_name_the_module():
    with pytest.raises(admission.HandlerError, match='cannot import module "no_such_mod_xyz": ModuleNotFoundError'):
        admission.load_handler("no_such_mod_xyz:admit")
    with pytest.raises(admission.HandlerError, match=f'module "{FAKE}" has no function "nope"'):
        admission.load_handler(f"{FAKE}:nope")
    with pytest.raises(admission.HandlerError, match="<module>:<function>"):
        admission.load_handler("just_a_module")
    assert admission.load_handler(f"{FAKE}:refuse") is _refuse


def test_a_handler_that_fails_to_import_at_pod_time_obeys_the_policy():
    broken = config(failurePolicy="Ignore")
    broken["metadata"]["annotations"][admission.HANDLER_ANNOTATION] = "no_such_mod_xyz:admit"
    r = REVIEW.review(pod(), ns(), [broken])
    assert r.ignored and "cannot import module" in r.ignored[0]


# --- validation of the configuration ----------------------------------------------------------


def _yaml_of(obj: dict) -> str:
    import yaml

    return yaml.safe_dump(obj)


def test_configuration_validation_refuses_unsupported_rules_and_missing_handler():
    ok = config()
    assert load(_yaml_of(ok), "wh.yaml")[0]["metadata"] == ok["metadata"]
    update = config(
        rules=[{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]
    )
    with pytest.raises(ManifestError) as e:
        load(_yaml_of(update), "wh.yaml")
    assert (
        'webhooks[0].rules[0].operations: Unsupported value: "UPDATE": the lab calls mutating webhooks '
        'on CREATE of pods only' in str(e.value)
    )
    deploys = config(
        rules=[{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]
    )
    with pytest.raises(ManifestError, match="apiGroups"):
        load(_yaml_of(deploys), "wh.yaml")
    no_handler = config()
    del no_handler["metadata"]["annotations"]
    with pytest.raises(ManifestError, match=r"metadata.annotations\[lab.ambient/handler\]: Required value"):
        load(_yaml_of(no_handler), "wh.yaml")
    bad = config(failurePolicy="Sometimes", webhook="short.name")
    with pytest.raises(ManifestError) as e:
        load(_yaml_of(bad), "wh.yaml")
    lines = e.value.lines()
    assert any("webhooks[0].name" in line and "three segments" in line for line in lines)
    assert any('failurePolicy: Unsupported value: "Sometimes"' in line for line in lines)


# --- the store's door and the API's apply -----------------------------------------------------

TOPO = """
name: unit
nodes:
  - {name: control-plane, role: control-plane}
  - {name: worker1}
install: []
"""


@pytest.fixture
def topo(tmp_path) -> Topology:
    path = tmp_path / "t.yaml"
    path.write_text(TOPO)
    return load_file(str(path))


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def world(topo):
    clock = Clock()
    store = admission.AdmittingStore(clock=clock)
    events: list[tuple[str, str, str]] = []
    retries: list[float] = []
    store.record_event = lambda obj, reason, message, type_="Normal": events.append(
        (obj["metadata"]["name"], reason, message)
    )
    store.retry_after = retries.append
    api = ApiServer(store, topo, "/nonexistent")
    for name, labels in (("default", {}), ("apps", {"istio-injection": "enabled"}), ("plain", {})):
        store.create(ns(name, labels))
    return types.SimpleNamespace(store=store, api=api, events=events, retries=retries, clock=clock)


INJECTOR = config(namespaceSelector={"matchLabels": {"istio-injection": "enabled"}})


def _apply(api, *objs: dict, source: str = "x.yaml"):
    return api.apply("---\n".join(_yaml_of(o) for o in objs), source)


def test_apply_of_a_configuration_imports_its_handler(world):
    broken = copy.deepcopy(INJECTOR)
    broken["metadata"]["annotations"][admission.HANDLER_ANNOTATION] = "no_such_mod_xyz:admit"
    with pytest.raises(ApiError, match='cannot import module "no_such_mod_xyz"'):
        _apply(world.api, broken)
    assert world.store.list(admission.KIND) == []
    out = _apply(world.api, INJECTOR)
    assert out[0]["action"] == "created" and out[0]["group"] == "admissionregistration.k8s.io"


def test_applied_pod_is_mutated_and_reapply_is_unchanged(world):
    _apply(world.api, INJECTOR)
    _apply(world.api, pod("web", "apps"), pod("web", "plain"))
    injected = world.store.get("Pod", "apps", "web")
    assert [c["name"] for c in injected["spec"]["containers"]] == ["app", "proxy"]
    assert [c["name"] for c in world.store.get("Pod", "plain", "web")["spec"]["containers"]] == ["app"]
    # Only CREATE: re-applying the same file changes nothing, and existing pods are never re-admitted.
    assert _apply(world.api, pod("web", "apps"))[0]["action"] == "unchanged"
    assert _apply(world.api, pod("web", "apps", {"v": "2"}))[0]["action"] == "configured"
    assert len(world.store.get("Pod", "apps", "web")["spec"]["containers"]) == 2


def test_refused_pod_leaves_nothing_of_the_apply(world):
    refuser = config(handler="refuse", namespaceSelector={"matchLabels": {"istio-injection": "enabled"}})
    _apply(world.api, refuser)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "apps"}, "data": {}}
    before = world.store.resource_version
    with pytest.raises(ApiError) as e:
        _apply(world.api, cm, pod("web", "apps"), source="app.yaml")
    assert str(e.value) == (
        'Error from server: error when creating "app.yaml": admission webhook '
        '"sidecar-injector.lab.test" denied the request: no pods named web'
    )
    assert world.store.resource_version == before
    assert world.store.get("ConfigMap", "apps", "c") is None and world.store.get("Pod", "apps", "web") is None


def test_namespace_created_by_the_same_apply_is_the_one_selected(world):
    _apply(world.api, INJECTOR)
    _apply(world.api, ns("fresh", {"istio-injection": "enabled"}), pod("web", "fresh"))
    assert len(world.store.get("Pod", "fresh", "web")["spec"]["containers"]) == 2


def test_ignore_policy_creates_the_pod_and_records_an_event(world):
    _apply(world.api, config(handler="refuse", failurePolicy="Ignore"))
    _apply(world.api, pod("web", "plain"))
    assert world.store.get("Pod", "plain", "web") is not None
    assert world.events == [
        (
            "web",
            "AdmissionWebhookIgnored",
            'admission webhook "sidecar-injector.lab.test" denied the request: no pods '
            "named web (failurePolicy Ignore: created without this webhook's change)",
        )
    ]


DEPLOY = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "apps"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "ambient-lab/echo"}]},
        },
    },
}


def _reconcile(store):
    import random

    workloads.reconcile_deployments(store)
    workloads.reconcile_replicasets(store, random.Random(1))


def test_controller_pods_are_admitted_too(world):
    _apply(world.api, INJECTOR)
    _apply(world.api, DEPLOY)
    _reconcile(world.store)
    pods = world.store.list("Pod", "apps")
    assert len(pods) == 2
    for p in pods:
        assert [c["name"] for c in p["spec"]["containers"]] == ["app", "proxy"]
        assert p["metadata"]["labels"]["injected"] == "true" and p["spec"]["serviceAccountName"] == "default"
    rs = world.store.list("ReplicaSet", "apps")[0]
    assert len(rs["spec"]["template"]["spec"]["containers"]) == 1  # templates are not touched


def test_refused_controller_pod_is_an_owner_event_and_a_retry_with_backoff(world):
    _apply(world.api, config(handler="refuse"))
    _apply(world.api, DEPLOY)
    _reconcile(world.store)  # must not raise: the controller goes on
    assert world.store.list("Pod", "apps") == []
    rs = world.store.list("ReplicaSet", "apps")[0]
    [(owner, reason, message)] = world.events
    assert (owner, reason) == (rs["metadata"]["name"], "FailedCreate")
    assert message.startswith(
        'Error creating: admission webhook "sidecar-injector.lab.test" denied the '
        f'request: no pods named {rs["metadata"]["name"]}-'
    )
    assert world.retries[0] == 1.0
    # Within the backoff nothing is tried (no handler call, no event); the wake-up is re-armed.
    CALLS.clear()
    _reconcile(world.store)
    assert len(world.events) == 1 and world.retries[-1] == pytest.approx(1.0)
    world.clock.t += 1.5
    _reconcile(world.store)
    assert len(world.events) == 2 and world.retries[-1] == 2.0  # doubled
    # Fixing the configuration clears the backoff: the next pass creates the pods.
    world.store.delete(admission.KIND, None, "injector")
    _reconcile(world.store)
    assert len(world.store.list("Pod", "apps")) == 2


def test_plain_store_api_has_no_admission(topo):
    store = Store()
    api = ApiServer(store, topo, "/nonexistent")
    store.create(ns("apps"))
    _apply(api, pod("web", "apps"))
    assert store.get("Pod", "apps", "web")["spec"]["serviceAccountName"] == "default"
