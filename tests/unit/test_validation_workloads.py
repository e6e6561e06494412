"""`apply -f` checks of pods, pod templates and workloads: containers, images, ports, env,
restart policies, replicas and selectors, each refused with the API server's one line."""

import pytest

from lab.apiserver.validation import load
from tests.unit.validation_helpers import HTTPBIN_AMBIENT, KNOWN_IMAGES, LABEL_RULE, deployment, one_line

# --- pods and pod templates ---------------------------------------------------------------------


def test_unknown_image_reuses_the_catalogs_message():
    text = HTTPBIN_AMBIENT.replace("docker.io/kennethreitz/httpbin", "foo/bar")
    assert one_line(text, "httpbin.yaml") == (
        "error: httpbin.yaml: document 3 (Deployment ambient-apps/httpbin-ambient): "
        'spec.template.spec.containers[0].image: unknown image "foo/bar"; known images: '
        f"{KNOWN_IMAGES}"
    )


def test_selector_that_does_not_match_the_template_labels():
    text = HTTPBIN_AMBIENT.replace("        version: v1\n", "        version: v2\n")
    assert one_line(text, "httpbin.yaml") == (
        "error: httpbin.yaml: document 3 (Deployment ambient-apps/httpbin-ambient): "
        'spec.template.metadata.labels: Invalid value: {"app": "httpbin-ambient", '
        '"version": "v2"}: `selector` does not match template `labels`'
    )


def with_port(port: str) -> str:
    return deployment(f"{{name: web, image: busybox, ports: [{{containerPort: {port}}}]}}")


def with_replicas(replicas: str) -> str:
    return deployment(extra_spec=f"  replicas: {replicas}\n")


PORT, REPLICAS = "spec.template.spec.containers[0].ports[0].containerPort", "spec.replicas"


@pytest.mark.parametrize(
    "text, field, message",
    [
        (with_port("0"), PORT, "Invalid value: 0: must be between 1 and 65535, inclusive"),
        (with_port("70000"), PORT, "Invalid value: 70000: must be between 1 and 65535, inclusive"),
        (with_port("'80'"), PORT, 'Invalid value: "80": must be an integer'),
        (with_replicas("-1"), REPLICAS, "Invalid value: -1: must be greater than or equal to 0"),
        (with_replicas("'2'"), REPLICAS, 'Invalid value: "2": must be an integer'),
        (with_replicas("1.5"), REPLICAS, "Invalid value: 1.5: must be an integer"),
    ],
)
def test_bad_container_ports_and_replicas(text, field, message):
    assert one_line(text) == f"error: test.yaml: document 1 (Deployment apps/web): {field}: {message}"


@pytest.mark.parametrize(
    "container, field, message",
    [
        ("{image: busybox}", "containers[0].name", "Required value"),
        ("{name: Web, image: busybox}", "containers[0].name", f'Invalid value: "Web": {LABEL_RULE}'),
        ("{name: web}", "containers[0].image", "Required value"),
        (
            "{name: web, image: busybox, command: [sleep, 10]}",
            "containers[0].command",
            'Invalid value: ["sleep", 10]: must be a list of strings (quote numbers)',
        ),
        (
            "{name: web, image: busybox, args: --port}",
            "containers[0].args",
            'Invalid value: "--port": must be a list of strings (quote numbers)',
        ),
        (
            "{name: web, image: busybox, ports: [{containerPort: 80, protocol: HTTP}]}",
            "containers[0].ports[0].protocol",
            'Unsupported value: "HTTP": supported values: "TCP", "UDP", "SCTP"',
        ),
        (
            "{name: web, image: busybox, ports: [{containerPort: 80, name: HTTP}]}",
            "containers[0].ports[0].name",
            'Invalid value: "HTTP": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)',
        ),
        (
            "{name: web, image: busybox, ports: [{containerPort: 80, name: http}, {containerPort: 81, name: http}]}",
            "containers[0].ports[1].name",
            'Duplicate value: "http"',
        ),
        (
            "{name: web, image: busybox, ports: [{containerPort: 80, hostport: 80}]}",
            "containers[0].ports[0].hostport",
            "unknown field",
        ),
        ("{name: web, image: busybox, imagePullPolicyy: Always}", "containers[0].imagePullPolicyy", "unknown field"),
        (
            "{name: web, image: busybox, env: [{name: PORT, value: 8080}]}",
            "containers[0].env[0].value",
            "Invalid value: 8080: must be a string (quote numbers)",
        ),
        ("{name: web, image: busybox, env: [{value: x}]}", "containers[0].env[0].name", "Required value"),
        (
            "{name: web, image: busybox, env: [{name: IP, valueFrom: {fieldRef: {fieldPath: status.podIPs}}}]}",
            "containers[0].env[0].valueFrom.fieldRef.fieldPath",
            'Unsupported value: "status.podIPs": supported values: "metadata.name", '
            '"metadata.namespace", "metadata.uid", "spec.nodeName", "spec.serviceAccountName", '
            '"status.podIP", "status.hostIP"',
        ),
        (
            "{name: web, image: busybox, env: [{name: T, valueFrom: {secretKeyRef: {name: s, key: k}}}]}",
            "containers[0].env[0].valueFrom",
            "only fieldRef is supported by the lab",
        ),
        (
            "{name: web, image: busybox, env: [{name: T, value: x, valueFrom: {fieldRef: "
            "{fieldPath: metadata.name}}}]}",
            "containers[0].env[0].valueFrom",
            'Invalid value: "": may not be specified when `value` is not empty',
        ),
    ],
)
def test_bad_containers(container, field, message):
    assert one_line(deployment(container)) == (
        f"error: test.yaml: document 1 (Deployment apps/web): spec.template.spec.{field}: {message}"
    )


