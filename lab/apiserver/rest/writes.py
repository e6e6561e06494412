"""POST, PUT, PATCH and DELETE of resources, and the `/status` and `/scale` subresources.

Each write is decoded (bodies.py: JSON, YAML, protobuf; unknown fields per `fieldValidation`),
patched when it is a PATCH (patch.py, strategic.py; ssa.py for server-side apply), recorded in
`metadata.managedFields` by its field manager (ssa.record_update), then handed to the ApiServer,
which validates, defaults and admits it as `lab apply` would and writes it unless `dryRun=All`.
Bad input is refused before anything is written. Follows the kube-apiserver's handlers
(k8s.io/apiserver/pkg/endpoints/handlers: create.go, update.go, patch.go, delete.go) and
the "API Concepts" and "Server-Side Apply" pages of the Kubernetes documentation.
"""

from __future__ import annotations

import copy
import json
import random
import string
from typing import Any

from lab.apiserver.errors import ApiError
from lab.apiserver.rest import bodies, status
from lab.apiserver.rest.messages import Request, Response, json_response
from lab.apiserver.rest.reads import list_objects
from lab.apiserver.rest.target import Context, Target, api_error, warning_headers

APPLY_PATCH = "application/apply-patch+yaml"
_RETURN_DELETED = ("Service",)  # kinds whose DELETE answers the object (custom kinds do too)
_BUILTIN_GROUPS = ("", "apps", "admissionregistration.k8s.io")


def dry_run(values: list[str]) -> bool:
    for v in values:
        if v != "All":
            raise status.StatusError(422, "Invalid", f'dryRun: Unsupported value: "{v}": supported values: "All"')
    return bool(values)


def field_manager(request: Request) -> str:
    """`fieldManager`, else the user agent's product (as the kube-apiserver defaults it)."""
    manager = request.param("fieldManager")
    if manager:
        if len(manager) > 128:
            raise status.StatusError(422, "Invalid", "fieldManager: Too long: may not be more than 128 bytes")
        return manager
    agent = request.header("user-agent").split("/", 1)[0].strip()
    return agent[:128] or "unknown"


def _ssa() -> Any:
    from lab.apiserver.rest import ssa

    return ssa


def _record(old: dict[str, Any] | None, new: dict[str, Any], manager: str, subresource: str = "") -> dict[str, Any]:
    result: dict[str, Any] = _ssa().record_update(old, new, manager, subresource=subresource)
    return result


def _check_identity(target: Target, obj: Any, *, what: str = "object") -> dict[str, Any]:
    """OBJ is an object of TARGET's kind, in its namespace, with its name (when the URL has one)."""
    if not isinstance(obj, dict):
        raise status.bad_request(f"the body of the request must be a JSON {what}")
    obj.setdefault("apiVersion", target.api_version)
    obj.setdefault("kind", target.kind.kind)
    if obj["kind"] != target.kind.kind:
        raise status.bad_request(
            f'the kind in the body ("{obj["kind"]}") does not match the resource '
            f'({target.kind.kind}, "{target.kind.plural}")'
        )
    if obj["apiVersion"] not in target.kind.api_versions:
        raise status.bad_request(
            f"the API version in the data ({obj['apiVersion']}) does not match the expected "
            f"API version ({target.api_version})"
        )
    obj["apiVersion"] = target.api_version
    md = obj.setdefault("metadata", {})
    if not isinstance(md, dict):
        raise status.bad_request("metadata must be a JSON object")
    if target.kind.namespaced:
        if md.get("namespace") and md["namespace"] != target.namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        md["namespace"] = target.namespace
    else:
        md.pop("namespace", None)
    if target.name is not None and md.get("name") not in (None, target.name):
        raise status.bad_request(
            f"the name of the object ({md['name']}) does not match the name on the URL ({target.name})"
        )
    if target.name is not None:
        md["name"] = target.name
    return obj


