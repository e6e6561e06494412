"""ZDS: how the istio-cni agent hands pods (and their netns fds) to ztunnel (docs/ambient-facts.md §3.4).

`messages` is the pure message model and JSON codec; `transport` carries it over a Unix
SOCK_SEQPACKET socket with SCM_RIGHTS.
"""

from .messages import (
    Ack,
    AddWorkload,
    DelWorkload,
    KeepWorkload,
    SnapshotSent,
    WorkloadInfo,
    WorkloadRequest,
    WorkloadResponse,
    ZdsError,
    ZdsHello,
    decode_hello,
    decode_request,
    decode_response,
    encode,
)
from .transport import DEFAULT_PATH, ZdsClosed, ZdsListener, ZdsSocket, connect_zds, open_zds_listener

__all__ = [
    "DEFAULT_PATH",
    "Ack",
    "AddWorkload",
    "DelWorkload",
    "KeepWorkload",
    "SnapshotSent",
    "WorkloadInfo",
    "WorkloadRequest",
    "WorkloadResponse",
    "ZdsClosed",
    "ZdsError",
    "ZdsHello",
    "ZdsListener",
    "ZdsSocket",
    "connect_zds",
    "decode_hello",
    "decode_request",
    "decode_response",
    "encode",
    "open_zds_listener",
]
