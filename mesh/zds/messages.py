"""ZDS messages (istio `proto/zds.proto`, package istio.workload.zds) as dataclasses, JSON-encoded. Pure.

Each message is one JSON object: the proto3 JSON mapping of the ZDS message with the
proto field names (`workload_info`, `snapshot_sent`), so a captured datagram reads like
the proto. A oneof is an object with exactly one member; members this code does not know
are ignored, as protobuf ignores unknown fields.

    ztunnel → agent, once:   {"version": "V1"}                                    ZdsHello
    agent → ztunnel:         {"add": {"uid": U, "workload_info": {"name": N,        WorkloadRequest
                                       "namespace": NS, "service_account": SA}}}   + the pod's netns fd
                             {"keep": {"uid": U}}
                             {"del": {"uid": U}}
                             {"snapshot_sent": {}}
    ztunnel → agent, each:   {"ack": {"error": ""}}   (non-empty error: a nack)    WorkloadResponse

Only `add` carries a file descriptor (exactly one); `check_fds` enforces that, as
ztunnel's `src/inpod/protocol.rs` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Union


class ZdsError(ValueError):
    """A datagram that is not the ZDS message expected here."""


@dataclass(frozen=True)
class ZdsHello:
    version: str = "V1"


@dataclass(frozen=True)
class WorkloadInfo:
    name: str = ""
    namespace: str = ""
    service_account: str = ""


@dataclass(frozen=True)
class AddWorkload:
    """Start proxying for pod `uid`; the pod's netns fd rides along as SCM_RIGHTS."""

    uid: str
    workload_info: WorkloadInfo | None = None


@dataclass(frozen=True)
class KeepWorkload:
    """During a snapshot: keep pod `uid` even though its netns fd is not re-sent."""

    uid: str


@dataclass(frozen=True)
class DelWorkload:
    uid: str


@dataclass(frozen=True)
class SnapshotSent:
    """Every current pod was sent; ztunnel drops the pods the snapshot did not name."""


@dataclass(frozen=True)
class Ack:
    """`WorkloadResponse{ack}`: an empty error acknowledges, anything else is a nack."""

    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


WorkloadRequest = Union[AddWorkload, KeepWorkload, DelWorkload, SnapshotSent]
WorkloadResponse = Ack
Message = Union[ZdsHello, WorkloadRequest, WorkloadResponse]


def encode(message: Message) -> bytes:
    """The datagram payload for `message`."""
    match message:
        case ZdsHello(version):
            body: dict[str, Any] = {"version": version}
        case AddWorkload(uid, info):
            add: dict[str, Any] = {"uid": uid}
            if info is not None:
                add["workload_info"] = {
                    "name": info.name,
                    "namespace": info.namespace,
                    "service_account": info.service_account,
                }
            body = {"add": add}
        case KeepWorkload(uid):
            body = {"keep": {"uid": uid}}
        case DelWorkload(uid):
            body = {"del": {"uid": uid}}
        case SnapshotSent():
            body = {"snapshot_sent": {}}
        case Ack(error):
            body = {"ack": {"error": error}}
        case _:
            raise TypeError(f"not a ZDS message: {message!r}")
    return json.dumps(body, separators=(",", ":")).encode()


def decode_hello(data: bytes) -> ZdsHello:
    body = _object(data)
    version = body.get("version", "NOT_USED")
    if not isinstance(version, str):
        raise ZdsError(f"ZdsHello.version must be a string, got {version!r}")
    return ZdsHello(version)


def decode_request(data: bytes) -> WorkloadRequest:
    kind, payload = _oneof(_object(data), ("add", "keep", "del", "snapshot_sent"))
    if kind == "add":
        info = payload.get("workload_info")
        return AddWorkload(
            uid=_uid(payload),
            workload_info=None
            if info is None
            else WorkloadInfo(
                name=_str(info, "name"),
                namespace=_str(info, "namespace"),
                service_account=_str(info, "service_account"),
            ),
        )
    if kind == "keep":
        return KeepWorkload(_uid(payload))
    if kind == "del":
        return DelWorkload(_uid(payload))
    return SnapshotSent()


def decode_response(data: bytes) -> WorkloadResponse:
    _, payload = _oneof(_object(data), ("ack",))
    return Ack(_str(payload, "error"))


def expected_fds(message: Message) -> int:
    """How many file descriptors travel with `message`: the netns fd of an AddWorkload."""
    return 1 if isinstance(message, AddWorkload) else 0


def check_fds(message: Message, count: int) -> None:
    """Refuse a message whose datagram carried the wrong number of fds."""
    want = expected_fds(message)
    if count != want:
        name = type(message).__name__
        raise ZdsError(f"{name} must carry {want} file descriptor(s), got {count}")


def _object(data: bytes) -> dict[str, Any]:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZdsError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ZdsError(f"want a JSON object, got {type(body).__name__}")
    return body


def _oneof(body: dict[str, Any], kinds: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    present = [k for k in kinds if k in body]
    if len(present) != 1:
        raise ZdsError(f"want exactly one of {', '.join(kinds)}; got {sorted(body) or 'nothing'}")
    payload = body[present[0]]
    if not isinstance(payload, dict):
        raise ZdsError(f"{present[0]} must be an object, got {payload!r}")
    return present[0], payload


def _str(payload: Any, key: str) -> str:
    if not isinstance(payload, dict):
        raise ZdsError(f"want an object holding {key!r}, got {payload!r}")
    value = payload.get(key, "")
    if not isinstance(value, str):
        raise ZdsError(f"{key} must be a string, got {value!r}")
    return value


def _uid(payload: dict[str, Any]) -> str:
    uid = _str(payload, "uid")
    if not uid:
        raise ZdsError("uid is empty")
    return uid
