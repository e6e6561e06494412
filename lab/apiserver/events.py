"""Events: what controllers and the kubelet report about an object (`lab get events`, `describe`).

Kept to the newest MAX_EVENTS, as the API server's event TTL keeps a cluster's events bounded.
"""

from __future__ import annotations

from lab.apiserver.store import Store, now_rfc3339

MAX_EVENTS = 1000


class EventRecorder:
    """`record(obj, reason, message)`: one Event about OBJ (the kubelet's and controllers' recorder)."""

    def __init__(self, store: Store, component: str = "labd"):
        self._store = store
        self._component = component
        self._seq = 0

    def __call__(self, obj: dict, reason: str, message: str, type_: str = "Normal") -> None:
        md = obj["metadata"]
        self._seq += 1
        t = now_rfc3339()
        self._store.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f'{md["name"]}.{self._seq:016x}', "namespace": md.get("namespace") or "default"},
                "involvedObject": {
                    "kind": obj["kind"],
                    "namespace": md.get("namespace"),
                    "name": md["name"],
                    "uid": md.get("uid"),
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "count": 1,
                "firstTimestamp": t,
                "lastTimestamp": t,
                "source": {"component": self._component},
            }
        )
        events = self._store.list("Event")
        if len(events) > MAX_EVENTS:
            events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
            for e in events[: len(events) - MAX_EVENTS]:
                self._store.delete("Event", e["metadata"]["namespace"], e["metadata"]["name"])
