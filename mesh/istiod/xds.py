"""istiod's config stream: the Subscribe op (our stand-in for delta ADS, docs/ambient-facts.md §4.1).

A subscriber says which versions it already holds (`known`); istiod sends what differs, then
`{"type": "SYNCED"}`, then a delta each time the translation changes. Every subscriber compares the
latest published resources with what it last sent, so there is no queue per subscriber: a slow one
skips intermediate states and catches up with the newest, and never holds back the others.

Request: {"op": "Subscribe", "token", "node", "known": {"Address": {name: version}, "Authorization": {...}},
          "types"?: [...], "proxy"?: "<ns>/<name>", "version"?: "<the proxy's Istio version>"}
Stream:  {"type": "Authorization"|"Address", "resources": [{"name", "version", "resource"}], "removed": [...]}
         ..., {"type": "SYNCED"}, then deltas.

A ztunnel asks for the default types (Authorization, Address). A waypoint asks for Envoy's types
(Listener, Cluster, RouteConfiguration) and names itself in `proxy`: it is sent only the resources
whose names start with `<ns>/<name>/` (`mesh.istiod.proxyconfig`).

`SubscriberRegistry` is istiod's view of its live subscribers (Istio's sync status, served on
/debug/syncz by `mesh.istiod.debug`): who each is, what it asked for, its version, and per type
the version hash of what was last sent against what is current (SYNCED, STALE or NOT SENT).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import trio

from lab.client.protocol import encode
from mesh import contract
from mesh.contract import PROXY_TYPES
from mesh.istiod.auth import TokenReviewer, Unauthenticated
from mesh.istiod.proxyconfig import proxy_id
from mesh.istiod.translate import ALL_TYPES, TYPES, Resources, Versioned, diff

log = logging.getLogger("istiod.xds")

OP = "Subscribe"
SYNCED = {"type": contract.SYNCED}
SEND_TIMEOUT = 30.0  # a subscriber that takes no data for this long is dropped


class BadRequest(ValueError):
    """A Subscribe request istiod cannot serve; the message says why."""


def parse_known(known: object) -> Resources:
    """The client's `known` as Resources with versions only. BadRequest for another shape."""
    if known is None:
        return {}
    if not isinstance(known, Mapping):
        raise BadRequest("known must be an object of {type: {name: version}}")
    result: Resources = {}
    for type_, versions in known.items():
        if not isinstance(versions, Mapping) or not all(
            isinstance(name, str) and isinstance(version, str) for name, version in versions.items()
        ):
            raise BadRequest(f"known[{type_!r}] must map resource names to version strings")
        result[type_] = {name: Versioned(version, None) for name, version in versions.items()}
    return result


def parse_view(types: object, proxy: object) -> tuple[tuple[str, ...], str | None]:
    """(the types a subscriber asked for, its name prefix). BadRequest for another shape."""
    if types is None:
        chosen: tuple[str, ...] = TYPES
    elif isinstance(types, list) and types and all(t in ALL_TYPES for t in types):
        chosen = tuple(t for t in ALL_TYPES if t in types)
    else:
        raise BadRequest(f"types must be a non-empty list of {', '.join(ALL_TYPES)}")
    if proxy is None:
        if any(t in PROXY_TYPES for t in chosen):
            raise BadRequest("a proxy's types need `proxy`: its <namespace>/<name>")
        return chosen, None
    if not isinstance(proxy, str) or proxy.count("/") != 1 or "" in proxy.split("/"):
        raise BadRequest("proxy must be <namespace>/<name>")
    return chosen, proxy_id(*proxy.split("/"))


def view(resources: Resources, types: tuple[str, ...], prefix: str | None) -> Resources:
    """What one subscriber sees of the published resources."""
    out: Resources = {}
    for type_ in types:
        items = resources.get(type_, {})
        if prefix is not None and type_ in PROXY_TYPES:
            items = {name: res for name, res in items.items() if name.startswith(prefix)}
        out[type_] = items
    return out


def delta_messages(sent: Resources, current: Resources, types: tuple[str, ...] = ALL_TYPES) -> list[dict[str, Any]]:
    """The messages that take a client holding `sent` to `current`: one per type that differs."""
    messages = []
    for type_ in types:
        changed, removed = diff(sent.get(type_, {}), current.get(type_, {}))
        if changed or removed:
            messages.append(
                {
                    "type": type_,
                    "removed": removed,
                    "resources": [
                        {"name": name, "version": res.version, "resource": res.resource}
                        for name, res in changed.items()
                    ],
                }
            )
    return messages


