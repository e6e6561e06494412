"""Helpers to run ztunnel without istiod: resources in the contract's shape and a fake control plane.

`FakeControlPlane` signs certificates with a local `RootCA` and serves a config stream fed from the
test (`push`), so the core can run in-process exactly as it runs against istiod: the tests then
see the same pushes, SYNCED and reconnects that the real stream gives.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Iterable
from datetime import timedelta
from typing import Any

import trio

from mesh import contract
from mesh.contract import ADDRESS, AUTHORIZATION
from mesh.identity.ca import RootCA
from mesh.identity.spiffe import Identity


def workload(
    name: str,
    ip: str | None,
    *,
    namespace: str = "default",
    sa: str | None = None,
    protocol: str = "HBONE",
    services: dict[str, dict[str, int]] | None = None,
    status: str = "Healthy",
    waypoint: dict | None = None,
    policies: list[str] | None = None,
    network_mode: str = "STANDARD",
    node: str = "worker1",
) -> dict[str, Any]:
    """An Address resource holding a Workload; the app label is the name's first dash-part."""
    app = name.split("-")[0]
    return {
        "workload": {
            "uid": f"Kubernetes//Pod/{namespace}/{name}",
            "name": name,
            "namespace": namespace,
            "addresses": [ip] if ip else [],
            "protocol": protocol,
            "trustDomain": "cluster.local",
            "serviceAccount": sa or app,
            "node": node,
            "canonicalName": app,
            "canonicalRevision": "v1",
            "workloadType": "deployment",
            "workloadName": app,
            "waypoint": waypoint,
            "services": {k: {str(p): t for p, t in v.items()} for k, v in (services or {}).items()},
            "authorizationPolicies": policies or [],
            "status": status,
            "clusterId": "Kubernetes",
            "networkMode": network_mode,
        }
    }


def service(
    name: str,
    vip: str,
    ports: dict[int, int],
    *,
    namespace: str = "default",
    waypoint: dict | None = None,
    sans: list[str] | None = None,
) -> dict[str, Any]:
    """An Address resource holding a Service."""
    return {
        "service": {
            "name": name,
            "namespace": namespace,
            "hostname": f"{name}.{namespace}.svc.cluster.local",
            "addresses": [vip],
            "ports": [{"servicePort": p, "targetPort": t} for p, t in ports.items()],
            "subjectAltNames": sans or [],
            "waypoint": waypoint,
        }
    }


def address_name(resource: dict[str, Any]) -> str:
    if "workload" in resource:
        return resource["workload"]["uid"]
    svc = resource["service"]
    return f"{svc['namespace']}/{svc['hostname']}"


def address_push(*resources: dict[str, Any], removed: Iterable[str] = (), version: str = "1") -> dict[str, Any]:
    return {
        "type": ADDRESS,
        "resources": [{"name": address_name(r), "version": version, "resource": r} for r in resources],
        "removed": list(removed),
    }


def authorization(
    name: str, namespace: str, action: str, principals: list[str] | None = None, *, scope: str = "WORKLOAD_SELECTOR"
) -> dict[str, Any]:
    """An Authorization with one rule matching `principals` (none: a rule-less policy)."""
    rules = [{"clauses": [{"matches": [{"principals": [{"exact": p} for p in principals]}]}]}] if principals else []
    return {"name": name, "namespace": namespace, "scope": scope, "action": action, "rules": rules, "dryRun": False}


def authorization_push(*policies: dict[str, Any], removed: Iterable[str] = (), version: str = "1") -> dict[str, Any]:
    return {
        "type": AUTHORIZATION,
        "resources": [{"name": f"{p['namespace']}/{p['name']}", "version": version, "resource": p} for p in policies],
        "removed": list(removed),
    }


SYNCED = {"type": contract.SYNCED}


class FakeControlPlane:
    """A `ControlPlane` for tests: a local CA, and config streams fed by `push`.

    Every `subscribe` call is one stream: it first replays `initial` (then SYNCED), then whatever
    is pushed while it is open. `disconnect()` ends the open streams, as an istiod restart would.
    `fail_certificates` makes CreateCertificate fail, as istiod being down would.
    """

    def __init__(self, ca: RootCA | None = None, *, validity: timedelta = timedelta(hours=24)) -> None:
        self.ca = ca or RootCA.generate()
        self.validity = validity
        self.initial: list[dict[str, Any]] = []
        self.fail_certificates = False
        self.issued: list[str] = []
        self.subscriptions: list[dict[str, dict[str, str]]] = []  # the `known` of every subscribe
        self._streams: list[trio.MemorySendChannel] = []

    async def root_cert(self) -> str:
        await trio.lowlevel.checkpoint()
        return self.ca.cert_pem

    async def create_certificate(self, root_pem: str, csr_pem: str, identity: str) -> list[str]:
        await trio.lowlevel.checkpoint()
        if self.fail_certificates:
            raise ConnectionRefusedError("istiod is down")
        self.issued.append(identity)
        return self.ca.sign_csr(csr_pem, [Identity.parse(identity)], ttl=self.validity)

    async def subscribe(self, root_pem: str, known: dict[str, dict[str, str]]) -> AsyncGenerator[dict[str, Any], None]:
        self.subscriptions.append(known)
        send, receive = trio.open_memory_channel(math.inf)
        for message in self.initial:
            send.send_nowait(message)
        send.send_nowait(SYNCED)
        self._streams.append(send)
        try:
            async with receive:
                async for message in receive:
                    yield message
        finally:
            if send in self._streams:
                self._streams.remove(send)

    def push(self, message: dict[str, Any], *, remember: bool = True) -> None:
        """Send to every open stream (and to later ones, unless `remember` is False)."""
        if remember:
            self.initial.append(message)
        for send in list(self._streams):
            send.send_nowait(message)

    def disconnect(self) -> None:
        for send in self._streams:
            send.close()
        self._streams.clear()
