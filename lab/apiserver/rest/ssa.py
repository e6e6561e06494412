"""Server-side apply and the field ownership it needs (`metadata.managedFields`).

`kubectl apply --server-side` sends the whole intended object (`application/apply-patch+yaml`,
`fieldManager=kubectl`); the server merges it into the live object and records, per manager, the
fields it set, so that a later apply can remove what the manager stopped applying and refuse (409)
to silently change a field another manager set. Every other write (POST, PUT, PATCH) is recorded
as an `Update` by its manager: the REST layer calls `record_update`. The model follows
sigs.k8s.io/structured-merge-diff (merge/update.go: Apply, prune, update; typed/compare.go,
tofieldset.go, merge.go) and k8s.io/apimachinery/pkg/util/managedfields/internal (conflict.go,
stripmeta.go, skipnonapplied.go), rewritten for plain dicts; see the Kubernetes docs page
"Server-Side Apply" and docs/kube-api-patch.md. The last-applied annotation of client-side apply,
which the manager `kubectl` keeps up to date and may take fields over from: lastapplied.py.

Simplified, on purpose:
- The schema is a table, not OpenAPI: lists with a strategic merge key (strategic.MERGE_RULES) are
  associative (`k:{...}`; container and Service ports key on port+protocol, protocol defaulting to
  TCP), primitive merge lists are sets (`v:`), a few selectors are atomic, every other list is
  atomic and every map granular. Custom kinds (Istio, Gateway API) get the metadata rules only.
- A list whose items miss a key field or repeat a key is handled as atomic (upstream: an error).
- One API version per kind: no conversion of managed sets between versions.
- An Update entry marks new maps and lists as owned (`.`) except top-level fields and a few
  always-present Go structs (metadata, spec, template, strategy...), approximating zero values.
- Pruning keeps a map or list while anyone owns something in it, for every field name (upstream:
  struct fields only, not the keys of a map of maps).
- Not done: capping Update managers at 10, `status` through apply (the main resource ignores it).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from lab.apiserver.rest import lastapplied
from lab.apiserver.rest.strategic import MERGE_RULES, METADATA_RULES

APPLY, UPDATE = "Apply", "Update"
BEFORE_FIRST_APPLY = "before-first-apply"  # who owns what an object had before its first apply

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


class ApplyError(ValueError):
    """An apply request refused before merging (400 BadRequest)."""

    def __init__(self, message: str, code: int = 400, reason: str = "BadRequest"):
        super().__init__(message)
        self.message, self.code, self.reason = message, code, reason


@dataclass(frozen=True)
class Conflict:
    field: str  # `.spec.replicas`, `.spec.template.spec.containers[name="x"].image`
    manager: str  # `"kubectl-client-side-apply" using apps/v1`


class ApplyConflict(Exception):
    """409: the apply changes fields other managers own; `details` is the Status's (FieldManagerConflict)."""

    code, reason = 409, "Conflict"

    def __init__(self, conflicts: list[Conflict]):
        self.conflicts = conflicts
        if len(conflicts) == 1:
            message = f"Apply failed with 1 conflict: conflict with {conflicts[0].manager}: {conflicts[0].field}"
        else:
            lines: list[str] = []
            for manager in sorted({c.manager for c in conflicts}):
                lines.append(f"conflicts with {manager}:")
                lines += [f"- {c.field}" for c in conflicts if c.manager == manager]
            message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = {
            "causes": [
                {"reason": "FieldManagerConflict", "message": f"conflict with {c.manager}", "field": c.field}
                for c in conflicts
            ]
        }


@dataclass
class _Entry:
    manager: str
    operation: str
    api_version: str
    time: str
    subresource: str = ""
    fields: set[Path] = field(default_factory=set)

    @property
    def ident(self) -> tuple[str, str, str, str]:
        """BuildManagerIdentifier: appliers are one manager whatever apiVersion they used."""
        return (self.manager, self.operation, "" if self.operation == APPLY else self.api_version, self.subresource)

    def describe(self) -> str:
        out = json.dumps(self.manager)
        if self.subresource:
            out += f" with subresource {json.dumps(self.subresource)}"
        return out + (f" using {self.api_version}" if self.operation == UPDATE else "")


@dataclass
class _Diff:
    added: set[Path] = field(default_factory=set)
    modified: set[Path] = field(default_factory=set)
    removed: set[Path] = field(default_factory=set)


