"""ztunnel's view of the mesh: Workloads, Services and Authorizations (ztunnel `src/state.rs`).

`ProxyState` is pure: istiod's resources go in (`apply`, in the contract's JSON shape, see
docs/mesh-internals.md "Address resources"), converted to typed objects as they arrive
(`mesh.ztunnel.resources`, `mesh.policy.authorization`), and lookups come out. It holds what ztunnel's proxies ask
on every connection:

- `find_upstream`: where a connection to ip:port really goes (docs/ambient-facts.md §4.3): a Service by VIP first,
  load-balanced over its Healthy endpoints, else a Workload by IP, else nothing (passthrough);
- `find_workload_by_ip` / `find_workload_by_info`: who a peer is, who a pod is;
- `policies_for`: the L4 policies that apply to a workload (docs/ambient-facts.md §5.3);
- `known`: the resource versions to send istiod when the config stream reconnects.

Endpoints are not sent by istiod: like ztunnel, the state derives them from every Workload's
`services` map. The state is never cleared when istiod goes away (docs/ambient-facts.md §6.1).

`StateHandle` is the thin trio shell the proxies share: the state plus a way to wait for a change
(a pod's own Workload may arrive after its first connection).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from mesh.contract import ADDRESS, AUTHORIZATION
from mesh.policy import rbac
from mesh.policy.authorization import Authorization
from mesh.ztunnel.resources import HOST_NETWORK, GatewayAddress, InvalidResource, Service, Workload


@dataclass(frozen=True)
class Upstream:
    """Where a connection goes: a workload, the IP and port to dial, and the service it was for."""

    workload: Workload
    ip: str
    port: int
    service: Service | None = None

    @property
    def sans(self) -> tuple[str, ...]:
        """Identities the peer may present: the workload's plus the service's SANs
        (ztunnel `workload_and_services_san`)."""
        extra = self.service.subject_alt_names if self.service else ()
        return (*extra, self.workload.identity)


Rng = Callable[[list[Any]], Any]  # random.choice-like


class ProxyState:
    """Workloads, Services and Authorizations, indexed for the proxies' lookups. Pure."""

    def __init__(self) -> None:
        self.workloads: dict[str, Workload] = {}  # by uid
        self.services: dict[str, Service] = {}  # by "ns/hostname"
        self.policies: dict[str, Authorization] = {}  # by "ns/name"
        self._by_ip: dict[str, str] = {}  # workload IP → uid
        self._by_info: dict[tuple[str, str, str], str] = {}  # (name, namespace, service account) → uid
        self._by_vip: dict[str, list[str]] = {}  # service VIP → keys
        self._endpoints: dict[str, set[str]] = {}  # service key → workload uids
        self._address_names: dict[str, tuple[str, str]] = {}  # resource name → ("workload"|"service", key)
        self.versions: dict[str, dict[str, str]] = {ADDRESS: {}, AUTHORIZATION: {}}
        #: Bumped on every change; the shell wakes waiters when it moves.
        self.generation = 0

    # --- updates (istiod's pushes) --------------------------------------------------------

    def apply(self, message: Mapping[str, Any]) -> list[str]:
        """Apply one pushed message ({"type", "resources", "removed"}); returns problems found.

        Removals go first, so a resource that is removed and re-added in one push survives. A bad
        resource is reported and skipped (the rest of the push still applies), as xDS NACKs one
        resource without dropping the others.
        """
        kind = message.get("type")
        if kind not in (ADDRESS, AUTHORIZATION):
            return [f"unknown resource type {kind!r}"]
        problems: list[str] = []
        for name in message.get("removed") or ():
            self.remove(kind, name)
        for item in message.get("resources") or ():
            try:
                self.insert(kind, item["name"], item.get("version", ""), item["resource"])
            except (ValueError, KeyError, TypeError) as exc:  # InvalidResource, InvalidAuthorization
                problems.append(f"{kind} {item.get('name', '?') if isinstance(item, Mapping) else item!r}: {exc}")
        return problems

    def insert(self, kind: str, name: str, version: str, resource: Mapping[str, Any]) -> None:
        """Convert and index one resource; a bad one raises (InvalidResource, InvalidAuthorization)
        before anything changes."""
        if kind == ADDRESS:
            if "workload" in resource:
                workload = Workload.from_xds(resource["workload"])
                self._remove_address(name)
                self._insert_workload(name, workload)
            elif "service" in resource:
                service = Service.from_xds(resource["service"])
                self._remove_address(name)
                self._insert_service(name, service)
            else:
                raise InvalidResource("an Address holds neither a workload nor a service")
        else:
            self.policies[name] = Authorization.from_xds(resource.get("authorization", resource))
        self.versions[kind][name] = version
        self.generation += 1

    def remove(self, kind: str, name: str) -> None:
        if kind == ADDRESS:
            self._remove_address(name)
        else:
            self.policies.pop(name, None)
        self.versions[kind].pop(name, None)
        self.generation += 1

    def known(self) -> dict[str, dict[str, str]]:
        """{"Address": {name: version}, "Authorization": {...}}: what a reconnect tells istiod."""
        return {kind: dict(names) for kind, names in self.versions.items()}

    def _insert_workload(self, name: str, wl: Workload) -> None:
        self.workloads[wl.uid] = wl
        self._address_names[name] = ("workload", wl.uid)
        self._by_info[(wl.name, wl.namespace, wl.service_account)] = wl.uid
        # Host-network pods share the node's IP: it cannot name one of them (as ztunnel).
        if wl.network_mode != HOST_NETWORK:
            for ip in wl.addresses:
                self._by_ip[ip] = wl.uid
        for key in wl.services:
            self._endpoints.setdefault(key, set()).add(wl.uid)

    def _insert_service(self, name: str, svc: Service) -> None:
        self.services[svc.key] = svc
        self._address_names[name] = ("service", svc.key)
        for vip in svc.addresses:
            keys = self._by_vip.setdefault(vip, [])
            if svc.key not in keys:
                keys.append(svc.key)
                keys.sort()

    def _remove_address(self, name: str) -> None:
        entry = self._address_names.pop(name, None)
        if entry is None:
            return
        kind, key = entry
        if kind == "workload":
            wl = self.workloads.pop(key)
            if self._by_info.get((wl.name, wl.namespace, wl.service_account)) == wl.uid:
                del self._by_info[(wl.name, wl.namespace, wl.service_account)]
            for ip in wl.addresses:
                if self._by_ip.get(ip) == wl.uid:
                    del self._by_ip[ip]
            for svc_key in wl.services:
                members = self._endpoints.get(svc_key)
                if members is not None:
                    members.discard(wl.uid)
                    if not members:
                        del self._endpoints[svc_key]
        elif kind == "service":
            svc = self.services.pop(key)
            for vip in svc.addresses:
                keys = self._by_vip.get(vip, [])
                if key in keys:
                    keys.remove(key)
                if not keys:
                    self._by_vip.pop(vip, None)

    # --- lookups --------------------------------------------------------------------------

    def find_workload_by_ip(self, ip: str) -> Workload | None:
        uid = self._by_ip.get(ip)
        return self.workloads.get(uid) if uid else None

    def find_workload_by_info(self, name: str, namespace: str, service_account: str) -> Workload | None:
        """The pod a ZDS `add` named (ztunnel `find_by_info`): same name, namespace and SA."""
        uid = self._by_info.get((name, namespace, service_account or "default"))
        return self.workloads.get(uid) if uid else None

    def find_service_by_vip(self, ip: str, namespace: str | None = None) -> Service | None:
        """The Service owning VIP `ip`; when several share it, the one in `namespace` wins."""
        keys = self._by_vip.get(ip)
        if not keys:
            return None
        if namespace is not None:
            for key in keys:
                if self.services[key].namespace == namespace:
                    return self.services[key]
        return self.services[keys[0]]

    def find_service(self, key: str) -> Service | None:
        """A Service by "ns/hostname"."""
        return self.services.get(key)

    def endpoints(self, svc: Service) -> list[tuple[Workload, Mapping[int, int]]]:
        """Every workload that names `svc` in its `services` map, with its port map."""
        uids = sorted(self._endpoints.get(svc.key, ()))
        return [(self.workloads[uid], self.workloads[uid].services[svc.key]) for uid in uids]

    def services_of(self, wl: Workload) -> list[Service]:
        """The known Services `wl` is an endpoint of."""
        return [self.services[key] for key in sorted(wl.services) if key in self.services]

    def find_upstream(
        self, source: Workload, ip: str, port: int, rng: Rng = random.choice, *, waypoint_mode: bool = False
    ) -> Upstream | None:
        """Where a connection from `source` to ip:port goes (ztunnel `find_upstream`).

        A Service VIP is load-balanced over its endpoints (None when none is usable); a workload IP
        is that workload; anything else is None (the caller passes it through). `waypoint_mode`
        looks up a waypoint's own Service, whose HBONE port need not be a declared service port.
        """
        svc = self.find_service_by_vip(ip, source.namespace)
        if svc is not None:
            return self.upstream_from_service(svc, port, rng, waypoint_mode=waypoint_mode)
        wl = self.find_workload_by_ip(ip)
        if wl is not None:
            return Upstream(wl, ip, port)
        return None

    def upstream_from_service(
        self, svc: Service, port: int, rng: Rng = random.choice, *, waypoint_mode: bool = False
    ) -> Upstream | None:
        """A random Healthy endpoint of `svc` that serves `port`, and the port to dial on it.

        The target port is the endpoint's own mapping, else the service's targetPort (ztunnel
        `find_upstream_from_service`). ztunnel weights the choice by `capacity`, which the lab's
        workloads do not carry, so every endpoint weighs the same.
        """
        svc_target = svc.ports.get(port)
        if svc_target is None and not waypoint_mode:
            return None  # the service has no such port
        options = []
        for wl, port_map in self.endpoints(svc):
            if not wl.healthy or not wl.addresses:
                continue
            target = port_map.get(port) or svc_target or (port if waypoint_mode else 0)
            if target:
                options.append((wl, target))
        if not options:
            return None
        wl, target = rng(options)
        return Upstream(wl, wl.pick_ip(), target, svc)

    def resolve_waypoint(self, gateway: GatewayAddress, source: Workload, rng: Rng = random.choice) -> Upstream | None:
        """The waypoint instance to send to, dialled on its HBONE port (ztunnel `fetch_waypoint`)."""
        port = gateway.hbone_mtls_port
        if gateway.destination:
            svc = self.find_service(gateway.destination)
            if svc is None:
                return None
            return self.upstream_from_service(svc, port, rng, waypoint_mode=True)
        if gateway.address:
            return self.find_upstream(source, gateway.address, port, rng, waypoint_mode=True)
        return None

    def waypoint_members(self, gateway: GatewayAddress) -> set[str]:
        """The uids of the workloads that are this waypoint."""
        if gateway.destination:
            svc = self.find_service(gateway.destination)
            return {wl.uid for wl, _ in self.endpoints(svc)} if svc else set()
        if gateway.address:
            svc = self.find_service_by_vip(gateway.address)
            if svc is not None:
                return {wl.uid for wl, _ in self.endpoints(svc)}
            wl = self.find_workload_by_ip(gateway.address)
            return {wl.uid} if wl else set()
        return set()

    def policies_for(self, wl: Workload) -> list[Authorization]:
        """The L4 policies checked for connections to `wl`: its namespace's, the global ones, and
        its selector policies."""
        return rbac.policies_for(wl.namespace, wl.authorization_policies, self.policies.values())

    # --- config_dump ----------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """The state as ztunnel's config_dump shows it (camelCase resources as received)."""
        services = []
        for svc in sorted(self.services.values(), key=lambda s: s.key):
            eps = self.endpoints(svc)
            services.append(
                {
                    **svc.raw,
                    "endpoints": {
                        wl.uid: {"workloadUid": wl.uid, "status": wl.status, "port": {str(k): v for k, v in pm.items()}}
                        for wl, pm in eps
                    },
                }
            )
        return {
            "workloads": [dict(wl.raw) for wl in sorted(self.workloads.values(), key=lambda w: w.uid)],
            "services": services,
            "policies": [dict(self.policies[k].raw) for k in sorted(self.policies)],
        }


class StateHandle:
    """The shared `ProxyState` plus change notification: the trio shell the proxies use."""

    def __init__(self, state: ProxyState | None = None) -> None:
        self.state = state if state is not None else ProxyState()
        self._changed = trio.lowlevel.ParkingLot()

    def apply(self, message: Mapping[str, Any]) -> list[str]:
        problems = self.state.apply(message)
        self.notify()
        return problems

    def notify(self) -> None:
        """Wake everyone waiting for a change (call after changing `state` directly)."""
        self._changed.unpark_all()

    async def wait_for(self, lookup: Callable[[ProxyState], Any], timeout: float) -> Any:
        """`lookup(state)` once it is not None, or None after `timeout` seconds."""
        found = lookup(self.state)
        if found is not None:  # the usual case: no need for a cancel scope
            await trio.lowlevel.checkpoint()
            return found
        with trio.move_on_after(timeout if timeout is not None else math.inf):
            while True:
                found = lookup(self.state)
                if found is not None:
                    return found
                await self._changed.park()
        return None
