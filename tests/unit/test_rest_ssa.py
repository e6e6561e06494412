"""Server-side apply and managedFields: what each manager owns (FieldsV1), conflicts with the
kube-apiserver's wording, force, removal of what an applier stopped applying, and how ordinary
writes (record_update) move ownership."""

import copy
import json
import pathlib

import pytest
import yaml

from lab.apiserver.rest import ssa
from lab.apiserver.rest.ssa import ApplyConflict, ApplyError, apply, managers, record_update

ARTICLE = pathlib.Path(__file__).resolve().parents[2] / "topologies" / "article"
T0, T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T11:00:00Z", "2024-05-01T12:00:00Z"
HTTPBIN = 'k:{"name":"httpbin"}'
PORT80 = 'k:{"containerPort":80,"protocol":"TCP"}'


def article(name, kind):
    return next(d for d in yaml.safe_load_all((ARTICLE / f"{name}.yaml").read_text()) if d and d["kind"] == kind)


DEPLOYMENT = article("httpbin-ambient", "Deployment")


def deployment(**spec):
    d = copy.deepcopy(DEPLOYMENT)
    d["spec"].update(spec)
    return d


def containers(obj):
    return obj["spec"]["template"]["spec"]["containers"]


def entry(obj, manager, operation):
    return next(e for e in obj["metadata"]["managedFields"] if e["manager"] == manager and e["operation"] == operation)


def owned(obj):
    return {k: v["fields"] for k, v in managers(obj).items()}


def client_side_created(obj=None):
    """The object as `kubectl apply` (client-side) leaves it: created by an Update of its manager."""
    return record_update(None, obj or DEPLOYMENT, "kubectl-client-side-apply", now=T0)


# ---- apply: create, FieldsV1, no-ops ------------------------------------------------------------


def test_apply_creates_the_object_and_records_what_it_set():
    out = apply(None, DEPLOYMENT, "kubectl", False, now=T0)
    assert out["spec"] == DEPLOYMENT["spec"]
    assert out["metadata"]["managedFields"] == [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},  # a LabelSelector is atomic
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}, "f:version": {}}},
                        "f:spec": {
                            "f:containers": {
                                HTTPBIN: {
                                    ".": {},
                                    "f:image": {},
                                    "f:name": {},
                                    "f:ports": {PORT80: {".": {}, "f:containerPort": {}}},
                                }
                            },
                            "f:serviceAccountName": {},
                        },
                    },
                }
            },
        }
    ]


def test_reapplying_the_same_config_changes_nothing():
    first = apply(None, DEPLOYMENT, "kubectl", False, now=T0)
    assert apply(first, DEPLOYMENT, "kubectl", False, now=T1) == first


def test_an_applied_object_may_not_carry_managed_fields():
    bad = copy.deepcopy(DEPLOYMENT)
    bad["metadata"]["managedFields"] = []
    with pytest.raises(ApplyError) as e:
        apply(None, bad, "kubectl", False)
    assert (e.value.code, e.value.reason, e.value.message) == (400, "BadRequest", "metadata.managedFields must be nil")


def test_status_is_not_applied_to_the_main_resource():
    live = apply(None, DEPLOYMENT, "kubectl", False, now=T0)
    live["status"] = {"replicas": 1}
    out = apply(live, {**DEPLOYMENT, "status": {"replicas": 9}}, "kubectl", False, now=T1)
    assert out["status"] == {"replicas": 1}


# ---- conflicts and force ---------------------------------------------------------------------------


def test_changing_a_field_another_manager_set_is_a_409_conflict():
    live = client_side_created()
    with pytest.raises(ApplyConflict) as e:
        apply(live, deployment(replicas=3), "kubectl", False, now=T1)
    assert (e.value.code, e.value.reason) == (409, "Conflict")
    assert e.value.message == (
        'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas'
    )
    assert e.value.details == {
        "causes": [
            {
                "reason": "FieldManagerConflict",
                "field": ".spec.replicas",
                "message": 'conflict with "kubectl-client-side-apply" using apps/v1',
            }
        ]
    }


