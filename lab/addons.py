"""Add-ons: what other packages give the lab without the lab importing them.

An add-on is a module named by an entry point in the group `ambient_lab.addons` (the mesh names
`mesh.addon` in pyproject.toml), as a Kubernetes cluster learns its add-ons from manifests and
webhooks rather than from its own source. The lab reads these optional module attributes:

- `NAME`: what a topology lists under `install:` to have it installed at start.
- `install_manifest() -> str`: the YAML applied (through the lab's own API) at start.
- `VALIDATORS`: {kind: fn(obj) -> [(field, problem)]}: admission checks (the add-on's webhook).
- `WARNERS`: {kind: fn(obj) -> [(field, warning)]}: what `apply` prints beside accepting.
- `add_cli_verbs(subparsers, make_parser)`: verbs the `lab` command line gains
  (`make_parser(subparsers, name, help, **kw)` builds one as the lab's own verbs are built).
"""

from __future__ import annotations

import functools
import importlib.metadata
from types import ModuleType
from typing import Any, Callable, Mapping

GROUP = "ambient_lab.addons"
BUILTIN = ("dns",)  # installed by the lab itself (lab/manifests)


class AddonError(Exception):
    pass


@functools.cache
def load_all() -> tuple[ModuleType, ...]:
    """The installed add-ons, by name (imported once per process)."""
    found = []
    for ep in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            module = ep.load()
        except Exception as e:  # an add-on that cannot load is named, not half-used
            raise AddonError(f"add-on {ep.name} ({ep.value}) does not load: {e}") from e
        found.append(module)
    return tuple(found)


def names() -> tuple[str, ...]:
    """What a topology may list under `install:`."""
    return BUILTIN + tuple(getattr(a, "NAME") for a in load_all() if hasattr(a, "NAME"))


def install_manifest(name: str) -> str:
    for addon in load_all():
        if getattr(addon, "NAME", None) == name and hasattr(addon, "install_manifest"):
            return str(addon.install_manifest())
    raise AddonError(f"no add-on installs {name!r} (installed add-ons: {', '.join(names())})")


def _merged(attribute: str) -> dict[str, Callable[[Mapping[str, Any]], list[tuple[str, str]]]]:
    merged: dict[str, Callable[[Mapping[str, Any]], list[tuple[str, str]]]] = {}
    for addon in load_all():
        merged.update(getattr(addon, attribute, {}))
    return merged


def validators() -> dict[str, Callable[[Mapping[str, Any]], list[tuple[str, str]]]]:
    return _merged("VALIDATORS")


def warners() -> dict[str, Callable[[Mapping[str, Any]], list[tuple[str, str]]]]:
    return _merged("WARNERS")


def add_cli_verbs(subparsers: Any, make_parser: Callable[..., Any]) -> None:
    for addon in load_all():
        if hasattr(addon, "add_cli_verbs"):
            addon.add_cli_verbs(subparsers, make_parser)
