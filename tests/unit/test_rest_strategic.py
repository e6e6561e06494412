"""Strategic merge patch as the kube-apiserver applies it: the exact patches kubectl's client-side
apply sends for the article's edits, the directives, Kubernetes' merge keys per kind, and the
order rules (k8s.io/apimachinery/pkg/util/strategicpatch)."""

import copy
import json
import pathlib

import pytest
import yaml

from lab.apiserver import kinds
from lab.apiserver.rest.strategic import MERGE_RULES, ListRule, StrategicMergeError, strategic_merge_patch, supports

ARTICLE = pathlib.Path(__file__).resolve().parents[2] / "topologies" / "article"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def article(name, kind):
    return next(d for d in yaml.safe_load_all((ARTICLE / f"{name}.yaml").read_text()) if d and d["kind"] == kind)


def served(manifest):
    """The manifest as the server keeps it after a client-side apply: annotation and defaults added."""
    live = copy.deepcopy(manifest)
    live["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(manifest, sort_keys=True) + "\n"}
    live["metadata"].update(uid="u-1", resourceVersion="7", generation=1)
    if live["kind"] == "Deployment":
        live["spec"].update(
            revisionHistoryLimit=10,
            strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        )
        pod_spec = live["spec"]["template"]["spec"]
        pod_spec.update(restartPolicy="Always", dnsPolicy="ClusterFirst")
        for c in pod_spec["containers"]:
            c.update(imagePullPolicy="Always", terminationMessagePath="/dev/termination-log", resources={})
            for p in c.get("ports", []):
                p.setdefault("protocol", "TCP")
    if live["kind"] == "Service":
        live["spec"].update(clusterIP="10.96.0.20", type="ClusterIP")
        for p in live["spec"]["ports"]:
            p.setdefault("protocol", "TCP")
    return live


def annotation(modified):
    return {"metadata": {"annotations": {LAST_APPLIED: json.dumps(modified, sort_keys=True) + "\n"}}}


def with_patch(modified, spec_patch):
    return {**annotation(modified), "spec": spec_patch}


def with_containers_patch(modified, *container_patches):
    """What kubectl sends for container edits of the article's Deployment: its one container's
    place in the order, then CONTAINER_PATCHES."""
    order = [{"name": "httpbin"}]
    return with_patch(
        modified, {"template": {"spec": {"$setElementOrder/containers": order, "containers": list(container_patches)}}}
    )


def containers(obj):
    return obj["spec"]["template"]["spec"]["containers"]


DEPLOYMENT = article("httpbin-ambient", "Deployment")
SERVICE = article("httpbin-ambient", "Service")


# ---- the article's Deployment edits, with the exact patches kubectl apply (client-side) sends ----


def test_kubectl_apply_changing_the_container_port():
    live = served(DEPLOYMENT)
    modified = copy.deepcopy(DEPLOYMENT)
    containers(modified)[0]["ports"] = [{"containerPort": 8080}]
    sent = with_containers_patch(
        modified,
        {
            "$setElementOrder/ports": [{"containerPort": 8080}],
            "name": "httpbin",
            "ports": [{"containerPort": 8080}, {"$patch": "delete", "containerPort": 80}],
        },
    )
    out = strategic_merge_patch(live, sent, "Deployment")
    assert containers(out) == [
        {
            "image": "docker.io/kennethreitz/httpbin",
            "name": "httpbin",
            "ports": [{"containerPort": 8080}],
            "imagePullPolicy": "Always",
            "terminationMessagePath": "/dev/termination-log",
            "resources": {},
        }
    ]
    assert out["metadata"]["annotations"][LAST_APPLIED] == json.dumps(modified, sort_keys=True) + "\n"
    assert out["spec"]["strategy"] == live["spec"]["strategy"]  # what the server filled in stays
    assert out["metadata"]["uid"] == "u-1"
    assert containers(live)[0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]  # input untouched


def test_kubectl_apply_adding_env_vars():
    live = served(DEPLOYMENT)
    first = copy.deepcopy(DEPLOYMENT)
    containers(first)[0]["env"] = [{"name": "GUNICORN_CMD_ARGS", "value": "--workers 2"}]
    sent = with_containers_patch(
        first, {"env": [{"name": "GUNICORN_CMD_ARGS", "value": "--workers 2"}], "name": "httpbin"}
    )
    live = strategic_merge_patch(live, sent, "Deployment")
    assert containers(live)[0]["env"] == [{"name": "GUNICORN_CMD_ARGS", "value": "--workers 2"}]
    second = copy.deepcopy(first)
    containers(second)[0]["env"].append({"name": "LOG_LEVEL", "value": "debug"})
    sent = with_containers_patch(
        second,
        {
            "$setElementOrder/env": [{"name": "GUNICORN_CMD_ARGS"}, {"name": "LOG_LEVEL"}],
            "env": [{"name": "LOG_LEVEL", "value": "debug"}],
            "name": "httpbin",
        },
    )
    live = strategic_merge_patch(live, sent, "Deployment")
    assert containers(live)[0]["env"] == containers(second)[0]["env"]
    assert containers(live)[0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


def test_kubectl_apply_removing_a_container():
    two = copy.deepcopy(DEPLOYMENT)
    containers(two).append({"name": "sleep", "image": "curlimages/curl", "command": ["/bin/sleep", "infinity"]})
    live = served(two)
    sent = with_containers_patch(DEPLOYMENT, {"$patch": "delete", "name": "sleep"})
    out = strategic_merge_patch(live, sent, "Deployment")
    assert [c["name"] for c in containers(out)] == ["httpbin"]
    assert containers(out)[0] == containers(live)[0]


def test_kubectl_apply_changing_the_service_port():
    live = served(SERVICE)
    modified = copy.deepcopy(SERVICE)
    modified["spec"]["ports"] = [{"name": "http", "port": 8080, "targetPort": 80}]
    sent = with_patch(
        modified,
        {
            "$setElementOrder/ports": [{"port": 8080}],
            "ports": [{"name": "http", "port": 8080, "targetPort": 80}, {"$patch": "delete", "port": 8000}],
        },
    )
    out = strategic_merge_patch(live, sent, "Service")
    assert out["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": 80}]
    assert out["spec"]["clusterIP"] == "10.96.0.20" and out["spec"]["selector"] == {"app": "httpbin-ambient"}


def test_server_only_items_keep_their_place_among_the_applied_ones():
    """An item the server added (an injected sidecar) survives a client-side apply that adds another."""
    live = served(DEPLOYMENT)
    containers(live).append({"name": "istio-proxy", "image": "proxyv2"})
    sent = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "httpbin"}, {"name": "sleep"}],
                    "containers": [{"name": "sleep", "image": "curl"}],
                }
            }
        }
    }
    out = strategic_merge_patch(live, sent, "Deployment")
    assert [c["name"] for c in containers(out)] == ["httpbin", "sleep", "istio-proxy"]


