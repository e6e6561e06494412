"""PATCH bodies applied to an object: JSON merge patch, JSON patch, and the dispatcher by content type.

Sans-IO and all-or-nothing: every engine works on a deep copy, so a patch that fails half-way leaves
the stored object untouched (kubectl prints the error and nothing changed). Errors carry the
kube-apiserver's code and reason (k8s.io/apiserver/pkg/endpoints/handlers/patch.go): a body that
is not a patch is 400 BadRequest, a patch that cannot be applied is 422 Invalid, a patch type the
kind does not accept is 415 UnsupportedMediaType. Strategic merge lives in strategic.py; server-side
apply (`application/apply-patch+yaml`) needs a field manager and lives in ssa.py, so it is not
dispatched here. docs/kube-api-patch.md has the semantics and the upstream references.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from lab.apiserver.rest import strategic

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

MAX_JSON_PATCH_OPERATIONS = 10000  # the kube-apiserver's limit (413 beyond it)
_INDEX = re.compile(r"0|[1-9][0-9]*")


class PatchError(ValueError):
    """A patch refused as a whole; `code`/`reason`/`message` are what the Status carries."""

    def __init__(self, message: str, code: int = 422, reason: str = "Invalid"):
        super().__init__(message)
        self.message, self.code, self.reason = message, code, reason


class UnsupportedPatchType(PatchError):
    """415: the content type is not a patch type this kind accepts (strategic merge on a custom kind)."""

    def __init__(self, content_type: str, accepted: tuple[str, ...]):
        super().__init__(
            f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
            415,
            "UnsupportedMediaType",
        )
        self.content_type, self.accepted = content_type, accepted


def accepted_patch_types(kind: str) -> tuple[str, ...]:
    """The PATCH content types the kube-apiserver accepts for KIND, in its order."""
    if strategic.supports(kind):
        return (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
    return (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)


def media_type(content_type: str) -> str:
    """`application/merge-patch+json; charset=utf-8` → `application/merge-patch+json`."""
    return content_type.split(";", 1)[0].strip().lower()


def apply_patch(obj: dict[str, Any], body: Any, content_type: str, kind: str) -> dict[str, Any]:
    """OBJ patched by BODY (raw bytes/str, or already-parsed JSON) of CONTENT_TYPE; OBJ is not changed.

    Server-side apply is not a patch of the stored object but a merge with ownership: call
    `ssa.apply` for `application/apply-patch+yaml` (this raises ValueError for it, a caller bug).
    """
    mt = media_type(content_type)
    if mt == APPLY_PATCH:
        raise ValueError("server-side apply is ssa.apply(live, applied, manager, force), not a patch")
    if mt not in accepted_patch_types(kind):
        raise UnsupportedPatchType(mt, accepted_patch_types(kind))
    patch = parse_body(body)
    if mt == JSON_PATCH:
        result = json_patch(obj, patch)
    elif mt == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise PatchError("a merge patch must be a JSON object", 400, "BadRequest")
        result = merge_patch(obj, patch)
    else:
        if not isinstance(patch, dict):
            raise PatchError("a strategic merge patch must be a JSON object", 400, "BadRequest")
        try:
            result = strategic.strategic_merge_patch(obj, patch, kind)
        except strategic.StrategicMergeError as e:
            raise PatchError(e.message, e.code, e.reason) from e
    if not isinstance(result, dict):
        raise PatchError("the patched object is not a JSON object")
    return result


def parse_body(body: Any) -> Any:
    """JSON text (bytes or str) → value; anything else is taken as already parsed."""
    if isinstance(body, (bytes, bytearray, str)):
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise PatchError(f"error decoding patch: {e}", 400, "BadRequest") from e
    return body


# JSON merge patch (RFC 7386) ---------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes a key, anything else replaces."""
    return _merge(copy.deepcopy(target), patch)


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


# JSON patch (RFC 6902) and JSON pointer (RFC 6901) ----------------------------------------------


class _OpFailed(Exception):
    """One operation failed; json_patch adds which one."""


