"""Upstream connections: tunnels to endpoints, and idle HTTP/1.1 connections kept for reuse.

An endpoint in the mesh (`tunnel: HBONE`) is reached by a CONNECT to `podIP:15008` on a pooled
HBONE connection (`mesh.hbone.HbonePool`), mTLS as the proxy's own identity, the peer's
certificate checked against the endpoint's identity; the CONNECT asks for `podIP:port`. An
endpoint outside the mesh gets plain TCP. The proxy never impersonates its client: the
destination ztunnel sees the proxy's identity (docs/waypoints.md).

HTTP requests reuse upstream connections (Envoy's per-cluster connection pool): a response that
leaves its connection reusable returns it to the idle list of its endpoint and port.
"""

from __future__ import annotations

import logging
import ssl
from collections import defaultdict
from typing import Awaitable, Callable, Iterable, Protocol

import trio

from mesh import tls
from mesh.contract import HBONE_PORT, PROTOCOL_HBONE
from mesh.hbone import HboneError, HbonePool, WorkloadKey
from mesh.hbone.tlsstream import TlsStream
from mesh.identity.spiffe import Identity
from mesh.proxy.config import Endpoint
from mesh.proxy.http1 import Http1Client

log = logging.getLogger("mesh.proxy.upstream")

MAX_IDLE_PER_ENDPOINT = 32
IDLE_TIMEOUT = 60.0  # seconds an unused upstream HTTP connection is kept (then its tunnel closes)


class UpstreamConnectError(Exception):
    """The endpoint could not be reached; `reason` is Envoy's reset reason wording."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ProxyCertificate(Protocol):
    """What the proxy's certificate gives the upstream side (`WorkloadCertificate` does)."""

    @property
    def identity(self) -> Identity: ...

    def client_context(self) -> ssl.SSLContext: ...


Certificate = Callable[[], Awaitable[ProxyCertificate]]


class Upstreams:
    """Opens tunnels to endpoints and keeps idle HTTP/1.1 clients; lives in `nursery`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        certificate: Certificate,
        own_ip: str,
        *,
        connect_timeout: float = 10.0,
        local_source: str | None = None,
    ) -> None:
        self._certificate = certificate
        self._own_ip = own_ip
        #: A sidecar reaches its own app from 127.0.0.6, the source its redirection lets through.
        self._local_source = local_source
        self._timeout = connect_timeout
        self._pool = HbonePool(nursery, self._connect, connect_timeout=connect_timeout)
        self._idle: dict[tuple[str, int], list[tuple[float, Http1Client]]] = defaultdict(list)
        nursery.start_soon(self._close_idle)

    async def aclose(self) -> None:
        for clients in self._idle.values():
            for _, client in clients:
                await trio.aclose_forcefully(client.stream)
        self._idle.clear()
        await self._pool.aclose()

    async def open(
        self, endpoint: Endpoint, port: int, headers: Iterable[tuple[str, str]] = ()
    ) -> trio.abc.HalfCloseableStream:
        """A byte stream to endpoint:port (a CONNECT tunnel, or plain TCP outside the mesh)."""
        if endpoint.tunnel == PROTOCOL_HBONE:
            cert = await self._certificate()
            key = WorkloadKey(
                src_id=str(cert.identity),
                src=self._own_ip,
                dst_ids=(endpoint.identity,),
                dst=f"{endpoint.ip}:{HBONE_PORT}",
            )
            try:
                return await self._pool.open_stream(key, f"{endpoint.ip}:{port}", list(headers))
            except HboneError as exc:
                raise UpstreamConnectError(f"remote connection failure, HBONE status {exc.status}") from exc
            except trio.TooSlowError as exc:
                raise UpstreamConnectError("connection timeout") from exc
            except (
                trio.BrokenResourceError,
                trio.BusyResourceError,
                trio.ClosedResourceError,
                OSError,
                tls.PeerRejected,
            ) as exc:
                raise UpstreamConnectError(f"connection failure: {exc}") from exc
        local = self._local_source if endpoint.ip == self._own_ip else None
        try:
            with trio.fail_after(self._timeout):
                return await trio.open_tcp_stream(endpoint.ip, port, local_address=local)
        except trio.TooSlowError as exc:
            raise UpstreamConnectError("connection timeout") from exc
        except OSError as exc:
            raise UpstreamConnectError(f"connection failure: {exc.strerror or exc}") from exc

    async def http_client(self, endpoint: Endpoint, port: int) -> tuple[Http1Client, bool]:
        """(an HTTP/1.1 client to endpoint:port, whether it was reused)."""
        idle = self._idle.get((endpoint.ip, port))
        while idle:
            _, client = idle.pop()
            if client.reusable:
                return client, True
            await trio.aclose_forcefully(client.stream)
        return Http1Client(await self.open(endpoint, port)), False

    async def release(self, endpoint: Endpoint, port: int, client: Http1Client) -> None:
        """Keep `client` for the next request if it can carry one, else close it."""
        idle = self._idle[(endpoint.ip, port)]
        if client.reusable and len(idle) < MAX_IDLE_PER_ENDPOINT:
            idle.append((trio.current_time(), client))
        else:
            await trio.aclose_forcefully(client.stream)

    async def _close_idle(self) -> None:
        """Close upstream connections unused for IDLE_TIMEOUT (also those to endpoints now gone)."""
        while True:
            await trio.sleep(IDLE_TIMEOUT / 4)
            cutoff = trio.current_time() - IDLE_TIMEOUT
            for key in list(self._idle):
                stale = [c for t, c in self._idle[key] if t < cutoff]
                self._idle[key] = [(t, c) for t, c in self._idle[key] if t >= cutoff]
                if not self._idle[key]:
                    del self._idle[key]
                for client in stale:
                    await trio.aclose_forcefully(client.stream)

    async def _connect(self, key: WorkloadKey) -> trio.abc.Stream:
        cert = await self._certificate()
        host, _, port = key.dst.rpartition(":")
        tcp = await trio.open_tcp_stream(host, int(port))
        stream = TlsStream(tcp, cert.client_context(), server_hostname=None)
        try:
            await stream.do_handshake()
            tls.check_peer(stream, [Identity.parse(i) for i in key.dst_ids])
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream
