"""`apply -f` input: the article's manifests pass, bad input is refused with one precise line."""
import copy

import pytest

from lab.runtime import images
from lab.apiserver.validation import (ManifestError, known_kinds, load, namespaces_needed,
                            parse_manifests, validate)

# The seed article's manifests, verbatim (istio-ambient-production-patterns.txt).
HTTPBIN_LEGACY = """\
# httpbin-legacy.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: httpbin-legacy
  namespace: legacy-apps
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin-legacy
  namespace: legacy-apps
  labels:
    app: httpbin-legacy
    service: httpbin-legacy
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 80
  selector:
    app: httpbin-legacy
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-legacy
  namespace: legacy-apps
spec:
  replicas: 1
  selector:
    matchLabels:
      app: httpbin-legacy
      version: v1
  template:
    metadata:
      labels:
        app: httpbin-legacy
        version: v1
    spec:
      serviceAccountName: httpbin-legacy
      containers:
      - image: docker.io/kennethreitz/httpbin
        name: httpbin
        ports:
        - containerPort: 80
"""

HTTPBIN_AMBIENT = """\
# httpbin-ambient.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: httpbin-ambient
  namespace: ambient-apps
---
apiVersion: v1
kind: Service
metadata:
  name: httpbin-ambient
  namespace: ambient-apps
  labels:
    app: httpbin-ambient
    service: httpbin-ambient
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 80
  selector:
    app: httpbin-ambient
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-ambient
  namespace: ambient-apps
spec:
  replicas: 1
  selector:
    matchLabels:
      app: httpbin-ambient
      version: v1
  template:
    metadata:
      labels:
        app: httpbin-ambient
        version: v1
    spec:
      serviceAccountName: httpbin-ambient
      containers:
      - image: docker.io/kennethreitz/httpbin
        name: httpbin
        ports:
        - containerPort: 80
"""

SLEEP_AMBIENT = """\
# sleep-ambient.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: sleep-ambient
  namespace: ambient-apps
---
apiVersion: v1
kind: Service
metadata:
  name: sleep-ambient
  namespace: ambient-apps
  labels:
    app: sleep-ambient
    service: sleep-ambient
spec:
  ports:
  - port: 80
    name: http
  selector:
    app: sleep-ambient
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sleep-ambient
  namespace: ambient-apps
spec:
  replicas: 1
  selector:
    matchLabels:
      app: sleep-ambient
  template:
    metadata:
      labels:
        app: sleep-ambient
    spec:
      serviceAccountName: sleep-ambient
      containers:
      - name: sleep
        image: curlimages/curl
        command: ["/bin/sleep", "3650d"]
        imagePullPolicy: IfNotPresent
"""

ROGUE_CLIENT = """\
# rogue-client.yaml
apiVersion: v1
kind: ServiceAccount
metadata:
  name: rogue-sa
  namespace: ambient-apps
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: rogue-client
  namespace: ambient-apps
spec:
  replicas: 1
  selector:
    matchLabels:
      app: rogue-client
  template:
    metadata:
      labels:
        app: rogue-client
    spec:
      serviceAccountName: rogue-sa
      containers:
      - name: sleep
        image: curlimages/curl
        command: ["/bin/sleep", "3650d"]
"""

MESH_POLICIES = """\
# waypoint.yaml
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata:
  name: httpbin-ambient-waypoint
  namespace: ambient-apps
spec:
  gatewayClassName: istio
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
---
# jwt-policy.yaml
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: require-jwt-for-billing
  namespace: ambient-apps
spec:
  selector:
    matchLabels:
      app: httpbin-ambient
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwksUri: "https://raw.githubusercontent.com/istio/istio/release-1.18/security/tools/jwt/samples/jwks.json"
---
# l7-authz-policy.yaml
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: allow-ip-path-with-jwt
  namespace: ambient-apps
spec:
  selector:
    matchLabels:
      app: httpbin-ambient
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - "cluster.local/ns/ambient-apps/sa/sleep-ambient"
    to:
    - operation:
        paths: ["/ip"]
    when:
    - key: request.auth.claims[iss]
      values: ["testing@secure.istio.io"]
"""

KNOWN_IMAGES = ", ".join(images.known_images())


def refused(text: str, source: str = "test.yaml") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load(text, source)
    return info.value