def parse_pointer(pointer: str) -> list[str]:
    """RFC 6901: `/a~1b/0` → ["a/b", "0"]; "" is the whole document."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise _OpFailed(f'JSON pointer "{pointer}" does not start with "/"')
    tokens = pointer[1:].split("/")
    for t in tokens:
        if re.search(r"~(?![01])", t):
            raise _OpFailed(f'JSON pointer "{pointer}" has an invalid escape')
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902 on a copy of DOC: every operation applies, or PatchError names the one that failed."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be an array of operations", 400, "BadRequest")
    if len(operations) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchError(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {len(operations)}",
            413,
            "RequestEntityTooLarge",
        )
    out = copy.deepcopy(doc)
    for i, op in enumerate(operations):
        name = op.get("op") if isinstance(op, dict) else None
        path = op.get("path") if isinstance(op, dict) else None
        try:
            out = _apply_op(out, op)
        except _OpFailed as e:
            raise PatchError(f"json patch operation {i} ({name} {path}): {e}") from None
    return out


def _member(op: dict[str, Any], field: str) -> Any:
    if field not in op:
        raise _OpFailed(f'missing "{field}" member')
    return op[field]


def _apply_op(doc: Any, op: Any) -> Any:
    if not isinstance(op, dict):
        raise _OpFailed("an operation must be a JSON object")
    name = _member(op, "op")
    path = _member(op, "path")
    if not isinstance(path, str):
        raise _OpFailed('"path" must be a string')
    if name == "add":
        return _add(doc, parse_pointer(path), copy.deepcopy(_member(op, "value")))
    if name == "remove":
        doc, _ = _remove(doc, parse_pointer(path))
        return doc
    if name == "replace":
        value = copy.deepcopy(_member(op, "value"))
        tokens = parse_pointer(path)
        _get(doc, tokens)  # the target must exist
        if not tokens:
            return value
        parent, last = _get(doc, tokens[:-1]), tokens[-1]
        if isinstance(parent, list):
            parent[_index(parent, last, allow_end=False)] = value
        else:
            parent[last] = value
        return doc
    if name in ("move", "copy"):
        source = _member(op, "from")
        if not isinstance(source, str):
            raise _OpFailed('"from" must be a string')
        src = parse_pointer(source)
        if name == "move":
            dst = parse_pointer(path)
            if src == dst:
                return doc
            if dst[: len(src)] == src:
                raise _OpFailed(f'cannot move "{source}" into one of its own children')
            doc, value = _remove(doc, src)
        else:
            value = copy.deepcopy(_get(doc, src))
        return _add(doc, parse_pointer(path), value)
    if name == "test":
        expected = _member(op, "value")
        actual = _get(doc, parse_pointer(path))
        if not json_equal(actual, expected):
            raise _OpFailed(f"test failed: the value is {json.dumps(actual)}, not {json.dumps(expected)}")
        return doc
    raise _OpFailed(f'unknown operation "{name}"')


def _index(arr: list[Any], token: str, allow_end: bool) -> int:
    """An array index token; `-` (one past the end) only where adding is meant."""
    if token == "-" and allow_end:
        return len(arr)
    if not _INDEX.fullmatch(token):
        raise _OpFailed(f'"{token}" is not an array index')
    i = int(token)
    if i > len(arr) or (i == len(arr) and not allow_end):
        raise _OpFailed(f"index {i} is out of bounds (length {len(arr)})")
    return i


def _get(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for t in tokens:
        if isinstance(node, dict):
            if t not in node:
                raise _OpFailed(f'no member "{t}"')
            node = node[t]
        elif isinstance(node, list):
            node = node[_index(node, t, allow_end=False)]
        else:
            raise _OpFailed(f'cannot descend into a {type(node).__name__} at "{t}"')
    return node


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _get(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise _OpFailed(f"the parent of the target is a {type(parent).__name__}, not an object or array")
    return doc


def _remove(doc: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        raise _OpFailed("cannot remove the whole document")
    parent, last = _get(doc, tokens[:-1]), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _OpFailed(f'no member "{last}"')
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, allow_end=False))
    raise _OpFailed(f"the parent of the target is a {type(parent).__name__}, not an object or array")


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, booleans apart from numbers, objects unordered, arrays ordered."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