def manager_name(field_manager: str | None, user_agent: str) -> str:
    """The manager a write is recorded under: `fieldManager`, else the User-Agent before its first `/`
    (printable characters, at most 128: managerOrUserAgent in the apiserver's handlers)."""
    if field_manager:
        return field_manager
    out = ""
    for ch in user_agent.split("/", 1)[0]:
        if not ch.isprintable():
            continue
        if len((out + ch).encode()) > 128:
            break
        out += ch
    return out


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def apply(
    live: dict[str, Any] | None, applied: Mapping[str, Any], manager: str, force: bool, *, now: str | None = None
) -> dict[str, Any]:
    """The object after MANAGER applies APPLIED to LIVE (None: create), with managedFields updated.

    Raises ApplyConflict (409) when the apply would change fields other managers own, unless FORCE
    (then they lose those fields); ApplyError (400) for an applied object carrying managedFields.
    """
    if (applied.get("metadata") or {}).get("managedFields") is not None:
        raise ApplyError("metadata.managedFields must be nil")
    config = copy.deepcopy(dict(applied))
    config.pop("status", None)  # the main resource resets status: apply does not set it
    schema = _Schema(str(config.get("kind") or (live or {}).get("kind") or ""))
    stamp = now or now_rfc3339()
    entries: dict[tuple[str, str, str, str], _Entry] = {}
    base: dict[str, Any] = {}
    if live is not None:
        base = copy.deepcopy(live)
        entries = _decode_entries(live)
        if not entries:  # fields set before anyone applied belong to a placeholder updater
            first = schema.diff({}, base).added
            if first:
                e = _Entry(BEFORE_FIRST_APPLY, UPDATE, str(live.get("apiVersion", "")), stamp, "", first)
                entries[e.ident] = e
    merged = schema.merge(base, config, "")
    _drop_nulls(merged)
    mine = _Entry(manager, APPLY, str(config.get("apiVersion", "")), stamp, "", schema.field_set(config))
    previous = entries.get(mine.ident)
    entries[mine.ident] = mine
    if previous is not None:  # prune: what it applied last time, does not now, and nobody else owns
        owned: set[Path] = set().union(*(e.fields for e in entries.values()))
        gone = previous.fields - _with_holders(owned)
        for path in sorted(gone, key=len):
            if not any(path[:i] in gone for i in range(1, len(path))):  # a removed item takes its fields
                schema.remove(merged, path, keep=lambda p: p in owned or schema.has(config, p))
    diff = schema.diff(live or {}, merged)
    changed = diff.modified | diff.added
    others = [e for e in entries.values() if e.ident != mine.ident]
    clashes = [(p, e) for e in others for p in e.fields & changed]
    if clashes and not force and live is not None and manager == lastapplied.MANAGER:
        allowed = _held_by_last_applied(live, schema)  # lastappliedmanager.go: then retried with force
        clashes = [(p, e) for p, e in clashes if p not in allowed]
        force = not clashes
    if clashes and not force:
        raise ApplyConflict(
            sorted({Conflict(path_string(p), e.describe()) for p, e in clashes}, key=lambda c: (c.manager, c.field))
        )
    for e in others:
        e.fields -= changed | diff.removed
    if previous is not None and previous.fields == mine.fields and not changed and not diff.removed:
        mine.time = previous.time  # a no-op apply leaves the entry as it was
    lastapplied.rewrite(merged, applied, manager)
    return _with_entries(merged, entries.values())


def _with_holders(paths: set[Path]) -> set[Path]:
    """PATHS and the fields holding them (EnsureNamedFieldsAreMembers): a map or list someone owns
    something in is not pruned, even when the pruning applier owned it whole (`.`) before."""
    return paths | {p[:i] for p in paths for i in range(1, len(p)) if p[i - 1][0] == "f"}


def _held_by_last_applied(live: Mapping[str, Any], schema: _Schema) -> set[Path]:
    """The fields the last-applied annotation of LIVE sets to their live values."""
    recorded = lastapplied.recorded(live)
    if recorded is None:
        return set()
    d = schema.diff(recorded, live)
    return schema.field_set(recorded) - d.added - d.modified - d.removed


def record_update(
    old: dict[str, Any] | None, new: Mapping[str, Any], manager: str, *, subresource: str = "", now: str | None = None
) -> dict[str, Any]:
    """NEW with managedFields recording a non-apply write (POST: OLD is None; PUT, PATCH) by MANAGER.

    The fields the write added or changed move to MANAGER (updates always win); removed fields
    leave every manager. As in Kubernetes: managedFields sent in NEW replace the bookkeeping, `[]`
    resets it, and an existing object that never had any is not tracked until it is applied.
    """
    out = copy.deepcopy(dict(new))
    md = out.setdefault("metadata", {})
    sent = md.get("managedFields")
    if not subresource and sent == []:
        md.pop("managedFields", None)
        return out
    entries = _decode_entries(out if (sent and not subresource) else (old or {}))
    if old is not None and not entries:
        md.pop("managedFields", None)
        return out
    schema = _Schema(str(out.get("kind") or ""), subresource)
    diff = schema.diff(old or {}, out)
    taken = diff.modified | diff.added
    me = _Entry(manager, UPDATE, str(out.get("apiVersion", "")), now or now_rfc3339(), subresource)
    for e in entries.values():
        if e.ident != me.ident:
            e.fields -= taken | diff.removed
    if taken:
        previous = entries.get(me.ident)
        me.fields = ((previous.fields - diff.removed) if previous else set()) | taken
        entries[me.ident] = me
    elif me.ident in entries:
        entries[me.ident].fields -= diff.removed
    return _with_entries(out, entries.values())


