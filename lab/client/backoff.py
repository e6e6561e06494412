"""Reconnect and retry delays shared by the lab's and the mesh's long-running clients."""

from __future__ import annotations


class Backoff:
    """Delays that start at `initial` and double up to `maximum`; `reset` after a success."""

    def __init__(self, initial: float = 0.01, maximum: float = 2.0):
        self.initial, self.maximum = initial, maximum
        self._next = initial

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial
