"""HBONE: HTTP/2 CONNECT tunnels over mTLS, as ztunnel speaks it (docs/ambient-facts.md §1).

- `settings`: ztunnel's HTTP/2 parameters and a tuned h2 connection (pure).
- `headers`: the CONNECT request/response headers and status codes (pure).
- `client` / `server`: trio shells: `HboneConnection.open_stream`, `serve_hbone`.
- `connection`: what they share, the shell around one h2 connection; `StreamOwner` is all a
  stream may ask of it.
- `stream`: `HboneStream`, a trio HalfCloseableStream per tunnel.
- `pool`: outbound connections keyed by `WorkloadKey`.
- `splice`: bidirectional copy with half-close and byte counts.
- `tlsstream`: `TlsStream`, TLS that decrypts whole socket reads (trio's SSLStream hands
  out one 16 KiB record per read, which halves HBONE's throughput).

Certificates, contexts and identity checks are not done here: both ends take an
established trio stream (a `TlsStream` or `trio.SSLStream` in production).
"""

from .client import HboneConnection, open_hbone_connection
from .connection import ConnectionLost
from .headers import (
    BAD_REQUEST,
    CONNECTED,
    POLICY_DENIED,
    UPSTREAM_FAILED,
    BadRequest,
    ConnectRequest,
    hbone_headers,
    workload_baggage,
)
from .pool import HbonePool, WorkloadKey, open_hbone_pool
from .server import HboneServerConnection, serve_hbone
from .settings import CLIENT_SETTINGS, SERVER_SETTINGS, Http2Settings
from .splice import SpliceStats, splice
from .stream import HboneError, HboneStream, StreamReset
from .tlsstream import TlsStream

__all__ = [
    "BAD_REQUEST",
    "CLIENT_SETTINGS",
    "CONNECTED",
    "ConnectionLost",
    "POLICY_DENIED",
    "SERVER_SETTINGS",
    "UPSTREAM_FAILED",
    "BadRequest",
    "ConnectRequest",
    "HboneConnection",
    "HboneError",
    "HbonePool",
    "HboneServerConnection",
    "HboneStream",
    "Http2Settings",
    "SpliceStats",
    "StreamReset",
    "TlsStream",
    "WorkloadKey",
    "hbone_headers",
    "open_hbone_connection",
    "open_hbone_pool",
    "serve_hbone",
    "splice",
    "workload_baggage",
]
