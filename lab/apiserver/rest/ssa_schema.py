"""Server-side apply's schema: which lists are keyed, sets or atomic for a kind, and the walks
that need it (field sets, compare, merge, remove), over plain dicts. The managedFields
bookkeeping and apply itself are ssa.py's; this is structured-merge-diff's typed package
(typed/compare.go, tofieldset.go, merge.go) and the path syntax of its fieldpath package.

Simplified, on purpose:
- The schema is a table, not OpenAPI: lists with a strategic merge key (strategic.MERGE_RULES) are
  associative (`k:{...}`; container and Service ports key on port+protocol, protocol defaulting to
  TCP), primitive merge lists are sets (`v:`), a few selectors are atomic, every other list is
  atomic and every map granular. Custom kinds (Istio, Gateway API) get the metadata rules only.
- A list whose items miss a key field or repeat a key is handled as atomic (upstream: an error).
- An Update entry marks new maps and lists as owned (`.`) except top-level fields and a few
  always-present Go structs (metadata, spec, template, strategy...), approximating zero values.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from lab.apiserver.rest.strategic import MERGE_RULES, METADATA_RULES

PE = tuple[str, str]  # a path element: ("f", field) | ("k", '{"name":"x"}') | ("v", json) | ("i", index)
Path = tuple[PE, ...]
_MISSING: Any = object()

# Paths no manager ever owns (stripmeta.go).
_STRIPPED: frozenset[Path] = frozenset(
    {(("f", "apiVersion"),), (("f", "kind"),), (("f", "metadata"),)}
    | {
        (("f", "metadata"), ("f", name))
        for name in (
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
        )
    }
)
_KEYS_BY_MERGE_KEY = {
    "containerPort": ("containerPort", "protocol"),
    "port": ("port", "protocol"),
    "topologyKey": ("topologyKey", "whenUnsatisfiable"),
}  # listMapKey differs from patchMergeKey
_KEY_DEFAULTS = {"protocol": "TCP"}
_ATOMIC: dict[str, frozenset[str]] = {  # +structType=atomic / +mapType=atomic that the lab's kinds carry
    "Pod": frozenset({"spec.nodeSelector"}),
    "Service": frozenset({"spec.selector"}),
    **{
        k: frozenset({"spec.selector", "spec.template.spec.nodeSelector"})
        for k in ("Deployment", "ReplicaSet", "DaemonSet")
    },
}
_ZERO_STRUCTS = frozenset(
    {"metadata", "spec", "status", "template", "strategy", "updateStrategy", "resources", "containers"}
)


@dataclass
class Diff:
    added: set[Path] = field(default_factory=set)
    modified: set[Path] = field(default_factory=set)
    removed: set[Path] = field(default_factory=set)


# Paths --------------------------------------------------------------------------------------------


def compact(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def path_string(path: Path) -> str:
    """fieldpath.Path.String: `.spec.ports[port=80,protocol="TCP"].name`, `.metadata.finalizers[="x"]`."""
    out = []
    for kind, v in path:
        if kind == "f":
            out.append("." + v)
        elif kind == "k":
            out.append("[" + ",".join(f"{k}={compact(x)}" for k, x in json.loads(v).items()) + "]")
        elif kind == "v":
            out.append(f"[={v}]")
        else:
            out.append(f"[{v}]")
    return "".join(out)


def _child(spath: str, key: str) -> str:
    return f"{spath}.{key}" if spath else key


# The schema-driven walks -------------------------------------------------------------------------


class Schema:
    """One kind's list types and atomic fields, and the walks that need them."""

    def __init__(self, kind: str, subresource: str = ""):
        rules = MERGE_RULES.get(kind, METADATA_RULES)
        self.keys = {
            p: _KEYS_BY_MERGE_KEY.get(r.merge_key, (r.merge_key,)) for p, r in rules.items() if r.merge_key is not None
        }
        self.sets = {p for p, r in rules.items() if r.merge_key is None}
        self.atomic = _ATOMIC.get(kind, frozenset()) | {"metadata.ownerReferences[]"}
        self.status_only = subresource == "status"
        self.zero_structs = _ZERO_STRUCTS if kind in MERGE_RULES else frozenset({"metadata", "spec", "status"})

    def tracked(self, path: Path) -> bool:
        """Whether ownership of PATH is recorded: never the stripped metadata; status only via /status."""
        if path in _STRIPPED:
            return False
        return (path[:1] == (("f", "status"),)) == self.status_only

    def item_pe(self, spath: str, item: Any) -> PE | None:
        """The path element of one item of the list at SPATH (None: not a keyed or set item)."""
        if spath in self.atomic:
            return None
        keys = self.keys.get(spath)
        if keys is not None:
            if not isinstance(item, dict):
                return None
            values = {k: item.get(k, _KEY_DEFAULTS.get(k)) for k in keys}
            return None if any(v is None for v in values.values()) else ("k", compact(values))
        if spath in self.sets and not isinstance(item, (dict, list)):
            return ("v", compact(item))
        return None

    def item_keys(self, spath: str, items: list[Any]) -> list[PE] | None:
        """The path elements of a granular list's items; None: handle the list as atomic."""
        pes = [self.item_pe(spath, item) for item in items]
        if (spath not in self.keys and spath not in self.sets) or None in pes or len(set(pes)) != len(pes):
            return None
        return [pe for pe in pes if pe is not None]

    def field_set(self, obj: Mapping[str, Any]) -> set[Path]:
        """ToFieldSet: the leaves OBJ sets, its keyed list items and set values, its empty maps."""
        out: set[Path] = set()
        self._fields(obj, "", (), out)
        return {p for p in out if self.tracked(p)}

    def _fields(self, v: Any, spath: str, path: Path, out: set[Path]) -> None:
        if isinstance(v, dict) and v and spath not in self.atomic:
            for k, x in v.items():
                self._fields(x, _child(spath, k), path + (("f", k),), out)
            return
        if isinstance(v, list) and (pes := self.item_keys(spath, v)) is not None:
            for pe, item in zip(pes, v):
                out.add(path + (pe,))
                if pe[0] == "k" and (spath + "[]") not in self.atomic and isinstance(item, dict):
                    for k, x in item.items():
                        self._fields(x, _child(spath + "[]", k), path + (pe, ("f", k)), out)
            return
        if path:
            out.add(path)

    def diff(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> Diff:
        """Compare: leaves added, modified, removed; maps, lists and items that appeared or went."""
        d = Diff()
        self._diff(dict(old), dict(new), "", (), d)
        for s in (d.added, d.modified, d.removed):
            s.difference_update([p for p in s if not self.tracked(p)])
        return d

    def _granular(self, old: Any, new: Any, spath: str) -> str | None:
        present = [x for x in (old, new) if x is not _MISSING]
        if spath in self.atomic or not present or all(x == {} or x == [] for x in present):
            return None
        if all(isinstance(x, dict) for x in present):
            return "map"
        if all(isinstance(x, list) and self.item_keys(spath, x) is not None for x in present):
            return "list"
        return None

    def _diff(self, old: Any, new: Any, spath: str, path: Path, d: Diff) -> None:
        shape = self._granular(old, new, spath)
        if shape is None:
            if old is _MISSING:
                d.added.add(path)
            elif new is _MISSING:
                d.removed.add(path)
            elif not _equal(old, new):
                d.modified.add(path)
            return
        if shape == "map":
            lm = {} if old is _MISSING else old
            rm = {} if new is _MISSING else new
            for k in list(lm) + [k for k in rm if k not in lm]:
                self._diff(lm.get(k, _MISSING), rm.get(k, _MISSING), _child(spath, k), path + (("f", k),), d)
        else:
            li = self._index(old, spath)
            ri = self._index(new, spath)
            for pe in list(li) + [pe for pe in ri if pe not in li]:
                self._diff(li.get(pe, _MISSING), ri.get(pe, _MISSING), spath + "[]", path + (pe,), d)
        if len(path) > 1 and not (path[-1][0] == "f" and path[-1][1] in self.zero_structs):
            if old is _MISSING:
                d.added.add(path)
            elif new is _MISSING:
                d.removed.add(path)

    def _index(self, items: Any, spath: str) -> dict[PE, Any]:
        if items is _MISSING:
            return {}
        return dict(zip(self.item_keys(spath, items) or [], items))

    def merge(self, live: Any, config: Any, spath: str) -> Any:
        """live.Merge(config): maps merge, keyed lists merge item by item, the rest is replaced."""
        if live is _MISSING:
            return copy.deepcopy(config)
        if isinstance(live, dict) and isinstance(config, dict) and spath not in self.atomic:
            out = dict(live)
            for k, v in config.items():
                out[k] = self.merge(live.get(k, _MISSING), v, _child(spath, k))
            return out
        if isinstance(live, list) and isinstance(config, list):
            lpes, rpes = self.item_keys(spath, live), self.item_keys(spath, config)
            if lpes is not None and rpes is not None:
                return self._merge_items(live, config, lpes, rpes, spath + "[]")
        return copy.deepcopy(config)

    def _merge_items(
        self, live: list[Any], config: list[Any], lpes: list[PE], rpes: list[PE], item_spath: str
    ) -> list[Any]:
        """Items of both in the config's order; items only live keep their place among them."""
        lidx, ridx = dict(zip(lpes, live)), dict(zip(rpes, config))
        shared = [pe for pe in rpes if pe in lidx]
        out: list[Any] = []
        done: set[PE] = set()
        i = j = 0
        nxt = shared.pop(0) if shared else None
        while i < len(live) or j < len(config):
            if i < len(live) and j < len(config):
                if lpes[i] == rpes[j]:
                    out.append(self.merge(live[i], config[j], item_spath))
                    done.add(rpes[j])
                    i, j = i + 1, j + 1
                    nxt = shared.pop(0) if shared else None
                    continue
                if lpes[i] in ridx and nxt is not None and nxt != lpes[i]:
                    i += 1
                    continue
            if i < len(live):
                if lpes[i] not in ridx:
                    out.append(live[i])
                    i += 1
                    continue
                if lpes[i] in done:
                    i += 1
            if j < len(config):
                pe = rpes[j]
                done.add(pe)
                out.append(self.merge(lidx.get(pe, _MISSING), config[j], item_spath))
                j += 1
                if nxt == pe:
                    nxt = shared.pop(0) if shared else None
        return out

    def remove(self, obj: dict[str, Any], path: Path, keep: Callable[[Path], bool]) -> None:
        """Delete the field, item or set value at PATH, and the maps and lists this empties unless
        KEEP(their path). An item's key fields stay: they are what the item is known by."""
        if len(path) > 1 and path[-1][0] == "f" and path[-2][0] == "k" and path[-1][1] in json.loads(path[-2][1]):
            return
        trail: list[tuple[Any, PE, str]] = []  # (container, element in it, container's schema path)
        node: Any = obj
        spath = ""
        for pe in path:
            trail.append((node, pe, spath))
            node, spath = self._step(node, pe, spath)
            if node is _MISSING:
                return
        while trail:
            container, pe, cspath = trail.pop()
            self._delete(container, pe, cspath)
            if container is obj or container or keep(path[: len(trail)]):
                return

    def has(self, obj: Any, path: Path) -> bool:
        node, spath = obj, ""
        for pe in path:
            node, spath = self._step(node, pe, spath)
            if node is _MISSING:
                return False
        return True

    def _step(self, node: Any, pe: PE, spath: str) -> tuple[Any, str]:
        if pe[0] == "f":
            if isinstance(node, dict) and pe[1] in node:
                return node[pe[1]], _child(spath, pe[1])
            return _MISSING, spath
        if isinstance(node, list):
            for item in node:
                if self.item_pe(spath, item) == pe:
                    return item, spath + "[]"
        return _MISSING, spath

    def _delete(self, container: Any, pe: PE, spath: str) -> None:
        if pe[0] == "f":
            container.pop(pe[1], None)
        elif isinstance(container, list):
            container[:] = [item for item in container if self.item_pe(spath, item) != pe]


def _equal(a: Any, b: Any) -> bool:
    """JSON equality (booleans apart from numbers)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b) and isinstance(a, str) == isinstance(b, str)