def test_the_same_value_is_shared_not_a_conflict():
    live = client_side_created()
    out = apply(live, DEPLOYMENT, "kubectl", False, now=T1)
    assert out["spec"] == live["spec"]
    both = owned(out)
    assert ".spec.replicas" in both["kubectl/Apply"] and ".spec.replicas" in both["kubectl-client-side-apply/Update"]


def test_force_takes_the_fields_over():
    live = client_side_created()
    out = apply(live, deployment(replicas=3), "kubectl", True, now=T1)
    assert out["spec"]["replicas"] == 3
    assert ".spec.replicas" in owned(out)["kubectl/Apply"]
    assert ".spec.replicas" not in owned(out)["kubectl-client-side-apply/Update"]
    assert [(e["manager"], e["operation"]) for e in out["metadata"]["managedFields"]] == [
        ("kubectl", "Apply"),
        ("kubectl-client-side-apply", "Update"),
    ]
    apply(out, deployment(replicas=4), "kubectl", False)  # no conflict any more


def test_conflicts_with_several_managers_are_listed_per_manager():
    live = apply(None, deployment(replicas=1), "ci", False, now=T0)
    live = record_update(
        live, {**live, "metadata": {**live["metadata"], "labels": {"team": "a"}}}, "kubectl-edit", now=T1
    )
    change = deployment(replicas=2)
    change["metadata"]["labels"] = {"team": "b"}
    containers(change)[0]["image"] = "httpbin:2"
    with pytest.raises(ApplyConflict) as e:
        apply(live, change, "kubectl", False, now=T2)
    assert e.value.message == (
        'Apply failed with 3 conflicts: conflicts with "ci":\n'
        '- .spec.replicas\n'
        '- .spec.template.spec.containers[name="httpbin"].image\n'
        'conflicts with "kubectl-edit" using apps/v1:\n'
        '- .metadata.labels.team'
    )
    assert [c["field"] for c in e.value.details["causes"]] == [
        ".spec.replicas",
        '.spec.template.spec.containers[name="httpbin"].image',
        ".metadata.labels.team",
    ]


def test_an_object_without_managed_fields_is_owned_by_before_first_apply():
    live = copy.deepcopy(DEPLOYMENT)  # made by the lab itself, never through the REST surface
    assert apply(live, DEPLOYMENT, "kubectl", False, now=T0)["spec"] == live["spec"]
    with pytest.raises(ApplyConflict, match='conflict with "before-first-apply" using apps/v1: .spec.replicas'):
        apply(live, deployment(replicas=2), "kubectl", False, now=T0)


# ---- what an applier stops applying -------------------------------------------------------------


