"""Kubernetes WATCH over the lab's store, with the kube-apiserver's semantics.

kubectl (`wait`, `rollout status`, `delete`), the Python clients' watches and informers all resume
from resourceVersions, filter with selectors and, since kubectl 1.37, ask for WatchList streams; a
watch that differs in any of these makes them hang or re-list forever. Semantics from the
Kubernetes "API Concepts" page (efficient detection of changes, semantics for watch, watch
bookmarks, streaming lists) and KEP-3157 (WatchList); docs/kube-api-streams.md says more.

Events come from the store's bounded history (Store.events_since), not from a per-watcher queue:
each watcher keeps only a cursor, so a slow consumer costs no memory. One that falls more than
store.HISTORY changes behind has its stream ended (like the kube-apiserver's cacher ending an
unresponsive watcher); the client watches again from its last resourceVersion, or gets 410 Gone and
re-lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncGenerator, Mapping

import trio

from lab.apiserver import kinds
from lab.apiserver import selectors as label_selectors
from lab.apiserver.rest import fieldselector
from lab.apiserver.rest.status import failure
from lab.apiserver.store import Change, Store

BOOKMARK_INTERVAL = 60.0  # seconds between bookmarks (the cacher's bookmarkFrequency)
BOOKMARK_BEFORE_TIMEOUT = 2.0  # the last bookmark comes this long before timeoutSeconds ends the watch
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class WatchError(Exception):
    """A watch refused before (or, for Gone, while) it streams; `status()` is the Status body."""

    code = 400
    reason = "BadRequest"

    def status(self) -> dict:
        return failure(self.code, self.reason, str(self))


class BadRequest(WatchError):
    """A malformed parameter (selector, resourceVersion, boolean, timeout): 400."""


class Invalid(WatchError):
    """Parameters that do not go together (WatchList's rules): 422, as ListOptions validation."""

    code = 422
    reason = "Invalid"


class Gone(WatchError):
    """A resourceVersion older than the history kept: 410 Expired; the client re-lists."""

    code = 410
    reason = "Expired"


def error_event(exc: WatchError) -> dict:
    """The ERROR watch event the kube-apiserver sends when it learns of the error mid-stream."""
    return {"type": "ERROR", "object": exc.status()}


@dataclass(frozen=True)
class Options:
    """A watch request's parameters, parsed and checked."""

    resource_version: int | None  # None: unset or "0" (start from the current state)
    labels: label_selectors.Selector | None
    fields: fieldselector.Matcher | None
    bookmarks: bool
    timeout: float | None  # seconds; None: until the client goes
    initial_events: bool  # ADDED for the current objects first
    initial_events_end: bool  # WatchList: then the BOOKMARK marking their end


def _bool(params: Mapping[str, str], name: str) -> bool | None:
    """Go's strconv.ParseBool, as the kube-apiserver decodes query booleans."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if raw in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if raw in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise BadRequest(f'invalid value for {name}: "{raw}": strconv.ParseBool: parsing "{raw}": invalid syntax')


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f'ListOptions.meta.k8s.io "" is invalid: {field}: Forbidden: {message}')


def options(kind: str, params: Mapping[str, str]) -> Options:
    """PARAMS (the query) checked as the kube-apiserver does; raises BadRequest or Invalid."""
    raw_rv = params.get("resourceVersion") or ""
    rv: int | None = None
    if raw_rv not in ("", "0"):
        try:
            rv = int(raw_rv)
        except ValueError:
            rv = -1
        if rv < 0:
            raise BadRequest(f"invalid resource version: {raw_rv}")
    try:
        labels = label_selectors.parse(params.get("labelSelector") or "")
    except ValueError as e:
        raise BadRequest(str(e)) from None
    try:
        fields = fieldselector.parse(kind, params.get("fieldSelector"))
    except fieldselector.FieldSelectorError as e:
        raise BadRequest(str(e)) from None
    timeout: float | None = None
    if params.get("timeoutSeconds"):
        try:
            timeout = float(int(params["timeoutSeconds"]))
        except ValueError:
            raise BadRequest(f'invalid value for timeoutSeconds: "{params["timeoutSeconds"]}"') from None
        if timeout <= 0:
            timeout = None
    bookmarks = bool(_bool(params, "allowWatchBookmarks"))
    send_initial = _bool(params, "sendInitialEvents")
    match = params.get("resourceVersionMatch") or ""
    if send_initial is None and match:
        raise _invalid(
            "resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
        )
    if send_initial is not None:
        if match != "NotOlderThan":
            raise _invalid(
                "resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
            )
        if not bookmarks:
            raise _invalid(
                "allowWatchBookmarks", "allowWatchBookmarks must be set to true when sendInitialEvents is set"
            )
    return Options(
        resource_version=rv,
        labels=None if labels.empty() else labels,
        fields=fields,
        bookmarks=bookmarks,
        timeout=timeout,
        initial_events=bool(send_initial) or (send_initial is None and rv is None),
        initial_events_end=bool(send_initial),
    )


def check(store: Store, kind: str, namespace: str | None, params: Mapping[str, str]) -> Options:
    """What `stream` would refuse, found before any byte is sent: the REST core answers these with
    their Status and code. Gone can still come later (the history moves on): `stream` raises it
    before its first event, and the core sends it as `error_event` if the 200 went out already."""
    opts = options(kind, params)
    if not opts.initial_events and opts.resource_version is not None:
        _too_old(store, opts.resource_version)
    return opts


def _too_old(store: Store, rv: int) -> None:
    if rv < store.oldest_watchable:
        raise Gone(f"too old resource version: {rv} ({store.oldest_watchable})")


def _api_version(kind: str) -> str:
    k = kinds.get(kind)
    return k.api_versions[0] if k is not None else "v1"


def bookmark(kind: str, rv: int, initial_events_end: bool = False) -> dict:
    """A BOOKMARK event: only kind, apiVersion and metadata.resourceVersion, as upstream."""
    md: dict = {"resourceVersion": str(rv)}
    if initial_events_end:
        md["annotations"] = {INITIAL_EVENTS_END: "true"}
    return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": _api_version(kind), "metadata": md}}


class _Cursor:
    """A watcher's place in the store's history, moved by the store's synchronous callback.

    `rv` is the newest resourceVersion the watcher has dealt with. Changes to other kinds or
    namespaces move it on while nothing relevant is pending, so a quiet watcher never drifts out
    of the history; a relevant change sets `pending` and wakes the stream's task."""

    def __init__(self, store: Store, kind: str, namespace: str | None, rv: int):
        self.kind, self.namespace, self.rv = kind, namespace, rv
        self.pending = False
        self.wake = trio.Event()
        self.unsubscribe = store.subscribe(self._on_change)

    def relevant(self, obj: dict) -> bool:
        return obj.get("kind") == self.kind and (
            self.namespace is None or obj["metadata"].get("namespace") == self.namespace
        )

    def _on_change(self, type_: str, obj: dict) -> None:
        if self.relevant(obj):
            self.pending = True
            self.wake.set()
        elif not self.pending:
            self.rv = max(self.rv, int(obj["metadata"]["resourceVersion"]))


class _Filter:
    """Kind, namespace and selectors; turns a stored change into what this watcher sees."""

    def __init__(self, cursor: _Cursor, opts: Options):
        self.cursor, self.opts = cursor, opts

    def matches(self, obj: dict | None) -> bool:
        if obj is None or not self.cursor.relevant(obj):
            return False
        if self.opts.labels is not None and not self.opts.labels.matches(obj["metadata"].get("labels")):
            return False
        return self.opts.fields is None or self.opts.fields(obj)

    def event(self, change: Change) -> dict | None:
        """As the cacher's convertToWatchEvent: an object entering the selection is ADDED, one
        leaving it DELETED (its last matching state, with the change's resourceVersion)."""
        if change.type == "DELETED":
            return {"type": "DELETED", "object": change.obj} if self.matches(change.obj) else None
        now, before = self.matches(change.obj), self.matches(change.prev)
        if now:
            return {"type": "MODIFIED" if before else "ADDED", "object": change.obj}
        if before:
            assert change.prev is not None
            gone = dict(change.prev, metadata=dict(change.prev["metadata"], resourceVersion=str(change.rv)))
            return {"type": "DELETED", "object": gone}
        return None


async def stream(store: Store, kind: str, namespace: str | None, params: dict[str, str]) -> AsyncGenerator[dict, None]:
    """The watch events for KIND's objects in NAMESPACE (None: all) as PARAMS ask, until
    timeoutSeconds, the watcher falling out of the history, or the consumer closing the stream.

    Raises BadRequest/Invalid/Gone before the first event. The objects are the store's own:
    serialize them, never change them. Use as `async with aclosing(stream(...)) as events:` (an
    abandoned generator only unsubscribes when collected); nothing here runs as a task, so
    closing or cancelling the consumer leaves nothing behind."""
    opts = options(kind, params)
    deadline = trio.current_time() + opts.timeout if opts.timeout is not None else float("inf")
    # Subscribing and taking the snapshot happen in one synchronous step: no change falls between.
    start = store.resource_version if opts.initial_events or opts.resource_version is None else opts.resource_version
    if not opts.initial_events:
        _too_old(store, start)
    cursor = _Cursor(store, kind, namespace, start)
    filt = _Filter(cursor, opts)
    try:
        initial = [o for o in store.list(kind, namespace) if filt.matches(o)] if opts.initial_events else []
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        if opts.initial_events_end:
            yield bookmark(kind, start, initial_events_end=True)
        next_bookmark = _next_bookmark(trio.current_time(), deadline)
        while True:
            changes = store.events_since(cursor.rv)
            if changes is None:
                return  # fell too far behind: the client watches again or re-lists
            seen = max(cursor.rv, store.resource_version)  # a resourceVersion from the future stays
            cursor.rv, cursor.pending = seen, False
            if cursor.wake.is_set():
                cursor.wake = trio.Event()
            for change in changes:
                ev = filt.event(change)
                if ev is not None:
                    yield ev
                    if trio.current_time() >= deadline:
                        return
            now = trio.current_time()
            if now >= deadline:
                return
            if opts.bookmarks and now >= next_bookmark:
                yield bookmark(kind, seen)
                next_bookmark = _next_bookmark(trio.current_time(), deadline)
            if cursor.pending:
                continue
            # Never yield inside a cancel scope: the consumer's code would run in it.
            with trio.move_on_at(min(deadline, next_bookmark if opts.bookmarks else deadline)):
                await cursor.wake.wait()
    finally:
        cursor.unsubscribe()


def _next_bookmark(now: float, deadline: float) -> float:
    """Every BOOKMARK_INTERVAL, with the last one just before the deadline (the cacher's
    nextBookmarkTime); never, when the deadline is too close for one."""
    at = min(now + BOOKMARK_INTERVAL, deadline - BOOKMARK_BEFORE_TIMEOUT)
    return at if at > now else float("inf")