def count(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """(resources pushed, names removed) in a batch of messages."""
    return (sum(len(m.get("resources", ())) for m in messages), sum(len(m.get("removed", ())) for m in messages))


class ConfigPublisher:
    """The latest translated resources and a wake-up for subscribers when they are replaced."""

    def __init__(self) -> None:
        self._current: Resources | None = None
        self._replaced = trio.Event()

    @property
    def current(self) -> Resources | None:
        return self._current

    def publish(self, resources: Resources) -> None:
        self._current = resources
        self._replaced.set()
        self._replaced = trio.Event()

    async def next(self, seen: Resources | None) -> Resources:
        """The published resources once they are not `seen` (at once if they already are not)."""
        while self._current is None or self._current is seen:
            await self._replaced.wait()
        return self._current


# --- the subscriber registry (sync status) ---------------------------------------------------------

SYNCED_STATE, STALE, NOT_SENT = contract.SYNCED, "STALE", "NOT SENT"
MAX_VERSION_LENGTH = 64


def parse_version(version: object) -> str | None:
    """The optional `version` of a Subscribe request. BadRequest for another shape."""
    if version is None:
        return None
    if not isinstance(version, str) or not version or len(version) > MAX_VERSION_LENGTH or not version.isprintable():
        raise BadRequest(f"version must be a non-empty string of at most {MAX_VERSION_LENGTH} characters")
    return version


def type_version(items: Mapping[str, Versioned]) -> str:
    """A short hash of one type's resource names and versions: equal hashes, same config."""
    digest = hashlib.sha256()
    for name in sorted(items):
        digest.update(name.encode() + b"\0" + items[name].version.encode() + b"\n")
    return digest.hexdigest()[:16]


def _rfc3339(moment: float | None) -> str | None:
    if moment is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


@dataclass
class Subscriber:
    """One live Subscribe connection as istiod sees it."""

    id: str
    service_account: str  # <ns>/<sa> of the caller's token
    identity: str  # its SPIFFE identity
    node: str
    pod: str  # <ns>/<name> of the pod the token is bound to
    proxy: str | None  # the proxy name it sent (waypoints, sidecars); None for a ztunnel
    types: tuple[str, ...]
    version: str | None
    prefix: str | None = None
    connected_at: float = 0.0
    sent: dict[str, str] = field(default_factory=dict)  # type → type_version of what was last sent
    sent_at: float | None = None
    pushes: int = 0

    def state(self, type_: str, current: str | None) -> str:
        """SYNCED (what it holds is current), STALE (istiod has newer) or NOT SENT (nothing yet)."""
        if type_ not in self.sent:
            return NOT_SENT
        return SYNCED_STATE if current is not None and self.sent[type_] == current else STALE


class SubscriberRegistry:
    """The live subscribers, and their sync status against the published resources (sans-IO)."""

    def __init__(self, trust_domain: str = "cluster.local", clock: Callable[[], float] = time.time) -> None:
        self.trust_domain = trust_domain
        self._clock = clock
        self._ids = itertools.count(1)
        self._live: dict[str, Subscriber] = {}

    def connect(
        self,
        *,
        namespace: str,
        service_account: str,
        pod_name: str,
        node: str,
        types: tuple[str, ...],
        proxy: str | None = None,
        prefix: str | None = None,
        version: str | None = None,
    ) -> Subscriber:
        sub = Subscriber(
            id=f"{node or '?'}-{next(self._ids)}",
            service_account=f"{namespace}/{service_account}",
            identity=f"spiffe://{self.trust_domain}/ns/{namespace}/sa/{service_account}",
            node=node,
            pod=f"{namespace}/{pod_name}",
            proxy=proxy,
            types=tuple(types),
            version=version,
            prefix=prefix,
            connected_at=self._clock(),
        )
        self._live[sub.id] = sub
        return sub

    def disconnect(self, sub: Subscriber) -> None:
        self._live.pop(sub.id, None)

    def record_sent(self, sub: Subscriber, current: Resources, pushed: bool = True) -> None:
        """`sub` now holds `current` (its view, every type it asked for); `pushed`: lines went out
        (False when a publish changed nothing it sees)."""
        sub.sent = {type_: type_version(current.get(type_, {})) for type_ in sub.types}
        if pushed:
            sub.sent_at = self._clock()
            sub.pushes += 1

    def __iter__(self):
        return iter(sorted(self._live.values(), key=lambda s: (s.pod, s.proxy or "", s.id)))

    def __len__(self) -> int:
        return len(self._live)

    def status(self, sub: Subscriber, published: Resources | None) -> dict[str, Any]:
        """One subscriber's entry of /debug/syncz."""
        mine = view(published, sub.types, sub.prefix) if published is not None else {}
        types = {}
        for type_ in sub.types:
            current = type_version(mine.get(type_, {})) if published is not None else None
            types[type_] = {
                "state": sub.state(type_, current),
                "sent": sub.sent.get(type_),
                "current": current,
                "resources": len(mine.get(type_, {})),
            }
        return {
            "id": sub.id,
            "pod": sub.pod,
            "node": sub.node,
            "identity": sub.identity,
            "serviceAccount": sub.service_account,
            "proxy": sub.proxy,
            "version": sub.version,
            "connectedAt": _rfc3339(sub.connected_at),
            "lastSentAt": _rfc3339(sub.sent_at),
            "pushes": sub.pushes,
            "types": types,
        }

    def syncz(self, published: Resources | None) -> list[dict[str, Any]]:
        return [self.status(sub, published) for sub in self]


class ConfigStream:
    """Serves Subscribe requests from a publisher (one call of `serve` per subscriber connection);
    `registry` holds the live ones."""

    def __init__(self, publisher: ConfigPublisher, reviewer: TokenReviewer, registry: SubscriberRegistry | None = None):
        self._publisher = publisher
        self._reviewer = reviewer
        self.registry = registry if registry is not None else SubscriberRegistry()

    @property
    def published(self) -> Resources | None:
        return self._publisher.current

    async def serve(self, stream: trio.abc.Stream, request: Mapping[str, Any]) -> None:
        try:
            caller = await self._reviewer.review(request.get("token"))
        except Unauthenticated as e:
            log.warning("refused a subscription from node %s: authentication failed: %s", request.get("node"), e.reason)
            await stream.send_all(encode({"ok": False, "error": e.client_message}))
            return
        node = request.get("node") or caller.node or "?"
        who = f"{caller.service_account} {node}"
        try:
            known = parse_known(request.get("known"))
            types, prefix = parse_view(request.get("types"), request.get("proxy"))
            version = parse_version(request.get("version"))
        except BadRequest as e:
            log.warning("refused a subscription from %s: %s", who, e)
            await stream.send_all(encode({"ok": False, "error": f"bad request: {e}"}))
            return
        log.info(
            "%s connected (pod %s/%s, version %s, %d known resources)",
            who,
            caller.namespace,
            caller.pod_name,
            version or "unknown",
            sum(len(v) for v in known.values()),
        )
        sub = self.registry.connect(
            namespace=caller.namespace,
            service_account=caller.service_account,
            pod_name=caller.pod_name,
            node=node,
            types=types,
            proxy=request.get("proxy"),
            prefix=prefix,
            version=version,
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_at_eof, stream, nursery.cancel_scope)
                await self._push(stream, known, who, types, prefix, sub)
        finally:
            self.registry.disconnect(sub)
            log.info("%s disconnected", who)

    async def _push(
        self,
        stream: trio.abc.SendStream,
        sent: Resources,
        who: str,
        types: tuple[str, ...] = TYPES,
        prefix: str | None = None,
        sub: Subscriber | None = None,
    ) -> None:
        """Full state (the difference from `sent`), SYNCED, then a delta per published change."""
        published = await self._publisher.next(None)
        first = True
        while True:
            current = view(published, types, prefix)
            messages = delta_messages(sent, current, types)
            lines = b"".join(encode(m) for m in messages) + (encode(SYNCED) if first else b"")
            if lines:
                with trio.fail_after(SEND_TIMEOUT):
                    await stream.send_all(lines)
            if sub is not None:
                self.registry.record_sent(sub, current, pushed=bool(lines))
            if messages or first:
                pushed, removed = count(messages)
                log.info(
                    "pushed %d resources%s to %s%s",
                    pushed,
                    f" ({removed} removed)" if removed else "",
                    who,
                    " (synced)" if first else "",
                )
            sent, first = current, False
            published = await self._publisher.next(published)


async def _cancel_at_eof(stream: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
    """A subscriber sends nothing after its request: end the session when it hangs up."""
    while await stream.receive_some(65536):
        pass
    scope.cancel()
