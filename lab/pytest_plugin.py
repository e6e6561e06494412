"""pytest plugin (entry point `ambient_lab`): real labs as fixtures.

- `lab`: one real lab (labd, network namespaces, processes) for the whole session, built from
  `--lab-topology` (default: topologies/default.yaml, which installs the ambient mesh) and torn
  down at the end, also when tests fail or the run is interrupted. `--lab-keep` leaves it up for
  poking at after a failure (`lab --lab <name> ...`; `lab down --name <name>` when done).
- `namespace`: a fresh namespace for one test, deleted afterwards.
- `cluster`: the engine a portable suite runs on (lab/cluster.py): the session's lab through its
  Kubernetes endpoint, or, with `--kubeconfig FILE [--context CTX]`, an existing cluster with Istio
  ambient installed (the lab is then never started). `kubectl` and `kube_api` are its real kubectl
  runner and official Python client; a test that asks for a lab-only facility on another engine is
  skipped with the reason.
Tests under an `e2e` directory are marked `e2e`, those under an `integration` one `integration`.
"""

from __future__ import annotations

import os

import pytest

from lab.client.paths import kubeconfig_path
from lab.cluster import Cluster, LabCluster, NotOnThisEngine
from lab.testing import DEFAULT_TOPOLOGY, TestLab, unique_lab_name


def pytest_addoption(parser):
    group = parser.getgroup("ambient-lab")
    group.addoption("--lab-topology", default=DEFAULT_TOPOLOGY, help="topology of the session's lab")
    group.addoption("--lab-keep", action="store_true", help="leave the session's lab running at the end")
    group.addoption("--kubeconfig", default=None, help="run portable suites on this cluster instead of a lab")
    group.addoption("--context", default=None, help="with --kubeconfig: the kubeconfig context to use")


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: builds a real lab (root, network namespaces, processes)")
    config.addinivalue_line("markers", "integration: runs a process or a network namespace (root for the latter)")
    config.addinivalue_line("markers", "portable: runs on a lab or on any cluster given by --kubeconfig")
    kubeconfig = config.getoption("--kubeconfig")
    if kubeconfig is None and config.getoption("--context") is not None:
        raise pytest.UsageError("--context needs --kubeconfig FILE (without it the suites run on a lab)")
    if kubeconfig is not None and not os.path.isfile(os.path.expanduser(kubeconfig)):
        raise pytest.UsageError(f"--kubeconfig {kubeconfig}: no such file (the kubeconfig of the cluster to run on)")


def pytest_collection_modifyitems(config, items):
    other_engine = config.getoption("--kubeconfig") is not None
    for item in items:
        for tier in ("e2e", "integration"):
            if f"{os.sep}{tier}{os.sep}" in str(item.fspath):
                item.add_marker(getattr(pytest.mark, tier))
        if _uses_engine(item):
            item.add_marker(pytest.mark.portable)
        elif other_engine:
            item.add_marker(
                pytest.mark.skip(
                    reason="needs ambient-lab: with --kubeconfig only portable suites "
                    "(tests using the `cluster` fixture) run"
                )
            )


def _uses_engine(item) -> bool:
    """ITEM uses this plugin's `cluster` fixture (not a test module's own fixture of that name)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = list(info.name2fixturedefs.get("cluster", [])) if info is not None else []
    return bool(defs) and getattr(defs[-1].func, "__module__", None) == __name__


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    excinfo = outcome.excinfo
    if excinfo is not None and isinstance(excinfo[1], NotOnThisEngine):
        outcome.force_exception(pytest.skip.Exception(str(excinfo[1]), _use_item_location=True))


@pytest.fixture(scope="session")
def lab(request):
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces)")
    t = TestLab(unique_lab_name("s"), request.config.getoption("--lab-topology"))
    keep = request.config.getoption("--lab-keep")
    try:
        t.up()
        yield t
    finally:
        if keep:
            print(f"\nlab {t.name} left running: lab --lab {t.name} get pods -A; lab down --name {t.name}")
        else:
            t.down()


@pytest.fixture
def namespace(lab, request):
    """A fresh namespace for one test, deleted afterwards."""
    name = ("t-" + request.node.name.lower().replace("_", "-"))[:50].rstrip("-")
    name = "".join(c for c in name if c.isalnum() or c == "-").rstrip("-")
    lab.create_namespace(name)
    yield name
    lab.delete_namespace(name)


@pytest.fixture(scope="session")
def cluster(request):
    """The engine: an existing cluster (--kubeconfig), else the session's lab."""
    kubeconfig = request.config.getoption("--kubeconfig")
    if kubeconfig:
        engine = Cluster(os.path.abspath(os.path.expanduser(kubeconfig)), request.config.getoption("--context"))
    else:
        lab = request.getfixturevalue("lab")
        engine = LabCluster(lab, kubeconfig_path(lab.name))
    try:
        yield engine
    finally:
        engine.cleanup()


@pytest.fixture(scope="session")
def kubectl(cluster):
    """Real kubectl against the cluster: `kubectl("get", "pods", "-n", ns)` → CompletedProcess."""
    return cluster.kubectl


@pytest.fixture(scope="session")
def kube_api(cluster):
    """The official Python client's ApiClient for the cluster."""
    return cluster.api
