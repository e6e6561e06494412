"""The minimal OpenAPI v3 that kubectl's client-side `apply` needs. Pure.

kubectl downloads `/openapi/v3` (a root listing each group-version with a `serverRelativeURL`
whose `hash` changes with the document, so clients may cache it for good), then the document of
each group-version it touches. From it kubectl learns two things: that the server validates
fields itself (the `fieldValidation` query parameter on the kind's `patch` operation, found by its
`x-kubernetes-group-version-kind`: kubectl's QueryParamVerifierV3), and whether to take its
strategic-merge schema from the document (only if the patch's `requestBody.content` lists
`application/strategic-merge-patch+json`). The lab leaves that content type out, so kubectl uses
its compiled-in types for built-in kinds and JSON merge patches for custom ones, as against a
cluster whose CRDs have no strategic schema (kubectl/pkg/cmd/apply/patcher.go,
k8s.io/client-go/openapi3). Field schemas are not served: `kubectl explain` is out of scope.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any

from lab.apiserver import kinds
from lab.apiserver.rest import routes

VERSION = "v1.30.0"
_QUERY = ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
_PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json")


def _gv_path(group: str, version: str) -> str:
    """`api/v1`, `apis/apps/v1`: the key of a group-version in the root document."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(k: kinds.Kind, version: str) -> str:
    group = k.group or "core"
    return f"lab.{group}.{version}.{k.kind}"


def _gvk(k: kinds.Kind, version: str) -> dict[str, str]:
    return {"group": k.group, "version": version, "kind": k.kind}


def _ref(name: str) -> dict[str, Any]:
    return {"schema": {"$ref": f"#/components/schemas/{name}"}}


def _operation(
    k: kinds.Kind, version: str, action: str, op_id: str, query: tuple[str, ...], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "tags": [k.group or "core"],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(k, version),
        "parameters": [{"name": q, "in": "query", "schema": {"type": "string", "uniqueItems": True}} for q in query],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": _ref(_schema_name(k, version))}},
            "401": {"description": "Unauthorized"},
        },
    }
    if body is not None:
        op["requestBody"] = {"content": body, "required": True}
    return op


def _paths(k: kinds.Kind, version: str) -> dict[str, Any]:
    base = f"/{_gv_path(k.group, version)}" + ("/namespaces/{namespace}" if k.namespaced else "")
    params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    if k.namespaced:
        params.append({"name": "namespace", "in": "path", "required": True, "schema": {"type": "string"}})
    op = k.kind
    own = {"application/json": _ref(_schema_name(k, version))}
    item: dict[str, Any] = {
        "parameters": params,
        "get": _operation(k, version, "get", f"read{op}", ("pretty",)),
        "patch": _operation(
            k,
            version,
            "patch",
            f"patch{op}",
            _QUERY,
            {t: _ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch") for t in _PATCH_TYPES},
        ),
    }
    collection: dict[str, Any] = {
        "parameters": params[1:],
        "get": _operation(k, version, "list", f"list{op}", ("labelSelector", "fieldSelector", "limit", "watch")),
    }
    if k.appliable:
        item["put"] = _operation(k, version, "put", f"replace{op}", _QUERY[:3], own)
        item["delete"] = _operation(k, version, "delete", f"delete{op}", ("dryRun", "propagationPolicy"))
        collection["post"] = _operation(k, version, "post", f"create{op}", _QUERY[:3], own)
    return {f"{base}/{k.plural}/{{name}}": item, f"{base}/{k.plural}": collection}


@lru_cache(maxsize=None)
def _document(group: str, version: str) -> tuple[bytes, str] | None:
    served = routes.kinds_in(group, version)
    if not served:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch": {
            "type": "object",
            "description": "A patch in one of the content types the operation lists.",
        }
    }
    for k in served:
        paths.update(_paths(k, version))
        schemas[_schema_name(k, version)] = {
            "type": "object",
            "description": f"{k.kind} (the lab validates fields server-side)",
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-group-version-kind": [_gvk(k, version)],
        }
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    body = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return body, hashlib.sha512(body).hexdigest().upper()


def document(group: str, version: str) -> tuple[bytes, str] | None:
    """The JSON document of GROUP/VERSION and its hash, or None when it is not served."""
    return _document(group, version)


def root() -> dict[str, Any]:
    """`/openapi/v3`: every served group-version with the URL of its current document."""
    paths: dict[str, Any] = {}
    for group, versions in routes.served_group_versions():
        for v in versions:
            doc = _document(group, v)
            if doc is not None:
                key = _gv_path(group, v)
                paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={doc[1]}"}
    return {"paths": paths}
