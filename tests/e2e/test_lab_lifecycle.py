"""Pod lifecycle: restarts of killed containers, replacement of deleted pods, scale, rollout restart."""

from __future__ import annotations

import os
import signal

from lab.client import netns
from lab.testing import eventually, manifest
from tests.conftest import bare_pod, curl_container, deployment, echo_container, service


def web(ns: str, **kw) -> dict:
    return deployment("web", ns, echo_container(), **kw)


def _status(lab, ns, pod):
    return lab.get("Pod", pod, ns)["status"]["containerStatuses"][0]


def test_killed_container_restarts_and_counts(lab, namespace):
    lab.apply(web(namespace, replicas=1))
    pod = lab.wait_ready(namespace, "app=web")[0]
    name = pod["metadata"]["name"]
    first = _status(lab, namespace, name)
    assert first["restartCount"] == 0
    os.kill(first["pid"], signal.SIGKILL)
    st = eventually(
        lambda: (s := _status(lab, namespace, name))["restartCount"] == 1 and s["ready"] and s,
        timeout=30,
        what="container restarted and ready",
    )
    assert st["pid"] != first["pid"]
    assert st["lastState"]["terminated"]["exitCode"] == 137
    r = lab.lab("get", "pod", name, "-n", namespace)
    assert r.stdout.splitlines()[1].split()[3] in ("1", "1 (0s ago)") or r.stdout.splitlines()[1].split()[3] == "1"
    # The pod object is the same one: same name, same uid.
    assert lab.get("Pod", name, namespace)["metadata"]["uid"] == pod["metadata"]["uid"]


def test_deleted_pod_is_replaced(lab, namespace):
    lab.apply(web(namespace, replicas=1))
    old = lab.wait_ready(namespace, "app=web")[0]["metadata"]["name"]
    r = lab.lab("delete", "pod", old, "-n", namespace)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f'pod "{old}" deleted'
    new = eventually(
        lambda: [p for p in lab.wait_ready(namespace, "app=web") if p["metadata"]["name"] != old], timeout=30
    )
    assert new[0]["metadata"]["name"].startswith("web-")
    # The old pod and its network namespace are gone, not just hidden.
    r = lab.lab("get", "pod", old, "-n", namespace)
    assert r.returncode == 1 and "not found" in r.stderr
    assert not any(netns.exists(n) for n in os.listdir("/run/netns") if n.endswith(f"_{old}"))


def test_completed_pod_stays_with_its_status_and_logs(lab, namespace):
    lab.apply(
        bare_pod(
            "once", namespace, curl_container("job", ("/bin/sh", "-c", "echo done; exit 3")), restartPolicy="Never"
        )
    )
    pod = eventually(
        lambda: (p := lab.get("Pod", "once", namespace))["status"].get("phase") == "Failed" and p, timeout=20
    )
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3 and pod["status"]["containerStatuses"][0]["restartCount"] == 0
    r = lab.lab("logs", "once", "-n", namespace)
    assert r.returncode == 0 and r.stdout == "done\n"
    r = lab.lab("get", "pod", "once", "-n", namespace)
    assert r.stdout.splitlines()[1].split()[2] == "Error"


def test_reapplying_the_same_file_changes_nothing(lab, namespace):
    text = manifest(web(namespace), service("web", namespace, (None, 80, 8080)))
    lab.apply(text)
    lab.wait_ready(namespace, "app=web")
    lab.lab("scale", "deploy/web", "--replicas=2", "-n", namespace)
    lab.lab("label", "deploy", "web", "team=blue", "-n", namespace)
    r = lab.lab("apply", "-f", "-", input=text)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["deployment.apps/web unchanged", "service/web unchanged"]
    dep = lab.get("Deployment", "web", namespace)
    assert dep["spec"]["replicas"] == 2 and dep["metadata"]["labels"]["team"] == "blue"
    assert lab.get("Service", "web", namespace)["spec"]["ports"][0]["protocol"] == "TCP"


def test_scale_and_rollout_restart(lab, namespace):
    lab.apply(web(namespace, replicas=1))
    lab.wait_ready(namespace, "app=web")
    r = lab.lab("scale", "deploy/web", "--replicas=3", "-n", namespace)
    assert r.returncode == 0 and r.stdout.strip() == "deployment.apps/web scaled"
    pods = lab.wait_ready(namespace, "app=web", count=3)
    before = {p["metadata"]["name"] for p in pods}
    r = lab.lab("rollout", "restart", "deploy/web", "-n", namespace)
    assert r.returncode == 0 and r.stdout.strip() == "deployment.apps/web restarted"
    r = lab.lab("rollout", "status", "deploy/web", "-n", namespace, "--timeout=60s")
    assert r.returncode == 0, r.stderr
    after = eventually(
        lambda: (
            (ps := {p["metadata"]["name"] for p in lab.wait_ready(namespace, "app=web", count=3)})
            and not (ps & before)
            and ps
        ),
        timeout=60,
    )
    assert len(after) == 3
