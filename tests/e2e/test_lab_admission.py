"""Generic Kubernetes behaviour the sidecar mode needs, on a lab without the mesh: mutating
admission webhooks (in-process handlers), runAsUser/runAsGroup, container start order and
postStart hooks."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import uuid

import pytest

from lab.testing import REPO, TestLab, eventually, unique_lab_name

TOPOLOGY = os.path.join(REPO, "bench", "two-workers.yaml")
WEBHOOK = "inject.lab.test"

CONFIG = f"""
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: test-injector
  annotations:
    lab.ambient/handler: tests.e2e.admission_handler:admit
webhooks:
- name: {WEBHOOK}
  clientConfig:
    service: {{name: injector, namespace: default, path: /inject}}
  namespaceSelector:
    matchLabels: {{lab-test-injection: enabled}}
  rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
  failurePolicy: Fail
  reinvocationPolicy: Never
  sideEffects: None
  admissionReviewVersions: [v1]
"""

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web{suffix}}}}}
  template:
    metadata: {{labels: {{app: web{suffix}{extra}}}}}
    spec:
      containers:
      - name: echo
        image: ambient-lab/echo
        ports: [{{containerPort: 8080}}]
"""


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces)")
    t = TestLab(unique_lab_name("adm"), TOPOLOGY)
    cwd = os.getcwd()
    os.chdir(REPO)  # labd imports the test handler as tests.e2e.admission_handler
    try:
        t.up()
    finally:
        os.chdir(cwd)
    try:
        yield t
    finally:
        t.down()


@pytest.fixture(scope="module")
def injecting(lab):
    """The test webhook, a namespace it selects (`inject`) and one it does not (`plain`)."""
    r = lab.lab("apply", "-f", "-", input=CONFIG)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "mutatingwebhookconfiguration.admissionregistration.k8s.io/test-injector created"
    lab.create_namespace("inject", {"lab-test-injection": "enabled"})
    lab.create_namespace("plain")
    return lab


def _exec(lab, pod: str, ns: str, command: list[str], container: str | None = None) -> subprocess.CompletedProcess:
    """What `lab exec` runs: the exec target's argv (netns, then the container's uid) + COMMAND."""
    target = lab.client.call("exec", namespace=ns, pod=pod, container=container)
    return subprocess.run([*target["argv"], *command], env=target["env"], capture_output=True, text=True,
                          timeout=30)


def _ready_line(lab, pod: str, ns: str) -> list[str]:
    r = lab.lab("get", "pod", pod, "-n", ns)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()[1].split()


def test_webhook_injects_into_deployment_pods_of_a_labelled_namespace(injecting):
    lab = injecting
    r = lab.lab("get", "mutatingwebhookconfigurations")
    assert r.stdout.split("\n")[0].split() == ["NAME", "WEBHOOKS", "AGE"]
    assert r.stdout.split("\n")[1].split()[:2] == ["test-injector", "1"]
    for ns in ("inject", "plain"):
        lab.apply(DEPLOY.format(ns=ns, suffix="", extra=""))
    pod = lab.wait_ready("inject", "app=web")[0]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["echo", "sidecar"]
    assert pod["metadata"]["labels"]["injected"] == "true"
    name = pod["metadata"]["name"]
    assert _ready_line(lab, name, "inject")[1:3] == ["2/2", "Running"]
    r = lab.lab("describe", "pod", name, "-n", "inject")
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in r.stdout.splitlines()]
    assert ["echo:"] in lines and ["sidecar:"] in lines
    assert lines.count(["Ready:", "True"]) == 2 and lines.count(["Restart", "Count:", "0"]) == 2
    plain = lab.wait_ready("plain", "app=web")[0]
    assert [c["name"] for c in plain["spec"]["containers"]] == ["echo"]
    assert _ready_line(lab, plain["metadata"]["name"], "plain")[1] == "1/1"


def test_refused_pod_leaves_nothing_and_names_the_webhook(injecting):
    lab = injecting
    text = """
apiVersion: v1
kind: ConfigMap
metadata: {name: before, namespace: inject}
data: {a: b}
---
apiVersion: v1
kind: Pod
metadata: {name: nope, namespace: inject, labels: {refuse: "yes"}}
spec:
  containers: [{name: c, image: busybox}]
"""
    r = lab.lab("apply", "-f", "-", input=text)
    assert r.returncode == 1, r.stdout
    assert f'admission webhook "{WEBHOOK}" denied the request: pod nope asked to be refused' in r.stderr
    assert r.stdout == ""
    for kind, name in (("pod", "nope"), ("configmap", "before")):
        r = lab.lab("get", kind, name, "-n", "inject")
        assert r.returncode == 1 and "not found" in r.stderr


def test_refused_controller_pod_is_a_failed_create_event_on_its_replicaset(injecting):
    lab = injecting
    lab.apply(DEPLOY.format(ns="inject", suffix="-refused", extra=", refuse: \"yes\"").replace(
        "name: web,", "name: refused,"))

    def failed_create():
        events = lab.get("Event", namespace="inject")["items"]
        return [e for e in events if e["reason"] == "FailedCreate"
                and e["involvedObject"]["kind"] == "ReplicaSet"
                and e["involvedObject"]["name"].startswith("refused-")]
    events = eventually(failed_create, timeout=20, what="FailedCreate event")
    assert f'admission webhook "{WEBHOOK}" denied the request' in events[0]["message"]
    assert lab.pods("inject", "app=web-refused") == []


