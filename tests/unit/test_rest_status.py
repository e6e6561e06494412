"""Errors as Kubernetes Status objects: reasons, codes and the messages kubectl prints."""

from __future__ import annotations

from lab.apiserver import kinds
from lab.apiserver.rest import status

POD = kinds.by_kind("Pod")
DEPLOY = kinds.by_kind("Deployment")


def test_not_found_names_the_qualified_resource() -> None:
    s = status.not_found(DEPLOY, "web").status()
    assert s == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "web" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "web", "kind": "deployments", "group": "apps"},
    }


def test_conflict_and_already_exists() -> None:
    assert status.already_exists(POD, "p").code == 409
    c = status.conflict(POD, "p")
    assert c.reason == "Conflict" and c.message.startswith('Operation cannot be fulfilled on pods "p": the object')


def test_invalid_lists_causes() -> None:
    e = status.invalid(POD, "p", [("spec.containers", "Required value"), ("metadata.name", "Invalid value: x")])
    s = e.status()
    assert s["code"] == 422 and s["reason"] == "Invalid"
    assert s["message"] == 'Pod "p" is invalid: [spec.containers: Required value, metadata.name: Invalid value: x]'
    assert [c["reason"] for c in s["details"]["causes"]] == ["FieldValueRequired", "FieldValueInvalid"]
    one = status.invalid(POD, "p", [("spec", "Forbidden: no")]).message
    assert one == 'Pod "p" is invalid: spec: Forbidden: no'


def test_lab_messages_keep_their_reason() -> None:
    e = status.from_api_error('Error from server (NotFound): pods "x" not found', POD, "x")
    assert (e.code, e.reason, e.message) == (404, "NotFound", 'pods "x" not found')
    e = status.from_api_error('Error from server (Forbidden): namespaces "default" is forbidden: no')
    assert (e.code, e.reason) == (403, "Forbidden")
    e = status.from_api_error('error: -: Pod "p": namespace demo is being terminated', POD, "p")
    assert (e.code, e.reason) == (403, "Forbidden")
    e = status.from_api_error(
        'error: -: Service "s": spec.clusterIP: field is immutable', kinds.by_kind("Service"), "s"
    )
    assert (e.code, e.reason) == (422, "Invalid")
    assert e.details is not None and e.details["causes"][0]["field"] == "spec.clusterIP"
    e = status.from_api_error("error: something odd", POD, "p")
    assert (e.code, e.reason, e.message) == (400, "BadRequest", "something odd")


def test_success_for_deletes() -> None:
    s = status.success("web", DEPLOY)
    assert s["status"] == "Success" and s["details"] == {"name": "web", "kind": "deployments", "group": "apps"}