def test_fields_an_applier_stops_applying_are_removed():
    first = deployment()
    first["metadata"]["labels"] = {"app": "h", "tier": "web"}
    containers(first)[0]["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    live = apply(None, first, "kubectl", False, now=T0)
    second = deployment()
    second["metadata"]["labels"] = {"app": "h"}
    containers(second)[0]["env"] = [{"name": "A", "value": "1"}]
    out = apply(live, second, "kubectl", False, now=T1)
    assert out["metadata"]["labels"] == {"app": "h"}
    assert containers(out)[0]["env"] == [{"name": "A", "value": "1"}]
    third = apply(out, deployment(), "kubectl", False, now=T2)
    assert "labels" not in third["metadata"] and "env" not in containers(third)[0]  # emptied maps and lists go


def test_a_list_the_config_empties_stays_as_an_empty_list():
    live = apply(None, DEPLOYMENT, "kubectl", False, now=T0)
    out = apply(live, deployment(template={"spec": {"containers": []}}), "kubectl", False, now=T1)
    assert out["spec"]["template"] == {"spec": {"containers": []}}  # the emptied list stays, and what holds it


def test_a_field_another_manager_owns_stays():
    labelled = deployment()
    labelled["metadata"]["labels"] = {"tier": "web"}
    live = apply(None, labelled, "a", False, now=T0)
    live = apply(live, labelled, "b", False, now=T0)
    out = apply(live, deployment(), "a", False, now=T1)
    assert out["metadata"]["labels"] == {"tier": "web"}
    assert ".metadata.labels.tier" in owned(out)["b/Apply"]


def test_removing_a_container_through_apply():
    two = deployment()
    containers(two).append({"name": "sleep", "image": "curlimages/curl"})
    live = apply(None, two, "kubectl", False, now=T0)
    out = apply(live, DEPLOYMENT, "kubectl", False, now=T1)
    assert [c["name"] for c in containers(out)] == ["httpbin"]
    assert not any("sleep" in f for f in owned(out)["kubectl/Apply"])


def test_after_client_side_apply_an_item_the_applier_never_owned_stays():
    """The article's port edit applied server-side over a client-side-applied Deployment: the new port
    is merged in after the live one, and port 80 stays because kubectl-client-side-apply still owns
    it (as upstream: kubectl then migrates managedFields and applies again to remove it)."""
    live = client_side_created()
    edited = deployment()
    containers(edited)[0]["ports"] = [{"containerPort": 8080}]
    out = apply(live, edited, "kubectl", False, now=T1)
    assert containers(out)[0]["ports"] == [{"containerPort": 80}, {"containerPort": 8080}]


def test_keyed_lists_merge_in_the_applied_order_with_live_only_items_kept_in_place():
    live = record_update(None, deployment(), "kubectl-create", now=T0)
    containers(live).append({"name": "b", "image": "b"})
    config = deployment()
    containers(config)[:] = [{"name": "c", "image": "c"}, {"name": "httpbin", "image": "new"}]
    out = apply(live, config, "kubectl", True, now=T1)
    assert [(c["name"], c["image"]) for c in containers(out)] == [("c", "c"), ("httpbin", "new"), ("b", "b")]
    assert containers(out)[1]["ports"] == [{"containerPort": 80}]  # fields the config left out are kept


def test_a_null_in_the_applied_config_leaves_the_field_unset():
    config = deployment()
    config["spec"]["paused"] = None
    out = apply(None, config, "kubectl", False, now=T0)
    assert "paused" not in out["spec"] and ".spec.paused" in owned(out)["kubectl/Apply"]


# ---- ordinary writes: record_update ------------------------------------------------------------


def test_a_create_records_everything_under_the_creating_manager():
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n", "labels": {"app": "a"}, "uid": "u", "resourceVersion": "3"},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]},
    }
    out = record_update(None, pod, "kubectl-create", now=T0)
    assert out["metadata"]["managedFields"] == [
        {
            "manager": "kubectl-create",
            "operation": "Update",
            "apiVersion": "v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:containers": {
                        'k:{"name":"c"}': {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {".": {}, PORT80: {".": {}, "f:containerPort": {}}},
                        }
                    }
                },
            },
        }
    ]
    assert {k: v for k, v in out.items() if k != "metadata"} == {k: v for k, v in pod.items() if k != "metadata"}


def test_an_update_takes_the_fields_it_changes():
    live = apply(None, DEPLOYMENT, "kubectl", False, now=T0)
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    out = record_update(live, scaled, "kubectl-edit", now=T1)
    assert owned(out)["kubectl-edit/Update"] == [".spec.replicas"]
    assert ".spec.replicas" not in owned(out)["kubectl/Apply"]
    assert entry(out, "kubectl", "Apply")["time"] == T0 and entry(out, "kubectl-edit", "Update")["time"] == T1
    with pytest.raises(ApplyConflict, match='conflict with "kubectl-edit" using apps/v1: .spec.replicas'):
        apply(out, DEPLOYMENT, "kubectl", False, now=T2)


def test_removed_fields_leave_every_manager():
    labelled = deployment()
    labelled["metadata"]["labels"] = {"tier": "web"}
    live = apply(None, labelled, "kubectl", False, now=T0)
    unlabelled = copy.deepcopy(live)
    del unlabelled["metadata"]["labels"]
    out = record_update(live, unlabelled, "kubectl-label", now=T1)
    assert not any(f.startswith(".metadata.labels") for f in owned(out)["kubectl/Apply"])
    assert "kubectl-label/Update" not in owned(out)  # it only removed: it owns nothing


