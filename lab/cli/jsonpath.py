"""kubectl's `-o jsonpath=TEMPLATE`: a template of text and `{...}` actions rendered against JSON.

    render('{range .items[*]}{.metadata.name}{"\\n"}{end}', pod_list)

The dialect is client-go's (k8s.io/client-go/util/jsonpath), which is not RFC 9535 JSONPath:
`$` and `@` both mean the current object, the results of one action are joined by a space,
`{range PATH}...{end}` loops, `{"text"}` prints a literal, filters compare with
`== != < > <= >=` or test existence, and `[start:end:step]` indexes raise "array index out of
bounds" instead of clamping. Values print as kubectl prints them: strings raw, numbers and
booleans bare, maps and lists as compact JSON, null as `<nil>`.

Missing keys: `kubectl get` runs with `--allow-missing-template-keys=true`, so by default a
missing key prints nothing; with `allow_missing_keys=False` it raises `JSONPathError`
(`... is not found`) like `--allow-missing-template-keys=false`. Filters always skip items that
lack the compared key.

Two deliberate extensions: `['a.b/c']` is a literal map key (kubectl would split it at the dots;
`.a\\.b/c` works in both), and a template without braces is read as one path, the way kubectl's
custom-columns and `wait --for=jsonpath` relax it (`.metadata.name` -> `{.metadata.name}`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Union

from lab.apiserver import gojson


class JSONPathError(ValueError):
    """A template that does not parse, or fails on the data; str() is kubectl's one-line error."""


# --- the template's syntax tree ---------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Wildcard:
    pass


@dataclass(frozen=True)
class Recursive:
    pass


@dataclass(frozen=True)
class Index:
    """`[start:end:step]`; `single` marks `[i]`, whose end is start+1 after negative wrap-around."""

    start: int | None
    end: int | None
    step: int | None
    single: bool = False


@dataclass(frozen=True)
class Alternatives:
    """`[0,2]` or `['a','b']`: the results of each alternative, in order."""

    alternatives: tuple[tuple["Step", ...], ...]


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Filter:
    left: tuple["Step", ...]
    operator: str | None  # None: the item passes if `left` finds anything
    right: Union[Literal, tuple["Step", ...], None] = None


Step = Union[Field, Wildcard, Recursive, Index, Alternatives, Filter]


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Path:
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Range:
    steps: tuple[Step, ...]
    body: tuple["Node", ...]


Node = Union[Text, Path, Range]


# --- parsing ----------------------------------------------------------------------------------

_FIELD_TERMINATORS = set(" \t\r\n.,[]$@{}")
_SLICE = re.compile(r"(-?\d*)(?::(-?\d*))?(?::(-?\d*))?")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "\\": "\\", "'": "'", '"': '"'}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S)


class _ParseError(Exception):
    pass


def _unescape(body: str) -> str:
    """Resolves Go-style backslash escapes in a quoted string's body."""

    def one(match: re.Match) -> str:
        code = match.group(1)
        if code in _ESCAPES:
            return _ESCAPES[code]
        if code[0] in "xuU":
            return chr(int(code[1:], 16))
        if code[0].isdigit():
            return chr(int(code, 8))
        raise _ParseError(f"invalid escape sequence \\{code} in quoted string")

    return _ESCAPE.sub(one, body)


def _scan_quoted(text: str, pos: int) -> int:
    """Index just past the quoted string that starts at POS."""
    quote = text[pos]
    i = pos + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        if text[i] == "\n":
            break
        i += 1
    raise _ParseError("unterminated quoted string")


def _find_outside_quotes(text: str, pos: int, wanted: str) -> int:
    """Index of the next WANTED at or after POS that is not inside quotes, or -1."""
    i = pos
    while i < len(text):
        if text.startswith(wanted, i):
            return i
        i = _scan_quoted(text, i) if text[i] in "\"'" else i + 1
    return -1


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] in "\"'":
            i = _scan_quoted(text, i)
        elif text[i] == separator:
            parts.append(text[start:i])
            start = i = i + 1
        else:
            i += 1
    parts.append(text[start:])
    return parts


