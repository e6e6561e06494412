"""istiod's debug port, 15014 (plain HTTP, as Istio's `http-monitoring` port): its sync status.

`GET /debug/syncz` → JSON:

    {"istiod": {"pod": "<ns>/<name>", "version": "<tag>"},
     "subscribers": [{"id", "pod": "<ns>/<name>", "node", "identity", "serviceAccount",
                      "proxy": "<ns>/<name>" | null, "version": "<tag>" | null,
                      "connectedAt", "lastSentAt", "pushes",
                      "types": {"<type>": {"state": "SYNCED" | "STALE" | "NOT SENT",
                                           "sent": "<hash>", "current": "<hash>", "resources": n}}}]}

One entry per live Subscribe connection (`mesh.istiod.xds.SubscriberRegistry`). `proxy` is what
a waypoint or sidecar names itself on the stream; a ztunnel sends none. A type is SYNCED when the
hash of what was last sent equals the hash of what istiod would send now, STALE when istiod has
newer config the subscriber has not taken yet, NOT SENT before the first push. `lab istioctl
proxy-status` reads this.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import trio

from mesh.contract import ISTIOD_DEBUG_PORT
from mesh.istiod.translate import Resources
from mesh.istiod.xds import SubscriberRegistry
from mesh.ztunnel.admin import json_response, serve_http

log = logging.getLogger("istiod.debug")

DEBUG_PORT = ISTIOD_DEBUG_PORT
SYNCZ = "/debug/syncz"


def syncz(registry: SubscriberRegistry, published: Resources | None, istiod: Mapping[str, Any]) -> dict[str, Any]:
    """The /debug/syncz document (pure)."""
    return {"istiod": dict(istiod), "subscribers": registry.syncz(published)}


async def serve_debug(
    host: str,
    port: int,
    registry: SubscriberRegistry,
    published: Callable[[], Resources | None],
    istiod: Mapping[str, Any],
    *,
    task_status: trio.TaskStatus[int | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve /debug/syncz until cancelled; `started` gives the bound port. A port that cannot be
    bound is logged and leaves istiod running without it (reports None)."""
    routes = {SYNCZ: lambda: json_response(syncz(registry, published(), istiod))}
    try:
        await serve_http((host, port), routes, task_status=task_status)
    except OSError as e:
        log.warning("no debug endpoint: cannot serve on %s:%d: %s", host, port, e)
        task_status.started(None)
