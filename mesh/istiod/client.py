"""Talking to istiod on 15012: what ztunnel's `identity/caclient` and `xds/client` do.

- `create_certificate`: one CreateCertificate call → the chain (leaf first, root last).
- `subscribe`: one Subscribe connection → the decoded stream lines. It ends when the connection
  does; the caller keeps a `ConfigCache` and passes `cache.known()` so istiod sends only what changed.
- `keep_streaming`: every subscriber's loop (ztunnel's, the L7 proxies' agent): one stream after
  another, reconnecting with backoff (ztunnel's: 10 ms doubling to 15 s).

Every connection checks istiod's chain against the mesh root and that its certificate carries
istiod's SPIFFE identity. Failures raise `IstiodRefused` (istiod said no; retrying the same
request will not help until something changes) or `IstiodUnavailable` (no answer; retry).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, NoReturn, Protocol

import trio

from lab.client import LabError
from lab.client.contract import ENV_POD_NAME, ENV_POD_NAMESPACE
from lab.client.protocol import ProtocolError, encode
from mesh import tls
from mesh.contract import ADDRESS, AUTHORIZATION, ISTIO_NAMESPACE, ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY, SYNCED
from mesh.identity.spiffe import Identity
from mesh.istiod.channel import HANDSHAKE_TIMEOUT, MessageReader, client_context, istiod_identity

Address = tuple[str, int]
log = logging.getLogger("mesh.istiod.client")


class IstiodError(Exception):
    """A request to istiod failed."""


class IstiodRefused(IstiodError):
    """istiod answered with an error (its message, e.g. "request impersonation authentication failure")."""


class IstiodUnavailable(IstiodError):
    """istiod could not be reached, failed TLS verification, or broke the connection."""


_TRANSPORT_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ProtocolError,
    tls.PeerRejected,
    trio.TooSlowError,
)


@asynccontextmanager
async def _connect(address: Address, root_pem: str | bytes, server_identity: Identity) -> AsyncIterator[trio.SSLStream]:
    host, port = address
    tcp = await trio.open_tcp_stream(host, port)
    conn = trio.SSLStream(tcp, client_context(root_pem), server_hostname=None, https_compatible=True)
    async with conn:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await conn.do_handshake()
        tls.check_peer(conn, [server_identity])
        yield conn


def _check(reply: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if reply is None:
        raise IstiodUnavailable("istiod closed the connection without answering")
    if reply.get("ok") is False:
        raise IstiodRefused(reply.get("error") or "istiod refused the request")
    return reply


async def create_certificate(
    address: Address,
    root_pem: str | bytes,
    token: str,
    csr_pem: str,
    impersonated: str | None = None,
    validity: int = 86400,
    *,
    timeout: float = 10.0,
    server_identity: Identity | None = None,
) -> list[str]:
    """A certificate for the CSR: the caller's own identity, or `impersonated`
    ("spiffe://td/ns/NS/sa/SA") if the caller is a node proxy with a pod of that SA on its node."""
    request: dict[str, Any] = {"op": "CreateCertificate", "token": token, "csr": csr_pem, "validitySeconds": validity}
    if impersonated:
        request["impersonatedIdentity"] = str(impersonated)
    try:
        with trio.fail_after(timeout):
            async with _connect(address, root_pem, server_identity or istiod_identity()) as conn:
                await conn.send_all(encode(request))
                reply = _check(await MessageReader(conn).receive())
    except _TRANSPORT_ERRORS as e:
        raise IstiodUnavailable(f"CreateCertificate at {address[0]}:{address[1]}: {e}") from e
    chain = reply.get("certChain")
    if not isinstance(chain, list) or not chain or not all(isinstance(c, str) for c in chain):
        raise IstiodUnavailable(f"istiod answered without a certificate chain: {reply!r}")
    return chain


async def subscribe(
    address: Address,
    root_pem: str | bytes,
    token: str,
    node: str,
    known: Mapping[str, Mapping[str, str]] | None = None,
    *,
    server_identity: Identity | None = None,
    types: list[str] | None = None,
    proxy: str | None = None,
    version: str | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """The config stream's lines ({"type": "Address"|"Authorization", ...}, {"type": "SYNCED"}) for
    one connection; use it with `contextlib.aclosing`. Returns when istiod closes the stream.
    A waypoint passes Envoy's `types` and its `proxy` name ("ns/name"); every subscriber may pass
    its Istio `version` (istiod shows it in its sync status, `lab istioctl proxy-status`)."""
    request: dict[str, Any] = {
        "op": "Subscribe",
        "token": token,
        "node": node,
        "known": {type_: dict(versions) for type_, versions in (known or {}).items()},
    }
    if types is not None:
        request["types"] = list(types)
    if proxy is not None:
        request["proxy"] = proxy
    if version is not None:
        request["version"] = version
    try:
        async with _connect(address, root_pem, server_identity or istiod_identity()) as conn:
            await conn.send_all(encode(request))
            reader = MessageReader(conn)
            while (message := await reader.receive()) is not None:
                yield dict(_check(message))
    except _TRANSPORT_ERRORS as e:
        raise IstiodUnavailable(f"Subscribe at {address[0]}:{address[1]}: {e}") from e


RECONNECT_INITIAL = 0.010
RECONNECT_MAX = 15.0


class StreamStatus(Protocol):
    connected: bool
    last_error: str | None


async def keep_streaming(
    status: StreamStatus, stream_once: Callable[[], Awaitable[bool]], *, logger: logging.Logger = log
) -> NoReturn:
    """Run one config stream after another, forever: every istiod client's loop (ztunnel's, the L7
    proxies' agent). A stream that delivered a complete push (`stream_once` returned True) resets
    the backoff; `status` says whether a stream is up and why the last one ended."""
    backoff = RECONNECT_INITIAL
    while True:
        try:
            if await stream_once():
                backoff = RECONNECT_INITIAL  # the stream was healthy: retry fast
            status.last_error = "istiod closed the stream"
        except Exception as exc:  # any failure of the stream means: reconnect
            status.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            status.connected = False
        logger.warning("config stream to istiod down (%s); reconnecting in %.3fs", status.last_error, backoff)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, RECONNECT_MAX)


DEFAULT_VERSION = "1.24.0"
VERSION_ENV = "ISTIO_META_ISTIO_VERSION"


def image_tag(image: str) -> str | None:
    """The tag of an image reference (`docker.io/istio/proxyv2:1.24.0` → 1.24.0), None without one."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    return last.split(":", 1)[1] or None


