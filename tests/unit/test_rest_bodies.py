"""Request bodies: decoding and server-side field validation (Strict, Warn, Ignore)."""

from __future__ import annotations

import pytest

from lab.apiserver.rest import bodies
from lab.apiserver.rest.status import StatusError

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "labels": {"a": "b"}},
    "spec": {
        "containers": [{"name": "c", "image": "curlimages/curl", "foo": 1, "ports": [{"containerPort": 80, "bar": 2}]}],
        "nodeSelecter": {},
    },
}


def test_unknown_fields_are_found_with_their_paths() -> None:
    assert bodies.unknown_fields(POD, "Pod") == [
        "spec.containers[0].foo",
        "spec.containers[0].ports[0].bar",
        "spec.nodeSelecter",
    ]
    assert bodies.unknown_fields({"apiVersion": "v1", "kind": "Event", "anything": 1}, "Event") == []
    ap = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "x"},
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {"principals": ["a"]}}]}], "actoin": "X"},
    }
    assert bodies.unknown_fields(ap, "AuthorizationPolicy") == ["spec.actoin"]


def test_strict_refuses_warn_and_ignore_prune() -> None:
    with pytest.raises(StatusError) as e:
        bodies.check_fields(POD, "Pod", "Strict")
    assert e.value.code == 400
    assert e.value.message.startswith('strict decoding error: unknown field "spec.containers[0].foo"')
    obj, warnings = bodies.check_fields(POD, "Pod", "Warn")
    assert warnings == [
        'unknown field "spec.containers[0].foo"',
        'unknown field "spec.containers[0].ports[0].bar"',
        'unknown field "spec.nodeSelecter"',
    ]
    assert "foo" not in obj["spec"]["containers"][0] and "nodeSelecter" not in obj["spec"]
    assert obj["spec"]["containers"][0]["ports"] == [{"containerPort": 80}]
    assert bodies.check_fields(POD, "Pod", "Ignore")[1] == []
    assert "foo" in POD["spec"]["containers"][0]  # the input is left alone


def test_duplicate_json_fields_are_strict_errors() -> None:
    decoded = bodies.decode(b'{"kind": "Namespace", "metadata": {"name": "a", "name": "b"}}', "application/json")
    assert decoded.duplicates == ["name"]
    with pytest.raises(StatusError, match='duplicate field "name"'):
        bodies.check_fields(decoded.value, "Namespace", "Strict", decoded.duplicates)


def test_decode_content_types() -> None:
    assert bodies.decode(b'{"a": 1}', None).value == {"a": 1}
    assert bodies.decode(b"a: 2020-01-01\n", "application/yaml").value == {"a": "2020-01-01"}
    with pytest.raises(StatusError) as e:
        bodies.decode(b"<x/>", "application/xml")
    assert e.value.code == 415
    with pytest.raises(StatusError) as e:
        bodies.decode(b"{", "application/json")
    assert e.value.code == 400


def test_field_validation_parameter() -> None:
    assert bodies.field_validation(None) == "Warn"
    assert bodies.field_validation("Strict") == "Strict"
    with pytest.raises(StatusError):
        bodies.field_validation("strict")