def managers(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """For tests and `describe`: `manager/operation` → {"fields": [path strings], ...the entry}."""
    return {
        f"{e.manager}/{e.operation}": {
            "fields": sorted(path_string(p) for p in e.fields),
            "apiVersion": e.api_version,
            "subresource": e.subresource,
        }
        for e in _decode_entries(obj).values()
    }


# Paths and their encodings ---------------------------------------------------------------------


def _compact(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def path_string(path: Path) -> str:
    """fieldpath.Path.String: `.spec.ports[port=80,protocol="TCP"].name`, `.metadata.finalizers[="x"]`."""
    out = []
    for kind, v in path:
        if kind == "f":
            out.append("." + v)
        elif kind == "k":
            out.append("[" + ",".join(f"{k}={_compact(x)}" for k, x in json.loads(v).items()) + "]")
        elif kind == "v":
            out.append(f"[={v}]")
        else:
            out.append(f"[{v}]")
    return "".join(out)


def _pe_key(pe: PE) -> str:
    return f"{pe[0]}:{pe[1]}"


def _encode(paths: Iterable[Path]) -> dict[str, Any]:
    """A set of paths → the FieldsV1 trie (`.` marks a node that is itself owned)."""
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for pe in path:
            node = node.setdefault(_pe_key(pe), {})
        node["."] = {}

    def finish(node: dict[str, Any]) -> dict[str, Any]:
        if list(node) == ["."]:
            return {}
        order = "fkvi"
        keys = sorted(node, key=lambda k: (-1, "") if k == "." else (order.find(k[0]), k))
        return {k: {} if k == "." else finish(node[k]) for k in keys}

    return finish(root)


def _decode(node: Mapping[str, Any], prefix: Path, out: set[Path]) -> None:
    for k, v in node.items():
        if k == ".":
            out.add(prefix)
            continue
        kind, _, raw = k.partition(":")
        if kind not in ("f", "k", "v", "i") or not _:
            continue
        if kind in ("k", "v"):
            try:
                raw = _compact(json.loads(raw))
            except ValueError:
                continue
        child = prefix + ((kind, raw),)
        if isinstance(v, Mapping) and v:
            _decode(v, child, out)
        else:
            out.add(child)


def _decode_entries(obj: Mapping[str, Any]) -> dict[tuple[str, str, str, str], _Entry]:
    entries: dict[tuple[str, str, str, str], _Entry] = {}
    for raw in (obj.get("metadata") or {}).get("managedFields") or []:
        if not isinstance(raw, Mapping) or not raw.get("manager") or raw.get("operation") not in (APPLY, UPDATE):
            continue
        fields: set[Path] = set()
        _decode(raw.get("fieldsV1") or {}, (), fields)
        e = _Entry(
            str(raw["manager"]),
            str(raw["operation"]),
            str(raw.get("apiVersion", "")),
            str(raw.get("time", "")),
            str(raw.get("subresource", "")),
            fields,
        )
        entries[e.ident] = e
    return entries


def _with_entries(obj: dict[str, Any], entries: Iterable[_Entry]) -> dict[str, Any]:
    """OBJ with ENTRIES (the non-empty ones) as metadata.managedFields, in Kubernetes' order."""
    kept = sorted(
        (e for e in entries if e.fields), key=lambda e: (e.operation, e.time, e.manager, e.api_version, e.subresource)
    )
    md = obj.setdefault("metadata", {})
    if not kept:
        md.pop("managedFields", None)
        return obj
    md["managedFields"] = [
        {
            "manager": e.manager,
            "operation": e.operation,
            "apiVersion": e.api_version,
            "time": e.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": _encode(e.fields),
            **({"subresource": e.subresource} if e.subresource else {}),
        }
        for e in kept
    ]
    return obj


def _drop_nulls(obj: dict[str, Any]) -> None:
    """Nulls an apply sets leave the object (typed decoding drops them in Kubernetes)."""
    for k in [k for k, v in obj.items() if v is None]:
        del obj[k]
    for v in obj.values():
        if isinstance(v, dict):
            _drop_nulls(v)


def _child(spath: str, key: str) -> str:
    return f"{spath}.{key}" if spath else key


# The schema-driven walks -------------------------------------------------------------------------


class _Schema:
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
            return None if any(v is None for v in values.values()) else ("k", _compact(values))
        if spath in self.sets and not isinstance(item, (dict, list)):
            return ("v", _compact(item))
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

    def diff(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> _Diff:
        """Compare: leaves added, modified, removed; maps, lists and items that appeared or went."""
        d = _Diff()
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

    def _diff(self, old: Any, new: Any, spath: str, path: Path, d: _Diff) -> None:
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
