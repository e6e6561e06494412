"""Server-side apply over what client-side apply made: kubectl's upgrade of managedFields
(`kubectl apply --server-side` after `kubectl apply`) and the last-applied annotation, which the
manager `kubectl` keeps up to date and may take fields over from (lastapplied.py)."""

import copy
import json

import pytest

from lab.apiserver.rest.ssa import ApplyConflict, apply, record_update
from tests.unit.ssa_helpers import DEPLOYMENT, T0, T1, T2, article, containers, deployment, entry, owned

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
