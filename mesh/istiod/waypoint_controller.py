"""The waypoint controller: istiod keeping every waypoint Gateway's objects and status current.

What to deploy and what the status says is decided by the pure model in `mesh.istiod.waypoints`;
this module only applies it through the lab API, one reconcile pass at a time, retried with backoff.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Mapping

import trio

from lab.client import AsyncLabClient, LabError, LabUnavailable
from lab.client.backoff import Backoff
from lab.client.protocol import ProtocolError
from mesh.istiod.objects import meta as _meta
from mesh.istiod.objects import name as _name
from mesh.istiod.objects import namespace as _namespace
from mesh.istiod.waypoints import (
    DEFAULT_TAG,
    attached_route_count,
    desired_objects,
    drift,
    gateway_status,
    is_owned_by,
    is_waypoint,
    status_update,
)

if TYPE_CHECKING:
    from mesh.istiod.state import MeshState

log = logging.getLogger("istiod.waypoints")


class _Once:
    """Logs a message for a key once until it changes (a lasting failure costs one line)."""

    def __init__(self) -> None:
        self._last: dict[Any, str] = {}

    def warn(self, key: Any, message: str, *args: Any) -> None:
        text = message % args
        if self._last.get(key) != text:
            log.warning("%s", text)
            self._last[key] = text

    def clear(self, key: Any) -> None:
        self._last.pop(key, None)


def _manifest(obj: Mapping) -> str:
    return json.dumps(obj, sort_keys=True)


def _version(obj: Mapping) -> int:
    try:
        return int(_meta(obj).get("resourceVersion") or 0)
    except ValueError:
        return 0


class WaypointController:
    """One reconcile pass at a time over the watched objects (`MeshState.objects`)."""

    def __init__(self, client: AsyncLabClient, state: "MeshState", tag: str = DEFAULT_TAG):
        self.client = client
        self.state = state
        self.tag = tag
        self.refused: dict[tuple[str, str, str], tuple[str, str]] = {}  # (kind, ns, name) → (manifest, error)
        self.written: dict[tuple[str, str], int] = {}  # Gateway → resourceVersion of our last status write
        self.once = _Once()

    async def reconcile(self) -> None:
        """Creates and repairs every waypoint's objects, then writes the statuses that changed.
        Transport failures raise (the caller retries); a refused object is reported in the status."""
        objects = self.state.objects
        gateways = [gw for gw in objects.list("Gateway") if is_waypoint(gw)]
        live = {(_namespace(gw), _name(gw)) for gw in gateways}
        self.written = {key: v for key, v in self.written.items() if key in live}
        self.refused = {key: v for key, v in self.refused.items() if key[1:] in live}
        for gateway in sorted(gateways, key=lambda g: (_namespace(g), _name(g))):
            problem = await self._deploy(gateway)
            await self._write_status(gateway, problem)

    async def _deploy(self, gateway: Mapping) -> str | None:
        namespace, name = _namespace(gateway), _name(gateway)
        problem = None
        for desired in desired_objects(gateway, self.tag):
            kind = desired["kind"]
            key = (kind, namespace, name)
            current = self.state.objects.get(kind, namespace, name)
            if current is not None and not is_owned_by(current, gateway):
                # A former Gateway's (the garbage collector removes it) or the user's: not ours to change.
                self.once.warn(
                    key,
                    "waypoint %s/%s: %s %s exists and is not owned by this Gateway; leaving it",
                    namespace,
                    name,
                    kind,
                    name,
                )
                problem = problem or f"{kind} {name} exists and is not owned by this Gateway"
                continue
            patch = drift(current, desired)
            if patch is None:
                self.once.clear(key)
                continue
            manifest = _manifest(patch)
            refused = self.refused.get(key)
            if refused is not None and refused[0] == manifest:
                problem = problem or refused[1]
                continue
            try:
                [result] = await self.client.call("apply", manifests=manifest, source="istiod")
            except LabUnavailable:
                raise
            except LabError as e:
                if "closed the connection" in str(e):
                    raise
                self.refused[key] = (manifest, str(e))
                self.once.warn(key, "waypoint %s/%s: %s refused: %s", namespace, name, kind, e)
                problem = problem or str(e)
                continue
            self.refused.pop(key, None)
            self.once.clear(key)
            if result.get("action") != "unchanged":
                log.info("waypoint %s/%s: %s %s %s", namespace, name, kind.lower(), name, result.get("action"))
        return problem

    async def _write_status(self, gateway: Mapping, problem: str | None) -> None:
        namespace, name = _namespace(gateway), _name(gateway)
        if _version(gateway) < self.written.get((namespace, name), 0):
            return  # our last write has not come back through the watch yet
        service = self.state.objects.get("Service", namespace, name)
        if service is not None and not is_owned_by(service, gateway):
            service = None
        routes = self.state.objects.list("HTTPRoute")
        desired = gateway_status(
            gateway, service, problem, attached_route_count(gateway, routes), self.state.settings.domain_suffix
        )
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = status_update(gateway.get("status"), desired, now)
        if status is None:
            return
        try:
            updated = await self.client.call(
                "update_status", kind="Gateway", namespace=namespace, name=name, status=status
            )
        except LabError as e:
            if "not found" in str(e):
                return  # deleted meanwhile
            raise
        self.written[namespace, name] = _version(updated)
        programmed = next(c for c in desired["conditions"] if c["type"] == "Programmed")
        log.info("Gateway %s/%s: Programmed=%s (%s)", namespace, name, programmed["status"], programmed["message"])


async def reconcile_waypoints(
    client: AsyncLabClient, state: "MeshState", backoff: Backoff | None = None, tag: str = DEFAULT_TAG
) -> None:
    """Keeps every waypoint Gateway's objects and status current, forever: woken by
    `state.waypoints_due` (set after each translation); a failed pass is retried with backoff and
    logged once."""
    backoff = backoff or Backoff(0.05, 5.0)
    controller = WaypointController(client, state, tag)
    last_failure = None
    while True:
        await state.waypoints_due.wait()
        state.waypoints_due.clear()
        if not state.synced.is_set():
            continue
        try:
            await controller.reconcile()
        except (OSError, LabError, ProtocolError, trio.BrokenResourceError) as e:
            if str(e) != last_failure:
                log.warning("reconciling waypoints failed, retrying: %s", e)
                last_failure = str(e)
            await trio.sleep(backoff.next())
            state.waypoints_due.set()
            continue
        backoff.reset()
        last_failure = None
