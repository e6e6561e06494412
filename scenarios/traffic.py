"""Traffic for scenarios: the one adapter over `lab.load`.

`start_load` starts `lab.load` in a pod and returns a `Load` whose `wait()` gives a plain dict:
`requests`, `succeeded`, `success_rate`, `errors` {kind: count}, `latency_ms` {p50, p90, p99, max},
`timeline` [{t, requests, ok, errors, p50_ms}] (t: whole seconds since the generator's first
scheduled request) and `started`, the epoch time of that first request, which puts the timeline
on the scenario's own time axis. The report does not carry that time, so it is taken as the
moment the generator process ended minus the report's `elapsed` (first scheduled request to last
answer), both seen from here.
"""

from __future__ import annotations

import threading
import time
from typing import Any

STARTUP_GUESS = 0.2  # seconds from start() to the first request, when the end time is unknown


def normalize(report: Any, started: float) -> dict:
    """A LoadReport (object, dict or JSON text) as the dict scenarios read (see the module doc)."""
    import json

    if hasattr(report, "to_dict"):
        report = report.to_dict()
    elif hasattr(report, "to_json"):
        report = report.to_json()
    if isinstance(report, str):
        report = json.loads(report)
    out = dict(report)
    out.setdefault("succeeded", out.get("successes", 0))
    lat = out.get("latency_ms") or {}
    out["latency_ms"] = {k: float(lat.get(k, 0.0)) for k in ("p50", "p90", "p99", "max")}
    out["timeline"] = [
        {
            "t": int(b.get("t", b.get("second", 0))),
            "requests": int(b.get("requests", 0)),
            "ok": int(b.get("ok", 0)),
            "errors": int(b.get("errors", 0)),
            "p50_ms": float(b.get("p50_ms", 0.0)),
        }
        for b in out.get("timeline", [])
    ]
    out["started"] = started
    return out


def first_request_time(called: float, ended: float | None, elapsed: float | None) -> float:
    """Epoch time of a run's first scheduled request (see the module doc)."""
    if ended is not None and elapsed:
        return max(called, ended - float(elapsed))
    return called + STARTUP_GUESS


class Load:
    """One running load; `wait()` returns its report dict, `stop()` ends it early (no report)."""

    def __init__(self, run, called: float):
        self._run = run
        self._called = called
        self._ended: float | None = None
        self._report: dict | None = None
        proc = getattr(run, "process", None)
        if proc is not None:
            threading.Thread(target=self._watch, args=(proc,), daemon=True).start()

    def _watch(self, proc) -> None:
        deadline = time.monotonic() + float(getattr(self._run, "duration", 60)) + 90
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self._ended = time.time()

    def wait(self) -> dict:
        if self._report is None:
            raw = self._run.wait()
            for _ in range(100):  # the watcher sees the exit within its 10 ms poll
                if self._ended is not None or getattr(self._run, "process", None) is None:
                    break
                time.sleep(0.01)
            elapsed = getattr(raw, "elapsed", None)
            self._report = normalize(raw, first_request_time(self._called, self._ended, elapsed))
        return self._report

    def stop(self) -> None:
        cancel = getattr(self._run, "cancel", None) or getattr(self._run, "stop", None)
        if cancel is not None:
            cancel()


def start_load(
    client,
    namespace: str,
    pod: str,
    url: str,
    *,
    qps: float,
    duration: float,
    connections: int = 1,
    timeout: float = 2.0,
) -> Load:
    """Starts `lab.load` in POD against URL (keep-alive connections, open-loop at QPS)."""
    from lab import load as lab_load

    called = time.time()
    run = lab_load.start(
        client, namespace, pod, url, qps=qps, duration=duration, connections=connections, timeout=timeout
    )
    return Load(run, called)
