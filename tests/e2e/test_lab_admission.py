"""Generic Kubernetes behaviour the sidecar mode needs, on a lab without the mesh: mutating
admission webhooks (in-process handlers), runAsUser/runAsGroup, container start order and
postStart hooks."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest

from lab.testing import REPO, TestLab, eventually, manifest, unique_lab_name
from tests.conftest import bare_pod, deployment, echo_container

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


def busybox(name: str, *command: str, **extra) -> dict:
    """A busybox container doing COMMAND (by default: sleeping)."""
    return {"name": name, "image": "busybox", "command": list(command or ("sleep", "infinity")), **extra}


def exec_hook(*command: str) -> dict:
    return {"exec": {"command": list(command)}}


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
        lab.apply(deployment("web", ns, echo_container(), replicas=1))
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
    before = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "before", "namespace": "inject"},
        "data": {"a": "b"},
    }
    nope = bare_pod("nope", "inject", {"name": "c", "image": "busybox"}, labels={"refuse": "yes"})
    r = lab.lab("apply", "-f", "-", input=manifest(before, nope))
    assert r.returncode == 1, r.stdout
    assert f'admission webhook "{WEBHOOK}" denied the request: pod nope asked to be refused' in r.stderr
    assert r.stdout == ""
    for kind, name in (("pod", "nope"), ("configmap", "before")):
        r = lab.lab("get", kind, name, "-n", "inject")
        assert r.returncode == 1 and "not found" in r.stderr


def test_refused_controller_pod_is_a_failed_create_event_on_its_replicaset(injecting):
    lab = injecting
    lab.apply(deployment("refused", "inject", echo_container(), replicas=1, labels={"refuse": "yes"}))

    def failed_create():
        events = lab.get("Event", namespace="inject")["items"]
        return [
            e
            for e in events
            if e["reason"] == "FailedCreate"
            and e["involvedObject"]["kind"] == "ReplicaSet"
            and e["involvedObject"]["name"].startswith("refused-")
        ]

    events = eventually(failed_create, timeout=20, what="FailedCreate event")
    assert f'admission webhook "{WEBHOOK}" denied the request' in events[0]["message"]
    assert lab.pods("inject", "app=refused") == []


def test_run_as_user(injecting):
    lab = injecting
    lab.apply(
        bare_pod(
            "runas", "plain", busybox("proxy", securityContext={"runAsUser": 1337, "runAsGroup": 1337}), busybox("app")
        )
    )
    pod = eventually(
        lambda: (
            (p := lab.get("Pod", "runas", "plain"))["status"].get("phase") == "Running"
            and all("running" in c["state"] for c in p["status"]["containerStatuses"])
            and p
        ),
        timeout=20,
    )
    r = lab.exec("runas", "plain", ["id", "-u"], container="proxy")
    assert (r.returncode, r.stdout.strip()) == (0, "1337"), r.stderr
    r = lab.exec("runas", "plain", ["id", "-g"], container="proxy")
    assert r.stdout.strip() == "1337"
    r = lab.exec("runas", "plain", ["id", "-u"], container="app")
    assert r.stdout.strip() == "0"  # unset stays root
    # The container's process itself (as the host sees it) runs as 1337.
    pid = next(c["pid"] for c in pod["status"]["containerStatuses"] if c["name"] == "proxy")
    with open(f"/proc/{pid}/status") as f:
        uid_line = next(line for line in f if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["1337"] * 4
    # Its ServiceAccount token stays readable.
    r = lab.exec(
        "runas",
        "plain",
        ["sh", "-c", 'test -s "$LAB_SA_TOKEN_FILE" && head -c 3 "$LAB_SA_TOKEN_FILE"'],
        container="proxy",
    )
    assert r.returncode == 0 and r.stdout == "eyJ", r.stderr


def test_next_container_starts_after_the_post_start_hook(injecting):
    lab = injecting
    token = uuid.uuid4().hex[:12]
    hook_done, second_began = f"/tmp/x-{token}", f"/tmp/y-{token}"
    lab.apply(
        bare_pod(
            "ordered",
            "plain",
            busybox("first", lifecycle={"postStart": exec_hook("sh", "-c", f"sleep 1; touch {hook_done}")}),
            busybox("second", "sh", "-c", f"date +%s.%N > {second_began}; exec sleep infinity"),
        )
    )
    try:
        pod = eventually(
            lambda: (
                (p := lab.get("Pod", "ordered", "plain"))["status"].get("phase") == "Running"
                and all("running" in c["state"] for c in p["status"]["containerStatuses"])
                and os.path.exists(second_began)
                and os.path.getsize(second_began)
                and p
            ),
            timeout=20,
        )
        hook_end = os.path.getmtime(hook_done)
        with open(second_began) as f:
            assert float(f.read()) >= hook_end
        started = {c["name"]: c["state"]["running"]["startedAt"] for c in pod["status"]["containerStatuses"]}
        second = dt.datetime.strptime(started["second"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        assert second.timestamp() >= int(hook_end)  # the status has whole seconds
        assert started["first"] <= started["second"]
    finally:
        for path in (hook_done, second_began):
            if os.path.exists(path):
                os.unlink(path)


def test_failing_post_start_hook_kills_and_restarts_the_container(injecting):
    lab = injecting
    lab.apply(
        bare_pod(
            "badhook", "plain", busybox("c", lifecycle={"postStart": exec_hook("sh", "-c", "echo no way; exit 3")})
        )
    )

    def restarted():
        st = lab.get("Pod", "badhook", "plain")["status"]["containerStatuses"][0]
        return st["restartCount"] >= 1 and st

    st = eventually(restarted, timeout=20, what="restarted after the failed hook")
    assert "PostStartHookError" in st["lastState"]["terminated"].get("message", "")
    events = [
        e
        for e in lab.get("Event", namespace="plain")["items"]
        if e["reason"] == "FailedPostStartHook" and e["involvedObject"]["name"] == "badhook"
    ]
    assert events and "exited with 3: no way" in events[0]["message"]


def test_pre_stop_hook_runs_before_the_container_stops(injecting):
    lab = injecting
    token = uuid.uuid4().hex[:12]
    marker = f"/tmp/prestop-{token}"
    lab.apply(
        bare_pod(
            "prestop",
            "plain",
            busybox(
                "c",
                securityContext={"runAsUser": 1337},
                lifecycle={"preStop": exec_hook("sh", "-c", f"id -u > {marker}")},
            ),
            terminationGracePeriodSeconds=3,
        )
    )
    try:
        eventually(
            lambda: "running" in lab.get("Pod", "prestop", "plain")["status"]["containerStatuses"][0]["state"],
            timeout=20,
        )
        r = lab.lab("delete", "pod", "prestop", "-n", "plain")
        assert r.returncode == 0, r.stderr
        eventually(lambda: lab.lab("get", "pod", "prestop", "-n", "plain").returncode == 1, timeout=20)
        with open(marker) as f:
            assert f.read().strip() == "1337"  # in the container, as its user
    finally:
        if os.path.exists(marker):
            os.unlink(marker)
