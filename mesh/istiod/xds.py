"""istiod's config stream: the Subscribe op (our stand-in for delta ADS, facts §4.1).

A subscriber says which versions it already holds (`known`); istiod sends what differs, then
`{"type": "SYNCED"}`, then a delta each time the translation changes. Every subscriber compares the
latest published resources with what it last sent, so there is no queue per subscriber: a slow one
skips intermediate states and catches up with the newest, and never holds back the others.

Request: {"op": "Subscribe", "token", "node", "known": {"Address": {name: version}, "Authorization": {...}},
          "types"?: [...], "proxy"?: "<ns>/<name>"}
Stream:  {"type": "Authorization"|"Address", "resources": [{"name", "version", "resource"}], "removed": [...]}
         ..., {"type": "SYNCED"}, then deltas.

A ztunnel asks for the default types (Authorization, Address). A waypoint asks for Envoy's types
(Listener, Cluster, RouteConfiguration) and names itself in `proxy`: it is sent only the resources
whose names start with `<ns>/<name>/` (`mesh.istiod.proxyconfig`).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import trio

from lab.api.protocol import encode
from mesh.istiod.auth import TokenReviewer, Unauthenticated
from mesh.istiod.proxyconfig import PROXY_TYPES, proxy_id
from mesh.istiod.translate import TYPES, Resources, Versioned, diff

log = logging.getLogger("istiod.xds")

OP = "Subscribe"
SYNCED = {"type": "SYNCED"}
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
                isinstance(name, str) and isinstance(version, str) for name, version in versions.items()):
            raise BadRequest(f"known[{type_!r}] must map resource names to version strings")
        result[type_] = {name: Versioned(version, None) for name, version in versions.items()}
    return result


ALL_TYPES = TYPES + PROXY_TYPES


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
            messages.append({"type": type_, "removed": removed, "resources": [
                {"name": name, "version": res.version, "resource": res.resource} for name, res in changed.items()]})
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


class ConfigStream:
    """Serves Subscribe requests from a publisher (one call of `serve` per subscriber connection)."""

    def __init__(self, publisher: ConfigPublisher, reviewer: TokenReviewer):
        self._publisher = publisher
        self._reviewer = reviewer

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
        except BadRequest as e:
            log.warning("refused a subscription from %s: %s", who, e)
            await stream.send_all(encode({"ok": False, "error": f"bad request: {e}"}))
            return
        log.info("%s connected (pod %s/%s, %d known resources)", who, caller.namespace, caller.pod_name,
                 sum(len(v) for v in known.values()))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_at_eof, stream, nursery.cancel_scope)
                await self._push(stream, known, who, types, prefix)
        finally:
            log.info("%s disconnected", who)

    async def _push(self, stream: trio.abc.SendStream, sent: Resources, who: str,
                    types: tuple[str, ...] = TYPES, prefix: str | None = None) -> None:
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
            if messages or first:
                pushed, removed = count(messages)
                log.info("pushed %d resources%s to %s%s", pushed, f" ({removed} removed)" if removed else "",
                         who, " (synced)" if first else "")
            sent, first = current, False
            published = await self._publisher.next(published)


async def _cancel_at_eof(stream: trio.abc.ReceiveStream, scope: trio.CancelScope) -> None:
    """A subscriber sends nothing after its request: end the session when it hangs up."""
    while await stream.receive_some(65536):
        pass
    scope.cancel()
