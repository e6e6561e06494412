"""JSON as Go's encoding/json writes it, for text that must match the Go tools' to the byte: the
`last-applied-configuration` annotation (kubectl, the kube-apiserver) and kubectl's jsonpath output."""

from __future__ import annotations

import json
from typing import Any

# encoding/json's HTML-safe escapes, and the two line separators JavaScript cannot take.
_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def dumps(value: Any) -> str:
    """json.Marshal's compact form: sorted keys, no spaces, non-ASCII as is, `<>&` escaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).translate(_ESCAPES)
