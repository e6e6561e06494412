"""Workload certificates: on-demand fetch, half-life rotation, keeping the old one, backoff, forgetting.

Time is trio's MockClock (autojump), and the CA and the manager read the same fake wall clock, so a
day of certificate life runs in milliseconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import trio
import trio.testing

from mesh.identity.ca import RootCA
from mesh.identity.spiffe import Identity
from mesh.ztunnel.identity import (
    AVAILABLE,
    MAX_BACKOFF,
    UNAVAILABLE,
    CertificateUnavailable,
    SecretManager,
    next_backoff,
)

SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
BASE = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture
def autojump_clock():
    return trio.testing.MockClock(autojump_threshold=0)


def fake_now() -> datetime:
    return BASE + timedelta(seconds=trio.current_time())


class FakeCA:
    def __init__(self):
        self.root = RootCA.generate(now=BASE - timedelta(days=1))
        self.calls: list[tuple[float, str]] = []
        self.failing = False
        self.answer_as: str | None = None

    async def __call__(self, csr_pem: str, identity: str) -> list[str]:
        await trio.sleep(0.01)
        self.calls.append((trio.current_time(), identity))
        if self.failing:
            raise ConnectionRefusedError("istiod down")
        return self.root.sign_csr(csr_pem, [Identity.parse(self.answer_as or identity)], now=fake_now())


async def running(ca: FakeCA, nursery) -> SecretManager:
    return await nursery.start(SecretManager(ca, ca.root.cert_pem, now=fake_now).run)


def test_backoff_doubles_with_jitter_up_to_150s():
    delay, interval = next_backoff(None, rng=lambda: 0.5)
    assert (delay, interval) == (1.0, 1.0)
    delays = []
    for _ in range(12):
        delay, interval = next_backoff(interval, rng=lambda: 1.0)
        delays.append(delay)
    assert delays[0] == pytest.approx(2.4) and max(delays) == MAX_BACKOFF


async def test_fetch_then_rotate_at_half_life(autojump_clock):
    ca = FakeCA()
    async with trio.open_nursery() as nursery:
        sm = await running(ca, nursery)
        first = await sm.fetch_certificate(SLEEP)
        assert str(first.identity) == SLEEP and len(ca.calls) == 1
        assert first.server_context() is first.server_context()  # built once
        # istiod backdates NotBefore 2 min, so half-life is 11h59m after issue.
        await trio.sleep(11 * 3600 + 58 * 60)
        assert len(ca.calls) == 1
        await trio.sleep(2 * 60)
        assert len(ca.calls) == 2
        second = await sm.fetch_certificate(SLEEP)
        assert second.info.serial_hex != first.info.serial_hex
        dump = sm.dump()[0]
        assert dump["identity"] == SLEEP and dump["state"] == AVAILABLE
        assert dump["certChain"][0]["serialHex"] == second.info.serial_hex and dump["rootCerts"]
        nursery.cancel_scope.cancel()


async def test_failed_renewal_keeps_the_valid_certificate_and_backs_off(autojump_clock):
    ca = FakeCA()
    async with trio.open_nursery() as nursery:
        sm = await running(ca, nursery)
        cert = await sm.fetch_certificate(SLEEP)
        ca.failing = True
        await trio.sleep(16 * 3600)  # past half-life: renewals fail, the old cert stays
        assert await sm.fetch_certificate(SLEEP) is cert
        attempts = [t for t, _ in ca.calls[1:]]
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        assert len(attempts) > 10 and max(gaps) <= MAX_BACKOFF + 0.1 and gaps[-1] > 100
        await trio.sleep(9 * 3600)  # past NotAfter: nothing valid is left
        assert sm.state(SLEEP) == UNAVAILABLE
        with pytest.raises(CertificateUnavailable):
            await sm.fetch_certificate(SLEEP)
        ca.failing = False
        await trio.sleep(MAX_BACKOFF * 1.3)  # the next retry succeeds
        assert (await sm.fetch_certificate(SLEEP)).info.serial_hex != cert.info.serial_hex
        nursery.cancel_scope.cancel()


async def test_first_fetch_failure_fails_fast(autojump_clock):
    ca = FakeCA()
    ca.failing = True
    async with trio.open_nursery() as nursery:
        sm = await running(ca, nursery)
        start = trio.current_time()
        with pytest.raises(CertificateUnavailable, match="istiod down"):
            await sm.fetch_certificate(SLEEP)
        assert trio.current_time() - start < 1
        assert sm.dump()[0]["state"].startswith("Unavailable: istiod down")
        nursery.cancel_scope.cancel()


async def test_a_certificate_for_another_identity_is_refused(autojump_clock):
    ca = FakeCA()
    ca.answer_as = "spiffe://cluster.local/ns/default/sa/other"
    async with trio.open_nursery() as nursery:
        sm = await running(ca, nursery)
        with pytest.raises(CertificateUnavailable, match="asked for"):
            await sm.fetch_certificate(SLEEP)
        nursery.cancel_scope.cancel()


async def test_acquire_prefetches_and_release_forgets(autojump_clock):
    ca = FakeCA()
    async with trio.open_nursery() as nursery:
        sm = await running(ca, nursery)
        sm.acquire(SLEEP)
        sm.acquire(SLEEP)  # two pods with the same identity share one certificate
        await trio.sleep(1)
        assert ca.calls == [(pytest.approx(0.01), SLEEP)] and sm.state(SLEEP) == AVAILABLE
        sm.release(SLEEP)
        assert sm.state(SLEEP) == AVAILABLE
        sm.release(SLEEP)
        assert sm.state(SLEEP) is None and sm.dump() == []
        await trio.sleep(24 * 3600)
        assert len(ca.calls) == 1  # no refresh of a forgotten identity
        nursery.cancel_scope.cancel()