# ---- directives and merge semantics, table-driven: (name, kind, live, patch, result) ----------

CASES = [
    (
        "null deletes a key",
        "ConfigMap",
        {"data": {"a": "1", "b": "2"}},
        {"data": {"a": None, "c": "3"}},
        {"data": {"b": "2", "c": "3"}},
    ),
    (
        "a null for a missing key is ignored",
        "ConfigMap",
        {"data": {"a": "1"}},
        {"data": {"z": None}},
        {"data": {"a": "1"}},
    ),
    (
        "new values lose their nulls and directives",
        "ConfigMap",
        {},
        {"data": {"a": "1", "b": None}, "metadata": {"labels": {"x": "y", "$patch": "replace"}}},
        {"data": {"a": "1"}, "metadata": {}},
    ),
    (
        "$patch: replace on a map",
        "ConfigMap",
        {"data": {"a": "1", "b": "2"}},
        {"data": {"$patch": "replace", "c": "3"}},
        {"data": {"c": "3"}},
    ),
    (
        "$patch: delete on a map leaves it empty",
        "ConfigMap",
        {"data": {"a": "1"}},
        {"data": {"$patch": "delete"}},
        {"data": {}},
    ),
    (
        "$patch: replace on the whole object",
        "ConfigMap",
        {"data": {"a": "1"}, "kind": "ConfigMap"},
        {"$patch": "replace", "data": {"b": "2"}},
        {"data": {"b": "2"}},
    ),
    (
        "$patch: replace in a merging list replaces it",
        "Pod",
        {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}},
        {"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}},
        {"spec": {"containers": [{"name": "c"}]}},
    ),
    (
        "$patch: replace alone empties a merging list",
        "Pod",
        {"spec": {"containers": [{"name": "a"}]}},
        {"spec": {"containers": [{"$patch": "replace"}]}},
        {"spec": {"containers": []}},
    ),
    (
        "$patch: delete removes every item with the key",
        "Pod",
        {"spec": {"volumes": [{"name": "v"}, {"name": "w", "emptyDir": {}}, {"name": "v"}]}},
        {"spec": {"volumes": [{"name": "v", "$patch": "delete"}]}},
        {"spec": {"volumes": [{"name": "w", "emptyDir": {}}]}},
    ),
    (
        "items merge on their key, new ones go first",
        "Pod",
        {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}},
        {"spec": {"containers": [{"name": "b", "image": "3"}, {"name": "c", "image": "4"}]}},
        {
            "spec": {
                "containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "3"}, {"name": "c", "image": "4"}]
            }
        },
    ),
    (
        "the patch's order wins for the items it names",
        "Pod",
        {"spec": {"containers": [{"name": "1"}, {"name": "2", "image": "b"}, {"name": "3"}]}},
        {"spec": {"containers": [{"name": "3", "image": "c"}, {"name": "1", "image": "a"}]}},
        {
            "spec": {
                "containers": [{"name": "2", "image": "b"}, {"name": "3", "image": "c"}, {"name": "1", "image": "a"}]
            }
        },
    ),
    (
        "container ports merge on containerPort",
        "Pod",
        {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}},
        {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "name": "http"}]}]}},
        {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]}]}},
    ),
    (
        "volumeMounts merge on mountPath",
        "Pod",
        {"spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/a"}]}]}},
        {"spec": {"containers": [{"name": "c", "volumeMounts": [{"name": "w", "mountPath": "/b"}]}]}},
        {
            "spec": {
                "containers": [
                    {"name": "c", "volumeMounts": [{"name": "w", "mountPath": "/b"}, {"name": "v", "mountPath": "/a"}]}
                ]
            }
        },
    ),
    (
        "initContainers and imagePullSecrets merge on name",
        "Pod",
        {"spec": {"initContainers": [{"name": "i", "image": "1"}], "imagePullSecrets": [{"name": "s"}]}},
        {"spec": {"initContainers": [{"name": "i", "image": "2"}], "imagePullSecrets": [{"name": "t"}]}},
        {"spec": {"initContainers": [{"name": "i", "image": "2"}], "imagePullSecrets": [{"name": "t"}, {"name": "s"}]}},
    ),
    (
        "tolerations, args and command are replaced",
        "Pod",
        {"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "c", "args": ["x"], "command": ["y"]}]}},
        {"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "args": ["z"], "command": ["w"]}]}},
        {"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "args": ["z"], "command": ["w"]}]}},
    ),
    (
        "pod conditions merge on type",
        "Pod",
        {"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]}},
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "True"}]}},
    ),
    (
        "ownerReferences merge on uid",
        "ReplicaSet",
        {"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}},
        {"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}},
        {"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}, {"uid": "1", "name": "a"}]}},
    ),
    (
        "finalizers merge as a set",
        "Namespace",
        {"metadata": {"finalizers": ["a", "b"]}},
        {"metadata": {"finalizers": ["b", "c"]}},
        {"metadata": {"finalizers": ["a", "b", "c"]}},
    ),
    (
        "$deleteFromPrimitiveList removes from a set",
        "Secret",
        {"metadata": {"finalizers": ["a", "b", "c"]}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "z"]}},
        {"metadata": {"finalizers": ["a", "c"]}},
    ),
    (
        "$deleteFromPrimitiveList on a missing list does nothing",
        "Secret",
        {"metadata": {}},
        {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}},
        {"metadata": {}},
    ),
    (
        "$setElementOrder orders a primitive list",
        "ServiceAccount",
        {"metadata": {"finalizers": ["a", "b", "c"]}},
        {"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"], "finalizers": ["c"]}},
        {"metadata": {"finalizers": ["c", "b", "a"]}},
    ),
    (
        "node podCIDRs merge as a set (a value new to both goes first), taints are replaced",
        "Node",
        {"spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "a", "effect": "NoSchedule"}]}},
        {"spec": {"podCIDRs": ["fd00::/64"], "taints": [{"key": "b", "effect": "NoSchedule"}]}},
        {"spec": {"podCIDRs": ["fd00::/64", "10.0.0.0/24"], "taints": [{"key": "b", "effect": "NoSchedule"}]}},
    ),
    (
        "node addresses merge on type",
        "Node",
        {
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n"}]
            }
        },
        {"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}},
        {
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n"}]
            }
        },
    ),
    (
        "endpoint subsets are replaced",
        "Endpoints",
        {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]},
        {"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]},
        {"subsets": [{"addresses": [{"ip": "10.0.0.2"}]}]},
    ),
    (
        "service account secrets merge on name",
        "ServiceAccount",
        {"secrets": [{"name": "a"}]},
        {"secrets": [{"name": "b"}]},
        {"secrets": [{"name": "b"}, {"name": "a"}]},
    ),
    (
        "webhooks merge on name",
        "MutatingWebhookConfiguration",
        {"webhooks": [{"name": "a.x", "sideEffects": "None"}, {"name": "b.x"}]},
        {"webhooks": [{"name": "a.x", "timeoutSeconds": 5}]},
        {"webhooks": [{"name": "a.x", "sideEffects": "None", "timeoutSeconds": 5}, {"name": "b.x"}]},
    ),
    (
        "$retainKeys clears what it does not list",
        "Deployment",
        {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}},
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
        {"spec": {"strategy": {"type": "Recreate"}}},
    ),
    (
        "$retainKeys in a list item (volumes)",
        "Pod",
        {"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}},
        {"spec": {"volumes": [{"name": "v", "$retainKeys": ["configMap", "name"], "configMap": {"name": "c"}}]}},
        {"spec": {"volumes": [{"name": "v", "configMap": {"name": "c"}}]}},
    ),
    ("a type change replaces", "ConfigMap", {"data": {"a": {"b": 1}}}, {"data": {"a": [1]}}, {"data": {"a": [1]}}),
    (
        "unknown kinds of fields merge as maps, lists replace",
        "DaemonSet",
        {"spec": {"x": {"a": 1}, "y": [1, 2]}},
        {"spec": {"x": {"b": 2}, "y": [3]}},
        {"spec": {"x": {"a": 1, "b": 2}, "y": [3]}},
    ),
    (
        "template containers of every workload merge",
        "DaemonSet",
        {"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]}}}},
        {"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}]}}}},
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]}]
                    }
                }
            }
        },
    ),
]


