"""`apply -f` input: the article's manifests pass, bad input is refused with one precise line.

Parsing, kinds and metadata, normalization, all-or-nothing and the mesh hook; the per-kind checks
are in test_validation_workloads.py and test_validation_services.py."""

import copy

import pytest

from lab.apiserver.validation import ManifestError, known_kinds, load, namespaces_needed, parse_manifests, validate
from tests.unit.validation_helpers import (
    HTTPBIN_AMBIENT,
    HTTPBIN_LEGACY,
    LABEL_RULE,
    LABEL_VALUE_RULE,
    MESH_POLICIES,
    NAME_PART_RULE,
    ROGUE_CLIENT,
    SLEEP_AMBIENT,
    SUBDOMAIN_RULE,
    one_line,
    refused,
    service_doc,
)

# --- the article's manifests --------------------------------------------------------------------


def app(namespace: str, name: str, *, account: str = "", service: bool = True) -> list[tuple[str, str, str]]:
    """An article app file's objects: its ServiceAccount, its Service (if any), its Deployment."""
    return [
        ("ServiceAccount", namespace, account or name),
        *[("Service", namespace, name)] * service,
        ("Deployment", namespace, name),
    ]


@pytest.mark.parametrize(
    "text, source, expected",
    [
        (HTTPBIN_LEGACY, "httpbin-legacy.yaml", app("legacy-apps", "httpbin-legacy")),
        (HTTPBIN_AMBIENT, "httpbin-ambient.yaml", app("ambient-apps", "httpbin-ambient")),
        (SLEEP_AMBIENT, "sleep-ambient.yaml", app("ambient-apps", "sleep-ambient")),
        (ROGUE_CLIENT, "rogue-client.yaml", app("ambient-apps", "rogue-client", account="rogue-sa", service=False)),
        (
            MESH_POLICIES,
            "policies.yaml",
            [
                ("Gateway", "ambient-apps", "httpbin-ambient-waypoint"),
                ("RequestAuthentication", "ambient-apps", "require-jwt-for-billing"),
                ("AuthorizationPolicy", "ambient-apps", "allow-ip-path-with-jwt"),
            ],
        ),
    ],
)
def test_the_articles_manifests_are_accepted(text, source, expected):
    objects = load(text, source)
    assert [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects] == expected
    assert objects == parse_manifests(text, source)  # already normalized: nothing changes


def test_the_whole_article_applies_at_once():
    text = "\n---\n".join([HTTPBIN_LEGACY, HTTPBIN_AMBIENT, SLEEP_AMBIENT, ROGUE_CLIENT, MESH_POLICIES])
    assert len(load(text, "article.yaml")) == 14


def test_sleep_command_is_kept_verbatim():
    deployment_ = load(SLEEP_AMBIENT, "sleep-ambient.yaml")[2]
    container = deployment_["spec"]["template"]["spec"]["containers"][0]
    assert container == {
        "name": "sleep",
        "image": "curlimages/curl",
        "command": ["/bin/sleep", "3650d"],
        "imagePullPolicy": "IfNotPresent",
    }


# --- parsing ------------------------------------------------------------------------------------


def test_empty_documents_and_comments_are_skipped():
    text = "# only a comment\n---\n---\n" + SLEEP_AMBIENT + "---\n...\n"
    assert len(parse_manifests(text, "x.yaml")) == 3
    assert parse_manifests("", "x.yaml") == []
    assert parse_manifests("# nothing\n", "x.yaml") == []


def test_a_list_expands_to_its_items():
    text = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: legacy-apps}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: sa, namespace: legacy-apps}}
