"""What the portable suites share, using only what any Kubernetes user has: the article's manifests
moved into a suite's own namespaces, kubectl that must succeed, waiting as a user waits (`rollout
status`, `wait --for=condition=Ready`), polling for policy that arrives eventually, and curl in a pod.

The article names its namespaces `ambient-apps` and `legacy-apps`; a suite renames them in the text
(namespaces and SPIFFE principals alike), so it never touches a namespace a user already has."""

from __future__ import annotations

import contextlib
import json
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

from kubernetes import client

T = TypeVar("T")
ARTICLE = pathlib.Path(__file__).resolve().parents[2] / "topologies" / "article"
AMBIENT = {"istio.io/dataplane-mode": "ambient"}
INJECTION = {"istio-injection": "enabled"}
REDIRECTION = "ambient.istio.io/redirection"  # istio-cni's mark on a pod it enrolled
WAIT = "180s"  # for pods to start: a real cluster pulls images


def article(name: str, renames: dict[str, str]) -> str:
    """The article's manifest NAME (topologies/article/) with each old name in RENAMES replaced."""
    text = (ARTICLE / name).read_text()
    for old, new in renames.items():
        text = text.replace(old, new)
    return text


def article_token() -> str:
    """The article's `$TOKEN` (Istio's published demo JWT, shipped beside the manifests)."""
    return (ARTICLE / "demo.jwt").read_text().strip()


def ok(cluster: Any, *args: str, input: str | None = None, timeout: float = 240.0) -> str:
    """`kubectl ARGS` on CLUSTER, which must succeed; its stdout."""
    r = cluster.kubectl(*args, input=input, timeout=timeout)
    assert r.returncode == 0, f"kubectl {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}"
    return r.stdout


def eventually(check: Callable[[], T], timeout: float = 60.0, interval: float = 0.5, what: str = "condition") -> T:
    """Calls CHECK until it returns something truthy (returned); fails after TIMEOUT with its last
    result or exception. For what a cluster makes true eventually: policy, enrollment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            last: Any = check()
        except Exception as e:  # noqa: BLE001 - reported if it never passes
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not met after {timeout:.0f}s; last: {last!r}")
        time.sleep(interval)


@contextlib.contextmanager
def namespaces(cluster: Any, spaces: dict[str, dict[str, str]]) -> Iterator[None]:
    """SPACES (name: labels) created and labelled with kubectl, and deleted afterwards with
    `kubectl delete ns --wait`. A namespace that already exists fails the suite and is left alone."""
    made: list[str] = []
    try:
        for ns, labels in spaces.items():
            ok(cluster, "create", "ns", ns)
            made.append(ns)
            if labels:
                ok(cluster, "label", "ns", ns, *(f"{k}={v}" for k, v in labels.items()))
        yield
    finally:
        failed = []
        for ns in made:
            r = cluster.kubectl("delete", "ns", ns, "--wait", "--timeout=300s", timeout=320)
            if r.returncode != 0:
                failed.append(f"{ns}: {r.stderr.strip()}")
        assert not failed, f"namespaces not deleted: {failed}"


def ready(cluster: Any, ns: str, *deployments: str) -> None:
    """Each Deployment rolled out, then every pod of NS Ready, as a user waits for them."""
    for name in deployments:
        ok(cluster, "rollout", "status", f"deploy/{name}", "-n", ns, f"--timeout={WAIT}")
    ok(cluster, "wait", "--for=condition=Ready", "pod", "--all", "-n", ns, f"--timeout={WAIT}")


def pods(cluster: Any, ns: str, selector: str | None = None) -> list[Any]:
    """NS's pods (V1Pod, from the official Python client), not those being deleted."""
    items: list[Any] = client.CoreV1Api(cluster.api).list_namespaced_pod(ns, label_selector=selector or "").items
    return [p for p in items if p.metadata.deletion_timestamp is None]


def all_enrolled(cluster: Any, ns: str) -> bool:
    """Every pod of NS enrolled in ambient by istio-cni (annotated `ambient.istio.io/redirection`)."""
    found = pods(cluster, ns)
    return bool(found) and all((p.metadata.annotations or {}).get(REDIRECTION) == "enabled" for p in found)


class Reply(NamedTuple):
    status: int | None  # the HTTP status; None when curl failed
    body: str
    exit: int  # curl's exit code, which kubectl exec passes on (56: connection reset)
    stderr: str

    def json(self) -> Any:
        return json.loads(self.body)


def curl(cluster: Any, ns: str, deploy: str, url: str, *args: str, container: str = "sleep") -> Reply:
    """`kubectl exec deploy/DEPLOY -c CONTAINER -- curl ARGS URL` in NS."""
    r = cluster.kubectl(
        "exec", f"deploy/{deploy}", "-n", ns, "-c", container, "--",
        "curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args, url,
        timeout=60,
    )  # fmt: skip
    body, _, code = r.stdout.rpartition("\n")
    return Reply(int(code) if r.returncode == 0 else None, body, r.returncode, r.stderr)


def node_of(cluster: Any, ns: str, app: str) -> str:
    """The node the pod of APP runs on."""
    return pods(cluster, ns, f"app={app}")[0].spec.node_name


def ztunnel_log(cluster: Any, node: str) -> list[str]:
    """The lines NODE's ztunnel has logged (`kubectl logs` of the ztunnel pod there)."""
    name = ok(
        cluster, "get", "pods", "-n", "istio-system", "-l", "app=ztunnel",
        "--field-selector", f"spec.nodeName={node}", "-o", "jsonpath={.items[0].metadata.name}",
    )  # fmt: skip
    return ok(cluster, "logs", name, "-n", "istio-system").splitlines()
