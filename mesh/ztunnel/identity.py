"""Workload certificates: fetched per identity, rotated at half-life (ztunnel `src/identity/manager.rs`).

ztunnel holds one certificate per SPIFFE identity it serves, not per pod. Each identity has one
task in the manager's nursery that fetches its certificate, sleeps until the refresh time (half
the lifetime, docs/ambient-facts.md §2.6), and fetches again. A failed renewal keeps the certificate it has while it
is still valid and retries with exponential backoff (about 1 s doubling, ±20 % jitter, at most
150 s); with no valid certificate the identity is Unavailable and connections needing it fail at
once instead of hanging.

Identities are prefetched when a pod is enrolled (`acquire`), fetched on demand by the first
connection that needs one, and forgotten when the last pod using them leaves (`release`).

The CA call is injected (`CaClient`: CSR PEM and identity in, chain out), so the manager runs
against istiod's CreateCertificate in production and a local `RootCA` in tests. The key and CSR are
made here with `mesh.identity.ca.make_csr` (P-256, one URI SAN), and every answer is checked
against the mesh root before use.
"""

from __future__ import annotations

import base64
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import trio
from cryptography.hazmat.primitives.serialization import Encoding

from mesh import tls
from mesh.identity.ca import CertInfo, cert_info, load_certs, make_csr, refresh_at, verify_chain
from mesh.identity.spiffe import Identity

log = logging.getLogger("mesh.ztunnel.identity")

#: (csr_pem, spiffe identity) → the signed chain, leaf first.
CaClient = Callable[[str, str], Awaitable[list[str]]]

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 150.0  # ztunnel's CERT_REFRESH_FAILURE_RETRY_DELAY_MAX_INTERVAL
JITTER = 0.2
#: Never refresh sooner than this after a fetch, whatever the certificate says: a certificate
#: whose half-life is already past (very short lifetimes, clock skew) must not hammer the CA.
MIN_REFRESH = 1.0

INITIALIZING = "Initializing"
AVAILABLE = "Available"
UNAVAILABLE = "Unavailable"


class CertificateUnavailable(Exception):
    """No valid certificate for an identity: the last fetch failed and there is none to fall back on."""


class WrongIdentity(Exception):
    """The CA answered with a certificate for another identity than the one asked for."""


def next_backoff(current: float | None, rng: Callable[[], float] = random.random) -> tuple[float, float]:
    """(delay to wait now, interval to remember) after a failed fetch; None means the first failure."""
    interval = INITIAL_BACKOFF if current is None else min(current * 2, MAX_BACKOFF)
    delay = interval * (1 - JITTER + 2 * JITTER * rng())
    return min(delay, MAX_BACKOFF), interval


def refresh_delay(info: CertInfo, now: datetime) -> float:
    """Seconds until `info`'s certificate should be renewed: its half-life (docs/ambient-facts.md §2.6)."""
    return max((refresh_at(info) - now).total_seconds(), MIN_REFRESH)


@dataclass(eq=False)
class WorkloadCertificate:
    """A workload's key and chain, and the TLS contexts made from them (built once, on first use)."""

    identity: Identity
    chain: tuple[str, ...]  # leaf first; the root may or may not be last
    key_pem: str = field(repr=False)
    root_pem: str
    info: CertInfo
    _server: ssl.SSLContext | None = field(default=None, repr=False)
    _client: ssl.SSLContext | None = field(default=None, repr=False)

    def server_context(self) -> ssl.SSLContext:
        """15008's context: client certificate required, chained to the mesh root."""
        if self._server is None:
            self._server = tls.server_context(list(self.chain), self.key_pem, self.root_pem)
        return self._server

    def client_context(self) -> ssl.SSLContext:
        if self._client is None:
            self._client = tls.client_context(list(self.chain), self.key_pem, self.root_pem)
        return self._client

    def dump(self) -> dict:
        """ztunnel's CertsDump body: `certChain` (leaf and intermediates) and `rootCerts`."""
        roots = load_certs(self.root_pem)
        chain = [c for c in load_certs(list(self.chain)) if c not in roots]
        return {"certChain": [_cert_dump(c) for c in chain], "rootCerts": [_cert_dump(c) for c in roots]}


def _cert_dump(cert) -> dict:
    info = cert_info(cert)
    return {
        "pem": base64.b64encode(cert.public_bytes(Encoding.PEM)).decode(),
        "serialNumber": str(cert.serial_number),
        "serialHex": info.serial_hex,
        "validFrom": _rfc3339(info.not_before),
        "expirationTime": _rfc3339(info.not_after),
    }


