"""Kubernetes' name syntax (k8s.io/apimachinery/pkg/util/validation), in one place.

Object names, namespaces, port names, config keys, label keys and label values: each check returns
why a text is refused, worded as the API server words it, or None. Validation and label selectors
both use these, so a name is judged the same way wherever it appears. A leaf module: it imports
nothing of the lab, so any module may use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class _Syntax:
    """A length limit and a pattern, with the API server's message for a mismatch."""

    pattern: re.Pattern[str]
    limit: int
    rule: str

    def check(self, text: str) -> str | None:
        if len(text) > self.limit:
            return f"must be no more than {self.limit} characters"
        if not self.pattern.fullmatch(text):
            return self.rule
        return None


_LABEL_CHARS = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_NAME_CHARS = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_NAME_PART_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName', or 'my.name', or '123-abc')"
)

_DNS1123_LABEL = _Syntax(
    re.compile(_LABEL_CHARS),
    63,
    (
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
        "must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
    ),
)
_DNS1035_LABEL = _Syntax(
    re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?"),
    63,
    (
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
        "alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or 'abc-123')"
    ),
)
_DNS1123_SUBDOMAIN = _Syntax(
    re.compile(rf"{_LABEL_CHARS}(\.{_LABEL_CHARS})*"),
    253,
    (
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
        "'.', and must start and end with an alphanumeric character (e.g. 'example.com')"
    ),
)
_NAME_PART = _Syntax(_NAME_CHARS, 63, _NAME_PART_RULE)
_LABEL_VALUE = _Syntax(
    _NAME_CHARS,
    63,
    (
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
        "'.', and must start and end with an alphanumeric character (e.g. 'MyValue', or 'my_value', "
        "or '12345')"
    ),
)
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def dns1123_label(name: str) -> str | None:
    """Namespaces, container names, service port names."""
    return _DNS1123_LABEL.check(name)


def dns1035_label(name: str) -> str | None:
    """Service names (they become DNS labels that must not start with a digit)."""
    return _DNS1035_LABEL.check(name)


def dns1123_subdomain(name: str) -> str | None:
    """Most object names, service account names, webhook names."""
    return _DNS1123_SUBDOMAIN.check(name)


def port_name(name: str) -> str | None:
    """IsValidPortName: an IANA service name, what `targetPort: http` refers to."""
    if len(name) > 15:
        return "must be no more than 15 characters"
    if not re.fullmatch(r"[-a-z0-9]+", name):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if not re.search(r"[a-z]", name):
        return "must contain at least one letter (a-z)"
    if "--" in name:
        return "must not contain consecutive hyphens"
    if name.startswith("-") or name.endswith("-"):
        return "must not begin or end with a hyphen"
    return None


def config_key(key: object) -> str | None:
    """A ConfigMap (or Secret) data key."""
    if not isinstance(key, str) or len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
        return "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
    return None


def _part(what: str, text: str, syntax: _Syntax) -> str | None:
    if not text:
        return f"{what} part must be non-empty"
    problem = syntax.check(text)
    return f"{what} part {problem}" if problem else None


def validate_label_key(key: object) -> str | None:
    """Why KEY is not a valid qualified name (`[prefix/]name`), or None if it is."""
    if not isinstance(key, str):
        return "label keys must be strings"
    parts = key.split("/")
    if len(parts) > 2:
        return (
            "a qualified name "
            + _NAME_PART_RULE
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        )
    if len(parts) == 2:
        problem = _part("prefix", parts[0], _DNS1123_SUBDOMAIN)
        if problem:
            return problem
    return _part("name", parts[-1], _NAME_PART)


def validate_label_value(value: object) -> str | None:
    """Why VALUE is not a valid label value, or None if it is."""
    if not isinstance(value, str):
        return "label values must be strings"
    return _LABEL_VALUE.check(value) if value else None


def quote(value: object) -> str:
    """A key or value as label messages show it: strings in double quotes."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


def validate_label(key: object, value: object) -> str | None:
    """An error message naming the bad label key or value, or None when the label is valid."""
    problem = validate_label_key(key)
    if problem:
        return f"invalid label key {quote(key)}: {problem}"
    problem = validate_label_value(value)
    if problem:
        return f"invalid label value {quote(value)} for key {quote(key)}: {problem}"
    return None
