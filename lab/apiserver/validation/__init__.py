"""`lab apply -f` input: YAML text in, validated Kubernetes objects out, all or nothing.

    objects = load(text, "httpbin.yaml")       # parse_manifests + validate, exact positions

Every problem names the file, the document, the object and the field, on one line:

    error: httpbin.yaml: document 2 (Deployment ambient-apps/httpbin):
        spec.template.spec.containers[0].image: unknown image "foo/bar"; known images: ...

Field problems use the API server's wording (`Required value`, `Invalid value: X: why`,
`Unsupported value: X: supported values: ...`, `Duplicate value: X`), so messages read like
Kubernetes'. The checks cover what the lab runs (pods, workloads, services); mesh kinds get
metadata checks here and deep checks from the mesh package through `extra`. Validation does not
default fields the API server would: only `metadata.namespace` is filled in.

Split by concern: `manifests` (YAML parsing and the walk over objects, by the kind registry),
`fields` (problems and shared field checks), `core` (metadata, services, endpoints, config maps),
`workloads` (pods and their templates), `webhooks` (MutatingWebhookConfiguration). Name syntax
lives in lab/apiserver/names.py.
"""

from __future__ import annotations

from lab.apiserver.validation.fields import ExtraCheck, ManifestError, Problem
from lab.apiserver.validation.manifests import (
    kind_info,
    known_kinds,
    load,
    namespaces_needed,
    parse_manifests,
    validate,
)

__all__ = [
    "ExtraCheck",
    "ManifestError",
    "Problem",
    "kind_info",
    "known_kinds",
    "load",
    "namespaces_needed",
    "parse_manifests",
    "validate",
]
