"""Errors as Kubernetes `Status` objects, with the kube-apiserver's reasons, codes and wording.

kubectl prints a Status's `message` (`Error from server (NotFound): pods "x" not found`, the reason
in brackets) and the clients branch on `reason` and `code`, so each failure maps to the reason
k8s.io/apimachinery/pkg/api/errors gives it (NewNotFound, NewAlreadyExists, NewConflict,
NewInvalid, ...). The lab's own ApiError messages are classified here by their kubectl prefix.
"""

from __future__ import annotations

import re
from typing import Any

from lab.apiserver import kinds
from lab.apiserver.rest.messages import Response, json_response


class StatusError(Exception):
    """A request refused with a Status: CODE, REASON (`NotFound`...), MESSAGE, optional DETAILS."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        return failure(self.code, self.reason, self.message, self.details)


def failure(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        out["details"] = details
    return out


def success(name: str, kind: kinds.Kind, code: int = 200) -> dict[str, Any]:
    """What DELETE answers when there is no object left to show."""
    details: dict[str, Any] = {"name": name, "kind": kind.plural}
    if kind.group:
        details["group"] = kind.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details, "code": code}


def response(error: StatusError, headers: list[tuple[str, str]] | None = None) -> Response:
    return json_response(error.code, error.status(), headers)


def resource_name(kind: kinds.Kind) -> str:
    """`pods`, `deployments.apps`: how the kube-apiserver names a resource in messages."""
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def _details(kind: kinds.Kind, name: str) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "kind": kind.plural}
    if kind.group:
        d["group"] = kind.group
    return d


def not_found(kind: kinds.Kind, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{resource_name(kind)} "{name}" not found', _details(kind, name))


def already_exists(kind: kinds.Kind, name: str) -> StatusError:
    return StatusError(409, "AlreadyExists", f'{resource_name(kind)} "{name}" already exists', _details(kind, name))


def conflict(
    kind: kinds.Kind,
    name: str,
    why: str = "the object has been modified; please apply your changes to the latest version and try again",
) -> StatusError:
    return StatusError(
        409, "Conflict", f'Operation cannot be fulfilled on {resource_name(kind)} "{name}": {why}', _details(kind, name)
    )


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def forbidden(kind: kinds.Kind | None, name: str, why: str) -> StatusError:
    what = f'{resource_name(kind)} "{name}"' if kind else f'"{name}"'
    return StatusError(403, "Forbidden", f"{what} is forbidden: {why}", _details(kind, name) if kind else None)


def method_not_allowed(method: str, what: str) -> StatusError:
    return StatusError(
        405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method} {what})"
    )


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(
        415,
        "UnsupportedMediaType",
        f'the body of the request was in an unknown format - '
        f'accepted media types include: application/json, '
        f'application/yaml, application/vnd.kubernetes.protobuf '
        f'(got "{content_type}")',
    )


def not_acceptable(accept: str) -> StatusError:
    return StatusError(
        406,
        "NotAcceptable",
        f"only the following media types are accepted: application/json, application/yaml (Accept: {accept})",
    )


def unauthorized() -> StatusError:
    return StatusError(401, "Unauthorized", "Unauthorized")


_CAUSES = (
    ("Required value", "FieldValueRequired"),
    ("Invalid value", "FieldValueInvalid"),
    ("Unsupported value", "FieldValueNotSupported"),
    ("Duplicate value", "FieldValueDuplicate"),
    ("Forbidden", "FieldValueForbidden"),
    ("Too long", "FieldValueTooLong"),
    ("unknown field", "FieldValueNotFound"),
)


def cause_reason(message: str) -> str:
    for prefix, reason in _CAUSES:
        if message.startswith(prefix):
            return reason
    return "FieldValueInvalid"


def invalid(kind: kinds.Kind, name: str, problems: list[tuple[str, str]]) -> StatusError:
    """422 Invalid: `Pod "x" is invalid: spec.a: Required value` (several in brackets), with causes."""
    lines = [f"{field}: {message}" if field else message for field, message in problems]
    text = lines[0] if len(lines) == 1 else "[" + ", ".join(lines) + "]"
    details: dict[str, Any] = {
        "name": name,
        "kind": kind.kind,
        "causes": [{"reason": cause_reason(m), "message": m, "field": f} for f, m in problems],
    }
    if kind.group:
        details["group"] = kind.group
    return StatusError(422, "Invalid", f'{kind.kind} "{name}" is invalid: {text}', details)


_PREFIX = re.compile(r"^(?:error: )?Error from server \((\w+)\): (.*)$", re.S)
_CODES = {"NotFound": 404, "AlreadyExists": 409, "Conflict": 409, "Forbidden": 403, "BadRequest": 400, "Invalid": 422}


def from_api_error(message: str, kind: kinds.Kind | None = None, name: str = "") -> StatusError:
    """A lab ApiError (kubectl-worded, one line) as a Status: `Error from server (NotFound): ...`
    keeps its reason; `... is being terminated` is Forbidden; `field is immutable` and other
    field problems are Invalid; the rest BadRequest."""
    m = _PREFIX.match(message)
    if m and m.group(1) in _CODES:
        return StatusError(_CODES[m.group(1)], m.group(1), m.group(2), _details(kind, name) if kind and name else None)
    text = message[len("error: ") :] if message.startswith("error: ") else message
    if "is being terminated" in text:
        return StatusError(403, "Forbidden", text)
    field = re.match(r"^(?:[^:]+: \w+ \"[^\"]*\": )?([A-Za-z][\w.\[\]/-]*): (.*)$", text)
    if (
        kind is not None
        and field
        and (field.group(2).startswith(("field is immutable", "Forbidden", "Invalid", "Required", "Unsupported")))
    ):
        return invalid(kind, name, [(field.group(1), field.group(2))])
    return bad_request(text)
