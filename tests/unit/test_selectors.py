"""Label selectors: Kubernetes' string and object forms, matching, printing and label syntax."""

import pytest

from lab.apiserver import selectors
from lab.apiserver.names import validate_label
from lab.apiserver.selectors import Selector, from_label_selector, parse
from tests.unit.validation_helpers import LABEL_VALUE_RULE, NAME_PART_RULE, SUBDOMAIN_RULE

LABELS = {"app": "httpbin", "version": "v1", "tier": "3"}


def refusal(convert, selector) -> str:
    """The ValueError message CONVERT (parse or from_label_selector) gives for SELECTOR."""
    with pytest.raises(ValueError) as info:
        convert(selector)
    return str(info.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("app=httpbin", True),
        ("app==httpbin", True),
        ("app=sleep", False),
        ("app!=sleep", True),
        ("app!=httpbin", False),
        ("missing!=x", True),  # != also selects objects without the key
        ("app in (sleep,httpbin)", True),
        ("app in (sleep)", False),
        ("missing in (x)", False),
        ("app notin (sleep)", True),
        ("app notin (httpbin,sleep)", False),
        ("missing notin (x)", True),  # notin also selects objects without the key
        ("app", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("tier>2", True),
        ("tier>3", False),
        ("tier<4", True),
        ("app>1", False),  # a non-integer label never satisfies > or <
        ("missing<4", False),
        ("app=httpbin,version=v1", True),  # comma is AND
        ("app=httpbin,version=v2", False),
        ("  app = httpbin ,  version in ( v1 , v2 )  ", True),
        ("app in(httpbin)", True),
    ],
)
def test_string_form_matches_like_kubernetes(text, expected):
    assert parse(text).matches(LABELS) is expected


def test_empty_selector_selects_everything_even_unlabelled_objects():
    for text in ("", "   "):
        selector = parse(text)
        assert selector.empty()
        assert selector.matches(LABELS)
        assert selector.matches({})
        assert selector.matches(None)
        assert str(selector) == ""


def test_key_equals_nothing_selects_the_empty_value():
    selector = parse("app=")
    assert selector.matches({"app": ""})
    assert not selector.matches({"app": "x"})
    assert not selector.matches({})
    assert str(selector) == "app="


def test_none_labels_are_treated_as_no_labels():
    assert parse("!app").matches(None)
    assert not parse("app").matches(None)


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("version=v1,app=httpbin", "app=httpbin,version=v1"),  # sorted by key, as kubectl prints
        ("app==httpbin", "app==httpbin"),
        ("a in (z,y, x)", "a in (x,y,z)"),
        ("a notin (b)", "a notin (b)"),
        ("!a,b", "!a,b"),
        ("a>1,b<-2", "a>1,b<-2"),
        ("example.com/role in (db)", "example.com/role in (db)"),
    ],
)
def test_str_is_the_canonical_kubernetes_form(text, canonical):
    assert str(parse(text)) == canonical
    assert str(parse(canonical)) == canonical


@pytest.mark.parametrize(
    "text, problem",
    [
        ("app in (x", "found 'end of string', expected: ',' or ')'"),
        ("=x", "found '=', expected: !, identifier"),
        ("app x", "found 'x', expected: in, notin, =, ==, !=, >, <"),
        ("app in x", "found 'x', expected: '('"),
        ("!app=x", "found '=', expected: ',' or 'end of string' after '!key'"),
        ("app=x y", "found 'y', expected: ',' or 'end of string'"),
        ("app=x,", "found 'end of string', expected: !, identifier"),
        ("a>x", 'for \'>\' operator, the value must be an integer, got "x"'),
        ("a b/c/d=x", "found 'b/c/d', expected: in, notin, =, ==, !=, >, <"),
    ],
)
def test_bad_string_selectors_name_the_problem(text, problem):
    assert refusal(parse, text) == f'invalid label selector "{text}": {problem}'


def test_bad_keys_and_values_in_selectors_are_refused():
    with pytest.raises(ValueError, match=r'invalid label key "-app": name part must consist of'):
        parse("-app=x")
    with pytest.raises(ValueError, match=r'invalid label value "x-": a valid label must be'):
        parse("app=x-")
    with pytest.raises(ValueError, match="must be no more than 63 characters"):
        parse("app=" + "v" * 64)


