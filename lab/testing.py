"""pytest support: a real lab per test session, a small client API, and `eventually`.

Tests drive the lab as a user does: through the API socket and the `lab` command. Nothing on the
path under test is replaced. A lab made here is always torn down, also when a test fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any, Callable, TypeVar

from lab.cli import launcher
from lab.client import LabClient, LabError

T = TypeVar("T")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TOPOLOGY = os.path.join(REPO, "topologies", "default.yaml")
ARTICLE = os.path.join(REPO, "topologies", "article")
REDIRECTION_ANNOTATION = "ambient.istio.io/redirection"


class NotYet(AssertionError):
    pass


def eventually(check: Callable[[], T], timeout: float = 30.0, interval: float = 0.05,
               what: str | None = None) -> T:
    """Calls `check` until it returns a truthy value without raising; returns that value.

    On timeout it raises AssertionError carrying the last result or exception.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as e:  # noqa: BLE001 - the last failure is reported below
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or getattr(check, '__name__', 'condition')} not met after "
                                 f"{timeout:.1f}s; last: {last!r}")
        time.sleep(interval)


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
    def apply(self, path_or_text: str) -> list[dict]:
        if os.path.exists(path_or_text):
            with open(path_or_text) as f:
                return self.client.apply(f.read(), os.path.basename(path_or_text))
        return self.client.apply(path_or_text)

    def get(self, kind: str, name: str | None = None, namespace: str | None = "default",
            selector: str | None = None) -> Any:
        return self.client.get(kind, name, namespace, selector)

    def pods(self, namespace: str | None = "default", selector: str | None = None) -> list[dict]:
        return self.client.get("Pod", None, namespace, selector)["items"]

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.client.apply(
            f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
            + ("  labels:\n" + "".join(f"    {k}: \"{v}\"\n" for k, v in labels.items()) if labels else ""))

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
            ok = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in p.get("status", {}).get("conditions", []))]
            return ok if len(ok) >= count and len(pods) == len(ok) else None
        return eventually(ready, timeout=timeout, what=f"{count} ready pods {selector} in {namespace}")

    def install_ambient(self) -> None:
        """`lab istioctl install --set profile=ambient -y` (a no-op when the mesh is already there)."""
        r = self.lab("istioctl", "install", "--set", "profile=ambient", "-y", timeout=180)
        assert r.returncode == 0, r.stderr

    def enrolled(self, namespace: str, selector: str | None = None) -> list[dict]:
        """The pods istio-cni has enrolled (annotated `ambient.istio.io/redirection: enabled`)."""
        return [p for p in self.pods(namespace, selector)
                if p["metadata"].get("annotations", {}).get(REDIRECTION_ANNOTATION) == "enabled"]

    def all_enrolled(self, namespace: str, selector: str | None = None) -> bool:
        pods = self.pods(namespace, selector)
        return bool(pods) and len(self.enrolled(namespace, selector)) == len(pods)

    def exec(self, pod: str, namespace: str, command: list[str], container: str | None = None,
             timeout: float = 30.0, check: bool = False, input: str | None = None) -> subprocess.CompletedProcess:
        """Runs COMMAND in the pod as `lab exec` does (same resolution, same namespaces)."""
        target = self.client.call("exec", namespace=namespace, pod=pod, container=container)
        prefix = target.get("argv", ["ip", "netns", "exec", target["netns"]])
        return subprocess.run([*prefix, *command], env=target["env"],
                              input=input, capture_output=True, text=True, timeout=timeout, check=check)

    def lab(self, *args: str, input: str | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Runs the `lab` command against this lab, as a user would."""
        return subprocess.run([sys.executable, "-m", "lab.cli", "--lab", self.name, *args],
                              capture_output=True, text=True, input=input, timeout=timeout, cwd=REPO)