def test_an_unchanged_write_leaves_managed_fields_as_they_were():
    live = client_side_created()
    assert record_update(live, copy.deepcopy(live), "kubectl-client-side-apply", now=T2) == live
    assert record_update(live, copy.deepcopy(live), "someone-else", now=T2) == live


def test_objects_never_tracked_stay_untracked_and_an_empty_list_resets():
    untracked = copy.deepcopy(DEPLOYMENT)
    changed = deployment(replicas=4)
    assert "managedFields" not in record_update(untracked, changed, "kubectl-edit")["metadata"]
    live = client_side_created()
    reset = copy.deepcopy(live)
    reset["metadata"]["managedFields"] = []
    assert "managedFields" not in record_update(live, reset, "kubectl-edit")["metadata"]


def test_managed_fields_sent_by_the_client_replace_the_bookkeeping():
    """kubectl's client-side → server-side upgrade rewrites managedFields with a JSON patch."""
    live = client_side_created()
    rewritten = copy.deepcopy(live)
    rewritten["metadata"]["managedFields"][0].update(manager="kubectl", operation="Apply")
    out = record_update(live, rewritten, "kubectl", now=T1)
    assert [(e["manager"], e["operation"]) for e in out["metadata"]["managedFields"]] == [("kubectl", "Apply")]
    assert apply(out, deployment(replicas=2), "kubectl", False)["spec"]["replicas"] == 2


def test_status_writes_are_recorded_against_the_status_subresource():
    live = apply(None, DEPLOYMENT, "kubectl", False, now=T0)
    with_status = copy.deepcopy(live)
    with_status["status"] = {"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]}
    out = record_update(live, with_status, "deployment-controller", subresource="status", now=T1)
    e = entry(out, "deployment-controller", "Update")
    assert e["subresource"] == "status"
    assert e["fieldsV1"] == {
        "f:status": {
            "f:conditions": {".": {}, 'k:{"type":"Available"}': {".": {}, "f:status": {}, "f:type": {}}},
            "f:replicas": {},
        }
    }
    # through the main resource, status is nobody's
    assert "kubectl-edit/Update" not in owned(record_update(live, with_status, "kubectl-edit", now=T1))


# ---- schema corners ------------------------------------------------------------------------------


def test_custom_kinds_have_atomic_lists():
    policy = article("l7-authz-policy", "AuthorizationPolicy")
    live = apply(None, policy, "kubectl", False, now=T0)
    assert entry(live, "kubectl", "Apply")["fieldsV1"] == {
        "f:spec": {"f:action": {}, "f:rules": {}, "f:selector": {"f:matchLabels": {"f:app": {}}}}
    }
    edited = copy.deepcopy(policy)
    edited["spec"]["rules"][0]["to"][0]["operation"]["paths"] = ["/ip", "/headers"]
    with pytest.raises(ApplyConflict, match=r'conflict with "kubectl": \.spec\.rules$'):
        apply(live, edited, "ci", False)
    assert apply(live, edited, "kubectl", False)["spec"]["rules"] == edited["spec"]["rules"]


@pytest.mark.parametrize(
    "kind,obj,fields_v1",
    [
        (
            "finalizers are a set",
            {"metadata": {"name": "x", "finalizers": ["a.io/x", "b.io/y"]}},
            {"f:metadata": {"f:finalizers": {'v:"a.io/x"': {}, 'v:"b.io/y"': {}}}},
        ),
        (
            "owner references are atomic items keyed on uid",
            {"metadata": {"name": "x", "ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "r"}]}},
            {"f:metadata": {"f:ownerReferences": {'k:{"uid":"u1"}': {}}}},
        ),
        (
            "service ports key on port and protocol",
            {"spec": {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}], "selector": {"k": "v"}}},
            {
                "f:spec": {
                    "f:ports": {
                        'k:{"port":53,"protocol":"TCP"}': {".": {}, "f:port": {}},
                        'k:{"port":53,"protocol":"UDP"}': {".": {}, "f:port": {}, "f:protocol": {}},
                    },
                    "f:selector": {},
                }
            },
        ),
        (
            "a repeated key makes the list atomic",
            {"spec": {"ports": [{"port": 80}, {"port": 80}]}},
            {"f:spec": {"f:ports": {}}},
        ),
        (
            "empty maps are owned as leaves",
            {"spec": {"selector": {}, "x": {}}},
            {"f:spec": {"f:selector": {}, "f:x": {}}},
        ),
    ],
)
def test_field_sets(kind, obj, fields_v1):
    out = apply(None, {"apiVersion": "v1", "kind": "Service", **obj}, "m", False, now=T0)
    assert out["metadata"]["managedFields"][0]["fieldsV1"] == fields_v1


@pytest.mark.parametrize(
    "path,text",
    [
        ((("f", "spec"), ("f", "replicas")), ".spec.replicas"),
        (
            (("f", "spec"), ("f", "ports"), ("k", '{"port":80,"protocol":"TCP"}'), ("f", "name")),
            '.spec.ports[port=80,protocol="TCP"].name',
        ),
        ((("f", "metadata"), ("f", "finalizers"), ("v", '"a"')), '.metadata.finalizers[="a"]'),
        ((("f", "x"), ("i", "3")), ".x[3]"),
    ],
)
def test_path_strings(path, text):
    assert ssa.path_string(path) == text


def test_managed_fields_from_elsewhere_are_read_and_written_back_unchanged():
    live = client_side_created()
    live["metadata"]["managedFields"].append(
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "subresource": "status",
            "fieldsV1": {"f:status": {"f:conditions": {".": {}, 'k:{"type": "Available"}': {".": {}, "f:type": {}}}}},
        }
    )
    out = record_update(live, copy.deepcopy(live), "kubectl-client-side-apply", now=T2)
    assert owned(out)["kube-controller-manager/Update"] == [
        ".status.conditions",
        '.status.conditions[type="Available"]',
        '.status.conditions[type="Available"].type',
    ]
    assert entry(out, "kube-controller-manager", "Update")["fieldsV1"]["f:status"]["f:conditions"] == {
        ".": {},
        'k:{"type":"Available"}': {".": {}, "f:type": {}},
    }