"""
    assert [o["kind"] for o in load(text, "list.yaml")] == ["Namespace", "ServiceAccount"]


def test_timestamps_and_dates_stay_strings_so_objects_remain_json():
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
        "  annotations: {released: 2024-05-01}\n"
        "data: {when: 2024-05-01T10:00:00Z}\n"
    )
    config = load(text, "c.yaml")[0]
    assert config["data"]["when"] == "2024-05-01T10:00:00Z"
    assert config["metadata"]["annotations"]["released"] == "2024-05-01"


def test_invalid_yaml_names_the_document_and_line():
    text = SLEEP_AMBIENT.split("---")[0] + "---\nkind: Service\nmetadata: {name: [x}\n"
    assert one_line(text, "sleep.yaml") == (
        "error: sleep.yaml: document 2: invalid YAML: expected ',' or ']', but got '}' (line 9, column 20)"
    )


def test_a_document_that_is_not_a_mapping():
    assert one_line("- a\n- b\n", "x.yaml") == (
        "error: x.yaml: document 1: expected a Kubernetes object (a mapping with apiVersion and kind), got a list"
    )
    assert one_line("---\n---\nhello\n", "x.yaml") == (  # the first document is empty
        'error: x.yaml: document 2: expected a Kubernetes object (a mapping with apiVersion '
        'and kind), got the string "hello"'
    )


def test_mapping_keys_must_be_strings():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {80: http}\n"
    assert one_line(text) == "error: test.yaml: document 1: data.80: mapping keys must be strings"


# --- kinds and metadata -------------------------------------------------------------------------


def test_unknown_kind_names_it_and_the_known_kinds():
    text = "apiVersion: v1\nkind: Sandwich\nmetadata: {name: token, namespace: apps}\n"
    assert one_line(text) == (
        'error: test.yaml: document 1 (Sandwich apps/token): no matches for kind "Sandwich" in '
        f'version "v1"; known kinds: {known_kinds()}'
    )
    assert known_kinds().startswith(
        "AuthorizationPolicy (security.istio.io/v1, security.istio.io/v1beta1), ConfigMap (v1), "
        "DaemonSet (apps/v1), Deployment (apps/v1), DestinationRule (networking.istio.io/v1, "
    )


def test_a_known_kind_in_the_wrong_api_version():
    text = "apiVersion: apps/v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n"
    assert one_line(text).startswith(
        'error: test.yaml: document 1 (Service web): no matches for kind "Service" in version "apps/v1"; known kinds: '
    )


def test_missing_api_version_and_kind():
    error = refused("metadata: {name: x}\n")
    assert error.lines() == [
        "error: test.yaml: document 1 (x): apiVersion: Required value",
        "error: test.yaml: document 1 (x): kind: Required value",
    ]


def test_missing_name():
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {namespace: apps}\n"
    error = refused(text)
    assert error.lines()[0] == (
        "error: test.yaml: document 1 (Deployment): metadata.name: Required value: name is required"
    )


@pytest.mark.parametrize(
    "kind, name, rule",
    [
        ("ServiceAccount", "Web_1", SUBDOMAIN_RULE),
        ("Namespace", "ambient.apps", LABEL_RULE),
        ("Namespace", "n" * 64, "must be no more than 63 characters"),
    ],
)
def test_names_follow_kubernetes_rules(kind, name, rule):
    text = f"apiVersion: v1\nkind: {kind}\nmetadata: {{name: '{name}'}}\n"
    subject = f"{kind} {name}" if kind == "Namespace" else f"{kind} default/{name}"
    assert one_line(text) == (
        f'error: test.yaml: document 1 ({subject}): metadata.name: Invalid value: "{name}": {rule}'
    )


def test_service_names_are_dns_1035_labels():
    assert one_line(service_doc("{ports: [{port: 80}]}", name="1web")) == (
        'error: test.yaml: document 1 (Service default/1web): metadata.name: Invalid value: '
        '"1web": a DNS-1035 label must consist of lower case alphanumeric characters or \'-\', '
        "start with an alphabetic character, and end with an alphanumeric character "
        "(e.g. 'my-name', or 'abc-123')"
    )


def test_namespace_must_be_a_label():
    text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: Apps}\n"
    assert one_line(text) == (
        'error: test.yaml: document 1 (ServiceAccount Apps/sa): metadata.namespace: '
        f'Invalid value: "Apps": {LABEL_RULE}'
    )


def test_labels_and_annotations():
    text = (
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n"
        "  labels: {version: 1, 'bad key': x, ok: 'not ok'}\n"
        "  annotations: {replicas: 3, good: text}\n"
    )
    assert refused(text).lines() == [
        "error: test.yaml: document 1 (ServiceAccount default/sa): metadata.labels: Invalid "
        "value: 1: label values must be strings",
        "error: test.yaml: document 1 (ServiceAccount default/sa): metadata.labels: Invalid "
        f'value: "bad key": name part {NAME_PART_RULE}',
        "error: test.yaml: document 1 (ServiceAccount default/sa): metadata.labels: Invalid "
        f'value: "not ok": {LABEL_VALUE_RULE}',
        "error: test.yaml: document 1 (ServiceAccount default/sa): metadata.annotations"
        "[replicas]: Invalid value: 3: annotation values must be strings",
    ]


def test_duplicate_objects_in_one_apply():
    text = SLEEP_AMBIENT + "---\n" + SLEEP_AMBIENT.split("---")[1]
    assert one_line(text, "sleep.yaml") == (
        'error: sleep.yaml: document 4 (Service ambient-apps/sleep-ambient): metadata.name: '
        'Duplicate value: "sleep-ambient": also defined in document 2'
    )


def test_same_name_in_other_namespace_or_kind_is_not_a_duplicate():
    text = (
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, namespace: a}\n---\n"
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, namespace: b}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}\n"
    )
    assert len(load(text, "x.yaml")) == 3


# --- normalization ------------------------------------------------------------------------------


def test_namespaces_are_defaulted_and_cluster_scoped_ones_dropped():
    text = (
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n---\n"
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, namespace: ignored}\n"
    )
    sa, namespace = load(text, "x.yaml")
    assert sa["metadata"] == {"name": "sa", "namespace": "default"}
    assert namespace["metadata"] == {"name": "apps"}


def test_validate_returns_copies_and_leaves_its_input_alone():
    objects = parse_manifests("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n", "x.yaml")
    before = copy.deepcopy(objects)
    result = validate(objects, "x.yaml")
    assert objects == before
    assert result[0]["metadata"]["namespace"] == "default"
    result[0]["metadata"]["name"] = "changed"
    assert objects[0]["metadata"]["name"] == "sa"


def test_validate_places_problems_by_position_in_the_list():
    good = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}
    bad = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {}}
    with pytest.raises(ManifestError) as info:
        validate([good, bad], "api")
    assert str(info.value) == (
        "error: api: document 2 (ServiceAccount): metadata.name: Required value: name is required"
    )


# --- all or nothing, and the mesh hook ----------------------------------------------------------


def test_every_problem_is_collected_and_the_first_is_the_message():
    text = HTTPBIN_AMBIENT.replace("docker.io/kennethreitz/httpbin", "foo/bar") + (
        "---\napiVersion: v1\nkind: Sandwich\nmetadata: {name: s}\n"
    )
    error = refused(text, "httpbin.yaml")
    assert len(error.problems) == 2
    assert [p.document for p in error.problems] == ["document 3", "document 4"]
    assert str(error).endswith("(and 1 more problem)")
    assert error.problems[1].subject == "Sandwich s"


def test_extra_checks_see_normalized_objects_of_their_kind():
    seen = []

    def check_policy(policy):
        seen.append(policy["metadata"]["namespace"])
        if policy["spec"].get("action") not in ("ALLOW", "DENY", "AUDIT", "CUSTOM"):
            return [("spec.action", f'Unsupported value: "{policy["spec"].get("action")}"')]
        return []

    text = MESH_POLICIES.replace("action: ALLOW", "action: PERMIT")
    with pytest.raises(ManifestError) as info:
        load(text, "policies.yaml", extra={"AuthorizationPolicy": check_policy})
    assert seen == ["ambient-apps"]
    assert str(info.value) == (
        "error: policies.yaml: document 3 (AuthorizationPolicy ambient-apps/"
        'allow-ip-path-with-jwt): spec.action: Unsupported value: "PERMIT"'
    )
    assert len(load(MESH_POLICIES, "p.yaml", extra={"AuthorizationPolicy": check_policy})) == 3


def test_extra_checks_are_skipped_for_objects_that_already_failed():
    calls = []
    text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: Bad}\n"
    with pytest.raises(ManifestError):
        load(text, "x.yaml", extra={"PeerAuthentication": lambda o: calls.append(o) or []})
    assert calls == []


def test_mesh_kind_spec_must_be_a_mapping():
    text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: STRICT\n"
    assert one_line(text) == (
        'error: test.yaml: document 1 (PeerAuthentication default/p): spec: Invalid value: "STRICT": must be a mapping'
    )


# --- namespaces ---------------------------------------------------------------------------------


def test_namespaces_needed_are_those_not_created_by_the_same_apply():
    objects = load(HTTPBIN_LEGACY + "---\n" + SLEEP_AMBIENT, "x.yaml")
    assert namespaces_needed(objects) == {"legacy-apps", "ambient-apps"}
    with_namespace = load(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: legacy-apps}\n---\n" + HTTPBIN_LEGACY, "x.yaml"
    )
    assert namespaces_needed(with_namespace) == set()


def test_namespaces_needed_defaults_and_ignores_cluster_scoped_objects():
    objects = [
        {"kind": "ServiceAccount", "metadata": {"name": "a"}},
        {"kind": "Namespace", "metadata": {"name": "other"}},
        {"kind": "Node", "metadata": {"name": "worker"}},
    ]
    assert namespaces_needed(objects) == {"default"}
    assert namespaces_needed([]) == set()