def _first_operator(text: str) -> int:
    """Index of the first comparison character outside quotes, or -1."""
    i = 0
    while i < len(text):
        if text[i] in "\"'":
            i = _scan_quoted(text, i)
        elif text[i] in "!<>=":
            return i
        else:
            i += 1
    return -1


def _is_quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] in "\"'" and _scan_quoted(text, 0) == len(text)


def _parse_literal(text: str) -> Literal | None:
    """A filter's right-hand constant: a quoted string, a number or a boolean."""
    if _is_quoted(text):
        return Literal(_unescape(text[1:-1]))
    if text in ("true", "false"):
        return Literal(text == "true")
    if re.fullmatch(r"[+-]?\d+", text):
        return Literal(int(text))
    if re.fullmatch(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?", text):
        return Literal(float(text))
    return None


class _PathParser:
    """Parses one path expression (`.a.b[0]`, `..name`, `@.x`, `[?(...)]`) into steps."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> tuple[Step, ...]:
        steps: list[Step] = []
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t$@":
                self.pos += 1
            elif text.startswith("..", self.pos):
                if steps and isinstance(steps[-1], Recursive):
                    raise _ParseError("invalid multiple recursive descent")
                steps.append(Recursive())
                self.pos += 2
                if self.pos < len(text) and (text[self.pos].isalnum() or text[self.pos] == "_"):
                    steps.append(self.field())
            elif char == ".":
                self.pos += 1
                steps.append(self.field())
            elif text.startswith("[?(", self.pos):
                steps.append(self.filter())
            elif char == "[":
                steps.append(self.bracket())
            elif char.isalnum() or char == "_":
                word_match = re.match(r"[^\s.,\[\]$@{}]+", text[self.pos :])
                word = word_match.group(0) if word_match else char  # it matches: CHAR is alnum or _
                raise _ParseError(f"unrecognized identifier {word}")
            else:
                raise _ParseError(f"unrecognized character in action: U+{ord(char):04X} '{char}'")
        return tuple(s for s in steps if s != Field(""))  # `{.}` is the current object

    def field(self) -> Step:
        """A name up to the next unescaped terminator; `\\.` keeps a dot in the name."""
        name, text = [], self.text
        while self.pos < len(text) and text[self.pos] not in _FIELD_TERMINATORS:
            if text[self.pos] == "\\" and self.pos + 1 < len(text):
                self.pos += 1
            name.append(text[self.pos])
            self.pos += 1
        value = "".join(name)
        return Wildcard() if value == "*" else Field(value)

    def bracket(self) -> Step:
        end = _find_outside_quotes(self.text, self.pos, "]")
        if end < 0:
            raise _ParseError("unterminated array")
        inner = self.text[self.pos + 1 : end]
        self.pos = end + 1
        parts = [p.strip() for p in _split_outside_quotes(inner, ",")]
        steps = [self.subscript(p) for p in parts]
        if len(steps) == 1:
            return steps[0]
        return Alternatives(tuple((s,) for s in steps))

    @staticmethod
    def subscript(text: str) -> Step:
        if _is_quoted(text):
            return Field(re.sub(r"\\(.)", r"\1", text[1:-1]))
        if text == "*":
            return Index(None, None, None)
        match = _SLICE.fullmatch(text)
        if not text or not match:
            raise _ParseError(f"invalid array index {text}")
        start, end, step = (int(g) if g not in (None, "") else None for g in match.groups())
        return Index(start, end, step, single=":" not in text)

    def filter(self) -> Filter:
        end = _find_outside_quotes(self.text, self.pos + 3, ")]")
        if end < 0:
            raise _ParseError("unterminated filter")
        expression = self.text[self.pos + 3 : end].strip()
        self.pos = end + 2
        operator_at = _first_operator(expression)
        if operator_at < 0:
            return Filter(_PathParser(expression).parse(), None)
        operator_match = re.match(r"[!<>=]+", expression[operator_at:])
        operator = operator_match.group(0) if operator_match else ""  # it matches: see _first_operator
        if operator not in _OPERATORS:
            raise _ParseError(f"unrecognized filter operator {operator}")
        left = _PathParser(expression[:operator_at].strip()).parse()
        right_text = expression[operator_at + len(operator) :].strip()
        right = _parse_literal(right_text)
        if right is None:
            return Filter(left, operator, _PathParser(right_text).parse())
        return Filter(left, operator, right)


def _relaxed(template: str) -> str:
    """kubectl's RelaxedJSONPathExpression: `a.b` and `.a.b` mean `{.a.b}`."""
    return "{." + (template[1:] if template.startswith(".") else template) + "}"


def parse(template: str) -> tuple[Node, ...]:
    """The template's nodes; raises JSONPathError naming the problem."""
    if not template:
        raise JSONPathError("error: template format specified but no template given")
    try:
        if "{" not in template and "}" not in template:
            return _parse_nodes(_relaxed(template))
        return _parse_nodes(template)
    except _ParseError as e:
        raise JSONPathError(f"error: error parsing jsonpath {template}, {e}") from None


def _parse_nodes(template: str) -> tuple[Node, ...]:
    # A stack of (range steps, body so far); the bottom entry is the template itself (its steps,
    # empty, are never used: it is never popped).
    stack: list[tuple[tuple[Step, ...], list[Node]]] = [((), [])]
    pos = 0
    while pos < len(template):
        start = template.find("{", pos)
        if start < 0:
            stack[-1][1].append(Text(template[pos:]))
            break
        if start > pos:
            stack[-1][1].append(Text(template[pos:start]))
        end = _find_outside_quotes(template, start + 1, "}")
        if end < 0:
            raise _ParseError("unclosed action")
        action = template[start + 1 : end].strip()
        pos = end + 1
        if _is_quoted(action):
            stack[-1][1].append(Text(_unescape(action[1:-1])))
        elif action == "end":
            if len(stack) == 1:
                raise _ParseError("not in range, nothing to end")
            steps, body = stack.pop()
            stack[-1][1].append(Range(steps, tuple(body)))
        elif re.match(r"range\s", action):
            stack.append((_PathParser(action[len("range") :]).parse(), []))
        else:
            stack[-1][1].append(Path(_PathParser(action).parse()))
    while len(stack) > 1:  # kubectl lets a trailing range run to the end
        steps, body = stack.pop()
        stack[-1][1].append(Range(steps, tuple(body)))
    return tuple(stack[0][1])


# --- evaluation -------------------------------------------------------------------------------


class _EvalError(Exception):
    pass


def _go_type(value: Any) -> str:
    """The Go type name kubectl's messages would show for VALUE."""
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string" if isinstance(value, str) else type(value).__name__


@dataclass(frozen=True)
class _Evaluator:
    """Walks steps over a list of current values, as client-go's JSONPath does."""

    allow_missing_keys: bool

    def steps(self, steps: tuple[Step, ...], values: list[Any]) -> list[Any]:
        for step in steps:
            values = self.step(step, values)
        return values

    def step(self, step: Step, values: list[Any]) -> list[Any]:
        if isinstance(step, Field):
            return self.field(step.name, values)
        if isinstance(step, Index):
            return [item for value in values if value is not None for item in self.index(step, value)]
        if isinstance(step, Wildcard):
            return [item for value in values for item in _children(value)]
        if isinstance(step, Recursive):
            return [item for value in values for item in _descendants(value)]
        if isinstance(step, Alternatives):
            return [item for alternative in step.alternatives for item in self.steps(alternative, values)]
        return [item for value in values if value is not None for item in self.filter(step, value)]

    def field(self, name: str, values: list[Any]) -> list[Any]:
        found = [v[name] for v in values if isinstance(v, dict) and name in v]
        if not found and values and not self.allow_missing_keys:
            raise _EvalError(f"{name} is not found")
        return found

    @staticmethod
    def index(step: Index, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _EvalError(f"{_go_type(value)} is not array or slice")
        length = len(value)
        start = step.start or 0
        if start < 0:
            start += length
        if step.single:
            end = start + 1
        else:
            end = length if step.end is None else step.end
            if end < 0:
                end += length
        if start == end:
            return []
        if not 0 <= start < length:
            raise _EvalError(f"array index out of bounds: index {start}, length {length}")
        if not 0 <= end <= length:
            raise _EvalError(f"array index out of bounds: index {end - 1}, length {length}")
        if start > end:
            raise _EvalError(f"starting index {start} is greater than ending index {end}")
        if step.step is not None and step.step <= 0:
            raise _EvalError("step must be > 0")
        return value[start : end : step.step or 1]

    def filter(self, step: Filter, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise _EvalError(f"{_text(value)} is not array or slice and cannot be filtered")
        passed = []
        for item in value:
            if step.operator is None or step.right is None:  # the parser sets both or neither
                try:
                    if self.steps(step.left, [item]):
                        passed.append(item)
                except _EvalError:
                    pass
                continue
            left = self.operand(step.left, item)
            if left is _MISSING:
                continue
            right = self.operand(step.right, item)
            if right is not _MISSING and _compare(left, step.operator, right):
                passed.append(item)
        return passed

    def operand(self, operand: Literal | tuple[Step, ...], item: Any) -> Any:
        if isinstance(operand, Literal):
            return operand.value
        found = self.steps(operand, [item])
        if len(found) > 1:
            raise _EvalError("can only compare one element at a time")
        return found[0] if found else _MISSING

    def render(self, nodes: tuple[Node, ...], current: Any) -> str:
        out = []
        for node in nodes:
            if isinstance(node, Text):
                out.append(node.text)
            elif isinstance(node, Path):
                out.append(" ".join(_text(v) for v in self.steps(node.steps, [current])))
            else:
                for item in self.steps(node.steps, [current]):
                    out.append(self.render(node.body, item))
        return "".join(out)


_MISSING = object()


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    return list(value) if isinstance(value, list) else []


def _descendants(value: Any) -> list[Any]:
    """VALUE and everything below it, depth first; like kubectl, leaves are left out."""
    children = _children(value)
    if not children:
        return []
    return [value] + [d for child in children for d in _descendants(child)]


def _compare(left: Any, operator: str, right: Any) -> bool:
    """Go template comparison: same basic kind only; booleans only for (in)equality."""

    def kind(v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, (int, float)):
            return "number"
        return "string" if isinstance(v, str) else "other"

    left_kind, right_kind = kind(left), kind(right)
    if "other" in (left_kind, right_kind):
        raise _EvalError("invalid type for comparison")
    if left_kind != right_kind:
        raise _EvalError("incompatible types for comparison")
    if operator == "==":
        return left == right
    if operator == "!=":
        return left != right
    if left_kind == "bool":
        raise _EvalError("invalid type for comparison")
    return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[operator]


def _go_float(value: float) -> str:
    """Go's %v for a float64: shortest digits, exponent form below 1e-4 or from 1e6."""
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(value)]
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)  # a finite value's ('n', 'N', 'F' are NaN and the infinities)
    mantissa = "".join(map(str, digits))
    exp10 = len(digits) + exponent - 1
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        fraction = "." + mantissa[1:] if len(mantissa) > 1 else ""
        return f"{prefix}{mantissa[0]}{fraction}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    return prefix + format(Decimal(mantissa).scaleb(exponent), "f")


def _text(value: Any) -> str:
    """One result as kubectl prints it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if value is None:
        return "<nil>"
    return gojson.dumps(value)


def render(template: str, data: Any, *, allow_missing_keys: bool = True) -> str:
    """Renders TEMPLATE against DATA (an object or a `{"kind": "List", "items": [...]}`)."""
    nodes = parse(template)
    try:
        return _Evaluator(allow_missing_keys).render(nodes, data)
    except _EvalError as e:
        raise JSONPathError(
            f"error: error executing jsonpath {json.dumps(template)}: Error executing template: {e}"
        ) from None
