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

Simplified, on purpose (and in the schema: ssa_schema.py):
- One API version per kind: no conversion of managed sets between versions.
- Pruning keeps a map or list while anyone owns something in it, for every field name (upstream:
  struct fields only, not the keys of a map of maps).
- Not done: capping Update managers at 10, `status` through apply (the main resource ignores it).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from lab.apiserver.rest import lastapplied
from lab.apiserver.rest.ssa_schema import PE, Path, Schema, compact, path_string

APPLY, UPDATE = "Apply", "Update"
BEFORE_FIRST_APPLY = "before-first-apply"  # who owns what an object had before its first apply


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
    schema = Schema(str(config.get("kind") or (live or {}).get("kind") or ""))
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


def _held_by_last_applied(live: Mapping[str, Any], schema: Schema) -> set[Path]:
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
    schema = Schema(str(out.get("kind") or ""), subresource)
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


# FieldsV1 and managedFields entries ---------------------------------------------------------------


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
                raw = compact(json.loads(raw))
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
