"""What istiod knows of the cluster, kept current from the lab API's watch stream.

Three tasks share one `MeshState`:
- `follow_cluster` keeps the objects. After a disconnect it reconnects with backoff and fills a
  fresh store from the new initial list, swapped in whole at SYNCED, so deletions missed while away
  do not linger and a half-listed cluster is never translated.
- `keep_translated` recomputes the translation shortly after changes (debounced: a burst of events
  gives one push) and publishes it when the resources differ; `ready` is set after the first one.
- `write_statuses` writes each AuthorizationPolicy's `ZtunnelAccepted` condition when it changes.
A fourth, `mesh.istiod.waypoint_controller.reconcile_waypoints`, is woken by `waypoints_due` after each
translation and keeps the waypoints' objects and Gateway statuses (it reads the Gateways, and the
ServiceAccounts and Deployments it owns, from the same objects).
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from datetime import datetime, timezone
from typing import Any, Mapping

import trio

from lab.client import AsyncLabClient, LabError
from lab.client.backoff import Backoff
from lab.client.protocol import ProtocolError
from mesh.istiod.jwks import JwksResolver
from mesh.istiod.jwt import jwks_sources
from mesh.istiod.translate import ALL_TYPES, Settings, Translation, diff, status_update, translate
from mesh.istiod.xds import ConfigPublisher
from mesh.policy.model import RequestAuthentication, parse_as

log = logging.getLogger("istiod.kube")
status_log = logging.getLogger("istiod.status")

KINDS = (
    "Namespace",
    "Pod",
    "Service",
    "AuthorizationPolicy",
    "PeerAuthentication",
    "RequestAuthentication",
    "Gateway",
    "ServiceAccount",
    "Deployment",
)
JWKS_REFRESH = 300.0  # seconds between re-fetches of in-lab jwksUri (Envoy's remote JWKS cache time)
DEBOUNCE = 0.01  # seconds between the first change of a burst and the recompute


class Flag:
    """A wake-up that many `set` calls raise once: the waiter `clear`s it when it starts its work,
    so changes made during that work raise it again."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class ClusterObjects:
    """The watched objects by kind and (namespace, name); fed watch events (sans-IO)."""

    def __init__(self) -> None:
        self._objects: dict[str, dict[tuple[str, str], dict]] = {kind: {} for kind in KINDS}

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        if kind not in self._objects:
            return
        key = (meta.get("namespace") or "", meta.get("name") or "")
        if event_type == "DELETED":
            self._objects[kind].pop(key, None)
        else:
            self._objects[kind][key] = dict(obj)

    def by_kind(self) -> dict[str, list[dict]]:
        return {kind: list(objects.values()) for kind, objects in self._objects.items()}

    def list(self, kind: str) -> list[dict]:
        return list(self._objects.get(kind, {}).values())

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._objects.get(kind, {}).get((namespace, name))

    def counts(self) -> str:
        return ", ".join(f"{len(objects)} {kind}" for kind, objects in self._objects.items())


class MeshState:
    """The objects, their latest translation, and the signals between the three tasks."""

    def __init__(self, settings: Settings = Settings(), publisher: ConfigPublisher | None = None):
        self.settings = settings
        self.objects = ClusterObjects()
        self.publisher = publisher or ConfigPublisher()
        self.translation: Translation | None = None
        self.synced = trio.Event()  # the objects hold a complete list
        self.ready = trio.Event()  # the first translation is published
        self.dirty = Flag()  # the objects changed since the last translation
        self.translated = Flag()  # a translation is waiting for its statuses to be written
        self.waypoints_due = Flag()  # the objects changed: waypoints' objects and statuses to check
        self.jwks = JwksResolver()  # the RequestAuthentications' jwksUri, as far as fetched
        self.jwks_due = Flag()  # a translation happened: jwksUri to resolve

    def pods(self) -> list[dict]:
        return self.objects.list("Pod")


