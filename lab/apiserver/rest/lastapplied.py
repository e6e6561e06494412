"""`kubectl.kubernetes.io/last-applied-configuration` under server-side apply.

Client-side `kubectl apply` keeps the configuration it applied in this annotation. For applies by
the field manager `kubectl` (what `kubectl apply --server-side` uses) the kube-apiserver keeps the
two ways of applying compatible (k8s.io/apimachinery/pkg/util/managedfields/internal):

- lastappliedupdater.go: after the apply, an annotation the object still has is rewritten to the
  applied configuration (without the annotation itself), so that a later client-side apply
  computes its three-way patch from what was really applied. An object without the annotation
  does not get one. The rewrite changes no ownership.
- lastappliedmanager.go: when the apply conflicts, conflicts on fields the annotation holds at their
  live values are no conflicts: the apply is retried with force. `kubectl apply --server-side`
  may thus change what `kubectl apply` set before.

`kubectl` itself preserves the annotation across its managedFields upgrade by applying it alone
as `kubectl-last-applied` (apply.go, saveLastApplyAnnotationIfNecessary); the server does nothing
special for that manager. ssa.py calls `recorded` and `rewrite`; everything here is pure.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Mapping

from lab.apiserver import gojson

ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
MANAGER = "kubectl"
_TOTAL_ANNOTATIONS_BYTES = 256 * 1024  # apimachinery validation: TotalAnnotationSizeLimitB


def _annotations(obj: Mapping[str, Any]) -> Any:
    md = obj.get("metadata")
    return md.get("annotations") if isinstance(md, Mapping) else None


def recorded(live: Mapping[str, Any]) -> dict[str, Any] | None:
    """The configuration LIVE's annotation holds, when it is an object of LIVE's apiVersion."""
    annotations = _annotations(live)
    text = annotations.get(ANNOTATION) if isinstance(annotations, Mapping) else None
    if not isinstance(text, str) or not text:
        return None
    try:
        out = json.loads(text)
    except ValueError:
        return None
    if not isinstance(out, dict) or out.get("apiVersion") != live.get("apiVersion"):
        return None
    return out


def rewrite(obj: dict[str, Any], applied: Mapping[str, Any], manager: str) -> None:
    """After MANAGER applied APPLIED: OBJ's (non-empty) annotation becomes APPLIED, for `kubectl`.
    Dropped instead when it would take the object's annotations past their size limit."""
    annotations = _annotations(obj)
    if manager != MANAGER or not isinstance(annotations, dict) or not annotations.get(ANNOTATION):
        return
    annotations[ANNOTATION] = encode(applied)
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items())
    if size > _TOTAL_ANNOTATIONS_BYTES:
        del annotations[ANNOTATION]
        if not annotations:
            del obj["metadata"]["annotations"]


def encode(applied: Mapping[str, Any]) -> str:
    """buildLastApplied: the applied object without the annotation, as Go's encoding/json writes it
    (sorted keys, compact, `<>&` escaped, a final newline), which is also how kubectl writes it."""
    out = copy.deepcopy(dict(applied))
    md = out.get("metadata")
    if isinstance(md, dict) and "annotations" in md:
        if isinstance(md["annotations"], dict):
            md["annotations"].pop(ANNOTATION, None)
        else:
            del md["annotations"]
    return gojson.dumps(out) + "\n"