@pytest.mark.parametrize("kind,live,body,result", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_strategic_merge(kind, live, body, result):
    before = copy.deepcopy(live), copy.deepcopy(body)
    assert strategic_merge_patch(live, body, kind) == result
    assert (live, body) == before


@pytest.mark.parametrize(
    "live,body,match",
    [
        (
            {"spec": {"containers": [{"name": "a"}]}},
            {"spec": {"containers": [{"name": "a", "$patch": "merge"}]}},
            "merging lists cannot yet be specified",
        ),
        (
            {"spec": {"containers": [{"name": "a"}]}},
            {"spec": {"containers": [{"name": "a", "$patch": "frob"}]}},
            "Unknown patch type: frob",
        ),
        ({"spec": {}}, {"spec": {"$patch": "merge"}}, "Unknown patch type: merge"),
        (
            {"spec": {"containers": [{"name": "a"}]}},
            {"spec": {"containers": [{"image": "x"}]}},
            "does not contain declared merge key: name",
        ),
        (
            {"spec": {"containers": [{"name": "a"}]}},
            {"spec": {"containers": [{"$patch": "delete"}]}},
            "does not contain declared merge key: name",
        ),
        (
            {"spec": {"containers": [{"name": "1"}, {"name": "2"}]}},
            {
                "spec": {
                    "$setElementOrder/containers": [{"name": "1"}, {"name": "2"}],
                    "containers": [{"name": "2", "image": "x"}, {"name": "1", "image": "y"}],
                }
            },
            "doesn't match",
        ),
        (
            {"spec": {"containers": []}},
            {"spec": {"$setElementOrder/containers": {"name": "1"}}},
            "invalid patch format of setElementOrder list",
        ),
        ({"spec": {"a": 1}}, {"spec": {"$retainKeys": ["a"], "b": 2}}, "invalid patch format of retainKeys"),
        ({"spec": {"a": 1}}, {"spec": {"$retainKeys": "a"}}, "invalid patch format of retainKeys"),
        ({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": [["b"]]}}, "lists of lists"),
        ({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": [{"b": 1}]}}, "not identical"),
        ({"spec": {"a": 1}}, {"spec": {"$frob": 1}}, "unknown directive"),
        ({"spec": {"a": 1}}, {"spec": {"$deleteFromPrimitiveList/": [1]}}, "invalid patch format of primitive list"),
    ],
)
def test_bad_strategic_patches(live, body, match):
    with pytest.raises(StrategicMergeError, match=match):
        strategic_merge_patch(live, body, "Pod")


def test_set_element_order_with_a_list_new_to_the_object():
    body = {
        "spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "b"}, {"name": "a", "env": [{"name": "X", "value": None}]}],
        }
    }
    assert strategic_merge_patch({"spec": {}}, body, "Pod") == {
        "spec": {"containers": [{"name": "b"}, {"name": "a", "env": [{"name": "X"}]}]}
    }


def test_set_element_order_alone_reorders_the_object():
    live = {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    body = {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}
    assert strategic_merge_patch(live, body, "Pod") == {"spec": {"containers": [{"name": "b"}, {"name": "a"}]}}


# ---- the merge-key table ------------------------------------------------------------------------


def test_the_built_in_kinds_have_rules_and_the_custom_ones_do_not():
    for k in kinds.KINDS:
        custom = k.group.endswith(("istio.io", "gateway.networking.k8s.io"))
        assert supports(k.kind) is not custom, k.kind
    assert set(MERGE_RULES) == {k.kind for k in kinds.KINDS if supports(k.kind)} | {"Scale"}  # /scale's kind


def test_the_scale_subresource_takes_strategic_patches():
    scale = {"kind": "Scale", "apiVersion": "autoscaling/v1", "spec": {"replicas": 1}, "status": {"replicas": 1}}
    assert strategic_merge_patch(scale, {"spec": {"replicas": 3}}, "Scale")["spec"] == {"replicas": 3}


@pytest.mark.parametrize(
    "kind,prefix",
    [
        ("Pod", "spec"),
        ("Deployment", "spec.template.spec"),
        ("ReplicaSet", "spec.template.spec"),
        ("DaemonSet", "spec.template.spec"),
    ],
)
def test_pod_spec_rules_are_mounted_where_the_kind_keeps_its_pod_spec(kind, prefix):
    rules = MERGE_RULES[kind]
    assert rules[f"{prefix}.containers"] == ListRule("name")
    assert rules[f"{prefix}.volumes"] == ListRule("name", retain_keys=True)
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        assert rules[f"{prefix}.{containers}[].ports"] == ListRule("containerPort")
        assert rules[f"{prefix}.{containers}[].env"] == ListRule("name")
        assert rules[f"{prefix}.{containers}[].volumeMounts"] == ListRule("mountPath")
    assert f"{prefix}.tolerations" not in rules and f"{prefix}.containers[].args" not in rules
    assert rules["metadata.finalizers"] == ListRule(None) and rules["metadata.ownerReferences"] == ListRule("uid")


def test_service_ports_key_on_port_and_endpoints_have_no_list_rules():
    assert MERGE_RULES["Service"]["spec.ports"] == ListRule("port")
    assert not any(p.startswith("subsets") for p in MERGE_RULES["Endpoints"])
