"""Shared fixtures. `lab` is one real lab for the whole session (built once, torn down at the end,
also when tests fail); tests make their own namespaces and delete them."""
from __future__ import annotations

import os

import pytest

from lab.testing import TestLab, unique_lab_name


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces)")
    t = TestLab(unique_lab_name("s"))
    try:
        t.up()
        yield t
    finally:
        t.down()


@pytest.fixture
def namespace(lab, request):
    """A fresh namespace for one test, deleted afterwards."""
    name = ("t-" + request.node.name.lower().replace("_", "-"))[:50].rstrip("-")
    name = "".join(c for c in name if c.isalnum() or c == "-")
    lab.create_namespace(name)
    yield name
    lab.delete_namespace(name)
