"""What the end-to-end tests share on the session's lab: namespaces of apps made and removed
around a module, calls from a pod with curl, finding a node's ztunnel, and running a scenario."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

import scenarios
from lab.testing import TestLab, eventually
from scenarios.framework import Result, leftover_namespaces, mesh_ready

AMBIENT = {"istio.io/dataplane-mode": "ambient"}


@contextlib.contextmanager
def app_namespaces(
    lab: TestLab,
    namespaces: dict[str, dict[str, str] | None],
    *manifests: object,
    ready: tuple[tuple[str, str], ...] = (),
    mesh: bool = False,
) -> Iterator[dict[str, dict]]:
    """NAMESPACES (name: labels) made and MANIFESTS applied (with the mesh installed first if MESH);
    yields the first ready pod of each (namespace, app) in READY, by app, once every pod of the
    ambient namespaces is enrolled. The namespaces are deleted after."""
    if mesh:
        lab.install_ambient()
    for ns, labels in namespaces.items():
        lab.create_namespace(ns, labels)
    try:
        for m in manifests:
            lab.apply(m)  # type: ignore[arg-type]
        pods = {app: lab.wait_ready(ns, f"app={app}")[0] for ns, app in ready}
        for ns, labels in namespaces.items():
            if labels == AMBIENT:
                eventually(lambda: lab.all_enrolled(ns), timeout=30, what=f"{ns} enrolled")
        yield pods
    finally:
        for ns in namespaces:
            lab.delete_namespace(ns)


def app_pod(lab: TestLab, ns: str, app: str) -> dict:
    """The app's pod (not one that is terminating after a rollout)."""
    return next(p for p in lab.pods(ns, f"app={app}") if not p["metadata"].get("deletionTimestamp"))


def curl(lab: TestLab, ns: str, app: str, url: str, *args: str, timeout: int = 10) -> tuple[int | None, str, int]:
    """(HTTP status or None, body, curl's exit code) of one call from the app's pod."""
    r = lab.exec(
        app_pod(lab, ns, app)["metadata"]["name"],
        ns,
        ["curl", "-sS", "--max-time", str(timeout), "-w", "\n%{http_code}", *args, url],
        timeout=timeout + 10,
    )
    body, _, code = r.stdout.rpartition("\n")
    return (int(code) if r.returncode == 0 else None), body, r.returncode


def ztunnel_on(lab: TestLab, node: str) -> dict | None:
    """NODE's ztunnel pod (not one being deleted), if there is one."""
    pods = [
        p
        for p in lab.pods("istio-system", "app=ztunnel")
        if p["spec"].get("nodeName") == node and not p["metadata"].get("deletionTimestamp")
    ]
    return pods[0] if pods else None


def ztunnel_log(lab: TestLab, node: str) -> list[str]:
    """The lines NODE's ztunnel has logged."""
    zt = ztunnel_on(lab, node)
    return lab.lab("logs", zt["metadata"]["name"], "-n", "istio-system").stdout.splitlines() if zt else []


@pytest.fixture(scope="module")
def mesh(lab: TestLab) -> TestLab:
    """The session's lab with the mesh installed and ready."""
    lab.install_ambient()
    eventually(lambda: not mesh_ready(lab.client), timeout=60, what="the mesh ready")
    return lab


def run_scenario(lab: TestLab, name: str) -> Result:
    """Runs scenario NAME through the Python API; it must end without error, every cleanup done,
    and leave the lab as it found it (no `sc-` namespace, the mesh ready)."""
    result = scenarios.run(lab.client, name, log=print)
    print(f"{name}: {result.wall_s}s\n" + "\n".join(f"  {r.claim} | {r.observed} | {r.verdict}" for r in result.rows))
    assert result.error is None, result.error
    assert not result.cleanup_errors, result.cleanup_errors
    assert leftover_namespaces(lab.client) == []
    assert mesh_ready(lab.client) == []
    return result
