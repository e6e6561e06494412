"""The config stream from istiod (ztunnel `src/xds/client.rs`).

`XdsClient` keeps one Subscribe stream open (`mesh.istiod.client.subscribe`, or any function with
its shape) and applies every push to the shared state. When the stream breaks it reconnects after
10 ms, doubling to 15 s, and sends the versions it knows, so istiod answers with what changed and
what was removed meanwhile. The state is kept while istiod is away: proxies go on using the last
config they had (docs/ambient-facts.md §4.1, §6.1). The first `SYNCED` makes ztunnel ready.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, NoReturn, Protocol

import trio

from mesh.contract import SYNCED
from mesh.ztunnel.state import StateHandle

log = logging.getLogger("mesh.ztunnel.xds")

RECONNECT_INITIAL = 0.010
RECONNECT_MAX = 15.0

#: known versions → the pushed messages of one stream.
Subscribe = Callable[[dict[str, dict[str, str]]], AsyncIterator[dict[str, Any]]]


class StreamStatus(Protocol):
    connected: bool
    last_error: str | None


async def keep_streaming(status: StreamStatus, stream_once: Callable[[], Awaitable[bool]], *,
                         logger: logging.Logger = log) -> NoReturn:
    """Run one config stream after another, forever: every istiod client's loop (ztunnel's, the L7
    proxies' agent). A stream that delivered a complete push (`stream_once` returned True) resets
    the backoff; `status` says whether a stream is up and why the last one ended."""
    backoff = RECONNECT_INITIAL
    while True:
        try:
            if await stream_once():
                backoff = RECONNECT_INITIAL  # the stream was healthy: retry fast
            status.last_error = "istiod closed the stream"
        except Exception as exc:  # any failure of the stream means: reconnect
            status.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            status.connected = False
        logger.warning("config stream to istiod down (%s); reconnecting in %.3fs", status.last_error, backoff)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, RECONNECT_MAX)


class XdsClient:
    """Keeps `state` in sync with istiod; run with `nursery.start_soon(client.run)`."""

    def __init__(self, state: StateHandle, subscribe: Subscribe, *,
                 on_synced: Callable[[], None] = lambda: None) -> None:
        self.state = state
        self._subscribe = subscribe
        self._on_synced = on_synced
        self.connected = False
        self.synced = False  # at least one complete push was received
        self.last_error: str | None = None

    async def run(self) -> None:
        await keep_streaming(self, self._stream)

    async def _stream(self) -> bool:
        """One stream until it ends; True if it delivered a complete push."""
        synced = False
        async with aclosing(self._subscribe(self.state.state.known())) as messages:
            async for message in messages:
                self.connected = True
                if message.get("type") == SYNCED:
                    if not synced:
                        st = self.state.state
                        log.info("config synced from istiod: %d workloads, %d services, %d policies",
                                 len(st.workloads), len(st.services), len(st.policies))
                    synced = True
                    if not self.synced:
                        self.synced = True
                        self._on_synced()
                    continue
                for problem in self.state.apply(message):
                    log.warning("ignored a resource from istiod: %s", problem)
        return synced

    def dump(self) -> dict[str, Any]:
        return {"connected": self.connected, "synced": self.synced, "lastError": self.last_error}