def one_line(text: str, source: str = "test.yaml") -> str:
    """The error line of input with exactly one problem."""
    error = refused(text, source)
    assert len(error.problems) == 1, error.lines()
    return str(error)


def deployment(container: str = "", *, extra_spec: str = "", labels: str = "app: web",
               selector: str = "matchLabels: {app: web}") -> str:
    container = container or "{name: web, image: busybox}"
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: apps}}
spec:
  selector: {{{selector}}}
{extra_spec}  template:
    metadata:
      labels: {{{labels}}}
    spec:
      containers:
      - {container}
"""


def service_doc(spec: str, name: str = "web") -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {spec}\n"


# --- the article's manifests --------------------------------------------------------------------

@pytest.mark.parametrize("text, source, expected", [
    (HTTPBIN_LEGACY, "httpbin-legacy.yaml",
     [("ServiceAccount", "legacy-apps", "httpbin-legacy"),
      ("Service", "legacy-apps", "httpbin-legacy"),
      ("Deployment", "legacy-apps", "httpbin-legacy")]),
    (HTTPBIN_AMBIENT, "httpbin-ambient.yaml",
     [("ServiceAccount", "ambient-apps", "httpbin-ambient"),
      ("Service", "ambient-apps", "httpbin-ambient"),
      ("Deployment", "ambient-apps", "httpbin-ambient")]),
    (SLEEP_AMBIENT, "sleep-ambient.yaml",
     [("ServiceAccount", "ambient-apps", "sleep-ambient"),
      ("Service", "ambient-apps", "sleep-ambient"),
      ("Deployment", "ambient-apps", "sleep-ambient")]),
    (ROGUE_CLIENT, "rogue-client.yaml",
     [("ServiceAccount", "ambient-apps", "rogue-sa"),
      ("Deployment", "ambient-apps", "rogue-client")]),
    (MESH_POLICIES, "policies.yaml",
     [("Gateway", "ambient-apps", "httpbin-ambient-waypoint"),
      ("RequestAuthentication", "ambient-apps", "require-jwt-for-billing"),
      ("AuthorizationPolicy", "ambient-apps", "allow-ip-path-with-jwt")]),
])
def test_the_articles_manifests_are_accepted(text, source, expected):
    objects = load(text, source)
    assert [(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"])
            for o in objects] == expected
    assert objects == parse_manifests(text, source)      # already normalized: nothing changes


def test_the_whole_article_applies_at_once():
    text = "\n---\n".join([HTTPBIN_LEGACY, HTTPBIN_AMBIENT, SLEEP_AMBIENT, ROGUE_CLIENT,
                           MESH_POLICIES])
    assert len(load(text, "article.yaml")) == 14


def test_sleep_command_is_kept_verbatim():
    deployment_ = load(SLEEP_AMBIENT, "sleep-ambient.yaml")[2]
    container = deployment_["spec"]["template"]["spec"]["containers"][0]
    assert container == {"name": "sleep", "image": "curlimages/curl",
                         "command": ["/bin/sleep", "3650d"], "imagePullPolicy": "IfNotPresent"}


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
    text = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
            "  annotations: {released: 2024-05-01}\n"
            "data: {when: 2024-05-01T10:00:00Z}\n")
    config = load(text, "c.yaml")[0]
    assert config["data"]["when"] == "2024-05-01T10:00:00Z"
    assert config["metadata"]["annotations"]["released"] == "2024-05-01"


def test_invalid_yaml_names_the_document_and_line():
    text = SLEEP_AMBIENT.split("---")[0] + "---\nkind: Service\nmetadata: {name: [x}\n"
    assert one_line(text, "sleep.yaml") == (
        "error: sleep.yaml: document 2: invalid YAML: expected ',' or ']', but got '}' "
        "(line 9, column 20)")


def test_a_document_that_is_not_a_mapping():
    assert one_line("- a\n- b\n", "x.yaml") == (
        "error: x.yaml: document 1: expected a Kubernetes object (a mapping with apiVersion "
        "and kind), got a list")
    assert one_line("---\n---\nhello\n", "x.yaml") == (      # the first document is empty
        'error: x.yaml: document 2: expected a Kubernetes object (a mapping with apiVersion '
        'and kind), got the string "hello"')


def test_mapping_keys_must_be_strings():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {80: http}\n"
    assert one_line(text) == "error: test.yaml: document 1: data.80: mapping keys must be strings"


# --- kinds and metadata -------------------------------------------------------------------------

def test_unknown_kind_names_it_and_the_known_kinds():
    text = "apiVersion: v1\nkind: Sandwich\nmetadata: {name: token, namespace: apps}\n"
    assert one_line(text) == (
        'error: test.yaml: document 1 (Sandwich apps/token): no matches for kind "Sandwich" in '
        f'version "v1"; known kinds: {known_kinds()}')
    assert known_kinds().startswith(
        "AuthorizationPolicy (security.istio.io/v1, security.istio.io/v1beta1), ConfigMap (v1), "
        "DaemonSet (apps/v1), Deployment (apps/v1), DestinationRule (networking.istio.io/v1, ")


def test_a_known_kind_in_the_wrong_api_version():
    text = "apiVersion: apps/v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n"
    assert one_line(text).startswith(
        'error: test.yaml: document 1 (Service web): no matches for kind "Service" in version '
        '"apps/v1"; known kinds: ')


def test_missing_api_version_and_kind():
    error = refused("metadata: {name: x}\n")
    assert error.lines() == ["error: test.yaml: document 1 (x): apiVersion: Required value",
                             "error: test.yaml: document 1 (x): kind: Required value"]


def test_missing_name():
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {namespace: apps}\n"
    error = refused(text)
    assert error.lines()[0] == (
        "error: test.yaml: document 1 (Deployment): metadata.name: Required value: "
        "name is required")


@pytest.mark.parametrize("kind, name, rule", [
    ("ServiceAccount", "Web_1",
     "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
     "or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"),
    ("Namespace", "ambient.apps",
     "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
     "and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"),
    ("Namespace", "n" * 64, "must be no more than 63 characters"),
])
def test_names_follow_kubernetes_rules(kind, name, rule):
    text = f"apiVersion: v1\nkind: {kind}\nmetadata: {{name: '{name}'}}\n"
    subject = f"{kind} {name}" if kind == "Namespace" else f"{kind} default/{name}"
    assert one_line(text) == (f'error: test.yaml: document 1 ({subject}): metadata.name: '
                              f'Invalid value: "{name}": {rule}')


def test_service_names_are_dns_1035_labels():
    assert one_line(service_doc("{ports: [{port: 80}]}", name="1web")) == (
        'error: test.yaml: document 1 (Service default/1web): metadata.name: Invalid value: '
        '"1web": a DNS-1035 label must consist of lower case alphanumeric characters or \'-\', '
        "start with an alphabetic character, and end with an alphanumeric character "
        "(e.g. 'my-name', or 'abc-123')")


def test_namespace_must_be_a_label():
    text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: Apps}\n"
    assert one_line(text).startswith(
        'error: test.yaml: document 1 (ServiceAccount Apps/sa): metadata.namespace: Invalid '
        'value: "Apps": a lowercase RFC 1123 label must consist of')


def test_labels_and_annotations():
    text = ("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n"
            "  labels: {version: 1, 'bad key': x, ok: 'not ok'}\n"
            "  annotations: {replicas: 3, good: text}\n")
    assert refused(text).lines() == [
        "error: test.yaml: document 1 (ServiceAccount default/sa): metadata.labels: Invalid "
        "value: 1: label values must be strings",
        "error: test.yaml: document 1 (ServiceAccount default/sa): metadata.labels: Invalid "
        "value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or "
        "'.', and must start and end with an alphanumeric character (e.g. 'MyName', or "
        "'my.name', or '123-abc')",
        "error: test.yaml: document 1 (ServiceAccount default/sa): metadata.labels: Invalid "
        "value: \"not ok\": a valid label must be an empty string or consist of alphanumeric "
        "characters, '-', '_' or '.', and must start and end with an alphanumeric character "
        "(e.g. 'MyValue', or 'my_value', or '12345')",
        "error: test.yaml: document 1 (ServiceAccount default/sa): metadata.annotations"
        "[replicas]: Invalid value: 3: annotation values must be strings",
    ]


def test_duplicate_objects_in_one_apply():
    text = SLEEP_AMBIENT + "---\n" + SLEEP_AMBIENT.split("---")[1]
    assert one_line(text, "sleep.yaml") == (
        'error: sleep.yaml: document 4 (Service ambient-apps/sleep-ambient): metadata.name: '
        'Duplicate value: "sleep-ambient": also defined in document 2')


def test_same_name_in_other_namespace_or_kind_is_not_a_duplicate():
    text = ("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, namespace: a}\n---\n"
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, namespace: b}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}\n")
    assert len(load(text, "x.yaml")) == 3


# --- normalization ------------------------------------------------------------------------------

def test_namespaces_are_defaulted_and_cluster_scoped_ones_dropped():
    text = ("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n---\n"
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, namespace: ignored}\n")
    sa, namespace = load(text, "x.yaml")
    assert sa["metadata"] == {"name": "sa", "namespace": "default"}
    assert namespace["metadata"] == {"name": "apps"}


def test_validate_returns_copies_and_leaves_its_input_alone():
    objects = parse_manifests("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n",
                              "x.yaml")
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
    assert str(info.value) == ("error: api: document 2 (ServiceAccount): metadata.name: "
                               "Required value: name is required")


# --- pods and pod templates ---------------------------------------------------------------------

def test_unknown_image_reuses_the_catalogs_message():
    text = HTTPBIN_AMBIENT.replace("docker.io/kennethreitz/httpbin", "foo/bar")
    assert one_line(text, "httpbin.yaml") == (
        "error: httpbin.yaml: document 3 (Deployment ambient-apps/httpbin-ambient): "
        'spec.template.spec.containers[0].image: unknown image "foo/bar"; known images: '
        f"{KNOWN_IMAGES}")


def test_selector_that_does_not_match_the_template_labels():
    text = HTTPBIN_AMBIENT.replace("        version: v1\n", "        version: v2\n")
    assert one_line(text, "httpbin.yaml") == (
        "error: httpbin.yaml: document 3 (Deployment ambient-apps/httpbin-ambient): "
        'spec.template.metadata.labels: Invalid value: {"app": "httpbin-ambient", '
        '"version": "v2"}: `selector` does not match template `labels`')


@pytest.mark.parametrize("port, message", [
    ("0", "Invalid value: 0: must be between 1 and 65535, inclusive"),
    ("70000", "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ("'80'", 'Invalid value: "80": must be an integer'),
])
def test_bad_container_port(port, message):
    text = deployment(f"{{name: web, image: busybox, ports: [{{containerPort: {port}}}]}}")
    assert one_line(text) == ("error: test.yaml: document 1 (Deployment apps/web): "
                              f"spec.template.spec.containers[0].ports[0].containerPort: {message}")


@pytest.mark.parametrize("container, field, message", [
    ("{image: busybox}", "containers[0].name", "Required value"),
    ("{name: Web, image: busybox}", "containers[0].name",
     'Invalid value: "Web": a lowercase RFC 1123 label must consist of lower case alphanumeric '
     "characters or '-', and must start and end with an alphanumeric character "
     "(e.g. 'my-name', or '123-abc')"),
    ("{name: web}", "containers[0].image", "Required value"),
    ("{name: web, image: busybox, command: [sleep, 10]}", "containers[0].command",
     'Invalid value: ["sleep", 10]: must be a list of strings (quote numbers)'),
    ("{name: web, image: busybox, args: --port}", "containers[0].args",
     'Invalid value: "--port": must be a list of strings (quote numbers)'),
    ("{name: web, image: busybox, ports: [{containerPort: 80, protocol: HTTP}]}",
     "containers[0].ports[0].protocol",
     'Unsupported value: "HTTP": supported values: "TCP", "UDP", "SCTP"'),
    ("{name: web, image: busybox, ports: [{containerPort: 80, name: HTTP}]}",
     "containers[0].ports[0].name",
     'Invalid value: "HTTP": must contain only alpha-numeric characters (a-z, 0-9), and '
     "hyphens (-)"),
    ("{name: web, image: busybox, ports: [{containerPort: 80, name: http}, "
     "{containerPort: 81, name: http}]}",
     "containers[0].ports[1].name", 'Duplicate value: "http"'),
    ("{name: web, image: busybox, ports: [{containerPort: 80, hostport: 80}]}",
     "containers[0].ports[0].hostport", "unknown field"),
    ("{name: web, image: busybox, imagePullPolicyy: Always}",
     "containers[0].imagePullPolicyy", "unknown field"),
    ("{name: web, image: busybox, env: [{name: PORT, value: 8080}]}", "containers[0].env[0].value",
     "Invalid value: 8080: must be a string (quote numbers)"),
    ("{name: web, image: busybox, env: [{value: x}]}", "containers[0].env[0].name",
     "Required value"),
    ("{name: web, image: busybox, env: [{name: IP, valueFrom: {fieldRef: "
     "{fieldPath: status.podIPs}}}]}", "containers[0].env[0].valueFrom.fieldRef.fieldPath",
     'Unsupported value: "status.podIPs": supported values: "metadata.name", '
     '"metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName", '
     '"status.podIP", "status.hostIP"'),
    ("{name: web, image: busybox, env: [{name: T, valueFrom: {secretKeyRef: {name: s, key: k}}}]}",
     "containers[0].env[0].valueFrom", "only fieldRef is supported by the lab"),
    ("{name: web, image: busybox, env: [{name: T, value: x, valueFrom: {fieldRef: "
     "{fieldPath: metadata.name}}}]}", "containers[0].env[0].valueFrom",
     'Invalid value: "": may not be specified when `value` is not empty'),
])
def test_bad_containers(container, field, message):
    assert one_line(deployment(container)) == (
        f"error: test.yaml: document 1 (Deployment apps/web): spec.template.spec.{field}: "
        f"{message}")


def test_downward_api_env_is_accepted():
    container = ("{name: web, image: busybox, env: [{name: POD, valueFrom: {fieldRef: "
                 "{apiVersion: v1, fieldPath: metadata.name}}}, {name: A, value: '1'}]}")
    assert len(load(deployment(container), "x.yaml")) == 1


def test_duplicate_container_names_across_init_and_app_containers():
    text = """\
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers: [{name: setup, image: busybox}]
  containers: [{name: setup, image: busybox}]
