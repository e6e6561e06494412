"""Kubernetes protobuf request bodies -> the JSON-shaped dict the same client would have sent.

Why: kubectl >= 1.32 sends `kubectl create ns/sa/cm/secret/deployment` bodies as
`application/vnd.kubernetes.protobuf` and does not retry with JSON after a 415, so the lab must
read them. Only decoding is needed: the lab answers JSON, which kubectl accepts.

    decode(body) -> {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "x"}, ...}

Wire format: the magic `k8s\\x00`, then a `runtime.Unknown` message {typeMeta{apiVersion, kind},
raw, contentEncoding, contentType} whose `raw` is the object's own message. Field numbers and
types come from the generated protobuf definitions (read, not copied):

- kubernetes/api `core/v1/generated.proto` and `apps/v1/generated.proto`;
- kubernetes/apimachinery `pkg/apis/meta/v1/generated.proto` (ObjectMeta, LabelSelector, Time),
  `pkg/runtime/generated.proto` (Unknown, TypeMeta), `pkg/api/resource/generated.proto`
  (Quantity), `pkg/util/intstr/generated.proto` (IntOrString);
- the envelope from `pkg/runtime/serializer/protobuf/protobuf.go` and `pkg/runtime/types_proto.go`,
  Time's encoding from `pkg/apis/meta/v1/time_proto.go`.

Go's generated marshallers write every non-pointer field, zero or not; Go's JSON drops zero
scalars tagged `omitempty`. So decoding drops zero scalars unless the field is a pointer or has no
`omitempty` (flag KEEP), and keeps nested structs even when empty (`"spec": {}`), as Go's JSON does.
A zero Time (JSON `null`, e.g. `creationTimestamp`) is omitted: the server stamps it. Fields the
tables do not list are skipped, like any protobuf reader skips unknown fields; the tables cover what
`kubectl create` fills in plus the usual container fields. Time keeps whole seconds only, as
Kubernetes does.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, NamedTuple

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
_WIRE_NAMES = {
    VARINT: "varint",
    FIXED64: "fixed64",
    LEN: "length-delimited",
    START_GROUP: "group start",
    END_GROUP: "group end",
    FIXED32: "fixed32",
}


class ProtobufError(ValueError):
    """A body the lab cannot read: malformed, or a kind without a schema (the REST layer's 415)."""


# -- schema tables ----------------------------------------------------------------------------------

KEEP = "keep"  # a pointer, or no `omitempty`: the zero value is meaningful and kept
INLINE = "inline"  # an embedded Go struct (`json:",inline"`): its fields merge into the parent


class F(NamedTuple):
    """One field: its JSON name, its type, and KEEP / INLINE.

    Types: string, bytes (JSON base64), bool, int (int32/int64, two's complement varint), Time,
    Quantity, IntOrString, a message name from MESSAGES, `[]T` (repeated T), `map<T>` (string keys).
    """

    name: str
    type: str
    flag: str = ""


_LOCAL_REF = F("localObjectReference", "LocalObjectReference", INLINE)

# Listed in the .proto's declaration order, which is the Go struct's: JSON keys come out in it.
# fmt: off
MESSAGES: dict[str, dict[int, F]] = {
    # k8s.io/apimachinery/pkg/runtime (Unknown, the envelope, is read by `unwrap`)
    "TypeMeta": {1: F("apiVersion", "string"), 2: F("kind", "string")},
    # k8s.io/apimachinery/pkg/apis/meta/v1
    "ObjectMeta": {
        1: F("name", "string"), 2: F("generateName", "string"), 3: F("namespace", "string"),
        4: F("selfLink", "string"), 5: F("uid", "string"), 6: F("resourceVersion", "string"),
        7: F("generation", "int"), 8: F("creationTimestamp", "Time"), 9: F("deletionTimestamp", "Time"),
        10: F("deletionGracePeriodSeconds", "int", KEEP), 11: F("labels", "map<string>"),
        12: F("annotations", "map<string>"), 13: F("ownerReferences", "[]OwnerReference"),
        14: F("finalizers", "[]string"),
    },
    "OwnerReference": {5: F("apiVersion", "string", KEEP), 1: F("kind", "string", KEEP),
                       3: F("name", "string", KEEP), 4: F("uid", "string", KEEP),
                       6: F("controller", "bool", KEEP), 7: F("blockOwnerDeletion", "bool", KEEP)},
    "LabelSelector": {1: F("matchLabels", "map<string>"), 2: F("matchExpressions", "[]LabelSelectorRequirement")},
    "LabelSelectorRequirement": {1: F("key", "string", KEEP), 2: F("operator", "string", KEEP),
                                 3: F("values", "[]string")},
    # k8s.io/api/core/v1
    "Namespace": {1: F("metadata", "ObjectMeta"), 2: F("spec", "NamespaceSpec"), 3: F("status", "NamespaceStatus")},
    "NamespaceSpec": {1: F("finalizers", "[]string")},
    "NamespaceStatus": {1: F("phase", "string")},
    "ServiceAccount": {1: F("metadata", "ObjectMeta"), 2: F("secrets", "[]ObjectReference"),
                       3: F("imagePullSecrets", "[]LocalObjectReference"),
                       4: F("automountServiceAccountToken", "bool", KEEP)},
    "ObjectReference": {1: F("kind", "string"), 2: F("namespace", "string"), 3: F("name", "string"),
                        4: F("uid", "string"), 5: F("apiVersion", "string"), 6: F("resourceVersion", "string"),
                        7: F("fieldPath", "string")},
    "LocalObjectReference": {1: F("name", "string")},
    "ConfigMap": {1: F("metadata", "ObjectMeta"), 4: F("immutable", "bool", KEEP), 2: F("data", "map<string>"),
                  3: F("binaryData", "map<bytes>")},
    "Secret": {1: F("metadata", "ObjectMeta"), 5: F("immutable", "bool", KEEP), 2: F("data", "map<bytes>"),
               4: F("stringData", "map<string>"), 3: F("type", "string")},
    "Pod": {1: F("metadata", "ObjectMeta"), 2: F("spec", "PodSpec"), 3: F("status", "PodStatus")},
    "PodStatus": {1: F("phase", "string")},
    "PodTemplateSpec": {1: F("metadata", "ObjectMeta"), 2: F("spec", "PodSpec")},
    "PodSpec": {
        20: F("initContainers", "[]Container"), 2: F("containers", "[]Container", KEEP),
        3: F("restartPolicy", "string"), 4: F("terminationGracePeriodSeconds", "int", KEEP),
        5: F("activeDeadlineSeconds", "int", KEEP), 6: F("dnsPolicy", "string"), 7: F("nodeSelector", "map<string>"),
        8: F("serviceAccountName", "string"), 9: F("serviceAccount", "string"),
        21: F("automountServiceAccountToken", "bool", KEEP), 10: F("nodeName", "string"),
        11: F("hostNetwork", "bool"), 12: F("hostPID", "bool"), 13: F("hostIPC", "bool"),
        27: F("shareProcessNamespace", "bool", KEEP), 15: F("imagePullSecrets", "[]LocalObjectReference"),
        16: F("hostname", "string"), 17: F("subdomain", "string"), 19: F("schedulerName", "string"),
        22: F("tolerations", "[]Toleration"), 24: F("priorityClassName", "string"), 25: F("priority", "int", KEEP),
        29: F("runtimeClassName", "string", KEEP), 30: F("enableServiceLinks", "bool", KEEP),
        31: F("preemptionPolicy", "string", KEEP), 32: F("overhead", "map<Quantity>"),
        35: F("setHostnameAsFQDN", "bool", KEEP), 37: F("hostUsers", "bool", KEEP),
        40: F("resources", "ResourceRequirements", KEEP),
    },
    "Toleration": {1: F("key", "string"), 2: F("operator", "string"), 3: F("value", "string"),
                   4: F("effect", "string"), 5: F("tolerationSeconds", "int", KEEP)},
    "Container": {
        1: F("name", "string", KEEP), 2: F("image", "string"), 3: F("command", "[]string"), 4: F("args", "[]string"),
        5: F("workingDir", "string"), 6: F("ports", "[]ContainerPort"), 19: F("envFrom", "[]EnvFromSource"),
        7: F("env", "[]EnvVar"), 8: F("resources", "ResourceRequirements"), 24: F("restartPolicy", "string", KEEP),
        9: F("volumeMounts", "[]VolumeMount"), 10: F("livenessProbe", "Probe"), 11: F("readinessProbe", "Probe"),
        22: F("startupProbe", "Probe"), 13: F("terminationMessagePath", "string"),
        20: F("terminationMessagePolicy", "string"), 14: F("imagePullPolicy", "string"),
        16: F("stdin", "bool"), 17: F("stdinOnce", "bool"), 18: F("tty", "bool"),
    },
    "ContainerPort": {1: F("name", "string"), 2: F("hostPort", "int"), 3: F("containerPort", "int", KEEP),
                      4: F("protocol", "string"), 5: F("hostIP", "string")},
    "EnvVar": {1: F("name", "string", KEEP), 2: F("value", "string"), 3: F("valueFrom", "EnvVarSource")},
    "EnvVarSource": {1: F("fieldRef", "ObjectFieldSelector"), 2: F("resourceFieldRef", "ResourceFieldSelector"),
                     3: F("configMapKeyRef", "ConfigMapKeySelector"), 4: F("secretKeyRef", "SecretKeySelector")},
    "ObjectFieldSelector": {1: F("apiVersion", "string"), 2: F("fieldPath", "string", KEEP)},
    "ResourceFieldSelector": {1: F("containerName", "string"), 2: F("resource", "string", KEEP),
                              3: F("divisor", "Quantity")},
    "ConfigMapKeySelector": {1: _LOCAL_REF, 2: F("key", "string", KEEP), 3: F("optional", "bool", KEEP)},
    "SecretKeySelector": {1: _LOCAL_REF, 2: F("key", "string", KEEP), 3: F("optional", "bool", KEEP)},
    "EnvFromSource": {1: F("prefix", "string"), 2: F("configMapRef", "ConfigMapEnvSource"),
                      3: F("secretRef", "SecretEnvSource")},
    "ConfigMapEnvSource": {1: _LOCAL_REF, 2: F("optional", "bool", KEEP)},
    "SecretEnvSource": {1: _LOCAL_REF, 2: F("optional", "bool", KEEP)},
    "ResourceRequirements": {1: F("limits", "map<Quantity>"), 2: F("requests", "map<Quantity>"),
                             3: F("claims", "[]ResourceClaim")},
    "ResourceClaim": {1: F("name", "string", KEEP), 2: F("request", "string")},
    "VolumeMount": {1: F("name", "string", KEEP), 2: F("readOnly", "bool"), 7: F("recursiveReadOnly", "string", KEEP),
                    3: F("mountPath", "string", KEEP), 4: F("subPath", "string"),
                    5: F("mountPropagation", "string", KEEP), 6: F("subPathExpr", "string")},
    "Probe": {1: F("handler", "ProbeHandler", INLINE), 2: F("initialDelaySeconds", "int"),
              3: F("timeoutSeconds", "int"), 4: F("periodSeconds", "int"), 5: F("successThreshold", "int"),
              6: F("failureThreshold", "int"), 7: F("terminationGracePeriodSeconds", "int", KEEP)},
    "ProbeHandler": {1: F("exec", "ExecAction"), 2: F("httpGet", "HTTPGetAction"),
                     3: F("tcpSocket", "TCPSocketAction"), 4: F("grpc", "GRPCAction")},
    "ExecAction": {1: F("command", "[]string")},
    "HTTPGetAction": {1: F("path", "string"), 2: F("port", "IntOrString", KEEP), 3: F("host", "string"),
                      4: F("scheme", "string"), 5: F("httpHeaders", "[]HTTPHeader")},
    "HTTPHeader": {1: F("name", "string", KEEP), 2: F("value", "string", KEEP)},
    "TCPSocketAction": {1: F("port", "IntOrString", KEEP), 2: F("host", "string")},
    "GRPCAction": {1: F("port", "int", KEEP), 2: F("service", "string", KEEP)},
    # k8s.io/api/apps/v1
    "Deployment": {1: F("metadata", "ObjectMeta"), 2: F("spec", "DeploymentSpec"),
                   3: F("status", "DeploymentStatus")},
    "DeploymentSpec": {1: F("replicas", "int", KEEP), 2: F("selector", "LabelSelector"),
                       3: F("template", "PodTemplateSpec"), 4: F("strategy", "DeploymentStrategy"),
                       5: F("minReadySeconds", "int"), 6: F("revisionHistoryLimit", "int", KEEP),
                       7: F("paused", "bool"), 9: F("progressDeadlineSeconds", "int", KEEP)},
    "DeploymentStrategy": {1: F("type", "string"), 2: F("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: F("maxUnavailable", "IntOrString", KEEP),
                                2: F("maxSurge", "IntOrString", KEEP)},
    "DeploymentStatus": {1: F("observedGeneration", "int"), 2: F("replicas", "int"), 3: F("updatedReplicas", "int"),
                         7: F("readyReplicas", "int"), 4: F("availableReplicas", "int"),
                         5: F("unavailableReplicas", "int"), 9: F("terminatingReplicas", "int", KEEP),
                         8: F("collisionCount", "int", KEEP)},
}
# fmt: on

# (apiVersion, kind) -> top-level message: what `kubectl create` sends as protobuf, plus Pod.
KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "ServiceAccount"): "ServiceAccount",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("v1", "Pod"): "Pod",
    ("apps/v1", "Deployment"): "Deployment",
}

