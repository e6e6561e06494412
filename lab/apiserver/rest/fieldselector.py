"""Kubernetes field selectors (`fieldSelector=metadata.name=x,status.phase!=Running`).

Kept apart from label selectors because the rules differ: only `=`, `==` and `!=`, values compared
as strings, and each kind allows only a few fields (kube-apiserver refuses any other with 400
"field label not supported"). The fields are the ones the kube-apiserver registers for the kinds the
lab serves (pkg/registry/core/pod/strategy.go `ToSelectableFields`, and the like for events,
namespaces, nodes, secrets, replicasets); custom kinds get only metadata.name and
metadata.namespace. Used by WATCH here and meant for LIST too, so both filter alike.
"""

from __future__ import annotations

from typing import Any, Callable

from lab.apiserver import kinds

Matcher = Callable[[dict], bool]

_BUILTIN_GROUPS = ("", "apps", "admissionregistration.k8s.io")
_COMMON = ("metadata.name", "metadata.namespace")
_BY_KIND: dict[str, tuple[str, ...]] = {
    "Pod": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "Event": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
    "Secret": ("type",),
    "ReplicaSet": ("status.replicas",),
}


class FieldSelectorError(ValueError):
    """A selector kube-apiserver answers with 400 BadRequest; the message is its wording."""


def _value(obj: dict, field: str) -> str:
    """The field as kube-apiserver compares it: a string ("" when absent, booleans lower case)."""
    if field == "source" and obj.get("kind") == "Event":
        return str((obj.get("source") or {}).get("component") or "")
    if field == "spec.hostNetwork":
        return "true" if (obj.get("spec") or {}).get("hostNetwork") else "false"
    if field == "spec.unschedulable":
        return "true" if (obj.get("spec") or {}).get("unschedulable") else "false"
    cur: Any = obj
    for part in field.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def _split(text: str, sep: str) -> list[str]:
    """TEXT split at unescaped SEP (a backslash escapes the next character, kept for later)."""
    parts, cur, escaped = [], [], False
    for ch in text:
        if escaped:
            cur += ["\\", ch]
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if escaped:
        raise FieldSelectorError(f"invalid field selector: {text!r}: trailing backslash")
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out, escaped = [], False
    for ch in text:
        if escaped or ch != "\\":
            out.append(ch)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def _term(term: str) -> tuple[str, str, str]:
    """(field, operator, value) of one `a=b`, `a==b` or `a!=b`, honouring escapes."""
    i = 0
    while i < len(term):
        ch = term[i]
        if ch == "\\":
            i += 2
            continue
        if term.startswith("!=", i):
            return term[:i], "!=", _unescape(term[i + 2 :])
        if term.startswith("==", i):
            return term[:i], "=", _unescape(term[i + 2 :])
        if ch == "=":
            return term[:i], "=", _unescape(term[i + 1 :])
        i += 1
    raise FieldSelectorError(f"invalid selector: '{term}'; can't understand '{term}'")


def _builtin(kind: str) -> bool:
    """Whether KIND is one of Kubernetes' own (else a custom resource, with CRD wording)."""
    k = kinds.get(kind)
    return k is None or k.group in _BUILTIN_GROUPS


def parse(kind: str, text: str | None) -> Matcher | None:
    """A predicate for KIND's objects, or None when TEXT selects everything."""
    if not text or not text.strip():
        return None
    allowed = _COMMON + _BY_KIND.get(kind, ())
    terms: list[tuple[str, str, str]] = []
    for raw in _split(text, ","):
        if not raw.strip():
            continue
        field, op, value = _term(raw.strip())
        field = field.strip()
        if field not in allowed:
            raise FieldSelectorError(
                f"field label not supported: {field}"
                if _builtin(kind)
                else f'"{field}" is not a known field selector: only "metadata.name", "metadata.namespace"'
            )
        terms.append((field, op, value))
    if not terms:
        return None

    def matches(obj: dict) -> bool:
        return all((_value(obj, f) == v) == (op == "=") for f, op, v in terms)

    return matches
