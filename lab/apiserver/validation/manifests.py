"""`lab apply -f` input: YAML text in, validated Kubernetes objects out, all or nothing.

The YAML parsing (documents, `kind: List`, positions) and the walk over the objects: each one's
kind is looked up in the kind registry (lab/apiserver/kinds.py), which names its checks.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Iterable, Mapping, Sequence

import yaml

from lab.apiserver import kinds
from lab.apiserver.validation.core import check_metadata
from lab.apiserver.validation.fields import Errors, ExtraCheck, ManifestError, Problem


class _ManifestLoader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]  # Any without yaml stubs
    """YAML as the API reads it: timestamps stay strings, so objects remain plain JSON."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _non_string_key(value: Any, path: str = "") -> str | None:
    """The path of the first mapping key that JSON cannot carry, or None."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}.{key}".lstrip(".") if path else str(key)
            found = _non_string_key(item, f"{path}.{key}" if path else key)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _non_string_key(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"


def _documents(text: str, source: str) -> list[tuple[str, dict[str, Any]]]:
    """(position, object) for every object in TEXT; `kind: List` items are expanded."""
    found: list[tuple[str, dict[str, Any]]] = []
    problems: list[Problem] = []
    number = 0
    stream = yaml.load_all(text, Loader=_ManifestLoader)
    while True:
        try:
            document = next(stream)
        except StopIteration:
            break
        except yaml.YAMLError as e:
            problems.append(Problem(f"document {number + 1}", "", "", _yaml_problem(e)))
            break
        number += 1
        where = f"document {number}"
        if document is None:
            continue
        if not isinstance(document, dict):
            problems.append(
                Problem(
                    where,
                    "",
                    "",
                    f"expected a Kubernetes object (a mapping with apiVersion and kind), got {_yaml_type(document)}",
                )
            )
            continue
        bad_key = _non_string_key(document)
        if bad_key:
            problems.append(Problem(where, "", bad_key, "mapping keys must be strings"))
            continue
        if document.get("kind") == "List" and document.get("apiVersion") == "v1":
            items = document.get("items") or []
            if not isinstance(items, list):
                problems.append(Problem(where, "List", "items", "must be a list"))
                continue
            for i, item in enumerate(items, 1):
                if isinstance(item, dict):
                    found.append((f"{where}, item {i}", item))
                else:
                    problems.append(
                        Problem(f"{where}, item {i}", "", "", f"expected a Kubernetes object, got {_yaml_type(item)}")
                    )
            continue
        found.append((where, document))
    if problems:
        raise ManifestError(source, problems)
    return found


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    return f"the value {json.dumps(value)}"


def parse_manifests(text: str, source: str) -> list[dict[str, Any]]:
    """The objects in multi-document YAML TEXT; empty documents are skipped and `kind: List`
    expands to its items. Raises ManifestError for YAML that does not parse."""
    return [obj for _, obj in _documents(text, source)]


# --- validation -------------------------------------------------------------------------------


def kind_info(api_version: str, kind: str) -> kinds.Kind | None:
    """The registry's Kind when `apply` accepts KIND in API_VERSION."""
    return kinds.for_apply(api_version, kind)


def known_kinds() -> str:
    """`Kind (apiVersion, ...)` for every kind apply accepts, for error messages."""
    return ", ".join(
        f"{k.kind} ({', '.join(k.api_versions)})" for k in sorted(kinds.KINDS, key=lambda k: k.kind) if k.appliable
    )


def _subject(obj: Mapping[str, Any], info: kinds.Kind | None) -> str:
    kind: str = obj["kind"] if isinstance(obj.get("kind"), str) else ""
    meta: Mapping[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), Mapping) else {}
    name: str = meta["name"] if isinstance(meta.get("name"), str) else ""
    if not name:
        return kind
    namespaced = info.namespaced if info else "namespace" in meta
    namespace = meta.get("namespace") or "default"
    return f"{kind} {namespace}/{name}".strip() if namespaced else f"{kind} {name}".strip()


def _normalized(obj: Mapping[str, Any], info: kinds.Kind) -> dict[str, Any]:
    copied = copy.deepcopy(dict(obj))
    meta = copied.setdefault("metadata", {})
    if info.namespaced:
        meta["namespace"] = meta.get("namespace") or "default"
    else:
        meta.pop("namespace", None)  # kubectl ignores a namespace on cluster-scoped kinds
    return copied


def _check_object(obj: Mapping[str, Any], errs: Errors) -> kinds.Kind | None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version:
        errs.required("apiVersion")
    if not kind:
        errs.required("kind")
    if not api_version or not kind:
        return None
    info = kind_info(api_version, kind)
    if info is None:
        errs.add("", f'no matches for kind "{kind}" in version "{api_version}"; known kinds: {known_kinds()}')
        return None
    check_metadata(obj, info, errs)
    if "spec" in obj and not isinstance(obj["spec"], Mapping):
        errs.invalid("spec", obj["spec"], "must be a mapping")
    elif info.validator:
        info.validator(obj, errs)
    return info


def _validate(
    entries: Sequence[tuple[str, Mapping[str, Any]]], source: str, extra: Mapping[str, ExtraCheck] | None
) -> list[dict[str, Any]]:
    problems: list[Problem] = []
    result: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str], str] = {}
    for where, obj in entries:
        errs = Errors()
        info = _check_object(obj, errs)
        subject = _subject(obj, info)
        if info is not None and not errs.items:
            normalized = _normalized(obj, info)
            meta = normalized["metadata"]
            key = (info.kind, meta.get("namespace", ""), meta["name"])
            if key in seen:
                errs.duplicate("metadata.name", meta["name"], f"also defined in {seen[key]}")
            seen.setdefault(key, where)
            check = (extra or {}).get(info.kind)
            for field, message in check(normalized) if check else []:
                errs.add(field, message)
            result.append(normalized)
        problems += [Problem(where, subject, field, message) for field, message in errs.items]
    if problems:
        raise ManifestError(source, problems)
    return result


def validate(
    objects: Sequence[Mapping[str, Any]], source: str, *, extra: Mapping[str, ExtraCheck] | None = None
) -> list[dict[str, Any]]:
    """Normalized copies of OBJECTS (namespace defaulted to "default" for namespaced kinds,
    dropped for cluster-scoped ones), or ManifestError listing every problem. EXTRA maps a kind
    to a function returning (field, problem) pairs for deeper checks. Problems are placed by
    position in OBJECTS; `load` places them by position in the file."""
    return _validate([(f"document {i}", obj) for i, obj in enumerate(objects, 1)], source, extra)


def load(text: str, source: str, *, extra: Mapping[str, ExtraCheck] | None = None) -> list[dict[str, Any]]:
    """parse_manifests + validate, with problems placed by document number in the file."""
    return _validate(_documents(text, source), source, extra)


def namespaces_needed(objects: Iterable[Mapping[str, Any]]) -> set[str]:
    """Namespaces the namespaced OBJECTS live in that the same apply does not create."""
    objects = list(objects)
    created = {_get_name(o) for o in objects if o.get("kind") == "Namespace"}
    needed = set()
    for obj in objects:
        info = kinds.get(obj.get("kind") or "")
        if info is not None and not info.namespaced:
            continue
        meta = obj.get("metadata") or {}
        needed.add(meta.get("namespace") or "default")
    return needed - created


def _get_name(obj: Mapping[str, Any]) -> str:
    name: str = (obj.get("metadata") or {}).get("name", "")
    return name
