"""Kubernetes label selectors: the `-l` string form and the `LabelSelector` object form.

Both forms become one immutable `Selector` (an AND of requirements), so `lab get -l`, Services,
Deployments and mesh policies all match labels the same way Kubernetes does:

    parse("app=httpbin,version!=v2").matches({"app": "httpbin"})         -> True
    from_label_selector({"matchLabels": {"app": "httpbin"}})             -> app=httpbin

Semantics follow k8s.io/apimachinery/pkg/labels: `!=` and `notin` also match objects that lack
the key; `in`, `=` and `==` need it; an empty selector matches everything, while a missing
(None) LabelSelector object matches nothing. Requirements are kept sorted by key, as Kubernetes
prints them (`app=x,version=v1`). Label keys and values are checked with Kubernetes' rules
(lab/apiserver/names.py, shared with validation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from lab.apiserver.names import quote as _quote
from lab.apiserver.names import validate_label_key, validate_label_value

# Operators as they appear in the string form. "exists" and "!" have no operator text.
EXISTS = "exists"
DOES_NOT_EXIST = "!"
EQUALS = "="
DOUBLE_EQUALS = "=="
NOT_EQUALS = "!="
IN = "in"
NOT_IN = "notin"
GREATER_THAN = ">"
LESS_THAN = "<"

_SET_OPERATORS = (IN, NOT_IN)
_SINGLE_VALUE_OPERATORS = (EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)
_EXPRESSION_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One clause of a selector: KEY OPERATOR VALUES."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == EXISTS:
            return present
        if self.operator == DOES_NOT_EXIST:
            return not present
        if self.operator in (EQUALS, DOUBLE_EQUALS, IN):
            return present and value in self.values
        if self.operator in (NOT_EQUALS, NOT_IN):
            return not present or value not in self.values
        # > and <: both sides are integers; a non-integer label never matches.
        if value is None:
            return False
        try:
            number = int(value)
        except (TypeError, ValueError):
            return False
        bound = int(self.values[0])
        return number > bound if self.operator == GREATER_THAN else number < bound

    def __str__(self) -> str:
        if self.operator == EXISTS:
            return self.key
        if self.operator == DOES_NOT_EXIST:
            return "!" + self.key
        if self.operator in _SET_OPERATORS:
            return f"{self.key} {self.operator} ({','.join(sorted(self.values))})"
        return f"{self.key}{self.operator}{self.values[0]}"


@dataclass(frozen=True)
class Selector:
    """An AND of requirements. `nothing=True` is the selector of a missing LabelSelector."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        """True when the selector matches every object."""
        return not self.nothing and not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _selector(requirements: list[Requirement]) -> Selector:
    return Selector(tuple(sorted(requirements, key=lambda r: r.key)))


def _requirement(key: str, operator: str, values: tuple[str, ...]) -> Requirement:
    """Checks the key and values the way labels.NewRequirement does."""
    problem = validate_label_key(key)
    if problem:
        raise ValueError(f"invalid label key {_quote(key)}: {problem}")
    if operator in _SET_OPERATORS and not values:
        raise ValueError(f"for '{operator}' operator, values set can't be empty")
    if operator in (EXISTS, DOES_NOT_EXIST) and values:
        raise ValueError("values set must be empty for exists and does not exist")
    if operator in _SINGLE_VALUE_OPERATORS and len(values) != 1:
        raise ValueError(f"exact-match compatibility requires one single value, got {len(values)}")
    if operator in (GREATER_THAN, LESS_THAN):
        if not re.fullmatch(r"-?[0-9]+", values[0]):
            raise ValueError(f"for '{operator}' operator, the value must be an integer, got {_quote(values[0])}")
    else:
        for value in values:
            problem = validate_label_value(value)
            if problem:
                raise ValueError(f"invalid label value {_quote(value)}: {problem}")
    return Requirement(key, operator, tuple(values))


# --- the string form --------------------------------------------------------------------------

_SYMBOLS = ("!=", "==", "=", "!", "(", ")", ",", ">", "<")  # longest first
_KEYWORDS = (IN, NOT_IN)
_END = ""  # the end-of-input token


def _tokens(text: str) -> Iterator[str]:
    """Splits TEXT into symbols and identifiers (runs of anything else), dropping whitespace."""
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        symbol = next((s for s in _SYMBOLS if text.startswith(s, i)), None)
        if symbol:
            yield symbol
            i += len(symbol)
            continue
        start = i
        while i < len(text) and not text[i].isspace() and text[i] not in "!=(),<>":
            i += 1
        yield text[start:i]


class _StringParser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(_tokens(text))
        self.pos = 0

    def peek(self) -> str:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else _END

    def take(self) -> str:
        token = self.peek()
        self.pos += 1
        return token

    def fail(self, found: str, expected: str) -> ValueError:
        shown = "end of string" if found == _END else found
        return ValueError(f"invalid label selector {_quote(self.text)}: found '{shown}', expected: {expected}")

    @staticmethod
    def is_identifier(token: str) -> bool:
        return token != _END and token not in _SYMBOLS

    def selector(self) -> Selector:
        requirements = []
        while True:
            requirements.append(self.requirement())
            token = self.take()
            if token == _END:
                return _selector(requirements)
            if token != ",":
                raise self.fail(token, "',' or 'end of string'")

    def requirement(self) -> Requirement:
        negated = self.peek() == "!"
        if negated:
            self.take()
        key = self.take()
        if not self.is_identifier(key):
            raise self.fail(key, "identifier" if negated else "!, identifier")
        if self.peek() in (",", _END):
            return self.make(key, DOES_NOT_EXIST if negated else EXISTS, ())
        if negated:
            raise self.fail(self.peek(), "',' or 'end of string' after '!key'")
        operator = self.take()
        if operator in _KEYWORDS:
            return self.make(key, operator, self.value_set())
        if operator in _SINGLE_VALUE_OPERATORS:
            return self.make(key, operator, (self.single_value(),))
        raise self.fail(operator, "in, notin, =, ==, !=, >, <")

    def single_value(self) -> str:
        if self.peek() in (",", _END):
            return ""  # `key=` selects the empty value
        token = self.take()
        if not self.is_identifier(token):
            raise self.fail(token, "identifier")
        return token

    def value_set(self) -> tuple[str, ...]:
        token = self.take()
        if token != "(":
            raise self.fail(token, "'('")
        values = []
        while True:
            token = self.peek()
            if self.is_identifier(token):
                values.append(self.take())
                token = self.peek()
            else:
                values.append("")  # `(a,)` and `()` hold the empty value
            self.take()
            if token == ")":
                return tuple(dict.fromkeys(values))
            if token != ",":
                raise self.fail(token, "',' or ')'")

    def make(self, key: str, operator: str, values: tuple[str, ...]) -> Requirement:
        try:
            return _requirement(key, operator, values)
        except ValueError as e:
            raise ValueError(f"invalid label selector {_quote(self.text)}: {e}") from None


def parse(text: str) -> Selector:
    """Parses the `-l` form: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`,
    `a>1`, `a<1`, joined by commas (AND). An empty string selects everything."""
    if not text.strip():
        return Selector()
    return _StringParser(text).selector()


# --- the object form --------------------------------------------------------------------------


def from_label_selector(obj: Mapping[str, Any] | None) -> Selector:
    """Converts a LabelSelector (`matchLabels` + `matchExpressions`) the way
    metav1.LabelSelectorAsSelector does: None selects nothing, `{}` selects everything."""
    if obj is None:
        return Selector(nothing=True)
    if not isinstance(obj, Mapping):
        raise ValueError(f"a label selector must be a mapping, got {type(obj).__name__}")
    unknown = sorted(set(obj) - {"matchLabels", "matchExpressions"})
    if unknown:
        raise ValueError(f'unknown field "{unknown[0]}" (expected matchLabels, matchExpressions)')
    requirements = []
    match_labels = obj.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise ValueError("matchLabels must be a mapping of label keys to values")
    for key, value in match_labels.items():
        if not isinstance(value, str):
            raise ValueError(f"matchLabels[{key}]: label values must be strings, got {value!r}")
        requirements.append(_requirement(key, EQUALS, (value,)))
    expressions = obj.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise ValueError("matchExpressions must be a list")
    for i, expression in enumerate(expressions):
        try:
            requirements.append(_expression(expression))
        except ValueError as e:
            raise ValueError(f"matchExpressions[{i}]: {e}") from None
    return _selector(requirements)


def _expression(expression: object) -> Requirement:
    if not isinstance(expression, Mapping):
        raise ValueError("must be a mapping with key, operator and values")
    operator = expression.get("operator")
    if operator not in _EXPRESSION_OPERATORS:
        raise ValueError(
            f'"{operator}" is not a valid label selector operator (supported: {", ".join(_EXPRESSION_OPERATORS)})'
        )
    values = expression.get("values") or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("values must be a list of strings")
    return _requirement(expression.get("key", ""), _EXPRESSION_OPERATORS[operator], tuple(dict.fromkeys(values)))