def test_label_selector_object_match_labels_and_expressions():
    selector = from_label_selector(
        {
            "matchLabels": {"version": "v1", "app": "httpbin"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["3", "4"]},
                {"key": "track", "operator": "NotIn", "values": ["canary"]},
                {"key": "app", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches(LABELS)
    assert not selector.matches({**LABELS, "legacy": "yes"})
    assert not selector.matches({**LABELS, "track": "canary"})
    assert not selector.matches({**LABELS, "tier": "5"})
    # Sorted by key (stable), as labels.Selector.Add keeps requirements.
    assert str(selector) == "app=httpbin,app,!legacy,tier in (3,4),track notin (canary),version=v1"


def test_missing_label_selector_selects_nothing_but_empty_one_selects_everything():
    nothing = from_label_selector(None)
    assert not nothing.matches(LABELS)
    assert not nothing.matches({})
    assert not nothing.empty()
    everything = from_label_selector({})
    assert everything.matches(LABELS) and everything.matches(None) and everything.empty()


def test_label_selector_object_string_matches_parsing_it_back():
    selector = from_label_selector({"matchLabels": {"app": "sleep-ambient"}})
    assert str(selector) == "app=sleep-ambient"
    assert parse(str(selector)) == selector


@pytest.mark.parametrize(
    "obj, message",
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
            'matchExpressions[0]: "Equals" is not a valid label selector operator '
            "(supported: In, NotIn, Exists, DoesNotExist)",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "matchExpressions[0]: for 'in' operator, values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "matchExpressions[0]: values set must be empty for exists and does not exist",
        ),
        ({"matchLabels": {"app": 1}}, "matchLabels[app]: label values must be strings, got 1"),
        (
            {"matchLabels": {"app": "bad value"}},
            'invalid label value "bad value": a valid label must be an empty string or consist of '
            "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
            "character (e.g. 'MyValue', or 'my_value', or '12345')",
        ),
        ({"matchLabel": {"app": "x"}}, 'unknown field "matchLabel" (expected matchLabels, matchExpressions)'),
        (["app=x"], "a label selector must be a mapping, got list"),
    ],
)
def test_bad_label_selector_objects_name_the_problem(obj, message):
    assert refusal(from_label_selector, obj) == message


@pytest.mark.parametrize(
    "key, value",
    [
        ("app", "httpbin"),
        ("istio.io/dataplane-mode", "ambient"),
        ("app.kubernetes.io/name", ""),
        ("A_b.c-9", "Z_y.x-0"),
        ("k" * 63, "v" * 63),
        ("a." * 126 + "b/name", "v"),
    ],
)
def test_valid_labels(key, value):
    assert validate_label(key, value) is None


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("", "x", 'invalid label key "": name part must be non-empty'),
        ("/app", "x", 'invalid label key "/app": prefix part must be non-empty'),
        ("example.com/", "x", 'invalid label key "example.com/": name part must be non-empty'),
        ("Example.com/app", "x", f'invalid label key "Example.com/app": prefix part {SUBDOMAIN_RULE}'),
        ("k" * 64, "x", f'invalid label key "{"k" * 64}": name part must be no more than 63 characters'),
        (
            "a/b/c",
            "x",
            f'invalid label key "a/b/c": a qualified name {NAME_PART_RULE} with an optional DNS '
            "subdomain prefix and '/' (e.g. 'example.com/MyName')",
        ),
        ("app_", "x", f'invalid label key "app_": name part {NAME_PART_RULE}'),
        ("app", "v" * 64, f'invalid label value "{"v" * 64}" for key "app": must be no more than 63 characters'),
        ("app", "has space", f'invalid label value "has space" for key "app": {LABEL_VALUE_RULE}'),
        ("app", 1, 'invalid label value 1 for key "app": label values must be strings'),
    ],
)
def test_invalid_labels_are_explained(key, value, message):
    assert validate_label(key, value) == message


def test_selectors_are_immutable_values():
    selector = parse("app=x")
    assert selector == parse(" app = x ")
    assert hash(selector) == hash(parse("app=x"))
    with pytest.raises(AttributeError):
        selector.requirements = ()  # frozen dataclass
    assert isinstance(selector, Selector)
    assert selectors.parse("a,b").requirements[0].operator == selectors.EXISTS
