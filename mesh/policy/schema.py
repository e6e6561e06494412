"""The API server's half of policy validation: the CRDs' structural schemas and object metadata.

Kubernetes checks an object's apiVersion, kind, metadata and field types against the CRD's schema
before any webhook sees it; istiod's webhook (`mesh.policy.validation`) then judges the values. The
two are kept apart because they run in that order and report differently: shape problems come
alone, and the webhook's checks may trust the types once the shape holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

GROUP = "security.istio.io"
API_VERSIONS = (f"{GROUP}/v1", f"{GROUP}/v1beta1")
AUTHORIZATION_POLICY = "AuthorizationPolicy"
PEER_AUTHENTICATION = "PeerAuthentication"
REQUEST_AUTHENTICATION = "RequestAuthentication"
KINDS = (AUTHORIZATION_POLICY, PEER_AUTHENTICATION, REQUEST_AUTHENTICATION)

ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
MTLS_MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")


def negated(field: str) -> str:
    """A source or operation field's negation: `ports` → `notPorts`."""
    return f"not{field[0].upper()}{field[1:]}"


def with_negations(*fields: str) -> tuple[str, ...]:
    """Each field followed by its negation."""
    return tuple(f for field in fields for f in (field, negated(field)))


SOURCE_FIELDS = with_negations(
    "principals", "requestPrincipals", "namespaces", "serviceAccounts", "ipBlocks", "remoteIpBlocks", "trustDomains"
)
OPERATION_FIELDS = with_negations("hosts", "ports", "methods", "paths")

Problem = tuple[str, str]


# ---------------------------------------------------------------------------------------------
# Shape: the CRD schemas (types, unknown fields, enums, item limits)


@dataclass(frozen=True)
class _List:
    item: Any
    max_items: int | None = None


@dataclass(frozen=True)
class _Map:
    value: Any
    port_keys: bool = False


@dataclass(frozen=True)
class _Enum:
    values: tuple[str, ...]


_STRINGS = _List(str)
_SELECTOR = {"matchLabels": _Map(str)}
_TARGET_REF = {"group": str, "kind": str, "name": str, "namespace": str}
_ATTACHMENT = {"selector": _SELECTOR, "targetRef": _TARGET_REF, "targetRefs": _List(_TARGET_REF, 16)}
_SOURCE = {field: _List(str, 16) if "erviceAccounts" in field else _STRINGS for field in SOURCE_FIELDS}
_RULE = {
    "from": _List({"source": _SOURCE}, 512),
    "to": _List({"operation": {field: _STRINGS for field in OPERATION_FIELDS}}),
    "when": _List({"key": str, "values": _STRINGS, "notValues": _STRINGS}),
}
_MTLS = {"mode": _Enum(MTLS_MODES)}
_JWT_RULE = {
    "issuer": str,
    "audiences": _STRINGS,
    "jwksUri": str,
    "jwks_uri": str,
    "jwks": str,
    "fromHeaders": _List({"name": str, "prefix": str}),
    "fromParams": _STRINGS,
    "fromCookies": _STRINGS,
    "forwardOriginalToken": bool,
    "outputPayloadToHeader": str,
    "outputClaimToHeaders": _List({"header": str, "claim": str}),
    "spaceDelimitedClaims": _List(str, 64),
    "timeout": str,
}
SPECS = {
    AUTHORIZATION_POLICY: {
        **_ATTACHMENT,
        "action": _Enum(ACTIONS),
        "provider": {"name": str},
        "rules": _List(_RULE, 512),
    },
    PEER_AUTHENTICATION: {"selector": _SELECTOR, "mtls": _MTLS, "portLevelMtls": _Map(_MTLS, port_keys=True)},
    REQUEST_AUTHENTICATION: {**_ATTACHMENT, "jwtRules": _List(_JWT_RULE, 4096)},
}
TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")


def type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def check_shape(value: Any, schema: Any, path: str, out: list[Problem]) -> None:
    """Every place `value` departs from `schema` (fields as a dict, `_List`, `_Map`, `_Enum`, or a
    Python type) into `out`; what is under a value of the wrong type is not looked at."""
    if isinstance(schema, (dict, _Map)) and not isinstance(value, dict):
        out.append((path, f"must be an object, got {type_name(value)}"))
    elif isinstance(schema, dict):
        for key, item in value.items():
            sub = f"{path}.{key}"
            if key not in schema:
                out.append((sub, f'unknown field "{key}"'))
            elif item is not None:
                check_shape(item, schema[key], sub, out)
    elif isinstance(schema, _List):
        if not isinstance(value, list):
            out.append((path, f"must be a list, got {type_name(value)}"))
            return
        if schema.max_items is not None and len(value) > schema.max_items:
            out.append((path, f"must have at most {schema.max_items} items"))
        for i, item in enumerate(value):
            if item is None:
                out.append((f"{path}[{i}]", "must not be null"))
            else:
                check_shape(item, schema.item, f"{path}[{i}]", out)
    elif isinstance(schema, _Map):
        for key, item in value.items():
            sub = f'{path}["{key}"]'
            if schema.port_keys and port_number(key) in (None, 0):
                out.append((sub, f'port must be between 1-65535, got "{key}"'))
            elif not schema.port_keys and not isinstance(key, str):
                out.append((sub, f"key must be a string, got {type_name(key)}"))
            if item is None:
                out.append((sub, "must not be null"))
            else:
                check_shape(item, schema.value, sub, out)
    elif isinstance(schema, _Enum):
        if value not in schema.values:
            out.append((path, f'unsupported value "{value}": must be one of {", ".join(schema.values)}'))
    elif schema is bool:
        if not isinstance(value, bool):
            out.append((path, f"must be a boolean, got {type_name(value)}"))
    elif schema is str and not isinstance(value, str):
        hint = f' (quote it: "{value}")' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        out.append((path, f"must be a string, got {type_name(value)}{hint}"))


# ---------------------------------------------------------------------------------------------
# Header: apiVersion, kind and the object's metadata

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def port_number(value: Any) -> int | None:
    """A port as Go's strconv.ParseUint(v, 10, 32) <= 65535 reads it: digits only, 0 allowed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 65535 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) <= 65535:
        return int(value)
    return None


def check_header(obj: Any, out: list[Problem]) -> None:
    if obj.get("apiVersion") not in API_VERSIONS:
        out.append(
            ("apiVersion", f'unsupported apiVersion "{obj.get("apiVersion")}": must be {" or ".join(API_VERSIONS)}')
        )
    if obj.get("kind") not in KINDS:
        out.append(("kind", f'unsupported kind "{obj.get("kind")}": must be one of {", ".join(KINDS)}'))
    for key in obj:
        if key not in TOP_LEVEL:
            out.append((key, f'unknown field "{key}"'))
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        out.append(("metadata", "must be an object with a name"))
        return
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str) or not name:
        out.append(("metadata.name", "must be set"))
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        out.append(("metadata.name", f'invalid name "{name}": must be a lowercase RFC 1123 subdomain'))
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.match(namespace)
    ):
        out.append(("metadata.namespace", f'invalid namespace "{namespace}": must be a lowercase RFC 1123 label'))
