"""istiod, assembled: trust bootstrap, the cluster watch, the translation, and port 15012.

`serve` runs until cancelled. The listener is bound only once the first translation is published,
so "the port accepts" means "a subscriber gets the whole mesh". Each connection is one task in the
listener's nursery: TLS handshake, one request line, then the CA's reply or a config stream.
The debug port (15014, `mesh.istiod.debug`) serves the sync status of the config stream.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from functools import partial
from typing import Iterable

import trio

from lab.client import AsyncLabClient
from lab.client.contract import ENV_POD_NAME, ENV_POD_NAMESPACE
from lab.client.protocol import ProtocolError, encode
from mesh.identity.node_authz import TRUSTED_NODE_ACCOUNTS
from mesh.istiod import ca, debug, xds
from mesh.istiod.auth import TokenReviewer
from mesh.istiod.channel import DEFAULT_PORT, HANDSHAKE_TIMEOUT, MessageReader
from mesh.istiod.client import own_version
from mesh.istiod.state import MeshState, follow_cluster, keep_translated, resolve_jwks, write_statuses
from mesh.istiod.translate import Settings
from mesh.istiod.trust import ServingCertificate, bootstrap
from mesh.istiod.waypoint_controller import reconcile_waypoints

log = logging.getLogger("istiod.server")

_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Istiod:
    """The 15012 connection handler over the CA and the config stream."""

    def __init__(self, serving: ServingCertificate, authority: ca.CertificateAuthority, stream: xds.ConfigStream):
        self._serving = serving
        self._authority = authority
        self._stream = stream

    async def handle(self, tcp: trio.SocketStream) -> None:
        """Serves one connection; whatever goes wrong ends this connection only."""
        peer = _peer(tcp)
        conn = trio.SSLStream(tcp, self._serving.context, server_side=True, https_compatible=True)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await conn.do_handshake()
                request = await MessageReader(conn).receive()
            if request is None:
                return
            op = request.get("op")
            if op == ca.OP:
                await conn.send_all(encode(await self._authority.handle(request)))
            elif op == xds.OP:
                await self._stream.serve(conn, request)
            else:
                await conn.send_all(encode({"ok": False, "error": f"unknown op {op!r}: expected {ca.OP} or {xds.OP}"}))
        except* trio.TooSlowError:
            log.warning("dropped %s: too slow (handshake, request or taking data)", peer)
        except* ProtocolError as group:
            log.warning("dropped %s: %s", peer, group.exceptions[0])
        except* _PEER_GONE as group:
            log.debug("connection from %s ended: %s", peer, group.exceptions[0])
        except* Exception as group:  # a bug must cost one connection, not the listener
            log.error("serving %s failed", peer, exc_info=group)
        finally:
            with trio.move_on_after(1, shield=True):
                await conn.aclose()


def _peer(tcp: trio.SocketStream) -> str:
    try:
        host, port = tcp.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "a peer"


async def serve(
    api_socket: str,
    host: str = "0.0.0.0",
    port: int = DEFAULT_PORT,
    *,
    settings: Settings = Settings(),
    trusted_node_accounts: Iterable[str] = TRUSTED_NODE_ACCOUNTS,
    debug_port: int | None = debug.DEBUG_PORT,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs istiod until cancelled; reports the bound port once it serves the first translation.
    `debug_port` (None: none) serves /debug/syncz on `host`."""
    client = AsyncLabClient(api_socket)
    log.info("starting: lab API at %s", api_socket)
    root = await bootstrap(client)
    settings = dataclasses.replace(settings, trust_domain=root.trust_domain)
    serving = ServingCertificate(root)
    state = MeshState(settings)
    reviewer = TokenReviewer(client)
    stream = xds.ConfigStream(state.publisher, reviewer, xds.SubscriberRegistry(root.trust_domain))
    istiod = Istiod(serving, ca.CertificateAuthority(root, reviewer, state.pods, trusted_node_accounts), stream)
    env = os.environ
    me = {
        "pod": f'{env.get(ENV_POD_NAMESPACE, "istio-system")}/{env.get(ENV_POD_NAME, "istiod")}',
        "version": await own_version(client, env, "discovery"),
    }
    async with trio.open_nursery() as nursery:
        if debug_port is not None:
            await nursery.start(debug.serve_debug, host, debug_port, stream.registry, lambda: stream.published, me)
        nursery.start_soon(follow_cluster, client, state)
        nursery.start_soon(keep_translated, state)
        nursery.start_soon(write_statuses, client, state)
        nursery.start_soon(partial(reconcile_waypoints, client, state, tag=me["version"]))
        nursery.start_soon(resolve_jwks, state)
        nursery.start_soon(serving.keep_fresh)
        await state.ready.wait()
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        await nursery.start(partial(trio.serve_listeners, istiod.handle, listeners))
        log.info("serving CA and config on %s:%d as %s", host, bound, serving.identity)
        task_status.started(bound)
