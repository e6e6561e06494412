"""The layout's rules (CONTRIBUTING.md), checked on the source: which package may import which,
how long a module may grow, and that nothing points outside the repository."""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("lab", "mesh", "scenarios", "tests", "bench")
MAX_LINES = 600


def _modules(*packages: str) -> list[pathlib.Path]:
    return sorted(p for pkg in packages for p in (REPO / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """Every module an import statement names (at any depth: function-level imports count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _violations(package: str, allowed) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line}: imports {name}"
        for path in _modules(package)
        for line, name in _imports(path)
        if not allowed(name)
    ]


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def test_the_lab_imports_nothing_of_the_mesh_or_the_scenarios():
    assert _violations("lab", lambda name: _top(name) not in ("mesh", "scenarios")) == []


def test_the_mesh_imports_only_the_lab_client_package():
    def allowed(name: str) -> bool:
        return _top(name) != "lab" or name == "lab" or name == "lab.client" or name.startswith("lab.client.")

    assert _violations("mesh", allowed) == []
    assert _violations("mesh", lambda name: _top(name) != "scenarios") == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_longer_than_the_limit(package):
    long = {
        str(p.relative_to(REPO)): n for p in _modules(package) if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_nothing_points_outside_the_repository():
    needles = ("facts §", "DESIGN.md", "../shared", "shared/reference")
    hits = [
        f"{p.relative_to(REPO)}:{i}"
        for p in _modules(*PACKAGES)
        if p.name != "test_layout.py"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if any(n in line for n in needles)
    ]
    assert hits == []


def test_the_portable_suites_import_nothing_of_the_lab_or_the_mesh():
    """tests/portable runs on any cluster (`pytest --kubeconfig FILE`): kubectl, the `kubernetes`
    client and the plugin's fixtures, never the lab's or the mesh's code (nor tests that import it)."""

    def allowed(name: str) -> bool:
        top = _top(name)
        return top not in ("lab", "mesh", "scenarios", "bench") and (
            top != "tests" or name == "tests" or name.startswith("tests.portable")
        )

    assert _modules("tests/portable") and _violations("tests/portable", allowed) == []
