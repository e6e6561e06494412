"""ztunnel's two calls to istiod, over the contract's wire format (docs/mesh-internals.md, port 15012).

TLS 1.3 to istiod, its certificate checked against the mesh root (no hostname check, no client
certificate: the ServiceAccount token authenticates us), then one JSON request line:

- `create_certificate`: CreateCertificate (istiod's CA, facts §2.2), with `impersonatedIdentity`
  for the pods ztunnel serves; one request per connection, answer `{"ok", "certChain"}`;
- `subscribe`: Subscribe, the config stream (our stand-in for delta ADS, facts §4.1): yields the
  pushed `{"type": ...}` messages until istiod closes the stream.

The signatures match `mesh.istiod.client`'s, so either can be plugged into the ztunnel core.
"""
from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import trio

from lab.api.protocol import LineDecoder, encode
from mesh.ztunnel.config import split_host_port

READ_SIZE = 65536


class IstiodError(Exception):
    """istiod refused a request (`{"ok": false, "error": ...}`) or broke the protocol."""


def client_context(root_pem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # istiod is known by its chain to the mesh root, not by a name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=root_pem)
    return ctx


async def open_istiod(address: str, root_pem: str) -> trio.SSLStream:
    """A verified TLS connection to istiod; the host is resolved with trio's getaddrinfo."""
    host, port = split_host_port(address)
    tcp = await trio.open_tcp_stream(host, port)
    stream = trio.SSLStream(tcp, client_context(root_pem), server_hostname=None, https_compatible=True)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[dict[str, Any]]:
    decoder = LineDecoder()
    while data := await stream.receive_some(READ_SIZE):
        for message in decoder.feed(data):
            if message.get("ok") is False:
                raise IstiodError(message.get("error") or "istiod refused the request")
            yield message


async def create_certificate(address: str, root_pem: str, token: str, csr_pem: str,
                             impersonated: str | None = None, validity: int = 86400) -> list[str]:
    """Ask istiod's CA to sign `csr_pem`; returns the chain, leaf first and root last."""
    request: dict[str, Any] = {"op": "CreateCertificate", "token": token, "csr": csr_pem,
                               "validitySeconds": validity}
    if impersonated:
        request["impersonatedIdentity"] = impersonated
    stream = await open_istiod(address, root_pem)
    async with stream:
        await stream.send_all(encode(request))
        async for reply in _lines(stream):
            chain = reply.get("certChain")
            if not reply.get("ok") or not isinstance(chain, list) or not chain:
                raise IstiodError(f"unexpected CreateCertificate answer: {sorted(reply)}")
            return [str(c) for c in chain]
    raise IstiodError("istiod closed the connection without answering CreateCertificate")


async def subscribe(address: str, root_pem: str, token: str, node: str,
                    known: dict[str, dict[str, str]]) -> AsyncIterator[dict[str, Any]]:
    """The config stream: every pushed message, until istiod closes it (then the caller reconnects)."""
    stream = await open_istiod(address, root_pem)
    async with stream:
        await stream.send_all(encode({"op": "Subscribe", "token": token, "node": node, "known": known}))
        async for message in _lines(stream):
            yield message
