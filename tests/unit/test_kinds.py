"""The kind registry: every kind's names, versions, scope, checks, table and immutable fields in one
record, and the places that used to keep their own lists now answer from it."""

import subprocess
import sys

import pytest

from lab.apiserver import kinds, names, tables
from lab.apiserver.store import Store
from lab.apiserver.validation import known_kinds
from lab.cli import printers
from lab.cli.kubectl import _force_namespace
from tests.unit.printer_samples import NOW, running_pod

ALL = [pytest.param(k, id=k.kind) for k in kinds.KINDS]


@pytest.mark.parametrize("kind", ALL)
def test_every_name_kubectl_accepts_resolves_to_the_kind(kind):
    spelled = [kind.kind, kind.kind.lower(), kind.plural, *kind.short, f"{kind.plural}.{kind.group}".rstrip(".")]
    assert {kinds.resolve(name) for name in spelled} == {kind}
    assert kinds.by_kind(kind.kind) is kinds.get(kind.kind) is kinds.find(kind.kind.upper()) is kind


@pytest.mark.parametrize("kind", ALL)
def test_the_table_has_a_cell_for_every_column(kind):
    assert len(kind.table.row({"metadata": {"name": "x"}}, NOW)) == len(kind.columns)
    assert {c.priority for c in kind.columns} <= {0, 1}


@pytest.mark.parametrize("kind", ALL)
def test_apply_accepts_exactly_the_served_versions_of_appliable_kinds(kind):
    for api_version in kind.api_versions:
        assert kinds.for_apply(api_version, kind.kind) is (kind if kind.appliable else None)
    assert kinds.for_apply("example.com/v9", kind.kind) is None
    assert (f"{kind.kind} (" in known_kinds()) is kind.appliable


def test_versions_are_group_qualified_and_the_preferred_comes_first():
    assert kinds.by_kind("Pod").api_versions == ("v1",)
    assert kinds.by_kind("Deployment").api_versions == ("apps/v1",)
    assert kinds.by_kind("VirtualService").api_versions[0] == "networking.istio.io/v1"
    assert [k.kind for k in kinds.KINDS if not k.appliable] == ["Node", "Event"]


def test_unknown_kinds():
    with pytest.raises(kinds.UnknownKind, match='the server doesn\'t have a resource type "sandwiches"'):
        kinds.resolve("sandwiches")
    with pytest.raises(kinds.UnknownKind, match='unknown kind "Sandwich"'):
        kinds.by_kind("Sandwich")
    assert kinds.get("pod") is None and kinds.find("Sandwich") is None


def test_immutable_fields_and_name_rules_live_in_the_registry():
    assert kinds.by_kind("Service").immutable == ("spec.clusterIP",)
    assert {k.kind for k in kinds.KINDS if k.immutable == ("spec.selector",)} == {
        "Deployment",
        "ReplicaSet",
        "DaemonSet",
    }
    assert kinds.by_kind("Namespace").name_rule is names.dns1123_label
    assert kinds.by_kind("Service").name_rule is names.dns1035_label
    assert kinds.by_kind("Pod").name_rule is names.dns1123_subdomain


def test_cluster_scoped_kinds_print_no_namespace_column():
    scoped = {k.kind for k in kinds.KINDS if not k.namespaced}
    assert scoped == {"Namespace", "Node", "MutatingWebhookConfiguration"}
    for kind in scoped:
        text = printers.table(kind, [{"metadata": {"name": "x", "namespace": "n"}}], all_namespaces=True, now=NOW)
        assert not text.startswith("NAMESPACE")


def test_resource_prefixes_come_from_the_registry_unless_the_object_says():
    assert kinds.by_kind("Deployment").resource == "deployment.apps"
    assert kinds.by_kind("Pod").resource == "pod"
    assert printers.resource_name("Gateway") == "gateway.gateway.networking.k8s.io"
    assert printers.resource_name("Gateway", "example.com/v1") == "gateway.example.com"
    assert printers.resource_name("Widget") == "widget"


def test_the_server_side_table_is_a_meta_v1_table_and_wide_picks_priority_one():
    result = tables.to_table(kinds.by_kind("Pod").table, [running_pod("a")], NOW)
    assert result["kind"] == "Table" and result["apiVersion"] == "meta.k8s.io/v1"
    assert [(c["name"], c["priority"]) for c in result["columnDefinitions"]][3:6] == [
        ("RESTARTS", 0),
        ("AGE", 0),
        ("IP", 1),
    ]
    assert result["rows"][0]["cells"][:3] == ["a", "1/1", "Running"]
    assert result["rows"][0]["object"]["metadata"]["namespace"] == "ambient-apps"
    narrow = printers.table("Pod", [running_pod("a")], now=NOW).splitlines()[0].split()
    assert narrow == [c["name"] for c in result["columnDefinitions"] if c["priority"] == 0]


def test_event_wide_columns_interleave_by_priority():
    event = kinds.by_kind("Event")
    assert [c.name for c in event.columns if c.priority == 0] == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [c.name for c in event.columns][4:7] == ["SUBOBJECT", "SOURCE", "MESSAGE"]


def test_the_store_keeps_a_status_only_for_kinds_that_have_one():
    store = Store()
    pod = store.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}})
    config = store.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    assert pod["status"] == {} and pod["metadata"]["namespace"] == "default"
    assert "status" not in config
    assert {k.kind for k in kinds.KINDS if not k.has_status} == {
        "ServiceAccount",
        "Endpoints",
        "Event",
        "ConfigMap",
        "Secret",
    }


def test_apply_n_namespaces_only_namespaced_kinds():
    text = (
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\n"
        "apiVersion: v1\nkind: Sandwich\nmetadata: {name: s}\n"
    )
    forced = _force_namespace(text, "apps")
    assert "namespace: apps" not in forced.split("---")[0]
    assert forced.count("namespace: apps") == 2


@pytest.mark.parametrize(
    "module",
    [
        "lab.apiserver.kinds",
        "lab.apiserver.validation",
        "lab.apiserver.selectors",
        "lab.apiserver.tables",
        "lab.apiserver.store",
        "lab.cli.printers",
    ],
)
def test_each_module_can_be_imported_first(module):
    """kinds imports the checks and tables; validation looks kinds up: no order may break that."""
    code = f"import {module}; import lab.apiserver.validation as v; assert 'Pod (v1)' in v.known_kinds()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
