"""Server-side apply and managedFields: what each manager owns (FieldsV1), conflicts with the
kube-apiserver's wording, force, removal of what an applier stopped applying, and how ordinary
writes (record_update) move ownership. After client-side apply (kubectl's upgrade, the last-applied
annotation): test_rest_ssa_lastapplied.py."""

import copy

import pytest

from lab.apiserver.rest import ssa, ssa_schema
from lab.apiserver.rest.ssa import ApplyConflict, ApplyError, apply, record_update
from tests.unit.ssa_helpers import DEPLOYMENT, T0, T1, T2, article, containers, deployment, entry, owned

HTTPBIN = 'k:{"name":"httpbin"}'
PORT80 = 'k:{"containerPort":80,"protocol":"TCP"}'


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
    assert ssa_schema.path_string(path) == text


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