@pytest.mark.parametrize(
    "field_manager,user_agent,name",
    [
        ("kubectl", "kubectl/v1.30.0 (linux/amd64) kubernetes/abc", "kubectl"),
        (None, "kubectl/v1.30.0 (linux/amd64) kubernetes/abc", "kubectl"),
        ("", "OpenAPI-Generator/31.0.0/python", "OpenAPI-Generator"),
        (None, "a\tb" + "x" * 200, "ab" + "x" * 126),
    ],
)
def test_manager_names(field_manager, user_agent, name):
    assert ssa.manager_name(field_manager, user_agent) == name


# ---- from client-side to server-side apply: kubectl's upgrade --------------------------------------
# `kubectl apply --server-side` over an object `kubectl apply` made (k8s.io/kubectl apply.go): it
# applies as `kubectl`; if the object has the last-applied annotation and no Apply manager owns it,
# it applies just the annotation as `kubectl-last-applied`; it PATCHes managedFields so that the
# client-side manager's fields join the `kubectl` Apply entry (client-go util/csaupgrade); then it
# applies again, so that what it no longer applies is removed.

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SERVICE = article("httpbin-ambient", "Service")


def last_applied(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"


def client_side_applied(obj, now=T0):
    """`kubectl apply` creating OBJ: with the annotation, recorded as an Update of its manager."""
    created = copy.deepcopy(obj)
    created["metadata"].setdefault("annotations", {})[LAST_APPLIED] = last_applied(obj)
    return record_update(None, created, "kubectl-client-side-apply", now=now)


def client_side_reapplied(live, obj, now=T1):
    """`kubectl apply` of an edited OBJ over LIVE (what its strategic patch leaves), as an Update."""
    new = copy.deepcopy(live)
    new["spec"] = copy.deepcopy(obj["spec"])
    new["metadata"]["annotations"][LAST_APPLIED] = last_applied(obj)
    return record_update(live, new, "kubectl-client-side-apply", now=now)


def _union(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _union(out.get(k, {}), v)
    return out


def upgraded(live):
    """LIVE with the managedFields kubectl's migration PATCHes in (csaupgrade.UpgradeManagedFieldsPatch):
    the Update entry of `kubectl-client-side-apply` is unioned into the `kubectl` Apply entry (or
    becomes it when there is none) and dropped; applied as the JSON patch is, by record_update."""
    entries = copy.deepcopy(live["metadata"]["managedFields"])
    is_csa = [e["manager"] == "kubectl-client-side-apply" and e["operation"] == "Update" for e in entries]
    target = next((i for i, e in enumerate(entries) if (e["manager"], e["operation"]) == ("kubectl", "Apply")), None)
    if target is None:
        target = is_csa.index(True)
        entries[target].update(manager="kubectl", operation="Apply")
        is_csa[target] = False
    for e, csa in zip(entries, is_csa):
        if csa and e["apiVersion"] == entries[target]["apiVersion"]:
            entries[target]["fieldsV1"] = _union(entries[target]["fieldsV1"], e["fieldsV1"])
            break
    patched = copy.deepcopy(live)
    patched["metadata"]["managedFields"] = [e for e, csa in zip(entries, is_csa) if not csa]
    return record_update(live, patched, "kubectl", now=T2)


def kubectl_server_side(live, config, now=T2):
    """Everything `kubectl apply --server-side` sends, in order, against LIVE."""
    out = apply(live, config, "kubectl", False, now=now)
    value = (out["metadata"].get("annotations") or {}).get(LAST_APPLIED)
    appliers = [
        m
        for m, fields in owned(out).items()
        if m.endswith("/Apply") and f".metadata.annotations.{LAST_APPLIED}" in fields
    ]
    if value and not appliers:
        just = {
            "apiVersion": config["apiVersion"],
            "kind": config["kind"],
            "metadata": {
                "name": config["metadata"]["name"],
                "namespace": config["metadata"]["namespace"],
                "annotations": {LAST_APPLIED: value},
            },
        }
        out = apply(out, just, "kubectl-last-applied", False, now=now)
    if any(e["manager"] == "kubectl-client-side-apply" for e in out["metadata"]["managedFields"]):
        out = apply(upgraded(out), config, "kubectl", False, now=now)
    return out


def test_after_the_upgrade_a_list_the_applier_owned_whole_keeps_the_items_it_still_applies():
    """The minimal case: after the upgrade kubectl owns `.spec.ports` itself (`.`), as the client-side
    Update that created the list did; applying the same config must not drop the list."""
    live = upgraded(apply(client_side_applied(SERVICE), SERVICE, "kubectl", False, now=T1))
    assert entry(live, "kubectl", "Apply")["fieldsV1"]["f:spec"]["f:ports"]["."] == {}
    out = apply(live, SERVICE, "kubectl", False, now=T2)
    assert out["spec"] == SERVICE["spec"] and out["metadata"]["labels"] == SERVICE["metadata"]["labels"]


@pytest.mark.parametrize("obj", [SERVICE, DEPLOYMENT], ids=["Service", "Deployment"])
def test_server_side_apply_after_client_side_apply_keeps_the_object(obj):
    live = client_side_applied(obj)
    out = kubectl_server_side(live, obj)
    assert out["spec"] == obj["spec"] and out["metadata"].get("labels") == obj["metadata"].get("labels")
    assert out["metadata"]["annotations"] == {LAST_APPLIED: last_applied(obj)}
    mine = owned(out)
    assert set(mine) == {"kubectl/Apply", "kubectl-last-applied/Apply"}
    assert mine["kubectl-last-applied/Apply"] == [f".metadata.annotations.{LAST_APPLIED}"]
    assert set(mine["kubectl/Apply"]) >= set(owned(apply(None, obj, "kubectl", False))["kubectl/Apply"])
    again = kubectl_server_side(out, obj, now="2024-05-01T13:00:00Z")
    assert again == out  # nothing left to migrate: one apply, and it changes nothing


def test_the_article_port_edit_applied_client_side_then_server_side():
    edited = deployment()
    containers(edited)[0]["ports"] = [{"containerPort": 8080}]
    live = client_side_reapplied(client_side_applied(DEPLOYMENT), edited)
    assert containers(live)[0]["ports"] == [{"containerPort": 8080}]
    out = kubectl_server_side(live, edited)
    assert out["spec"] == edited["spec"]
    assert json.loads(out["metadata"]["annotations"][LAST_APPLIED]) == edited


def test_after_the_upgrade_what_the_config_drops_is_removed():
    live = client_side_applied(SERVICE)
    config = copy.deepcopy(SERVICE)
    del config["metadata"]["labels"]
    config["spec"]["ports"][0].pop("name")
    out = kubectl_server_side(live, config)
    assert "labels" not in out["metadata"] and out["spec"]["ports"] == [{"port": 8000, "targetPort": 80}]
    assert out["metadata"]["annotations"] == {LAST_APPLIED: last_applied(config)}


def test_a_list_the_applier_owned_goes_when_nothing_in_it_is_owned_any_more():
    first = apply(None, SERVICE, "kubectl", False, now=T0)
    live = copy.deepcopy(first)
    live["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:ports"]["."] = {}
    config = copy.deepcopy(SERVICE)
    del config["spec"]["ports"]
    assert "ports" not in apply(live, config, "kubectl", False, now=T1)["spec"]


# ---- the last-applied annotation under server-side apply -----------------------------------------


def test_kubectl_applies_keep_an_existing_annotation_up_to_date():
    """lastappliedupdater.go: only the manager `kubectl`, only when the annotation is there."""
    live = client_side_applied(DEPLOYMENT)
    config = deployment()
    containers(config)[0]["image"] = "httpbin:2 <&>"
    config["status"] = {"replicas": 7}
    out = apply(live, config, "kubectl", True, now=T1)
    value = out["metadata"]["annotations"][LAST_APPLIED]
    assert value.endswith("\n") and "\\u003c\\u0026\\u003e" in value  # Go's encoding/json
    assert json.loads(value) == config  # what was applied, status included, as sent
    assert ".metadata.annotations" not in " ".join(owned(out)["kubectl/Apply"])
    other = apply(live, config, "ci", True, now=T1)
    assert other["metadata"]["annotations"] == live["metadata"]["annotations"]
    fresh = apply(None, DEPLOYMENT, "kubectl", False, now=T0)
    assert "annotations" not in fresh["metadata"]


def test_the_annotation_in_the_config_is_not_copied_into_itself():
    config = copy.deepcopy(SERVICE)
    config["metadata"]["annotations"] = {LAST_APPLIED: "old", "team": "a"}
    out = apply(None, config, "kubectl", False, now=T0)
    value = json.loads(out["metadata"]["annotations"][LAST_APPLIED])
    assert value["metadata"]["annotations"] == {"team": "a"}


def test_kubectl_may_change_what_its_client_side_apply_set():
    """lastappliedmanager.go: a conflict with a field the annotation holds at its live value is no
    conflict for `kubectl`: the apply takes the field over."""
    live = client_side_applied(DEPLOYMENT)
    out = apply(live, deployment(replicas=3), "kubectl", False, now=T1)
    assert out["spec"]["replicas"] == 3
    assert ".spec.replicas" in owned(out)["kubectl/Apply"]
    assert ".spec.replicas" not in owned(out)["kubectl-client-side-apply/Update"]
    with pytest.raises(ApplyConflict):
        apply(live, deployment(replicas=3), "ci", False, now=T1)
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    scaled = record_update(live, scaled, "kubectl-scale", now=T1)
    with pytest.raises(ApplyConflict, match='conflict with "kubectl-scale" using apps/v1: .spec.replicas$'):
        apply(scaled, deployment(replicas=3), "kubectl", False, now=T2)
    changed = copy.deepcopy(live)  # the annotation no longer says what is live: a conflict again
    containers(changed)[0]["image"] = "other"
    changed = record_update(live, changed, "kubectl-client-side-apply", now=T1)
    with pytest.raises(ApplyConflict, match=r'\.image$'):
        apply(changed, DEPLOYMENT, "kubectl", False, now=T2)