async def own_version(api: Any, env: Mapping[str, str], container: str) -> str:
    """The version a proxy reports to istiod: $ISTIO_META_ISTIO_VERSION, else the tag of the image
    of its own `container` (its pod read through the lab API, LAB_POD_NAMESPACE/LAB_POD_NAME),
    else DEFAULT_VERSION."""
    if env.get(VERSION_ENV):
        return env[VERSION_ENV]
    name, namespace = env.get(ENV_POD_NAME), env.get(ENV_POD_NAMESPACE)
    if name and namespace:
        try:
            pod = await api.call("get", kind="Pod", namespace=namespace, name=name)
        except Exception:  # no answer means: the default
            pod = None
        for c in ((pod or {}).get("spec") or {}).get("containers") or []:
            if c.get("name") == container and (tag := image_tag(str(c.get("image") or ""))):
                return tag
    return DEFAULT_VERSION


async def mesh_root(
    api: Any,
    *,
    retry: float = 1.0,
    location: tuple[str, str, str] = (ISTIO_NAMESPACE, ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY),
) -> str:
    """The mesh root (PEM) from the ConfigMap istiod publishes it in, read through the lab API
    (`api.call`), retried until it exists: what a proxy needs before it can trust istiod."""
    namespace, name, key = location
    while True:
        try:
            cm = await api.call("get", kind="ConfigMap", namespace=namespace, name=name)
            root = (cm.get("data") or {}).get(key)
            if root:
                return root
            log.info("ConfigMap %s/%s has no %s yet", namespace, name, key)
        except (LabError, OSError) as exc:
            log.info("waiting for the mesh root (ConfigMap %s/%s): %s", namespace, name, exc)
        await trio.sleep(retry)


class ConfigCache:
    """A subscriber's copy of the resources, kept across reconnects (sans-IO).

    `apply` takes each stream line; `known()` is what to send on reconnect.
    """

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, dict]] = {AUTHORIZATION: {}, ADDRESS: {}}
        self.versions: dict[str, dict[str, str]] = {AUTHORIZATION: {}, ADDRESS: {}}
        self.synced = False  # a complete state has arrived at least once

    def apply(self, message: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """(names updated, names removed) by one stream line."""
        type_ = message.get("type")
        if type_ == SYNCED:
            self.synced = True
            return [], []
        if not isinstance(type_, str):  # no resource type to file it under: nothing to apply
            return [], []
        resources, versions = self.resources.setdefault(type_, {}), self.versions.setdefault(type_, {})
        updated = []
        for entry in message.get("resources") or []:
            resources[entry["name"]] = entry["resource"]
            versions[entry["name"]] = entry["version"]
            updated.append(entry["name"])
        removed = [name for name in message.get("removed") or [] if resources.pop(name, None) is not None]
        for name in removed:
            versions.pop(name, None)
        return updated, removed

    def known(self) -> dict[str, dict[str, str]]:
        return {type_: dict(versions) for type_, versions in self.versions.items()}
