"""A process the lab runs, start to end: the parts every program in a pod shares.

SIGTERM (the kubelet stopping its container) or SIGINT ends its work by cancellation, so every
task's cleanup runs, instead of Python's default handling, which would kill it (SIGTERM) or raise
KeyboardInterrupt somewhere (SIGINT); a socket it cannot bind ends it with status 1, saying why.
`serve_main` is the whole `main` of a server that needs nothing more.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

import trio

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@asynccontextmanager
async def open_nursery_until_signalled(
    on_signal: Callable[[signal.Signals], object] | None = None,
    *,
    drain: float = 0.0,
    cancel: trio.CancelScope | None = None,
    signals: Iterable[int] = STOP_SIGNALS,
) -> AsyncIterator[trio.Nursery]:
    """A nursery whose work is cancelled at the first of SIGNALS.

    At that signal ON_SIGNAL(signal) runs (a log line, start draining), then, after DRAIN seconds
    or at the next signal, whichever comes first, CANCEL (default: the nursery's own scope) is
    cancelled. The signals are taken from before the body runs until every task has finished, so
    none reaches the default handler in the middle of a task's cleanup (trio re-raises one still
    pending when the nursery is done; with CANCEL given, later ones are dropped)."""
    with trio.open_signal_receiver(*signals) as received:
        async with trio.open_nursery() as nursery:
            scope = cancel if cancel is not None else nursery.cancel_scope
            nursery.start_soon(_cancel_at_signal, received, scope, on_signal, drain)
            yield nursery


async def _cancel_at_signal(
    received: AsyncIterator[int],
    scope: trio.CancelScope,
    on_signal: Callable[[signal.Signals], object] | None,
    drain: float,
) -> None:
    async for signum in received:
        if scope.cancel_called:
            continue  # already stopping: later signals are taken and dropped
        if on_signal is not None:
            on_signal(signal.Signals(signum))
        if drain > 0:
            with trio.move_on_after(drain):
                await received.__anext__()
        scope.cancel()


def run_main(
    async_fn: Callable[..., Awaitable[object]], *args: object, on_os_error: Callable[[OSError], object]
) -> int:
    """`trio.run(ASYNC_FN, *ARGS)` as a process's whole life, and its exit status: 0, or 1 when
    OSErrors ended it (a port or socket it could not bind), each first given to ON_OS_ERROR."""
    status = 0
    try:
        trio.run(async_fn, *args)
    except* OSError as group:
        for error in group.exceptions:
            on_os_error(error)  # type: ignore[arg-type]
        status = 1
    return status


def serve_main(serve: Callable[[], Awaitable[object]], log: logging.Logger, address: str) -> int:
    """A server process's whole life and exit status (run_main): SERVE runs until SIGTERM or SIGINT
    (logged on LOG as `SIGTERM: exiting`); a socket it cannot bind is logged as `cannot serve on
    ADDRESS: ...` and ends it with 1."""

    async def until_signalled() -> None:
        async with open_nursery_until_signalled(lambda sig: log.info("%s: exiting", sig.name)) as nursery:
            nursery.start_soon(serve)

    return run_main(until_signalled, on_os_error=lambda e: log.error("cannot serve on %s: %s", address, e))
