"""Bad input: a one-line error naming the document, field or object, exit 1, nothing half-applied."""

from __future__ import annotations

import pytest

from lab.testing import manifest
from tests.conftest import bare_pod, curl_container, deployment, echo_container

GOOD_SA = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: first, namespace: {ns}}}
"""


def bad_deployment(name: str, image: str, selects: str | None = None) -> str:
    """A Deployment in NS (replaced by the test's namespace) of IMAGE; its selector wants app=SELECTS."""
    d = deployment(name, "NS", {"name": "c", "image": image})
    if selects:
        d["spec"]["selector"] = {"matchLabels": {"app": selects}}
    return manifest(d)


CASES = {
    "invalid-yaml": ("apiVersion: v1\nkind: Service\nmetadata: {name: x\n", "invalid YAML"),
    "unknown-kind": ("apiVersion: v1\nkind: Sandwich\nmetadata: {name: x}\n", 'Sandwich'),
    "missing-name": (
        "apiVersion: v1\nkind: Service\nmetadata: {namespace: NS}\nspec: {ports: [{port: 80}]}\n",
        "metadata.name",
    ),
    "unknown-image": (
        bad_deployment("bad", "example.com/no-such-image:1.0"),
        'unknown image "example.com/no-such-image:1.0"',
    ),
    "duplicate": (
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: dup, namespace: NS}\n---\n"
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: dup, namespace: NS}\n",
        "dup",
    ),
    "selector-mismatch": (bad_deployment("mismatch", "curlimages/curl", selects="one"), "selector"),
    "missing-namespace": (
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, namespace: nowhere}\n",
        'namespaces "nowhere" not found',
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_manifest_is_refused_whole(lab, namespace, case):
    text, needle = CASES[case]
    # A good document first: it must not be applied when a later one is bad.
    r = lab.lab("apply", "-f", "-", input=GOOD_SA.format(ns=namespace) + "---\n" + text.replace("NS", namespace))
    assert r.returncode == 1, r.stdout
    assert r.stdout == ""
    msg = r.stderr.strip()
    assert "\n" not in msg, msg
    assert needle in msg, msg
    if case not in ("invalid-yaml",):
        assert "document" in msg or "namespaces" in msg, msg
    r = lab.lab("get", "sa", "first", "-n", namespace)
    assert r.returncode == 1 and 'serviceaccounts "first" not found' in r.stderr


def test_exec_into_missing_pod_or_container(lab, namespace):
    r = lab.lab("exec", "no-such-pod", "-n", namespace, "--", "true")
    assert r.returncode == 1 and r.stderr.strip() == 'Error from server (NotFound): pods "no-such-pod" not found'
    lab.apply(bare_pod("solo", namespace, curl_container("main")))
    lab.wait_ready(namespace, "")
    r = lab.lab("exec", "solo", "-n", namespace, "-c", "nope", "--", "true")
    assert r.returncode == 1 and r.stderr.strip() == "error: container nope is not valid for pod solo"


def test_unknown_resource_type(lab):
    r = lab.lab("get", "sandwiches")
    assert r.returncode == 1
    assert r.stderr.strip() == 'error: the server doesn\'t have a resource type "sandwiches"'


def test_a_probe_naming_a_missing_port_is_refused(lab, namespace):
    web = {**echo_container(name="web"), "readinessProbe": {"httpGet": {"port": "web"}}}
    r = lab.lab("apply", "-f", "-", input=manifest(bare_pod("probe", namespace, web)))
    assert r.returncode == 1
    assert "containers[0].readinessProbe.httpGet.port" in r.stderr
