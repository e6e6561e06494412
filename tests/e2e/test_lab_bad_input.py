"""Bad input: a one-line error naming the document, field or object, exit 1, nothing half-applied."""
from __future__ import annotations

import pytest

GOOD_SA = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: first, namespace: {ns}}}
"""

CASES = {
    "invalid-yaml": ("apiVersion: v1\nkind: Service\nmetadata: {name: x\n", "invalid YAML"),
    "unknown-kind": ("apiVersion: v1\nkind: Sandwich\nmetadata: {name: x}\n", 'Sandwich'),
    "missing-name": ("apiVersion: v1\nkind: Service\nmetadata: {namespace: NS}\nspec: {ports: [{port: 80}]}\n",
                     "metadata.name"),
    "unknown-image": ("""apiVersion: apps/v1
kind: Deployment
metadata: {name: bad, namespace: NS}
spec:
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      containers: [{name: c, image: example.com/no-such-image:1.0}]
""", 'unknown image "example.com/no-such-image:1.0"'),
    "duplicate": ("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: dup, namespace: NS}\n---\n"
                  "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: dup, namespace: NS}\n", "dup"),
    "selector-mismatch": ("""apiVersion: apps/v1
kind: Deployment
metadata: {name: mismatch, namespace: NS}
spec:
  selector: {matchLabels: {app: one}}
  template:
    metadata: {labels: {app: two}}
    spec:
      containers: [{name: c, image: curlimages/curl}]
""", "selector"),
    "missing-namespace": ("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x, namespace: nowhere}\n",
                          'namespaces "nowhere" not found'),
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
    lab.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: solo, namespace: {namespace}}}
spec:
  containers: [{{name: main, image: curlimages/curl, command: [/bin/sleep, infinity]}}]
""")
    lab.wait_ready(namespace, "")
    r = lab.lab("exec", "solo", "-n", namespace, "-c", "nope", "--", "true")
    assert r.returncode == 1 and r.stderr.strip() == "error: container nope is not valid for pod solo"


def test_unknown_resource_type(lab):
    r = lab.lab("get", "sandwiches")
    assert r.returncode == 1
    assert r.stderr.strip() == 'error: the server doesn\'t have a resource type "sandwiches"'


@pytest.mark.parametrize("name", ["..", "/", "Bad-Name", "a" * 20])
def test_lab_names_are_checked_before_anything_is_touched(name):
    import subprocess
    import sys
    from lab.testing import REPO
    r = subprocess.run([sys.executable, "-m", "lab.cli", "down", "--name", name], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 1 and "must be 1-12 lowercase letters or digits" in r.stderr, r.stderr


def test_a_probe_naming_a_missing_port_is_refused(lab, namespace):
    r = lab.lab("apply", "-f", "-", input=f"""
apiVersion: v1
kind: Pod
metadata: {{name: probe, namespace: {namespace}}}
spec:
  containers:
  - name: web
    image: ambient-lab/echo
    readinessProbe: {{httpGet: {{port: web}}}}
""")
    assert r.returncode == 1
    assert "containers[0].readinessProbe.httpGet.port" in r.stderr