async def follow_cluster(client: AsyncLabClient, state: MeshState, backoff: Backoff | None = None) -> None:
    """Keeps `state.objects` equal to the lab's, forever. A repeated failure is logged once."""
    backoff = backoff or Backoff()
    last_reason = None
    while True:
        fresh = ClusterObjects()
        try:
            async with aclosing(client.watch(list(KINDS))) as events:
                async for event in events:
                    if event.get("type") == "SYNCED":
                        if state.objects is not fresh:
                            state.objects = fresh
                            log.info("%s: %s", "re-synced" if state.synced.is_set() else "synced", fresh.counts())
                            state.synced.set()
                            backoff.reset()
                            last_reason = None
                            state.dirty.set()
                    elif event.get("object"):
                        fresh.apply(event.get("type", ""), event["object"])
                        if state.objects is fresh:
                            state.dirty.set()
            reason = "the lab API closed the watch"
        except (OSError, LabError, ProtocolError, trio.BrokenResourceError) as e:
            reason = f"watch failed: {e}"
        if reason != last_reason:
            log.warning("%s; reconnecting (backoff up to %.0fs)", reason, backoff.maximum)
            last_reason = reason
        await trio.sleep(backoff.next())


async def keep_translated(state: MeshState, debounce: float = DEBOUNCE) -> None:
    """Translates after every burst of changes; publishes only when a resource changed."""
    reported: set[str] = set()
    while True:
        await state.dirty.wait()
        await trio.sleep(debounce)
        state.dirty.clear()
        translation = translate(state.objects.by_kind(), state.settings, state.jwks.lookup)
        for problem in set(translation.problems) - reported:
            log.warning("%s", problem)
        reported = set(translation.problems)
        state.translation = translation
        previous = state.publisher.current or {}
        deltas = {t: diff(previous.get(t, {}), translation.resources[t]) for t in ALL_TYPES}
        if state.publisher.current is None or any(changed or removed for changed, removed in deltas.values()):
            state.publisher.publish(translation.resources)
            log.info(
                "config: %s",
                "; ".join(
                    f"{len(translation.resources[t])} {t} ({len(changed)} changed, {len(removed)} removed)"
                    for t, (changed, removed) in deltas.items()
                ),
            )
        state.translated.set()
        state.waypoints_due.set()
        state.jwks_due.set()
        state.ready.set()


async def resolve_jwks(state: MeshState, refresh: float = JWKS_REFRESH) -> None:
    """Fetches the jwksUri the RequestAuthentications name (in-lab URLs; the rest come from the
    offline mirror or fail closed) and retranslates when keys changed; re-fetches periodically."""
    last_refetch = trio.current_time()
    while True:
        with trio.move_on_after(refresh):
            await state.jwks_due.wait()
        state.jwks_due.clear()
        authns = []
        for obj in state.objects.list("RequestAuthentication"):
            try:
                authns.append(parse_as(RequestAuthentication, obj))
            except (ValueError, TypeError):
                continue  # the translation reports it
        refetch = trio.current_time() - last_refetch >= refresh
        if refetch:
            last_refetch = trio.current_time()
        if await state.jwks.refresh(jwks_sources(authns), refetch=refetch):
            state.dirty.set()


async def write_statuses(client: AsyncLabClient, state: MeshState, retry_delay: float = 1.0) -> None:
    """Brings every AuthorizationPolicy's status in line with the latest translation.

    A written object's resourceVersion is remembered, so until the watch shows that version the
    (stale) stored copy is not compared, and nothing is written twice.
    """
    written: dict[tuple[str, str], int] = {}
    last_failure = None
    while True:
        await state.translated.wait()
        state.translated.clear()
        if state.translation is None:
            continue
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        written = {key: version for key, version in written.items() if key in state.translation.conditions}
        for (namespace, name), condition in sorted(state.translation.conditions.items()):
            policy = state.objects.get("AuthorizationPolicy", namespace, name)
            if policy is None or _version(policy) < written.get((namespace, name), 0):
                continue
            status = status_update(policy.get("status"), condition, now)
            if status is None:
                continue
            try:
                updated = await client.call(
                    "update_status", kind="AuthorizationPolicy", namespace=namespace, name=name, status=status
                )
            except (OSError, LabError, ProtocolError) as e:
                if str(e) != last_failure:  # a lasting failure costs one line, not one per retry
                    status_log.warning(
                        "writing the status of AuthorizationPolicy %s/%s failed, retrying: %s", namespace, name, e
                    )
                    last_failure = str(e)
                await trio.sleep(retry_delay)
                state.translated.set()
                break
            last_failure = None
            written[namespace, name] = _version(updated)
            status_log.info(
                "AuthorizationPolicy %s/%s: %s=%s (%s)",
                namespace,
                name,
                condition["type"],
                condition["status"],
                condition["message"],
            )


def _version(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0
