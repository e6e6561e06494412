"""The portable suites' precondition: the cluster answers and Istio ambient runs on it. On a lab the
default topology installed the mesh; on another cluster the user did (`istioctl install --set
profile=ambient`). Nothing here installs anything."""

from __future__ import annotations

import pytest

from tests.portable.kube import WAIT


@pytest.fixture(scope="session")
def mesh(cluster):
    """CLUSTER, once kubectl reaches it and istiod and every node's ztunnel are ready."""
    r = cluster.kubectl("version", "-o", "json", timeout=60)
    if r.returncode != 0:
        pytest.fail(f"cannot reach cluster {cluster.name} with kubectl: {r.stderr.strip()}", pytrace=False)
    r = cluster.kubectl("get", "daemonset", "ztunnel", "-n", "istio-system", timeout=60)
    if r.returncode != 0:
        pytest.fail(
            f"no Istio ambient on {cluster.name} (no ztunnel DaemonSet in istio-system: {r.stderr.strip()}); "
            "install it first: istioctl install --set profile=ambient --skip-confirmation",
            pytrace=False,
        )
    for args in (
        ("rollout", "status", "deploy/istiod", "-n", "istio-system", f"--timeout={WAIT}"),
        ("wait", "--for=condition=Ready", "pod", "-l", "app=ztunnel", "-n", "istio-system", f"--timeout={WAIT}"),
    ):
        r = cluster.kubectl(*args, timeout=240)
        if r.returncode != 0:
            pytest.fail(f"Istio ambient not ready on {cluster.name}: kubectl {' '.join(args)}: {r.stderr.strip()}")
    return cluster
