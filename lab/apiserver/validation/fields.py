"""What every kind's checks share: the problem records and the API server's wording.

Checks add (field, message) pairs to an `Errors`; its helpers word them as the API server does
(`Required value`, `Invalid value: X: why`, `Unsupported value: ...`), and the small field checks
here (ports, protocols, string lists, labels) are the ones several kinds need.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from lab.apiserver.names import validate_label_key, validate_label_value

ExtraCheck = Callable[[dict[str, Any]], "list[tuple[str, str]]"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where (document, object), which field, and what."""

    document: str  # "document 2" or "document 2, item 1"
    subject: str  # "Deployment ambient-apps/httpbin", "" when unknown
    field: str  # "spec.replicas", "" for the whole document
    message: str

    def line(self, source: str) -> str:
        where = f"{source}: {self.document}" + (f" ({self.subject})" if self.subject else "")
        return f"error: {where}: " + (f"{self.field}: " if self.field else "") + self.message


class ManifestError(ValueError):
    """The manifests were refused; str() is the first problem, one line, kubectl style."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(str(self))

    def lines(self) -> list[str]:
        return [p.line(self.source) for p in self.problems]

    def __str__(self) -> str:
        first = self.problems[0].line(self.source)
        more = len(self.problems) - 1
        return first + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


class Errors:
    """Collects (field, message) pairs for one object, worded like the API server's."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append((field, message))

    def required(self, field: str, detail: str = "") -> None:
        self.add(field, "Required value" + (f": {detail}" if detail else ""))

    def invalid(self, field: str, value: Any, reason: str) -> None:
        self.add(field, f"Invalid value: {show(value)}: {reason}")

    def unsupported(self, field: str, value: Any, supported: Iterable[str]) -> None:
        listed = ", ".join(f'"{s}"' for s in supported)
        self.add(field, f"Unsupported value: {show(value)}: supported values: {listed}")

    def duplicate(self, field: str, value: Any, detail: str = "") -> None:
        self.add(field, f"Duplicate value: {show(value)}" + (f": {detail}" if detail else ""))


def show(value: Any) -> str:
    """A value as the message quotes it: JSON, so strings are quoted and maps stay short."""
    return json.dumps(value, separators=(", ", ": "), default=str)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def as_mapping(value: Any, field: str, errs: Errors) -> Mapping[str, Any]:
    """VALUE when it is a mapping (or absent); otherwise reports it and returns {}."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errs.invalid(field, value, "must be a mapping")
        return {}
    return value


def as_list(value: Any, field: str, errs: Errors) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        errs.invalid(field, value, "must be a list")
        return []
    return value


def unknown_fields(obj: Mapping[str, Any], known: frozenset[str], field: str, errs: Errors) -> None:
    """Strict decoding, as kubectl's server-side field validation does for typos."""
    for key in obj:
        if key not in known:
            errs.add(f"{field}.{key}", "unknown field")


def check_entry(entry: Any, field: str, errs: Errors, *, shape: str, known: frozenset[str]) -> bool:
    """A list entry that must be a mapping (SHAPE: "with name and image") of KNOWN fields only;
    True when it is a mapping, so its fields can be checked."""
    if not isinstance(entry, Mapping):
        errs.invalid(field, entry, f"must be a mapping with {shape}")
        return False
    unknown_fields(entry, known, field, errs)
    return True


def check_name(
    value: Any, rule: Callable[[str], str | None], field: str, errs: Errors, *, required: bool = False
) -> bool:
    """A name checked by RULE (lab/apiserver/names.py); True when it passes."""
    if required and not value:
        errs.required(field)
        return False
    problem = rule(value) if isinstance(value, str) else "must be a string"
    if problem:
        errs.invalid(field, value, problem)
    return problem is None


def check_port_number(value: Any, field: str, errs: Errors, *, required: bool = True) -> None:
    if value is None:
        if required:
            errs.required(field)
    elif not is_int(value):
        errs.invalid(field, value, "must be an integer")
    elif not 1 <= value <= 65535:
        errs.invalid(field, value, "must be between 1 and 65535, inclusive")


_PROTOCOLS = ("TCP", "UDP", "SCTP")


def check_protocol(value: Any, field: str, errs: Errors) -> None:
    if value is not None and value not in _PROTOCOLS:
        errs.unsupported(field, value, _PROTOCOLS)


def check_string_list(value: Any, field: str, errs: Errors) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errs.invalid(field, value, "must be a list of strings (quote numbers)")


def check_labels(labels: Any, field: str, errs: Errors) -> None:
    """Labels, and what is shaped like them (node and service selectors)."""
    for key, value in as_mapping(labels, field, errs).items():
        problem = validate_label_key(key)
        if problem:
            errs.invalid(field, key, problem)
            continue
        problem = validate_label_value(value)
        if problem:
            errs.invalid(field, value, problem)


def check_annotations(annotations: Any, field: str, errs: Errors) -> None:
    total = 0
    for key, value in as_mapping(annotations, field, errs).items():
        problem = validate_label_key(key)
        if problem:
            errs.invalid(field, key, problem)
        if not isinstance(value, str):
            errs.invalid(f"{field}[{key}]", value, "annotation values must be strings")
            continue
        total += len(str(key)) + len(value)
    if total > 256 * 1024:
        errs.add(field, "Too long: must have at most 262144 bytes")
