"""pytest plugin (entry point `ambient_lab`): real labs as fixtures.

- `lab`: one real lab (labd, network namespaces, processes) for the whole session, built from
  `--lab-topology` (default: topologies/default.yaml, which installs the ambient mesh) and torn
  down at the end, also when tests fail or the run is interrupted. `--lab-keep` leaves it up for
  poking at after a failure (`lab --lab <name> ...`; `lab down --name <name>` when done).
- `namespace`: a fresh namespace for one test, deleted afterwards.
Tests under an `e2e` directory are marked `e2e`.
"""
from __future__ import annotations

import os

import pytest

from lab.testing import DEFAULT_TOPOLOGY, TestLab, unique_lab_name


def pytest_addoption(parser):
    group = parser.getgroup("ambient-lab")
    group.addoption("--lab-topology", default=DEFAULT_TOPOLOGY, help="topology of the session's lab")
    group.addoption("--lab-keep", action="store_true", help="leave the session's lab running at the end")


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: builds a real lab (root, network namespaces, processes)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if f"{os.sep}e2e{os.sep}" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


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
