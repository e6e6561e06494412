"""Trust bootstrap: the mesh root in the lab API, and istiod's own serving certificate.

The root lives in Secret `istio-system/istio-ca-secret` (`ca-cert.pem`, `ca-key.pem`): istiod loads
it, or makes one on first start, so a restarted istiod keeps signing with the same root. The root
certificate is published in ConfigMap `istio-system/istio-ca-root-cert` (`root-cert.pem`), where
ztunnel reads it. istiod's certificate for port 15012 is signed directly by that root and renewed at
half-life; connections accepted after a renewal get the new one.
"""

from __future__ import annotations

import json
import logging
import ssl
from datetime import datetime, timezone
from typing import Awaitable, Callable, TypeVar

import trio

from lab.client import AsyncLabClient, LabError
from lab.client.protocol import ProtocolError
from mesh.contract import ISTIO_NAMESPACE, ROOT_CERT_CONFIGMAP, ROOT_CERT_KEY
from mesh.identity.ca import CAError, RootCA, make_csr, refresh_at
from mesh.identity.spiffe import Identity
from mesh.istiod.channel import istiod_identity, server_context

log = logging.getLogger("istiod.trust")

NAMESPACE = ISTIO_NAMESPACE
CA_SECRET = "istio-ca-secret"
ROOT_CONFIGMAP = ROOT_CERT_CONFIGMAP

T = TypeVar("T")


def secret_manifest(root: RootCA) -> str:
    cert, key = root.to_pem()
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "istio.io/ca-root",
            "metadata": {"name": CA_SECRET, "namespace": NAMESPACE},
            "data": {"ca-cert.pem": cert, "ca-key.pem": key},
        }
    )


def configmap_manifest(root: RootCA) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": ROOT_CONFIGMAP, "namespace": NAMESPACE},
            "data": {ROOT_CERT_KEY: root.cert_pem},
        }
    )


async def _find(client: AsyncLabClient, kind: str, name: str) -> dict | None:
    """The object, or None. Listing (not `get` by name) tells "absent" from an error without
    parsing the error text."""
    listing = await client.call("get", kind=kind, namespace=NAMESPACE)
    return next((o for o in listing.get("items", []) if o["metadata"]["name"] == name), None)


async def load_or_create_root(client: AsyncLabClient) -> RootCA:
    secret = await _find(client, "Secret", CA_SECRET)
    if secret is None:
        log.info("no Secret %s/%s: creating the mesh root CA", NAMESPACE, CA_SECRET)
        await client.call("apply", manifests=secret_manifest(RootCA.generate()), source="istiod")
        secret = await _find(client, "Secret", CA_SECRET)  # read back: a concurrent creator wins
        if secret is None:
            raise LabError(f"Secret {NAMESPACE}/{CA_SECRET} vanished right after it was created")
    data = secret.get("data") or {}
    root = RootCA.from_pem(data["ca-cert.pem"], data["ca-key.pem"])
    log.info(
        "mesh root CA %s (trust domain %s, expires %s), from Secret %s/%s",
        format(root.cert.serial_number, "x"),
        root.trust_domain,
        root.cert.not_valid_after_utc.strftime("%Y-%m-%d"),
        NAMESPACE,
        CA_SECRET,
    )
    return root


async def publish_root(client: AsyncLabClient, root: RootCA) -> None:
    [result] = await client.call("apply", manifests=configmap_manifest(root), source="istiod")
    log.info("root certificate in ConfigMap %s/%s (%s)", NAMESPACE, ROOT_CONFIGMAP, result.get("action"))


async def bootstrap(client: AsyncLabClient, retry_delay: float = 0.5) -> RootCA:
    """The root, published; waits (retrying) for the lab API and the istio-system namespace."""
    root = await _retrying(lambda: load_or_create_root(client), "loading the mesh root", retry_delay)
    await _retrying(lambda: publish_root(client, root), "publishing the root certificate", retry_delay)
    return root


async def _retrying(step: Callable[[], Awaitable[T]], what: str, delay: float) -> T:
    """Runs `step` until it succeeds; logs each new kind of failure once. A broken Secret is
    retried too: fixing it by hand must not need an istiod restart."""
    last = None
    while True:
        try:
            return await step()
        except (OSError, LabError, ProtocolError, KeyError, ValueError, CAError) as e:
            reason = f"{type(e).__name__}: {e}"
            if reason != last:
                log.warning("%s failed, retrying: %s", what, reason)
                last = reason
        await trio.sleep(delay)


class ServingCertificate:
    """istiod's TLS identity on 15012, renewed from the root at half-life."""

    def __init__(self, root: RootCA, identity: Identity | None = None):
        self._root = root
        self.identity = identity or istiod_identity(root.trust_domain)
        self.context, self.refresh_at = self._issue()

    def _issue(self) -> tuple[ssl.SSLContext, datetime]:
        key, csr = make_csr(self.identity)
        chain = self._root.sign_csr(csr, [self.identity])
        return server_context(chain, key, self._root.cert_pem), refresh_at(chain[0])

    async def keep_fresh(self) -> None:
        while True:
            await trio.sleep(max(0.0, (self.refresh_at - datetime.now(timezone.utc)).total_seconds()))
            self.context, self.refresh_at = self._issue()
            log.info("renewed the serving certificate of %s", self.identity)
