"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the PATCH dispatcher: the RFCs' own
examples, all-or-nothing application, and the codes and reasons the kube-apiserver answers with."""

import copy
import json

import pytest

from lab.apiserver import kinds
from lab.apiserver.rest import patch
from lab.apiserver.rest.patch import PatchError, UnsupportedPatchType, apply_patch, json_patch, merge_patch

# RFC 7386 Appendix A, every example: (target, patch, result).
RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize("target,body,result", RFC7386)
def test_rfc7386_examples(target, body, result):
    before = copy.deepcopy(target)
    assert merge_patch(target, body) == result
    assert target == before


def test_rfc7386_section3_example():
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    body = {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None}, "tags": ["example"]}
    assert merge_patch(target, body) == {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    }


# RFC 6902 Appendix A: (name, document, patch, result); result None: the patch fails.
RFC6902 = [
    (
        "A.1 add an object member",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux"}],
        {"baz": "qux", "foo": "bar"},
    ),
    (
        "A.2 add an array element",
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    ("A.3 remove an object member", {"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    (
        "A.4 remove an array element",
        {"foo": ["bar", "qux", "baz"]},
        [{"op": "remove", "path": "/foo/1"}],
        {"foo": ["bar", "baz"]},
    ),
    (
        "A.5 replace a value",
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        "A.6 move a value",
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        "A.7 move an array element",
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        "A.8 test a value: success",
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    ("A.9 test a value: error", {"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], None),
    (
        "A.10 add a nested member object",
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        "A.11 ignore unrecognized elements",
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
    ),
    ("A.12 add to a nonexistent target", {"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}], None),
    ("A.14 ~ escape ordering", {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
    ("A.15 strings and numbers differ", {"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}], None),
    (
        "A.16 add an array value",
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
]


@pytest.mark.parametrize("doc,ops,result", [pytest.param(*case[1:], id=case[0]) for case in RFC6902])
def test_rfc6902_examples(doc, ops, result):
    before = copy.deepcopy(doc)
    if result is None:
        with pytest.raises(PatchError) as e:
            json_patch(doc, ops)
        assert e.value.code == 422
    else:
        assert json_patch(doc, ops) == result
    assert doc == before


@pytest.mark.parametrize(
    "doc,ops,result",
    [
        (
            {"a/b": 1, "m~n": 2},
            [{"op": "replace", "path": "/a~1b", "value": 3}, {"op": "remove", "path": "/m~0n"}],
            {"a/b": 3},
        ),
        ({"a": 1}, [{"op": "replace", "path": "", "value": [1]}], [1]),
        ({"a": 1}, [{"op": "add", "path": "", "value": {"b": 2}}], {"b": 2}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/2", "value": 3}], {"a": [1, 2, 3]}),
        (
            {"a": [1, 2]},
            [{"op": "copy", "from": "/a", "path": "/b"}, {"op": "add", "path": "/b/-", "value": 3}],
            {"a": [1, 2], "b": [1, 2, 3]},
        ),
        ({"a": {"x": 1}}, [{"op": "move", "from": "/a", "path": "/a"}], {"a": {"x": 1}}),
        ({"a": None}, [{"op": "test", "path": "/a", "value": None}], {"a": None}),
        (
            {"a": {"x": [1, {"y": True}]}},
            [{"op": "test", "path": "/a", "value": {"x": [1.0, {"y": True}]}}],
            {"a": {"x": [1, {"y": True}]}},
        ),
    ],
)
def test_json_patch_pointers_and_values(doc, ops, result):
    assert json_patch(doc, ops) == result


@pytest.mark.parametrize(
    "doc,op,why",
    [
        ({"a": [1]}, {"op": "add", "path": "/a/01", "value": 0}, "not an array index"),
        ({"a": [1]}, {"op": "add", "path": "/a/2", "value": 0}, "out of bounds"),
        ({"a": [1]}, {"op": "remove", "path": "/a/-"}, "not an array index"),
        ({"a": [1]}, {"op": "replace", "path": "/a/1", "value": 0}, "out of bounds"),
        ({"a": 1}, {"op": "replace", "path": "/b", "value": 0}, 'no member "b"'),
        ({"a": 1}, {"op": "remove", "path": "/b"}, 'no member "b"'),
        ({"a": 1}, {"op": "add", "path": "/a/b", "value": 0}, "not an object or array"),
        ({"a": 1}, {"op": "add", "path": "a", "value": 0}, 'does not start with "/"'),
        ({"a": 1}, {"op": "add", "path": "/~2", "value": 0}, "invalid escape"),
        ({"a": 1}, {"op": "add", "path": "/b"}, 'missing "value"'),
        ({"a": 1}, {"op": "copy", "path": "/b"}, 'missing "from"'),
        ({"a": 1}, {"path": "/b"}, 'missing "op"'),
        ({"a": 1}, {"op": "frobnicate", "path": "/a"}, 'unknown operation "frobnicate"'),
        ({"a": {"b": 1}}, {"op": "move", "from": "/a", "path": "/a/b/c"}, "into one of its own children"),
        ({"a": True}, {"op": "test", "path": "/a", "value": 1}, "test failed"),
        ({"a": 1}, {"op": "remove", "path": ""}, "cannot remove the whole document"),
    ],
)
def test_json_patch_failures_are_422_and_name_the_operation(doc, op, why):
    with pytest.raises(PatchError) as e:
        json_patch(doc, [{"op": "test", "path": "", "value": doc}, op])
    assert e.value.code == 422 and e.value.reason == "Invalid"
    assert e.value.message.startswith(f"json patch operation 1 ({op.get('op')} {op.get('path')}): ")
    assert why in e.value.message


def test_json_patch_is_all_or_nothing():
    pod = {"metadata": {"name": "p", "labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}
    before = copy.deepcopy(pod)
    ops = [
        {"op": "add", "path": "/metadata/labels/version", "value": "v2"},
        {"op": "remove", "path": "/spec/containers/0/image"},
    ]
    with pytest.raises(PatchError, match=r"operation 1 \(remove /spec/containers/0/image\)"):
        json_patch(pod, ops)
    assert pod == before


def test_json_patch_body_must_be_an_array_of_at_most_10000_operations():
    with pytest.raises(PatchError) as e:
        json_patch({}, {"op": "add", "path": "/a", "value": 1})
    assert (e.value.code, e.value.reason) == (400, "BadRequest")
    with pytest.raises(PatchError) as e:
        json_patch({}, [{"op": "test", "path": "", "value": {}}] * 10001)
    assert (e.value.code, e.value.reason) == (413, "RequestEntityTooLarge")


def pod():
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n", "labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }


def test_dispatch_merge_patch_as_kubectl_label_sends_it():
    body = b'{"metadata":{"labels":{"app":null,"tier":"web"}}}'
    out = apply_patch(pod(), body, "application/merge-patch+json", "Pod")
    assert out["metadata"]["labels"] == {"tier": "web"}


def test_dispatch_json_patch_and_strategic_merge_with_parameters_in_the_content_type():
    ops = json.dumps([{"op": "replace", "path": "/spec/containers/0/image", "value": "j"}])
    out = apply_patch(pod(), ops, "application/json-patch+json; charset=utf-8", "Pod")
    assert out["spec"]["containers"] == [{"name": "c", "image": "j"}]
    body = {"spec": {"containers": [{"name": "d", "image": "k"}]}}
    out = apply_patch(pod(), body, "Application/Strategic-Merge-Patch+JSON", "Pod")
    assert [c["name"] for c in out["spec"]["containers"]] == ["d", "c"]


CUSTOM_KINDS = [k.kind for k in kinds.KINDS if k.group.endswith(("istio.io", "gateway.networking.k8s.io"))]


@pytest.mark.parametrize("kind", CUSTOM_KINDS)
def test_strategic_merge_on_custom_kinds_is_415_like_a_real_server(kind):
    with pytest.raises(UnsupportedPatchType) as e:
        apply_patch({"kind": kind}, {"spec": {}}, "application/strategic-merge-patch+json", kind)
    assert (e.value.code, e.value.reason) == (415, "UnsupportedMediaType")
    assert e.value.message == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )
    # the same edit as a merge patch is fine (kubectl apply sends merge patches for these kinds)
    out = apply_patch({"kind": kind, "spec": {"a": 1}}, {"spec": {"b": 2}}, "application/merge-patch+json", kind)
    assert out == {"kind": kind, "spec": {"a": 1, "b": 2}}


def test_accepted_patch_types():
    assert patch.accepted_patch_types("Deployment") == (
        patch.JSON_PATCH,
        patch.MERGE_PATCH,
        patch.STRATEGIC_MERGE_PATCH,
        patch.APPLY_PATCH,
    )
    assert patch.STRATEGIC_MERGE_PATCH not in patch.accepted_patch_types("Gateway")


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "application/yaml"])
def test_unknown_content_types_are_415(content_type):
    with pytest.raises(UnsupportedPatchType):
        apply_patch(pod(), {}, content_type, "Pod")


def test_server_side_apply_is_not_a_patch_here():
    with pytest.raises(ValueError, match="ssa.apply"):
        apply_patch(pod(), "{}", "application/apply-patch+yaml", "Pod")


@pytest.mark.parametrize(
    "content_type,body,code",
    [
        ("application/merge-patch+json", b"{not json", 400),
        ("application/merge-patch+json", b"[1]", 400),
        ("application/strategic-merge-patch+json", b'"x"', 400),
        ("application/json-patch+json", b'{"op":"add"}', 400),
        ("application/json-patch+json", b'[{"op":"remove","path":"/spec/nope"}]', 422),
        ("application/json-patch+json", b'[{"op":"replace","path":"","value":[]}]', 422),
        ("application/strategic-merge-patch+json", b'{"spec":{"containers":[{"$patch":"merge","name":"c"}]}}', 400),
    ],
)
def test_bad_bodies_and_bad_patches(content_type, body, code):
    original = pod()
    with pytest.raises(PatchError) as e:
        apply_patch(original, body, content_type, "Pod")
    assert e.value.code == code
    assert original == pod()


def test_the_object_is_never_changed_in_place():
    original = pod()
    apply_patch(original, {"metadata": {"labels": None}}, "application/merge-patch+json", "Pod")
    apply_patch(
        original,
        {"spec": {"containers": [{"name": "c", "image": "x"}]}},
        "application/strategic-merge-patch+json",
        "Pod",
    )
    assert original == pod()
