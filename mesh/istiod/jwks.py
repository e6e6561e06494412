"""istiod's JWKS resolver: the keys behind a RequestAuthentication's `jwksUri`.

istiod fetches JWKS itself and inlines them into the proxies' config (docs/l7-jwt.md). The lab has
no internet, so:
- a URL inside the lab (a `*.svc` / `*.svc.cluster.local` host, a single-label service name, or an
  IP literal in the lab's networks) is fetched for real with an HTTP/1.1 GET from istiod's own
  process, which runs in a lab pod and so has the lab's DNS and routes (https: no certificate check);
- a URL outside the lab is answered from the offline mirror shipped in `jwks_mirror/` (Istio's
  published samples); any other outside URL cannot be resolved: istiod logs a warning naming it,
  and the translation gives that rule `remote_jwks`, so the proxies refuse its tokens.

`lookup(url)` answers from what is known now (pure, for the translation); `await refresh(urls)`
fetches what is missing and says whether anything changed (then istiod pushes again).
An OpenID discovery URL (`<issuer>/.well-known/openid-configuration`) is resolved in two steps:
the discovery document's `jwks_uri`, then that URL.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
from pathlib import Path
from typing import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

import h11
import trio

from mesh.istiod.jwt import OPENID_DISCOVERY_SUFFIX
from mesh.ztunnel.admin import next_event

log = logging.getLogger("istiod.jwks")

MIRROR_DIR = Path(__file__).with_name("jwks_mirror")
FETCH_TIMEOUT_SECONDS = 5.0  # istiod's JWKS HTTP client timeout
MAX_BODY_BYTES = 1 << 20
LAB_NETWORKS = (ipaddress.ip_network("10.0.0.0/8"),)  # the lab's pod and Service CIDRs live here

Fetch = Callable[[str], Awaitable[bytes]]


class FetchError(Exception):
    """A JWKS (or discovery) GET that did not give a 2xx body."""


def load_mirror(directory: Path = MIRROR_DIR) -> dict[str, str]:
    """URL → JWKS text from the mirror's index.json (file names relative to the directory)."""
    index = json.loads((directory / "index.json").read_text())
    return {url: (directory / name).read_text() for url, name in index.items()}


def is_in_lab(url: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = LAB_NETWORKS) -> bool:
    """Whether a URL names something only the lab's network can reach."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith(".svc") or host.endswith(".svc.cluster.local") or "." not in host
    return any(address in network for network in networks)


async def http_get(url: str, *, timeout: float = FETCH_TIMEOUT_SECONDS) -> bytes:
    """One HTTP/1.1 GET (h11 over trio), the body of a 2xx answer; FetchError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"unsupported URL {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    try:
        with trio.fail_after(timeout):
            stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname, port)
            if parts.scheme == "https":
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                stream = trio.SSLStream(stream, context, server_hostname=parts.hostname, https_compatible=True)
            async with stream:
                return await _exchange(stream, target, host_header)
    except trio.TooSlowError:
        raise FetchError(f"GET {url}: no answer within {timeout:g}s") from None
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as error:
        raise FetchError(f"GET {url}: {error}") from None


async def _exchange(stream: trio.abc.Stream, target: str, host: str) -> bytes:
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=target,
        headers=[("Host", host), ("User-Agent", "istiod-lab"), ("Accept", "application/json"), ("Connection", "close")],
    )
    await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
    status, body = 0, bytearray()
    while True:
        event = await next_event(stream, connection)
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise FetchError(f"body larger than {MAX_BODY_BYTES} bytes")
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    if not 200 <= status < 300:
        raise FetchError(f"status {status}, message {bytes(body[:100])!r}")
    return bytes(body)


class JwksResolver:
    """What istiod knows of each JWKS URL: the mirror, plus in-lab URLs fetched so far."""

    def __init__(
        self,
        *,
        mirror: dict[str, str] | None = None,
        fetch: Fetch = http_get,
        lab_networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = LAB_NETWORKS,
    ):
        self._mirror = load_mirror() if mirror is None else dict(mirror)
        self._fetch = fetch
        self._lab_networks = tuple(lab_networks)
        self._fetched: dict[str, str] = {}
        self._warned: set[str] = set()

    def lookup(self, url: str) -> str | None:
        """The JWKS text for `url` if known now (mirror or fetched), else None. Pure."""
        if url in self._mirror:
            return self._mirror[url]
        return self._fetched.get(url)

    def is_in_lab(self, url: str) -> bool:
        return is_in_lab(url, self._lab_networks)

    async def refresh(self, urls: Iterable[str], *, refetch: bool = False) -> bool:
        """Fetch the in-lab URLs not known yet (all of them with `refetch`, istiod's periodic
        refresh); warn once about outside URLs the mirror lacks. True if any JWKS changed."""
        changed = False
        for url in sorted(set(urls)):
            if url in self._mirror or (url in self._fetched and not refetch):
                continue
            if not self.is_in_lab(url):
                if url not in self._warned:
                    self._warned.add(url)
                    log.warning(
                        "cannot fetch jwksUri %s: the lab has no internet and the offline mirror "
                        "does not have it; tokens for its issuer get 401 \"Jwks remote fetch is failed\"",
                        url,
                    )
                continue
            try:
                text = await self._resolve(url)
            except FetchError as error:
                log.warning("failed to fetch public key from %s: %s", url, error)
                continue
            if self._fetched.get(url) != text:
                self._fetched[url] = text
                changed = True
        return changed

    async def _resolve(self, url: str) -> str:
        if not url.endswith(OPENID_DISCOVERY_SUFFIX):
            return (await self._fetch(url)).decode("utf-8", "replace")
        try:
            jwks_uri = json.loads(await self._fetch(url)).get("jwks_uri")
        except (ValueError, AttributeError):
            jwks_uri = None
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise FetchError(f"invalid jwks_uri in the OpenID discovery document at {url}")
        if not self.is_in_lab(jwks_uri):
            if jwks_uri in self._mirror:
                return self._mirror[jwks_uri]
            raise FetchError(f"its jwks_uri {jwks_uri} is outside the lab")
        return (await self._fetch(jwks_uri)).decode("utf-8", "replace")
