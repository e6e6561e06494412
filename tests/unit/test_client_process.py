"""lab.client.process: how the lab's and the mesh's processes stop on SIGTERM/SIGINT, and their
exit status when a socket cannot be bound."""

from __future__ import annotations

import logging
import os
import signal

import pytest
import trio

from lab.client.process import open_nursery_until_signalled, run_main, serve_main


def _signal_self(sig: signal.Signals = signal.SIGTERM) -> None:
    os.kill(os.getpid(), sig)


async def test_the_first_signal_cancels_the_work_after_on_signal():
    seen: list[signal.Signals] = []
    cleaned = trio.Event()

    async def work() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.01)  # cleanup that takes time still runs to its end
            cleaned.set()

    with trio.fail_after(5):
        async with open_nursery_until_signalled(seen.append) as nursery:
            nursery.start_soon(work)
            await trio.sleep(0.01)
            _signal_self()
    assert seen == [signal.SIGTERM] and cleaned.is_set()


async def test_drain_waits_unless_a_second_signal_comes():
    async def stop_after(drain: float, second: bool) -> float:
        began = trio.current_time()
        async with open_nursery_until_signalled(drain=drain) as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep(0.01)
            _signal_self(signal.SIGINT)
            if second:
                await trio.sleep(0.05)
                _signal_self()
        return trio.current_time() - began

    with trio.fail_after(5):
        assert await stop_after(0.3, second=False) >= 0.3
        assert await stop_after(30.0, second=True) < 5


async def test_a_signal_can_cancel_another_scope_and_later_ones_are_dropped():
    serving = trio.CancelScope()
    seen: list[signal.Signals] = []
    with trio.fail_after(5):
        async with open_nursery_until_signalled(seen.append, cancel=serving) as nursery:
            nursery.start_soon(trio.sleep_forever)
            with serving:
                _signal_self()
                await trio.sleep_forever()
            _signal_self()  # while "tearing down": taken and dropped
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert serving.cancelled_caught and seen == [signal.SIGTERM]


def test_run_main_exit_status_and_bind_errors():
    async def fine() -> None:
        pass

    async def cannot_bind(port: int) -> None:
        raise OSError(98, f"Address already in use: {port}")

    async def broken() -> None:
        raise ValueError("a bug")

    errors: list[OSError] = []
    assert run_main(fine, on_os_error=errors.append) == 0
    assert run_main(cannot_bind, 53, on_os_error=errors.append) == 1
    assert [str(e) for e in errors] == ["[Errno 98] Address already in use: 53"]
    with pytest.raises(ValueError):  # anything else is not a bind error: it propagates
        run_main(broken, on_os_error=errors.append)


def test_serve_main_serves_until_a_signal_and_says_why_it_could_not(caplog):
    async def served() -> None:
        _signal_self()
        await trio.sleep_forever()

    async def cannot_bind() -> None:
        raise OSError(98, "Address already in use")

    log = logging.getLogger("test.serve_main")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert serve_main(served, log, "0.0.0.0:53") == 0
        assert serve_main(cannot_bind, log, "0.0.0.0:53") == 1
    assert caplog.messages == ["SIGTERM: exiting", "cannot serve on 0.0.0.0:53: [Errno 98] Address already in use"]
