"""The lab's object store (etcd + the apiserver's bookkeeping), in memory.

Sans-IO: no sockets, no tasks. Writers call create/update/delete; every change bumps the global
resourceVersion and is handed to the subscribers (the watch streams and the controllers' wake-up),
which are plain callables so the store knows nothing of trio.
"""

from __future__ import annotations

import builtins
import copy
import datetime as dt
import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple

from lab.apiserver import kinds

if TYPE_CHECKING:
    from lab.apiserver.selectors import Selector

log = logging.getLogger("labd.store")
Key = tuple[str, str, str]  # (kind, namespace or "", name)
Event = tuple[str, dict]  # ("ADDED"|"MODIFIED"|"DELETED", object)

# Changes kept so a watch can start from an older resourceVersion (the kube-apiserver's watch
# cache). Entries share the store's objects (no copies); older asks get 410 Gone and re-list.
HISTORY = 10000


class Change(NamedTuple):
    """One change as a watch from a resourceVersion replays it; PREV (the object before, None
    for ADDED) lets a selector-filtered watch tell an object leaving its selection."""

    rv: int
    type: str
    obj: dict
    prev: dict | None


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(obj: dict) -> Key:
    md = obj["metadata"]
    return (obj["kind"], md.get("namespace", "") or "", md["name"])


class Conflict(Exception):
    pass


class NotFound(Exception):
    pass


class Store:
    def __init__(self) -> None:
        self._objects: dict[Key, dict] = {}
        self._rv = 0
        self._subscribers: list[Callable[[str, dict], None]] = []
        self._history: deque[Change] = deque(maxlen=HISTORY)
        self._history_floor = 0  # the newest resourceVersion whose change is no longer kept

    @property
    def resource_version(self) -> int:
        return self._rv

    def subscribe(self, callback: Callable[[str, dict], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:  # idempotent
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    @property
    def oldest_watchable(self) -> int:
        """The oldest resourceVersion a watch may start from: the changes after it are all kept."""
        return self._history_floor

    def events_since(self, rv: int) -> builtins.list[Change] | None:
        """The changes after resourceVersion RV, oldest first; None if some are no longer kept."""
        if rv < self._history_floor:
            return None
        out: builtins.list[Change] = []
        for change in reversed(self._history):
            if change.rv <= rv:
                break
            out.append(change)
        out.reverse()
        return out

    def _emit(self, type_: str, obj: dict, prev: dict | None = None) -> None:
        if len(self._history) == self._history.maxlen:
            self._history_floor = self._history[0].rv
        self._history.append(Change(self._rv, type_, obj, prev))
        # A write has happened by now: one failing subscriber must not fail it, nor starve the others.
        for cb in list(self._subscribers):
            try:
                cb(type_, obj)
            except Exception:
                log.exception("store subscriber failed on %s %s", type_, obj.get("kind"))

    def _bump(self, obj: dict) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    # Reads. Returned objects are the store's own: callers copy before changing them.
    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        return self._objects.get((kind, namespace or "", name))

    def list(self, kind: str, namespace: str | None = None, selector: Selector | None = None) -> builtins.list[dict]:
        out = [
            o
            for (k, ns, _), o in self._objects.items()
            if k == kind
            and (namespace is None or ns == namespace)
            and (selector is None or selector.matches(o["metadata"].get("labels")))
        ]
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    def all(self, kinds_: Iterable[str] | None = None) -> builtins.list[dict]:
        want = set(kinds_) if kinds_ is not None else None
        return [o for (k, _, _), o in self._objects.items() if want is None or k in want]

    # Writes.
    def create(self, obj: dict) -> dict | None:
        """Store a copy of OBJ and return it. A plain Store always does; a subclass that admits
        objects (lab.apiserver.admission.AdmittingStore) returns None for one it refused."""
        return self._insert(obj)

    def _insert(self, obj: dict) -> dict:
        """The write itself: a copy of OBJ, stored and announced (never refused)."""
        obj = copy.deepcopy(obj)
        key = key_of(obj)
        if key in self._objects:
            raise Conflict(f'{key[0]} "{key[2]}" already exists')
        md = obj["metadata"]
        md.setdefault("uid", str(uuid.uuid4()))
        if not md.get("creationTimestamp"):  # kubectl's JSON carries `"creationTimestamp": null`
            md["creationTimestamp"] = now_rfc3339()
        md["generation"] = 1
        kind = kinds.by_kind(obj["kind"])
        if kind.namespaced:
            md.setdefault("namespace", "default")
        if kind.has_status:
            obj.setdefault("status", {})
        self._bump(obj)
        self._objects[key] = obj
        self._emit("ADDED", obj)
        return obj

    def update(self, obj: dict, *, spec_changed: bool | None = None) -> dict:
        """Replace an object. `generation` grows when the spec (or template) changed."""
        key = key_of(obj)
        old = self._objects.get(key)
        if old is None:
            raise NotFound(f'{key[0]} "{key[2]}" not found')
        obj = copy.deepcopy(obj)
        md = obj["metadata"]
        md["uid"] = old["metadata"]["uid"]
        md["creationTimestamp"] = old["metadata"]["creationTimestamp"]
        if spec_changed is None:
            spec_changed = obj.get("spec") != old.get("spec")
        md["generation"] = old["metadata"].get("generation", 1) + (1 if spec_changed else 0)
        self._bump(obj)
        self._objects[key] = obj
        self._emit("MODIFIED", obj, old)
        return obj

    def patch_status(self, kind: str, namespace: str | None, name: str, status: dict) -> dict | None:
        """Set `status` if it changed; returns the object (or None if it is gone)."""
        obj = self.get(kind, namespace, name)
        if obj is None:
            return None
        if obj.get("status") == status:
            return obj
        old, obj = obj, dict(obj)
        obj["status"] = copy.deepcopy(status)
        obj["metadata"] = dict(obj["metadata"])
        self._bump(obj)
        self._objects[key_of(obj)] = obj
        self._emit("MODIFIED", obj, old)
        return obj

    def delete(self, kind: str, namespace: str | None, name: str) -> dict:
        key = (kind, namespace or "", name)
        obj = self._objects.pop(key, None)
        if obj is None:
            raise NotFound(f'{kind} "{name}" not found')
        self._rv += 1
        prev, obj = obj, dict(obj)
        obj["metadata"] = dict(obj["metadata"], resourceVersion=str(self._rv))
        self._emit("DELETED", obj, prev)
        return obj