def _decoded(target: Target, request: Request, content_type: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The request's object, identity checked, unknown fields handled as `fieldValidation` says."""
    decoded = bodies.decode(
        request.body,
        content_type or request.header("content-type"),
        api_version=target.api_version,
        kind=target.kind.kind,
    )
    obj = _check_identity(target, decoded.value)
    mode = bodies.field_validation(request.param("fieldValidation"))
    return bodies.check_fields(obj, target.kind.kind, mode, decoded.duplicates)


def _answer(ctx: Context, target: Target, code: int, obj: dict[str, Any], warnings: list[str]) -> Response:
    return json_response(code, target.out(obj), warning_headers(warnings + ctx.api.warnings(obj)))


def _writable(target: Target) -> None:
    if not target.kind.appliable:
        raise status.method_not_allowed("write", target.kind.plural)


# --- POST, PUT --------------------------------------------------------------------------------


def create(ctx: Context, target: Target, request: Request) -> Response:
    _writable(target)
    obj, warnings = _decoded(target, request)
    md = obj["metadata"]
    if not md.get("name") and md.get("generateName"):
        md["name"] = md["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
    if not md.get("name"):
        raise status.invalid(target.kind, "", [("metadata.name", "Required value: name or generateName is required")])
    named = Target(target.kind, target.version, target.namespace, md["name"], None)
    obj = _record(None, obj, field_manager(request))
    try:
        created = ctx.api.create(obj, dry_run=dry_run(request.query.get("dryRun", [])))
    except ApiError as e:
        raise api_error(e, named) from None
    return _answer(ctx, named, 201, created, warnings)


def replace(ctx: Context, target: Target, request: Request) -> Response:
    _writable(target)
    assert target.name is not None
    if target.subresource == "scale":
        return _replace_scale(ctx, target, request)
    obj, warnings = _decoded(target, request)
    return _replace(ctx, target, request, target.out(_current(ctx, target)), obj, warnings)


def _replace(
    ctx: Context, target: Target, request: Request, old: dict[str, Any], new: dict[str, Any], warnings: list[str]
) -> Response:
    """NEW, recorded for the request's field manager against OLD, replaces TARGET's object (only
    its status, for `/status`); the answer is the object written."""
    new = _record(old, new, field_manager(request), target.subresource or "")
    try:
        result = ctx.api.replace(
            new, dry_run=dry_run(request.query.get("dryRun", [])), status_only=target.subresource == "status"
        )
    except ApiError as e:
        raise api_error(e, target) from None
    return _answer(ctx, target, 200, result, warnings)


def _current(ctx: Context, target: Target) -> dict[str, Any]:
    assert target.name is not None
    obj = ctx.store.get(target.kind.kind, target.store_namespace, target.name)
    if obj is None:
        raise status.not_found(target.kind, target.name)
    return obj


# --- PATCH ------------------------------------------------------------------------------------


def _patch_error(e: Exception) -> status.StatusError:
    return status.StatusError(getattr(e, "code", 422), getattr(e, "reason", "Invalid"), getattr(e, "message", str(e)))


def patch(ctx: Context, target: Target, request: Request) -> Response:
    assert target.name is not None
    if not target.kind.appliable and target.subresource != "status":
        raise status.method_not_allowed("PATCH", target.kind.plural)
    content_type = request.header("content-type")
    from lab.apiserver.rest import patch as engine

    if engine.media_type(content_type) == APPLY_PATCH:
        return _apply(ctx, target, request)
    cur = _current(ctx, target)
    if target.subresource == "scale":
        return _patch_scale(ctx, target, request, cur)
    base = target.out(cur)
    try:
        patched = engine.apply_patch(base, request.body, content_type, target.kind.kind)
    except engine.PatchError as e:
        raise _patch_error(e) from None
    patched = _check_identity(target, patched)
    mode = bodies.field_validation(request.param("fieldValidation"))
    before = set(bodies.unknown_fields(base, target.kind.kind))
    new_unknown = [p for p in bodies.unknown_fields(patched, target.kind.kind) if p not in before]
    warnings: list[str] = []
    if new_unknown:
        if mode == "Strict":
            raise status.bad_request("strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in new_unknown))
        patched = bodies.prune(patched, target.kind.kind)
        warnings = [f'unknown field "{p}"' for p in new_unknown] if mode == "Warn" else []
    return _replace(ctx, target, request, base, patched, warnings)


def _apply(ctx: Context, target: Target, request: Request) -> Response:
    """Server-side apply: create the object or merge into it, with conflicts between managers."""
    manager = request.param("fieldManager")
    if not manager:
        raise status.StatusError(
            422,
            "Invalid",
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
        )
    if target.subresource:
        raise status.method_not_allowed("apply", f"{target.kind.plural}/{target.subresource}")
    force = request.param("force") in ("true", "1")
    applied, warnings = _decoded(target, request, APPLY_PATCH)
    cur = ctx.store.get(target.kind.kind, target.store_namespace, target.name)
    ssa = _ssa()
    try:
        merged = ssa.apply(target.out(cur) if cur is not None else None, applied, manager, force)
    except ssa.ApplyConflict as e:
        raise status.StatusError(409, "Conflict", e.message, e.details) from None
    except ssa.ApplyError as e:
        raise _patch_error(e) from None
    dry = dry_run(request.query.get("dryRun", []))
    try:
        if cur is None:
            return _answer(ctx, target, 201, ctx.api.create(merged, dry_run=dry), warnings)
        return _answer(ctx, target, 200, ctx.api.replace(merged, dry_run=dry), warnings)
    except ApiError as e:
        raise api_error(e, target) from None


# --- /scale -----------------------------------------------------------------------------------


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    """An autoscaling/v1 Scale for a Deployment or ReplicaSet."""
    from lab.apiserver import tables

    md = obj["metadata"]
    selector = tables.selector_text(obj.get("spec", {}).get("selector"))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in md},
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": "" if selector in (tables.NONE, tables.UNKNOWN) else selector,
        },
    }