"""
    assert one_line(text) == ('error: test.yaml: document 1 (Pod default/p): '
                              'spec.containers[0].name: Duplicate value: "setup"')


def test_pod_restart_policy():
    pod = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
           "spec: {restartPolicy: %s, containers: [{name: c, image: busybox}]}\n")
    assert len(load(pod % "Never", "x.yaml")) == 1
    assert one_line(pod % "Sometimes") == (
        'error: test.yaml: document 1 (Pod default/p): spec.restartPolicy: Unsupported value: '
        '"Sometimes": supported values: "Always", "OnFailure", "Never"')
    template = deployment(extra_spec="").replace(
        "    spec:\n", "    spec:\n      restartPolicy: Never\n")
    assert one_line(template) == (
        'error: test.yaml: document 1 (Deployment apps/web): spec.template.spec.restartPolicy: '
        'Unsupported value: "Never": supported values: "Always"')


def test_pod_without_containers():
    assert one_line("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n") == (
        "error: test.yaml: document 1 (Pod default/p): spec.containers: Required value")
    assert one_line("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n") == (
        "error: test.yaml: document 1 (Pod default/p): spec: Required value")


# --- workloads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("replicas, message", [
    ("-1", "Invalid value: -1: must be greater than or equal to 0"),
    ("'2'", 'Invalid value: "2": must be an integer'),
    ("1.5", "Invalid value: 1.5: must be an integer"),
])
def test_bad_replicas(replicas, message):
    text = deployment(extra_spec=f"  replicas: {replicas}\n")
    assert one_line(text) == ("error: test.yaml: document 1 (Deployment apps/web): "
                              f"spec.replicas: {message}")


def test_zero_replicas_is_fine():
    assert len(load(deployment(extra_spec="  replicas: 0\n"), "x.yaml")) == 1


def test_workload_selector_problems():
    missing = deployment().replace("  selector: {matchLabels: {app: web}}\n", "")
    assert one_line(missing) == ("error: test.yaml: document 1 (Deployment apps/web): "
                                 "spec.selector: Required value")
    empty = deployment(selector="")
    assert one_line(empty) == ("error: test.yaml: document 1 (Deployment apps/web): "
                               "spec.selector: Invalid value: {}: empty selector is invalid "
                               "for deployment")
    bad = deployment(selector="matchExpressions: [{key: app, operator: Is, values: [web]}]")
    assert one_line(bad) == (
        "error: test.yaml: document 1 (Deployment apps/web): spec.selector: Invalid value: "
        '{"matchExpressions": [{"key": "app", "operator": "Is", "values": ["web"]}]}: '
        'matchExpressions[0]: "Is" is not a valid label selector operator '
        "(supported: In, NotIn, Exists, DoesNotExist)")


def test_selector_expressions_are_matched_against_the_template():
    ok = deployment(selector="matchExpressions: [{key: app, operator: In, values: [web, api]}]")
    assert len(load(ok, "x.yaml")) == 1


def test_missing_template():
    text = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs}\nspec: {selector: {matchLabels: {a: b}}}\n"
    assert one_line(text) == ("error: test.yaml: document 1 (ReplicaSet default/rs): "
                              "spec.template: Required value")


def test_daemonsets_have_selectors_but_no_replicas():
    text = deployment(extra_spec="  replicas: 3\n").replace("kind: Deployment", "kind: DaemonSet")
    assert len(load(text, "ds.yaml")) == 1              # replicas is not a DaemonSet field here
    mismatch = deployment(labels="app: other").replace("kind: Deployment", "kind: DaemonSet")
    assert one_line(mismatch) == (
        "error: test.yaml: document 1 (DaemonSet apps/web): spec.template.metadata.labels: "
        'Invalid value: {"app": "other"}: `selector` does not match template `labels`')


# --- services and endpoints ---------------------------------------------------------------------

@pytest.mark.parametrize("spec, field, message", [
    ("{ports: [{port: 0}]}", "spec.ports[0].port",
     "Invalid value: 0: must be between 1 and 65535, inclusive"),
    ("{ports: [{port: 65536}]}", "spec.ports[0].port",
     "Invalid value: 65536: must be between 1 and 65535, inclusive"),
    ("{ports: [{targetPort: 80}]}", "spec.ports[0].port", "Required value"),
    ("{ports: [{port: 80, targetPort: 99999}]}", "spec.ports[0].targetPort",
     "Invalid value: 99999: must be between 1 and 65535, inclusive"),
    ("{ports: [{port: 80, targetPort: http--web}]}", "spec.ports[0].targetPort",
     'Invalid value: "http--web": must not contain consecutive hyphens'),
    ("{ports: [{port: 80, targetPort: '8080'}]}", "spec.ports[0].targetPort",
     'Invalid value: "8080": must contain at least one letter (a-z)'),
    ("{ports: [{port: 80, protocol: tcp}]}", "spec.ports[0].protocol",
     'Unsupported value: "tcp": supported values: "TCP", "UDP", "SCTP"'),
    ("{}", "spec.ports", "Required value"),
    ("{ports: [{port: 80, name: http}, {port: 81, name: http}]}", "spec.ports[1].name",
     'Duplicate value: "http"'),
    ("{ports: [{port: 80, name: Http}]}", "spec.ports[0].name",
     'Invalid value: "Http": a lowercase RFC 1123 label must consist of lower case '
     "alphanumeric characters or '-', and must start and end with an alphanumeric character "
     "(e.g. 'my-name', or '123-abc')"),
    ("{type: Headless, ports: [{port: 80}]}", "spec.type",
     'Unsupported value: "Headless": supported values: "ClusterIP", "NodePort", '
     '"LoadBalancer", "ExternalName"'),
    ("{clusterIP: 10.96.0.300, ports: [{port: 80}]}", "spec.clusterIP",
     'Invalid value: "10.96.0.300": must be "None", empty or an IP address'),
    ("{ports: [{port: 80, nodePort: 30080}]}", "spec.ports[0].nodePort",
     "Invalid value: 30080: may not be used when `type` is 'ClusterIP'"),
    ("{type: ExternalName}", "spec.externalName", "Required value"),
    ("{ports: [{port: 80, targetport: 8080}]}", "spec.ports[0].targetport", "unknown field"),
    ("{ports: [{port: 80}], selector: {app: 'a b'}}", "spec.selector",
     'Invalid value: "a b": a valid label must be an empty string or consist of alphanumeric '
     "characters, '-', '_' or '.', and must start and end with an alphanumeric character "
     "(e.g. 'MyValue', or 'my_value', or '12345')"),
])
def test_bad_services(spec, field, message):
    assert one_line(service_doc(spec)) == (
        f"error: test.yaml: document 1 (Service default/web): {field}: {message}")


def test_several_ports_need_names():
    error = refused(service_doc("{ports: [{port: 80}, {port: 81}]}"))
    assert error.lines() == [
        "error: test.yaml: document 1 (Service default/web): spec.ports[0].name: Required value",
        "error: test.yaml: document 1 (Service default/web): spec.ports[1].name: Required value",
    ]
    assert str(error) == ("error: test.yaml: document 1 (Service default/web): "
                          "spec.ports[0].name: Required value (and 1 more problem)")


@pytest.mark.parametrize("spec", [
    "{clusterIP: None}",                                              # headless without ports
    "{clusterIP: None, ports: [{port: 5432, targetPort: postgres}]}",
    "{type: NodePort, ports: [{port: 80, nodePort: 30080, protocol: UDP}]}",
    "{type: LoadBalancer, ports: [{port: 443, name: https, appProtocol: https}]}",
    "{type: ExternalName, externalName: db.example.com}",
    "{clusterIP: 10.96.0.42, ports: [{port: 80}]}",
    "{clusterIP: 'fd00::42', ports: [{port: 80}]}",
])
def test_good_services(spec):
    assert len(load(service_doc(spec), "svc.yaml")) == 1


def test_endpoints_can_be_applied():
    text = """\
