"""What the printer tests share: a fixed `now`, objects shaped as the lab stores them, and the
expected-output helper. The AuthorizationPolicy is the article's l4-policy.yaml, read from its file."""

from datetime import datetime, timedelta, timezone

import yaml

from tests.unit.validation_helpers import ARTICLE

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def ago(**delta) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def out(*lines: str) -> str:
    """Expected output; lines are explicit so trailing spaces stay visible."""
    return "".join(line + "\n" for line in lines)


def running_pod(
    name, namespace="ambient-apps", created=None, restarts=0, last_finished=None, node="worker", ip="10.244.1.5"
):
    status = {
        "name": "main",
        "ready": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": ago(minutes=4)}},
    }
    if last_finished:
        status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": last_finished}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created or ago(minutes=5)},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "containerStatuses": [status]},
    }


def pod_with(statuses, phase="Running", containers=None, **extra):
    names_ = containers or [s["name"] for s in statuses]
    pod = {
        "metadata": {"name": "p", "namespace": "default", "creationTimestamp": ago(hours=1)},
        "spec": {"containers": [{"name": n, "image": "busybox"} for n in names_]},
        "status": {"phase": phase, "containerStatuses": statuses},
    }
    for key, value in extra.items():
        pod[key].update(value)
    return pod


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "httpbin-ambient",
        "namespace": "ambient-apps",
        "creationTimestamp": ago(minutes=5),
        "labels": {"app": "httpbin-ambient"},
    },
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "httpbin-ambient", "version": "v1"}},
        "template": {
            "metadata": {"labels": {"app": "httpbin-ambient", "version": "v1"}},
            "spec": {
                "serviceAccountName": "httpbin-ambient",
                "containers": [
                    {"image": "docker.io/kennethreitz/httpbin", "name": "httpbin", "ports": [{"containerPort": 80}]}
                ],
            },
        },
    },
    "status": {
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    },
}


def service(name, spec, namespace="default", created=None):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created or ago(hours=27)},
        "spec": spec,
    }


HTTPBIN_SERVICE = service(
    "httpbin-ambient",
    {
        "type": "ClusterIP",
        "clusterIP": "10.96.0.20",
        "clusterIPs": ["10.96.0.20"],
        "ports": [{"name": "http", "port": 8000, "targetPort": 80, "protocol": "TCP"}],
        "selector": {"app": "httpbin-ambient"},
        "sessionAffinity": "None",
    },
    "ambient-apps",
)


POLICY = yaml.safe_load((ARTICLE / "l4-policy.yaml").read_text())

# POLICY's spec as block YAML, indented as both `-o yaml` and describe print it.
POLICY_SPEC_LINES = (
    "  selector:",
    "    matchLabels:",
    "      app: httpbin-ambient",
    "  action: ALLOW",
    "  rules:",
    "  - from:",
    "    - source:",
    "        principals:",
    "        - cluster.local/ns/ambient-apps/sa/sleep-ambient",
)