def _rescale(ctx: Context, target: Target, request: Request, cur: dict[str, Any], scale: Any) -> Response:
    if not isinstance(scale, dict) or not isinstance(scale.get("spec"), dict):
        raise status.bad_request("the body of the request must be an autoscaling/v1 Scale")
    replicas = scale["spec"].get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise status.StatusError(
            422,
            "Invalid",
            f'Scale.autoscaling "{target.name}" is invalid: spec.replicas: '
            f'Invalid value: {json.dumps(replicas)}: must be greater than or '
            f'equal to 0',
        )
    new = copy.deepcopy(target.out(cur))
    new["spec"]["replicas"] = replicas
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    if rv:
        new["metadata"]["resourceVersion"] = rv
    new = _record(target.out(cur), new, field_manager(request), "scale")
    try:
        result = ctx.api.replace(new, dry_run=dry_run(request.query.get("dryRun", [])))
    except ApiError as e:
        raise api_error(e, target) from None
    return json_response(200, scale_of(result))


def _replace_scale(ctx: Context, target: Target, request: Request) -> Response:
    cur = _current(ctx, target)
    return _rescale(ctx, target, request, cur, bodies.decode(request.body, request.header("content-type")).value)


def _patch_scale(ctx: Context, target: Target, request: Request, cur: dict[str, Any]) -> Response:
    from lab.apiserver.rest import patch as engine

    try:
        patched = engine.apply_patch(scale_of(cur), request.body, request.header("content-type"), "Scale")
    except engine.PatchError as e:
        raise _patch_error(e) from None
    return _rescale(ctx, target, request, cur, patched)


# --- DELETE -----------------------------------------------------------------------------------


def _delete_options(request: Request) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if request.body.strip():
        decoded = bodies.decode(request.body, request.header("content-type")).value
        if not isinstance(decoded, dict):
            raise status.bad_request("the body of a DELETE must be a DeleteOptions object")
        opts = decoded
    for key in ("propagationPolicy", "orphanDependents", "gracePeriodSeconds"):
        if request.param(key) is not None:
            opts[key] = request.param(key)
    if request.query.get("dryRun"):
        opts["dryRun"] = request.query["dryRun"]
    policy = opts.get("propagationPolicy")
    orphan = opts.get("orphanDependents")
    if policy is None and orphan is not None:
        policy = "Orphan" if orphan in (True, "true", "1") else "Background"
    if policy not in (None, "Background", "Foreground", "Orphan"):
        raise status.StatusError(
            422,
            "Invalid",
            f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
            f'Unsupported value: "{policy}": supported values: "Foreground", '
            f'"Background", "Orphan"',
        )
    opts["propagationPolicy"] = policy or "Background"
    dry = opts.get("dryRun") or []
    opts["dryRun"] = dry_run(dry if isinstance(dry, list) else [dry])
    pre = opts.get("preconditions") or {}
    opts["preconditions"] = pre if isinstance(pre, dict) else {}
    return opts


def _delete_one(ctx: Context, target: Target, name: str, opts: dict[str, Any]) -> dict[str, Any]:
    try:
        return ctx.api.delete_object(
            target.kind.kind,
            target.store_namespace,
            name,
            dry_run=opts["dryRun"],
            propagation=opts["propagationPolicy"],
            uid=opts["preconditions"].get("uid"),
            resource_version=opts["preconditions"].get("resourceVersion"),
        )
    except ApiError as e:
        raise api_error(e, Target(target.kind, target.version, target.namespace, name, None)) from None


def delete(ctx: Context, target: Target, request: Request) -> Response:
    _writable(target)
    assert target.name is not None
    opts = _delete_options(request)
    obj = _delete_one(ctx, target, target.name, opts)
    left = ctx.store.get(target.kind.kind, target.store_namespace, target.name)
    if (
        opts["dryRun"]
        or left is not None
        or target.kind.kind in _RETURN_DELETED
        or target.kind.group not in _BUILTIN_GROUPS
    ):
        return json_response(200, target.out(left if left is not None and not opts["dryRun"] else obj))
    done = status.success(target.name, target.kind)
    done["details"]["uid"] = obj["metadata"].get("uid")
    return json_response(200, done)


def delete_collection(ctx: Context, target: Target, request: Request) -> Response:
    """DELETE on a collection: every object the selectors match (kubectl's `delete --all` sends
    one DELETE per object; other clients use this)."""
    _writable(target)
    opts = _delete_options(request)
    deleted = [
        _delete_one(
            ctx,
            Target(target.kind, target.version, o["metadata"].get("namespace"), None, None),
            o["metadata"]["name"],
            opts,
        )
        for o in list_objects(ctx, target, request)
    ]
    return json_response(
        200,
        {
            "kind": f"{target.kind.kind}List",
            "apiVersion": target.api_version,
            "metadata": {"resourceVersion": str(ctx.store.resource_version)},
            "items": [target.out(o) for o in deleted],
        },
    )