_SCALARS = frozenset({"string", "bytes", "bool", "int", "Time", "Quantity", "IntOrString"})


# -- wire format ------------------------------------------------------------------------------------


def read_varint(buf: bytes, pos: int, where: str = "message") -> tuple[int, int]:
    """The unsigned varint at `pos` and the position after it (at most 10 bytes, 64 bits)."""
    value = shift = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise ProtobufError(f"protobuf: {where}: truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, pos + i + 1
        shift += 7
    raise ProtobufError(f"protobuf: {where}: varint longer than 10 bytes")


def fields(buf: bytes, where: str = "message") -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field: an int for varint/fixed, bytes for LEN."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos, where)
        number, wire = key >> 3, key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise ProtobufError(f"protobuf: {where}: invalid field number {number}")
        value: int | bytes
        if wire == VARINT:
            value, pos = read_varint(buf, pos, where)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if pos + size > len(buf):
                raise ProtobufError(f"protobuf: {where}: field {number}: truncated {_WIRE_NAMES[wire]}")
            value, pos = int.from_bytes(buf[pos : pos + size], "little"), pos + size
        elif wire == LEN:
            length, pos = read_varint(buf, pos, where)
            if length > len(buf) - pos:
                raise ProtobufError(
                    f"protobuf: {where}: field {number}: length {length} runs past the end "
                    f"({len(buf) - pos} bytes left)"
                )
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire in (START_GROUP, END_GROUP):
            raise ProtobufError(f"protobuf: {where}: field {number}: groups are not used by Kubernetes")
        else:
            raise ProtobufError(f"protobuf: {where}: field {number}: invalid wire type {wire}")
        yield number, wire, value


# -- decoding ---------------------------------------------------------------------------------------


class Envelope(NamedTuple):
    """The `runtime.Unknown` around the object: its type, its own message bytes, and how encoded."""

    api_version: str
    kind: str
    raw: bytes
    content_encoding: str
    content_type: str


def decode(body: bytes, *, api_version: str = "", kind: str = "") -> dict[str, Any]:
    """A `k8s\\0`-prefixed body -> the object as a JSON-shaped dict (kind, apiVersion first).

    `api_version`/`kind` (from the URL) fill in an envelope that lacks them, as Kubernetes does.
    """
    envelope = unwrap(body)
    version = envelope.api_version or api_version
    name = envelope.kind or kind
    if not name or not version:
        raise ProtobufError("protobuf: the envelope names no kind or apiVersion")
    if envelope.content_encoding:
        raise ProtobufError(f"protobuf: unsupported contentEncoding {envelope.content_encoding!r}")
    message = KINDS.get((version, name))
    if message is None:
        known = ", ".join(f"{v}/{k}" for v, k in KINDS)
        raise ProtobufError(
            f"protobuf bodies are not supported for {version}, Kind={name} "
            f"(only {known}); send JSON (Content-Type: application/json)"
        )
    obj: dict[str, Any] = {"kind": name, "apiVersion": version}
    obj.update(decode_message(message, envelope.raw, name))
    return obj


def unwrap(body: bytes) -> Envelope:
    """Check the magic and read the `runtime.Unknown` envelope (fields 1-4; others skipped)."""
    if not body:
        raise ProtobufError("protobuf: empty body")
    if not body.startswith(MAGIC):
        raise ProtobufError(
            f"protobuf: body does not start with the magic {MAGIC!r} "
            f"(got {bytes(body[:4])!r}); is it really {CONTENT_TYPE}?"
        )
    if len(body) == len(MAGIC):
        raise ProtobufError("protobuf: empty message after the magic")
    type_meta: dict[str, Any] = {}
    raw, strings = b"", {3: "", 4: ""}
    for number, wire, value in fields(bytes(body[len(MAGIC) :]), "Unknown"):
        if number == 1:
            type_meta = decode_message("TypeMeta", _expect(wire, value, LEN, "Unknown.typeMeta"), "Unknown.typeMeta")
        elif number == 2:
            raw = _expect(wire, value, LEN, "Unknown.raw")
        elif number in strings:
            strings[number] = _text(_expect(wire, value, LEN, f"Unknown field {number}"), f"Unknown field {number}")
    return Envelope(type_meta.get("apiVersion", ""), type_meta.get("kind", ""), raw, strings[3], strings[4])


def decode_message(message: str, buf: bytes, path: str) -> dict[str, Any]:
    """One message of MESSAGES -> dict, in the table's (Go struct) key order."""
    table = MESSAGES[message]
    values: dict[int, Any] = {}
    for number, wire, value in fields(buf, path):
        field = table.get(number)
        if field is None:
            continue  # unknown or not modelled: skipped, as any protobuf reader does
        where = f"{path}.{field.name}"
        if field.type.startswith("map<"):
            key, item = _map_entry(field.type[4:-1], _expect(wire, value, LEN, where), where)
            values.setdefault(number, {})[key] = item
        elif field.type.startswith("[]"):
            items = values.setdefault(number, [])
            items.append(_value(field.type[2:], wire, value, f"{where}[{len(items)}]"))
        else:
            values[number] = _value(field.type, wire, value, where)
    out: dict[str, Any] = {}
    for number, field in table.items():
        if number not in values:
            continue
        value = values[number]
        if field.flag == INLINE:
            out.update(value)
        elif value is None or (field.flag != KEEP and not isinstance(value, dict) and not value):
            continue  # zero Time, or a zero scalar under `omitempty`
        else:
            out[field.name] = value
    return out


def _expect(wire: int, value: int | bytes, want: int, where: str) -> Any:
    if wire != want:
        raise ProtobufError(
            f"protobuf: {where}: expected {_WIRE_NAMES[want]} (wire type {want}), "
            f"got {_WIRE_NAMES.get(wire, '?')} (wire type {wire})"
        )
    return value


def _value(type_: str, wire: int, value: int | bytes, where: str) -> Any:
    if type_ == "int":
        n = _expect(wire, value, VARINT, where)
        return n - (1 << 64) if n >= 1 << 63 else n
    if type_ == "bool":
        return bool(_expect(wire, value, VARINT, where))
    data: bytes = _expect(wire, value, LEN, where)
    if type_ == "string":
        return _text(data, where)
    if type_ == "bytes":
        return base64.b64encode(data).decode("ascii")
    if type_ == "Time":
        return _time(data, where)
    if type_ == "Quantity":
        return _quantity(data, where)
    if type_ == "IntOrString":
        return _int_or_string(data, where)
    return decode_message(type_, data, where)


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtobufError(f"protobuf: {where}: string is not valid UTF-8 ({e.reason} at byte {e.start})") from None


def _map_entry(value_type: str, data: bytes, where: str) -> tuple[str, Any]:
    """A map entry is a message {1: key, 2: value}; a missing part is its zero value."""
    key, item = "", None
    for number, wire, value in fields(data, where):
        if number == 1:
            key = _text(_expect(wire, value, LEN, f"{where} key"), f"{where} key")
        elif number == 2:
            item = _value(value_type, wire, value, f"{where}[{key!r}]")
    if item is None:
        item = {"string": "", "bytes": "", "Quantity": "0"}.get(value_type, "")
    return key, item


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_GO_ZERO_TIME = datetime(1, 1, 1, tzinfo=timezone.utc)


def _time(data: bytes, where: str) -> str | None:
    """meta/v1 Time {seconds, nanos} -> RFC 3339 in whole seconds; an empty one is Go's zero time."""
    seconds = 0
    for number, wire, value in fields(data, where):
        if number == 1:
            seconds = _value("int", wire, value, f"{where}.seconds")
        elif number == 2:
            _expect(wire, value, VARINT, f"{where}.nanos")  # dropped, as Kubernetes' Unmarshal does
    if not data:
        return None
    try:
        when = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise ProtobufError(f"protobuf: {where}: time out of range ({seconds} s)") from None
    if when == _GO_ZERO_TIME:
        return None
    return f"{when.year:04d}-{when:%m-%dT%H:%M:%S}Z"


def _quantity(data: bytes, where: str) -> str:
    """resource.Quantity is a message holding its canonical string (field 1)."""
    text = "0"
    for number, wire, value in fields(data, where):
        if number == 1:
            text = _text(_expect(wire, value, LEN, where), where)
            if not text:
                raise ProtobufError(f"protobuf: {where}: empty quantity")
    return text


def _int_or_string(data: bytes, where: str) -> int | str:
    """intstr.IntOrString {type: 0 int / 1 string, intVal, strVal} -> a JSON number or string."""
    kind, number_value, text = 0, 0, ""
    for number, wire, value in fields(data, where):
        if number == 1:
            kind = _value("int", wire, value, f"{where}.type")
        elif number == 2:
            number_value = _value("int", wire, value, f"{where}.intVal")
        elif number == 3:
            text = _text(_expect(wire, value, LEN, f"{where}.strVal"), f"{where}.strVal")
    if kind == 0:
        return number_value
    if kind == 1:
        return text
    raise ProtobufError(f"protobuf: {where}: IntOrString type must be 0 (int) or 1 (string), got {kind}")


def _check_tables() -> None:
    """Every type the tables name exists (run at import: a typo fails loudly, not mid-request)."""
    for message, table in MESSAGES.items():
        for field in table.values():
            base = field.type[2:] if field.type.startswith("[]") else field.type
            base = base[4:-1] if base.startswith("map<") else base
            if base not in _SCALARS and base not in MESSAGES:
                raise AssertionError(f"{message}.{field.name}: unknown type {field.type}")


_check_tables()
