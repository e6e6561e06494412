"""The minimal OpenAPI v3 kubectl's client-side apply downloads."""

from __future__ import annotations

import json

from lab.apiserver.rest import openapi


def _patch_ops(doc: dict, kind: str) -> list[dict]:
    return [
        ops["patch"]
        for ops in doc["paths"].values()
        if "patch" in ops and ops["patch"]["x-kubernetes-group-version-kind"]["kind"] == kind
    ]


def test_root_lists_every_group_version_with_its_hash() -> None:
    root = openapi.root()["paths"]
    assert "api/v1" in root and "apis/apps/v1" in root and "apis/security.istio.io/v1beta1" in root
    for key, entry in root.items():
        group_version = key.split("/", 1)[1]
        group, _, version = group_version.rpartition("/")
        doc = openapi.document(group if key.startswith("apis/") else "", version)
        assert doc is not None
        assert entry["serverRelativeURL"] == f"/openapi/v3/{key}?hash={doc[1]}"


def test_patch_operation_has_field_validation_and_no_strategic_merge() -> None:
    doc = openapi.document("apps", "v1")
    assert doc is not None
    parsed = json.loads(doc[0])
    [patch] = _patch_ops(parsed, "Deployment")
    assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    content = patch["requestBody"]["content"]
    assert "application/strategic-merge-patch+json" not in content
    assert "application/merge-patch+json" in content and "application/apply-patch+yaml" in content
    for schema in parsed["components"]["schemas"].values():  # every $ref resolves
        assert isinstance(schema, dict)


def test_custom_kind_versions_each_have_their_own_document() -> None:
    v1, v1beta1 = openapi.document("security.istio.io", "v1"), openapi.document("security.istio.io", "v1beta1")
    assert v1 is not None and v1beta1 is not None and v1[1] != v1beta1[1]
    [patch] = _patch_ops(json.loads(v1beta1[0]), "AuthorizationPolicy")
    assert patch["x-kubernetes-group-version-kind"]["version"] == "v1beta1"
    assert openapi.document("security.istio.io", "v9") is None