def test_run_as_user(injecting):
    lab = injecting
    lab.apply("""
apiVersion: v1
kind: Pod
metadata: {name: runas, namespace: plain}
spec:
  containers:
  - name: proxy
    image: busybox
    command: [sleep, infinity]
    securityContext: {runAsUser: 1337, runAsGroup: 1337}
  - name: app
    image: busybox
    command: [sleep, infinity]
""")
    pod = eventually(lambda: (p := lab.get("Pod", "runas", "plain"))["status"].get("phase") == "Running"
                     and all("running" in c["state"] for c in p["status"]["containerStatuses"]) and p,
                     timeout=20)
    r = _exec(lab, "runas", "plain", ["id", "-u"], container="proxy")
    assert (r.returncode, r.stdout.strip()) == (0, "1337"), r.stderr
    r = _exec(lab, "runas", "plain", ["id", "-g"], container="proxy")
    assert r.stdout.strip() == "1337"
    r = _exec(lab, "runas", "plain", ["id", "-u"], container="app")
    assert r.stdout.strip() == "0"  # unset stays root
    # The container's process itself (as the host sees it) runs as 1337.
    pid = next(c["pid"] for c in pod["status"]["containerStatuses"] if c["name"] == "proxy")
    with open(f"/proc/{pid}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["1337"] * 4
    # Its ServiceAccount token stays readable.
    r = _exec(lab, "runas", "plain", ["sh", "-c", 'test -s "$LAB_SA_TOKEN_FILE" && head -c 3 "$LAB_SA_TOKEN_FILE"'],
              container="proxy")
    assert r.returncode == 0 and r.stdout == "eyJ", r.stderr


def test_next_container_starts_after_the_post_start_hook(injecting):
    lab = injecting
    token = uuid.uuid4().hex[:12]
    hook_done, second_began = f"/tmp/x-{token}", f"/tmp/y-{token}"
    lab.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: ordered, namespace: plain}}
spec:
  containers:
  - name: first
    image: busybox
    command: [sleep, infinity]
    lifecycle:
      postStart:
        exec:
          command: [sh, -c, "sleep 1; touch {hook_done}"]
  - name: second
    image: busybox
    command: [sh, -c, "date +%s.%N > {second_began}; exec sleep infinity"]
""")
    try:
        pod = eventually(lambda: (p := lab.get("Pod", "ordered", "plain"))["status"].get("phase") == "Running"
                         and all("running" in c["state"] for c in p["status"]["containerStatuses"])
                         and os.path.exists(second_began) and os.path.getsize(second_began) and p, timeout=20)
        hook_end = os.path.getmtime(hook_done)
        with open(second_began) as f:
            assert float(f.read()) >= hook_end
        started = {c["name"]: c["state"]["running"]["startedAt"] for c in pod["status"]["containerStatuses"]}
        second = dt.datetime.strptime(started["second"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        assert second.timestamp() >= int(hook_end)   # the status has whole seconds
        assert started["first"] <= started["second"]
    finally:
        for path in (hook_done, second_began):
            if os.path.exists(path):
                os.unlink(path)


def test_failing_post_start_hook_kills_and_restarts_the_container(injecting):
    lab = injecting
    lab.apply("""
apiVersion: v1
kind: Pod
metadata: {name: badhook, namespace: plain}
spec:
  containers:
  - name: c
    image: busybox
    command: [sleep, infinity]
    lifecycle:
      postStart:
        exec: {command: [sh, -c, "echo no way; exit 3"]}
""")

    def restarted():
        st = lab.get("Pod", "badhook", "plain")["status"]["containerStatuses"][0]
        return st["restartCount"] >= 1 and st
    st = eventually(restarted, timeout=20, what="restarted after the failed hook")
    assert "PostStartHookError" in st["lastState"]["terminated"].get("message", "")
    events = [e for e in lab.get("Event", namespace="plain")["items"]
              if e["reason"] == "FailedPostStartHook" and e["involvedObject"]["name"] == "badhook"]
    assert events and "exited with 3: no way" in events[0]["message"]


def test_pre_stop_hook_runs_before_the_container_stops(injecting):
    lab = injecting
    token = uuid.uuid4().hex[:12]
    marker = f"/tmp/prestop-{token}"
    lab.apply(f"""
apiVersion: v1
kind: Pod
metadata: {{name: prestop, namespace: plain}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: c
    image: busybox
    command: [sleep, infinity]
    securityContext: {{runAsUser: 1337}}
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, "id -u > {marker}"]}}
""")
    try:
        eventually(lambda: "running" in lab.get("Pod", "prestop", "plain")["status"]["containerStatuses"][0]["state"],
                   timeout=20)
        r = lab.lab("delete", "pod", "prestop", "-n", "plain")
        assert r.returncode == 0, r.stderr
        eventually(lambda: lab.lab("get", "pod", "prestop", "-n", "plain").returncode == 1, timeout=20)
        with open(marker) as f:
            assert f.read().strip() == "1337"   # in the container, as its user
    finally:
        if os.path.exists(marker):
            os.unlink(marker)