def test_downward_api_env_is_accepted():
    container = (
        "{name: web, image: busybox, env: [{name: POD, valueFrom: {fieldRef: "
        "{apiVersion: v1, fieldPath: metadata.name}}}, {name: A, value: '1'}]}"
    )
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
    assert one_line(text) == (
        'error: test.yaml: document 1 (Pod default/p): spec.containers[0].name: Duplicate value: "setup"'
    )


def test_pod_restart_policy():
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec: {restartPolicy: %s, containers: [{name: c, image: busybox}]}\n"
    )
    assert len(load(pod % "Never", "x.yaml")) == 1
    assert one_line(pod % "Sometimes") == (
        'error: test.yaml: document 1 (Pod default/p): spec.restartPolicy: Unsupported value: '
        '"Sometimes": supported values: "Always", "OnFailure", "Never"'
    )
    template = deployment(extra_spec="").replace("    spec:\n", "    spec:\n      restartPolicy: Never\n")
    assert one_line(template) == (
        'error: test.yaml: document 1 (Deployment apps/web): spec.template.spec.restartPolicy: '
        'Unsupported value: "Never": supported values: "Always"'
    )


def test_pod_without_containers():
    assert one_line("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n") == (
        "error: test.yaml: document 1 (Pod default/p): spec.containers: Required value"
    )
    assert one_line("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n") == (
        "error: test.yaml: document 1 (Pod default/p): spec: Required value"
    )


# --- workloads ----------------------------------------------------------------------------------


def test_zero_replicas_is_fine():
    assert len(load(with_replicas("0"), "x.yaml")) == 1


def test_workload_selector_problems():
    missing = deployment().replace("  selector: {matchLabels: {app: web}}\n", "")
    assert one_line(missing) == ("error: test.yaml: document 1 (Deployment apps/web): spec.selector: Required value")
    empty = deployment(selector="")
    assert one_line(empty) == (
        "error: test.yaml: document 1 (Deployment apps/web): "
        "spec.selector: Invalid value: {}: empty selector is invalid "
        "for deployment"
    )
    bad = deployment(selector="matchExpressions: [{key: app, operator: Is, values: [web]}]")
    assert one_line(bad) == (
        "error: test.yaml: document 1 (Deployment apps/web): spec.selector: Invalid value: "
        '{"matchExpressions": [{"key": "app", "operator": "Is", "values": ["web"]}]}: '
        'matchExpressions[0]: "Is" is not a valid label selector operator '
        "(supported: In, NotIn, Exists, DoesNotExist)"
    )


def test_selector_expressions_are_matched_against_the_template():
    ok = deployment(selector="matchExpressions: [{key: app, operator: In, values: [web, api]}]")
    assert len(load(ok, "x.yaml")) == 1


def test_missing_template():
    text = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs}\nspec: {selector: {matchLabels: {a: b}}}\n"
    assert one_line(text) == ("error: test.yaml: document 1 (ReplicaSet default/rs): spec.template: Required value")


def test_daemonsets_have_selectors_but_no_replicas():
    text = deployment(extra_spec="  replicas: 3\n").replace("kind: Deployment", "kind: DaemonSet")
    assert len(load(text, "ds.yaml")) == 1  # replicas is not a DaemonSet field here
    mismatch = deployment(labels="app: other").replace("kind: Deployment", "kind: DaemonSet")
    assert one_line(mismatch) == (
        "error: test.yaml: document 1 (DaemonSet apps/web): spec.template.metadata.labels: "
        'Invalid value: {"app": "other"}: `selector` does not match template `labels`'
    )
