"""What the test tiers share: an in-process lab API fixture, `eventually` for trio tests,
`read_all`, and builders for the objects the tests apply (so a test says what differs, not the
YAML every test repeats).

Tiers: tests/unit needs no root, starts no process and waits on no clock; tests/integration runs
one process or network namespace (root); tests/e2e builds labs. Timings are figures for
`make bench`, not asserts.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import trio

from lab.testing import InProcessLabApi

T = TypeVar("T")


# ---- trio helpers ----------------------------------------------------------------------------


async def eventually(check: Callable[[], T | Awaitable[T]], timeout: float = 3.0, interval: float = 0.005) -> T:
    """Polls CHECK (plain or async) until it returns a truthy value, which is returned; fails after
    TIMEOUT. The trio tests' `eventually` (lab.testing.eventually is the blocking one)."""
    with trio.fail_after(timeout):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
            await trio.sleep(interval)


async def read_all(stream: trio.abc.ReceiveStream, timeout: float | None = None, resets_end: bool = False) -> bytes:
    """Everything STREAM delivers up to EOF (or, if RESETS_END, up to a reset); fails after TIMEOUT
    if one is given (none by default: a test on trio's mock clock would see it jump past)."""
    chunks = []
    with trio.fail_after(timeout if timeout is not None else float("inf")):
        try:
            while data := await stream.receive_some():
                chunks.append(data)
        except (trio.BrokenResourceError, ConnectionResetError):
            if not resets_end:
                raise
    return b"".join(chunks)


# ---- the lab API, in process -------------------------------------------------------------------


@pytest.fixture
def socket_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="t") as d:  # short: Unix socket paths are limited
        yield d


@pytest.fixture
async def lab_api(nursery: trio.Nursery, socket_dir: str) -> AsyncIterator[InProcessLabApi]:
    """labd's API (lab.testing.InProcessLabApi) serving on a temporary socket for one test."""
    api = InProcessLabApi(socket_dir)
    await nursery.start(api.serve)
    yield api


# ---- object builders -----------------------------------------------------------------------------

ECHO_IMAGE = "ambient-lab/echo"
CURL_IMAGE = "curlimages/curl"
# What the DefaultTolerationSeconds admission plugin adds to every pod (and kubectl describe shows).
NOT_READY_TOLERATION = {
    "key": "node.kubernetes.io/not-ready",
    "operator": "Exists",
    "effect": "NoExecute",
    "tolerationSeconds": 300,
}


def echo_container(*args: str, ports: tuple[int, ...] = (8080,), name: str = "echo") -> dict[str, Any]:
    """The echo app (lab.apps.echo), its first port named http."""
    c: dict[str, Any] = {
        "name": name,
        "image": ECHO_IMAGE,
        "ports": [{"containerPort": p, **({"name": "http"} if i == 0 else {})} for i, p in enumerate(ports)],
    }
    if args:
        c["args"] = list(args)
    return c


def curl_container(name: str = "curl", command: tuple[str, ...] = ("/bin/sleep", "infinity")) -> dict[str, Any]:
    """A curl image doing COMMAND (by default: idling, for `exec`)."""
    return {"name": name, "image": CURL_IMAGE, "command": list(command)}


def pause_container() -> dict[str, Any]:
    """A container that only sleeps (Kubernetes' pause image): pods that cost nothing but exist."""
    return {"name": "pause", "image": "registry.k8s.io/pause"}


def httpbin_container() -> dict[str, Any]:
    """The real httpbin on port 80, as the article runs it."""
    return {"name": "httpbin", "image": "docker.io/kennethreitz/httpbin", "ports": [{"containerPort": 80}]}


def pod_spec(*containers: dict, sa: str | None = None, node: str | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers), **extra}
    if sa:
        spec["serviceAccountName"] = sa
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return spec


def bare_pod(
    name: str, ns: str | None, *containers: dict, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A Pod of its own (no controller), labelled app=NAME unless LABELS say otherwise."""
    md: dict[str, Any] = {"name": name, "labels": labels or {"app": name}}
    if ns:
        md["namespace"] = ns
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": pod_spec(*containers, **spec)}


def deployment(
    name: str,
    ns: str,
    *containers: dict,
    replicas: int | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Deployment of pods labelled app=NAME (plus LABELS) running CONTAINERS."""
    template_md: dict[str, Any] = {"labels": {"app": name, **(labels or {})}}
    if annotations:
        template_md["annotations"] = annotations
    d: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template_md, "spec": pod_spec(*containers, **spec)},
        },
    }
    if replicas is not None:
        d["spec"]["replicas"] = replicas
    return d


def service(
    name: str, ns: str, *ports: tuple[str, int, int | str], selector: str | None = None, headless: bool = False
) -> dict[str, Any]:
    """A Service selecting app=SELECTOR (default: NAME); PORTS are (name or None, port, targetPort)."""
    spec: dict[str, Any] = {
        "selector": {"app": selector or name},
        "ports": [{**({"name": n} if n else {}), "port": p, "targetPort": t} for n, p, t in ports],
    }
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def service_account(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def echo_app(ns: str, name: str = "echo", port: int = 80, **kw: Any) -> list[dict[str, Any]]:
    """The echo app behind Service NAME:PORT (to its 8080); KW go to its Deployment."""
    return [deployment(name, ns, echo_container(), **kw), service(name, ns, ("http", port, 8080))]


def curl_client(ns: str, name: str = "client", **kw: Any) -> dict[str, Any]:
    """A Deployment of one idle curl pod, to `exec` calls from."""
    return deployment(name, ns, curl_container(), **kw)


def policy(name: str, ns: str, spec: dict, kind: str = "AuthorizationPolicy") -> dict[str, Any]:
    """An Istio security object (AuthorizationPolicy, PeerAuthentication, RequestAuthentication)."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
