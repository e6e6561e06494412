"""The pytest plugin's choice of engine (lab/pytest_plugin.py), run in process with pytester: with
`--kubeconfig` only tests of the plugin's `cluster` fixture run, everything else is skipped with
the reason, and a kubeconfig that does not exist stops the run before anything is collected."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

ENGINE_TEST = """
def test_engine(cluster):
    assert cluster.kubeconfig.endswith("kubeconfig") and not cluster.is_lab
"""
OWN_FIXTURE_TEST = """
import pytest

@pytest.fixture
def cluster():  # a module's own fixture of that name is not the engine
    return "netns cluster"

def test_own(cluster):
    pass

def test_plain():
    pass
"""


def test_a_kubeconfig_that_does_not_exist_stops_the_run(pytester):
    pytester.makepyfile(test_engine=ENGINE_TEST)
    result = pytester.runpytest_inprocess("--kubeconfig", "/nonexistent/kubeconfig")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--kubeconfig /nonexistent/kubeconfig: no such file*"])


def test_context_alone_is_refused(pytester):
    pytester.makepyfile(test_engine=ENGINE_TEST)
    assert pytester.runpytest_inprocess("--context", "kind-kind").ret == pytest.ExitCode.USAGE_ERROR


def test_with_a_kubeconfig_only_the_engine_tests_run(pytester):
    kubeconfig = pytester.path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    pytester.makepyfile(test_engine=ENGINE_TEST, test_other=OWN_FIXTURE_TEST)
    result = pytester.runpytest_inprocess("--kubeconfig", str(kubeconfig), "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*SKIPPED*needs ambient-lab: with --kubeconfig only portable suites*"])


def test_the_engine_tests_are_marked_portable(pytester):
    pytester.makepyfile(test_engine=ENGINE_TEST, test_other=OWN_FIXTURE_TEST)
    result = pytester.runpytest_inprocess("-m", "portable", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_engine.py::test_engine", "*1/3 tests collected (2 deselected)*"])
