"""The transport of istiod's port 15012, shared by the server and `mesh.istiod.client`.

TLS 1.3 with istiod's SPIFFE certificate, verified against the mesh root with no hostname check and
no client certificate (callers authenticate with their token, as with istiod's gRPC CA); then one
JSON request line from the client and JSON lines back (`lab.client.protocol`).
"""

from __future__ import annotations

import ssl
from collections import deque
from typing import Any

import trio

from lab.client.protocol import LineDecoder
from mesh import tls
from mesh.contract import ISTIO_NAMESPACE, ISTIOD_PORT
from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN, Identity

DEFAULT_PORT = ISTIOD_PORT
HANDSHAKE_TIMEOUT = 10.0  # seconds a peer gets for the TLS handshake and its request line


def istiod_identity(trust_domain: str = DEFAULT_TRUST_DOMAIN) -> Identity:
    return Identity(trust_domain, ISTIO_NAMESPACE, "istiod")


def server_context(cert_chain_pem: list[str] | str, key_pem: str, root_pem: str) -> ssl.SSLContext:
    """HBONE's server context without the client-certificate requirement: ztunnel may not hold a
    certificate yet when it asks for its first one."""
    ctx = tls.server_context(cert_chain_pem, key_pem, root_pem)
    ctx.verify_mode = ssl.CERT_NONE  # on a server context: do not ask for a client certificate
    return ctx


def client_context(root_pem: str | bytes) -> ssl.SSLContext:
    """Verify istiod's chain against the mesh root; its identity is the URI SAN (`tls.check_peer`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=root_pem.decode() if isinstance(root_pem, bytes) else root_pem)
    return ctx


class MessageReader:
    """Reads JSON lines from a stream one message at a time (several may arrive in one read)."""

    def __init__(self, stream: trio.abc.ReceiveStream):
        self._stream = stream
        self._decoder = LineDecoder()
        self._ready: deque[dict[str, Any]] = deque()

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None at the end of the stream. Raises ProtocolError on garbage."""
        while not self._ready:
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._ready.extend(self._decoder.feed(data))
        return self._ready.popleft()