apiVersion: v1
kind: Endpoints
metadata: {name: external-db, namespace: apps}
subsets:
- addresses: [{ip: 192.0.2.10}]
  ports: [{port: 5432, name: db}]
"""
    assert load(text, "ep.yaml")[0]["subsets"][0]["ports"][0]["port"] == 5432
    bad = text.replace("192.0.2.10", "db.example.com")
    assert one_line(bad) == ('error: test.yaml: document 1 (Endpoints apps/external-db): '
                             'subsets[0].addresses[0].ip: Invalid value: "db.example.com": '
                             "must be a valid IP address")


def test_configmap_values_must_be_strings():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {enabled: true}\n"
    assert one_line(text) == ("error: test.yaml: document 1 (ConfigMap default/c): "
                              "data[enabled]: Invalid value: true: must be a string "
                              "(quote numbers and booleans)")


# --- all or nothing, and the mesh hook ----------------------------------------------------------

def test_every_problem_is_collected_and_the_first_is_the_message():
    text = HTTPBIN_AMBIENT.replace("docker.io/kennethreitz/httpbin", "foo/bar") + (
        "---\napiVersion: v1\nkind: Sandwich\nmetadata: {name: s}\n")
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
        'allow-ip-path-with-jwt): spec.action: Unsupported value: "PERMIT"')
    assert len(load(MESH_POLICIES, "p.yaml", extra={"AuthorizationPolicy": check_policy})) == 3


def test_extra_checks_are_skipped_for_objects_that_already_failed():
    calls = []
    text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: Bad}\n"
    with pytest.raises(ManifestError):
        load(text, "x.yaml", extra={"PeerAuthentication": lambda o: calls.append(o) or []})
    assert calls == []


def test_mesh_kind_spec_must_be_a_mapping():
    text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: STRICT\n"
    assert one_line(text) == ('error: test.yaml: document 1 (PeerAuthentication default/p): '
                              'spec: Invalid value: "STRICT": must be a mapping')


# --- namespaces ---------------------------------------------------------------------------------

def test_namespaces_needed_are_those_not_created_by_the_same_apply():
    objects = load(HTTPBIN_LEGACY + "---\n" + SLEEP_AMBIENT, "x.yaml")
    assert namespaces_needed(objects) == {"legacy-apps", "ambient-apps"}
    with_namespace = load("apiVersion: v1\nkind: Namespace\nmetadata: {name: legacy-apps}\n---\n"
                          + HTTPBIN_LEGACY, "x.yaml")
    assert namespaces_needed(with_namespace) == set()


def test_namespaces_needed_defaults_and_ignores_cluster_scoped_objects():
    objects = [{"kind": "ServiceAccount", "metadata": {"name": "a"}},
               {"kind": "Namespace", "metadata": {"name": "other"}},
               {"kind": "Node", "metadata": {"name": "worker"}}]
    assert namespaces_needed(objects) == {"default"}
    assert namespaces_needed([]) == set()
