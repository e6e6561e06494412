"""pytest support: a real lab per test session, a small client API, `eventually`, the article's
manifests, and labd's API in process for the tests of its clients.

Tests drive the lab as a user does: through the API socket and the `lab` command. Nothing on the
path under test is replaced. A lab made here is always torn down, also when a test fails. The
in-process API (InProcessLabApi) is labd's own code on a temporary socket, without the node side.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any, Callable, Iterator, TypeVar

import trio

from lab import addons
from lab.apiserver import endpoint
from lab.apiserver.api import ApiServer
from lab.apiserver.dispatch import Dispatcher
from lab.apiserver.store import Store
from lab.apiserver.tokens import TokenIssuer
from lab.cli import launcher
from lab.client import LabClient, LabError
from lab.topology import Topology, load_file

T = TypeVar("T")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TOPOLOGY = os.path.join(REPO, "topologies", "default.yaml")
ARTICLE = os.path.join(REPO, "topologies", "article")
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"


class NotYet(AssertionError):
    pass


def eventually(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str | None = None) -> T:
    """Calls `check` until it returns a truthy value without raising; returns that value.

    On timeout it raises AssertionError carrying the last result or exception.
    """
    deadline = time.monotonic() + timeout
    while True:
        met, last = _attempt(check)
        if met:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{what or getattr(check, '__name__', 'condition')} not met after {timeout:.1f}s; last: {last!r}"
            )
        time.sleep(interval)


def _attempt(check: Callable[[], T]) -> tuple[bool, Any]:
    """(True, CHECK's truthy result), or (False, its falsy result or the exception it raised)."""
    try:
        result = check()
    except Exception as e:  # noqa: BLE001 - eventually reports the last failure
        return False, e
    return bool(result), result


def manifest(*docs: dict | list[dict]) -> str:
    """One text for `apply` of DOCS (lists flattened): JSON documents, which are YAML."""
    flat: list[dict] = []
    for d in docs:
        flat += d if isinstance(d, list) else [d]
    return "\n---\n".join(json.dumps(d) for d in flat) + "\n"


def unique_lab_name(prefix: str = "t") -> str:
    return (prefix + uuid.uuid4().hex)[:10]


class TestLab:
    """A running lab for tests: `apply`, `get`, `pods`, `exec`, `lab(...)` (the CLI)."""

    __test__ = False  # not a test class

    def __init__(self, name: str, topology: str = DEFAULT_TOPOLOGY):
        self.name = name
        self.topology = topology
        self.client = LabClient(name)
        self.status: dict | None = None

    def up(self) -> "TestLab":
        self.status = launcher.up(self.topology, self.name)
        return self

    def down(self) -> dict:
        return launcher.down(self.name)

    # API helpers
    def apply(self, what: str | dict | list[dict]) -> list[dict]:
        """A manifest file's path, YAML text, or objects."""
        if not isinstance(what, str):
            return self.client.apply(manifest(what))
        if os.path.exists(what):
            with open(what) as f:
                return self.client.apply(f.read(), os.path.basename(what))
        return self.client.apply(what)

    def get(
        self, kind: str, name: str | None = None, namespace: str | None = "default", selector: str | None = None
    ) -> Any:
        return self.client.get(kind, name, namespace, selector)

    def pods(self, namespace: str | None = "default", selector: str | None = None) -> list[dict]:
        return self.client.get("Pod", None, namespace, selector)["items"]

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.client.apply(
            f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
            + ("  labels:\n" + "".join(f"    {k}: \"{v}\"\n" for k, v in labels.items()) if labels else "")
        )

    def delete_namespace(self, name: str, wait: bool = True) -> None:
        self.client.call("delete", kind="Namespace", name=name, namespace=None, ignore_not_found=True)
        if wait:
            eventually(lambda: not self._exists("Namespace", name, None), timeout=60, what=f"namespace {name} gone")

    def _exists(self, kind: str, name: str, namespace: str | None) -> bool:
        try:
            self.client.get(kind, name, namespace)
            return True
        except LabError:
            return False

    def wait_ready(self, namespace: str, selector: str, count: int = 1, timeout: float = 60.0) -> list[dict]:
        def ready():
            pods = [p for p in self.pods(namespace, selector) if not p["metadata"].get("deletionTimestamp")]
            ok = [
                p
                for p in pods
                if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", [])
                )
            ]
            return ok if len(ok) >= count and len(pods) == len(ok) else None

        return eventually(ready, timeout=timeout, what=f"{count} ready pods {selector} in {namespace}")

    def install_ambient(self) -> None:
        """`lab istioctl install --set profile=ambient -y` (a no-op when the mesh is already there)."""
        r = self.lab("istioctl", "install", "--set", "profile=ambient", "-y", timeout=180)
        assert r.returncode == 0, r.stderr

    def enrolled(self, namespace: str, selector: str | None = None) -> list[dict]:
        """The pods istio-cni has enrolled (annotated `ambient.istio.io/redirection: enabled`)."""
        return [
            p
            for p in self.pods(namespace, selector)
            if p["metadata"].get("annotations", {}).get(REDIRECTION_ANNOTATION) == "enabled"
        ]

    def all_enrolled(self, namespace: str, selector: str | None = None) -> bool:
        pods = self.pods(namespace, selector)
        return bool(pods) and len(self.enrolled(namespace, selector)) == len(pods)

    def exec(
        self,
        pod: str,
        namespace: str,
        command: list[str],
        container: str | None = None,
        timeout: float = 30.0,
        check: bool = False,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Runs COMMAND in the pod as `lab exec` does (same resolution, same namespaces)."""
        target = self.client.call("exec", namespace=namespace, pod=pod, container=container)
        prefix = target.get("argv", ["ip", "netns", "exec", target["netns"]])
        return subprocess.run(
            [*prefix, *command],
            env=target["env"],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def lab(self, *args: str, input: str | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Runs the `lab` command against this lab, as a user would."""
        return subprocess.run(
            [sys.executable, "-m", "lab.cli", "--lab", self.name, *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            cwd=REPO,
        )


def article_manifest(name: str) -> str:
    """The text of one of the article's manifests (topologies/article/NAME), as the article has it."""
    with open(os.path.join(ARTICLE, name)) as f:
        return f.read()


class InProcessLabApi:
    """labd's API in this process, for tests of its clients (DNS, istiod, istio-cni, ztunnel): the
    real Store, ApiServer, Dispatcher and socket endpoint on `path`, without a kubelet or
    controllers, so objects are what the test puts in the store.

    `await nursery.start(api.serve)`; then `apply(...)` as a user would, `create(...)` for what
    the controllers and kubelet would write (pods with their status), `token(ns, pod)` for a pod's
    ServiceAccount token (reviewed by the real `token_review`). `requests` records every call.
    """

    def __init__(self, directory: str, topology: Topology | None = None, namespaces: tuple[str, ...] = ("default",)):
        self.path = os.path.join(directory, "labd.sock")  # keep DIRECTORY short: socket paths are limited
        self.store = Store()
        self.api = ApiServer(
            self.store,
            topology or load_file(DEFAULT_TOPOLOGY),
            directory,
            extra_validators=addons.validators(),
            extra_warners=addons.warners(),
        )
        self.tokens = TokenIssuer.generate()
        self.dispatcher = Dispatcher(self.api, self.tokens)
        self.requests: list[dict] = []
        self._watches: set[trio.CancelScope] = set()
        self._watches_open = trio.Event()
        self._watches_open.set()
        for name in namespaces:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await endpoint.serve(self.path, self._handle, task_status=task_status, owner_uid=os.geteuid())

    async def _handle(self, request: dict, send: endpoint.Reply) -> Any:
        self.requests.append(request)
        if request.get("op") != "watch":
            return await self.dispatcher.handle(request, send)
        await self._watches_open.wait()
        with trio.CancelScope() as scope:
            self._watches.add(scope)
            try:
                return await self.dispatcher.handle(request, send)
            finally:
                self._watches.discard(scope)
        return endpoint.STREAMING  # dropped: the stream ends and the watcher re-lists

    # What the tests do ----------------------------------------------------------------------
    def ops(self) -> list[str]:
        return [r["op"] for r in self.requests]

    def apply(self, manifests: str | dict | list[dict]) -> list[dict]:
        """`lab apply`: YAML text, or objects."""
        return self.api.apply(manifests if isinstance(manifests, str) else manifest(manifests))

    def create(self, obj: dict) -> dict:
        """Stores OBJ as it is (status included), as a controller or the kubelet writes it."""
        created = self.store.create(obj)
        assert created is not None  # a plain Store admits everything
        return created

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        return self.store.get(kind, namespace, name)

    def delete(self, kind: str, namespace: str | None, name: str) -> None:
        """`lab delete` (a pod's removal from the store, which its kubelet finishes: store.delete)."""
        self.api.delete(kind, name, namespace)

    def label(
        self, kind: str, namespace: str | None, name: str, changes: dict[str, str | None], field: str = "labels"
    ) -> dict:
        """`lab label --overwrite` (a None value removes the key); FIELD="annotations": `lab annotate`."""
        return self.api.label(kind, name, namespace, changes, overwrite=True, field=field)

    def token(self, namespace: str, pod: str) -> str:
        """POD's ServiceAccount token, as the kubelet mounts it."""
        p = self.store.get("Pod", namespace, pod)
        assert p is not None, f"no pod {namespace}/{pod}"
        md = p["metadata"]
        return self.tokens.issue(namespace, p["spec"].get("serviceAccountName", "default"), pod, md["uid"])

    def drop_watchers(self) -> None:
        """Ends every open watch stream, as a restarting labd does; the watchers re-list."""
        for scope in list(self._watches):
            scope.cancel()

    @contextlib.contextmanager
    def watchers_away(self) -> Iterator[None]:
        """Watchers are cut off inside the block (current streams dropped, new ones held until it
        ends): what changes meanwhile reaches them only through the re-list."""
        self._watches_open = trio.Event()
        self.drop_watchers()
        try:
            yield
        finally:
            self._watches_open.set()