def _rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Entry:
    """One identity's certificate state and the task that keeps it fresh."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.state = INITIALIZING
        self.cert: WorkloadCertificate | None = None
        self.error: BaseException | None = None
        self.refs = 0
        self.next_refresh: datetime | None = None
        self.scope = trio.CancelScope()
        self._changed = trio.Event()

    def set(self, state: str, cert: WorkloadCertificate | None, error: BaseException | None) -> None:
        self.state, self.cert, self.error = state, cert, error
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()


class SecretManager:
    """Certificates per identity (ztunnel `SecretManager`); run it with `nursery.start(sm.run)`."""

    def __init__(
        self, ca: CaClient, root_pem: str, *, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    ) -> None:
        self._ca = ca
        self.root_pem = root_pem
        self._now = now
        self._entries: dict[str, _Entry] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[SecretManager] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the per-identity refresh tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # --- the API the proxies use -----------------------------------------------------------

    async def fetch_certificate(self, identity: str) -> WorkloadCertificate:
        """The identity's certificate, fetching it now if it is new; CertificateUnavailable if
        the last fetch failed and no valid certificate is left."""
        entry = self._entries.get(identity) or self._start(identity)
        while entry.state == INITIALIZING:
            await entry.wait_changed()
        if entry.state == AVAILABLE:
            assert entry.cert is not None  # AVAILABLE is only ever set with a certificate (`_maintain`)
            return entry.cert
        raise CertificateUnavailable(f"no certificate for {identity}: {entry.error}")

    def acquire(self, identity: str) -> None:
        """A pod with this identity was enrolled: prefetch its certificate and keep it fresh."""
        entry = self._entries.get(identity) or self._start(identity)
        entry.refs += 1

    def release(self, identity: str) -> None:
        """A pod with this identity left; the last one out forgets the certificate."""
        entry = self._entries.get(identity)
        if entry is None:
            return
        entry.refs -= 1
        if entry.refs <= 0:
            self.forget(identity)

    def forget(self, identity: str) -> None:
        entry = self._entries.pop(identity, None)
        if entry is not None:
            entry.scope.cancel()
            if entry.state == INITIALIZING:
                entry.set(UNAVAILABLE, None, CertificateUnavailable(f"{identity} was forgotten"))

    def state(self, identity: str) -> str | None:
        entry = self._entries.get(identity)
        return entry.state if entry else None

    def dump(self) -> list[dict]:
        """config_dump's `certificates`: identity, state, chain and roots with serials and validity."""
        out = []
        for identity in sorted(self._entries):
            entry = self._entries[identity]
            item: dict = {"identity": identity, "state": entry.state}
            if entry.state == UNAVAILABLE:
                item["state"] = f"{UNAVAILABLE}: {entry.error}"
            if entry.cert is not None:
                item.update(entry.cert.dump())
            if entry.next_refresh is not None:
                item["refreshAt"] = _rfc3339(entry.next_refresh)
            out.append(item)
        return out

    # --- the per-identity task --------------------------------------------------------------

    def _start(self, identity: str) -> _Entry:
        if self._nursery is None:
            raise RuntimeError("SecretManager is not running")
        Identity.parse(identity)  # refuse a malformed identity here, not in the task
        entry = self._entries[identity] = _Entry(identity)
        self._nursery.start_soon(self._maintain, entry)
        return entry

    async def _maintain(self, entry: _Entry) -> None:
        backoff: float | None = None
        with entry.scope:
            while True:
                try:
                    cert = await self._fetch(entry.identity)
                except (trio.Cancelled, KeyboardInterrupt):
                    raise
                except Exception as exc:
                    delay, backoff = next_backoff(backoff)
                    now = self._now()
                    kept = entry.cert if entry.cert is not None and entry.cert.info.not_after > now else None
                    if kept is not None:
                        delay = min(delay, max((kept.info.not_after - now).total_seconds(), 0.0))
                        log.warning(
                            "certificate renewal for %s failed (%s); keeping the current one until "
                            "%s, retrying in %.1fs",
                            entry.identity,
                            exc,
                            kept.info.not_after,
                            delay,
                        )
                        entry.set(AVAILABLE, kept, exc)
                    else:
                        log.warning(
                            "certificate fetch for %s failed (%s); retrying in %.1fs", entry.identity, exc, delay
                        )
                        entry.set(UNAVAILABLE, None, exc)
                else:
                    backoff = None
                    delay = refresh_delay(cert.info, self._now())
                    entry.set(AVAILABLE, cert, None)
                entry.next_refresh = self._now() + timedelta(seconds=delay)
                await trio.sleep(delay)

    async def _fetch(self, identity: str) -> WorkloadCertificate:
        parsed = Identity.parse(identity)
        key_pem, csr_pem = make_csr(parsed)
        chain = await self._ca(csr_pem, identity)
        got = verify_chain(chain, self.root_pem, now=self._now())
        if parsed not in got:
            raise WrongIdentity(f"asked for {identity}, got a certificate for {', '.join(map(str, got))}")
        return WorkloadCertificate(parsed, tuple(chain), key_pem, self.root_pem, cert_info(chain[0]))
