"""`get -o yaml`, `-o json` and `-o name`: objects as kubectl writes them out whole."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import yaml

from lab.apiserver import kinds
from lab.apiserver.tables import dig


class _BlockDumper(yaml.SafeDumper):
    """Block style like kubectl's YAML; multi-line strings as `|` literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _represent_str)


def to_yaml(obj: Any) -> str:
    """Block-style YAML, keys in insertion order, long strings never folded."""
    return yaml.dump(
        obj, Dumper=_BlockDumper, default_flow_style=False, sort_keys=False, allow_unicode=True, width=2**31 - 1
    )


def to_json(obj: Any) -> str:
    """JSON indented by 4, as `kubectl get -o json` prints it."""
    return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"


def resource_name(kind: str, api_version: str | None = None) -> str:
    """kubectl's `kind.group` prefix for `-o name`: `pod`, `deployment.apps`, ... (the group from
    API_VERSION, else the kind registry's)."""
    if api_version:
        return kinds.qualified(kind, api_version.rpartition("/")[0])
    known = kinds.find(kind)
    return kinds.qualified(kind, known.group if known else "")


def names(kind: str, objects: Sequence[Mapping]) -> str:
    """`-o name`: one `resource/name` line per object."""
    return "".join(
        f"{resource_name(obj.get('kind') or kind, obj.get('apiVersion'))}/{dig(obj, 'metadata', 'name', default='')}\n"
        for obj in objects
    )
