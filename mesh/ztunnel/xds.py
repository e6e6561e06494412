"""The config stream from istiod (ztunnel `src/xds/client.rs`).

`XdsClient` keeps one Subscribe stream open (`mesh.istiod.client.subscribe`, or any function with
its shape) and applies every push to the shared state. When the stream breaks it reconnects after
10 ms, doubling to 15 s (`mesh.istiod.client.keep_streaming`, the L7 proxies' loop too), and
sends the versions it knows, so istiod answers with what changed and what was removed meanwhile.
The state is kept while istiod is away: proxies go on using the last config they had
(docs/ambient-facts.md §4.1, §6.1). The first `SYNCED` makes ztunnel ready.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

from mesh.contract import SYNCED
from mesh.istiod.client import RECONNECT_MAX as RECONNECT_MAX  # re-exported: tests read the backoff here
from mesh.istiod.client import keep_streaming
from mesh.ztunnel.state import StateHandle

log = logging.getLogger("mesh.ztunnel.xds")

#: known versions → the pushed messages of one stream.
Subscribe = Callable[[dict[str, dict[str, str]]], AsyncGenerator[dict[str, Any], None]]


class XdsClient:
    """Keeps `state` in sync with istiod; run with `nursery.start_soon(client.run)`."""

    def __init__(
        self, state: StateHandle, subscribe: Subscribe, *, on_synced: Callable[[], None] = lambda: None
    ) -> None:
        self.state = state
        self._subscribe = subscribe
        self._on_synced = on_synced
        self.connected = False
        self.synced = False  # at least one complete push was received
        self.last_error: str | None = None

    async def run(self) -> None:
        await keep_streaming(self, self._stream, logger=log)

    async def _stream(self) -> bool:
        """One stream until it ends; True if it delivered a complete push."""
        synced = False
        async with aclosing(self._subscribe(self.state.state.known())) as messages:
            async for message in messages:
                self.connected = True
                if message.get("type") == SYNCED:
                    if not synced:
                        st = self.state.state
                        log.info(
                            "config synced from istiod: %d workloads, %d services, %d policies",
                            len(st.workloads),
                            len(st.services),
                            len(st.policies),
                        )
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
