"""Load: an HTTP traffic generator that runs inside a client pod.

- `stats.py`: pure. Outcomes of scheduled requests → `LoadReport` (requests, successes, success
  rate, error kinds, HTTP codes, latency p50/p90/p99/max of answered requests, per-second
  timeline), its JSON and its text table; `classify_error` names error kinds.
- `generator.py`: the in-pod process (`python -m lab.load.generator`): open-loop HTTP/1.1 at a
  fixed rate over keep-alive connections (threads and blocking sockets), refusing any address
  outside the networks it is allowed; prints the report as one JSON line.
- `runner.py`: host side: starts the generator through the exec API's prefix (the pod's netns and
  the container's user), with the lab's pod and service CIDRs as the allowed networks.

Python API (tests, scenarios, `lab load`):

    report = lab.load.run(client, namespace, pod, url, qps=50, duration=2)
    with lab.load.start(client, namespace, pod, url, qps=50, duration=10) as run:
        ...  # break something while the load runs
        report = run.wait()

The runner's names are imported on first use, so that `python -m lab.load.generator` does not
import the generator module twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.load.stats import Latency, LoadReport, Outcome, Second, classify_error, percentile, summarize

if TYPE_CHECKING:
    from lab.load.runner import LoadError, LoadRun, lab_networks, run, start

_RUNNER = ("LoadError", "LoadRun", "lab_networks", "run", "start")
__all__ = [
    "Latency",
    "LoadError",
    "LoadReport",
    "LoadRun",
    "Outcome",
    "Second",
    "classify_error",
    "lab_networks",
    "percentile",
    "run",
    "start",
    "summarize",
]


def __getattr__(name: str):
    if name in _RUNNER:
        from lab.load import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'lab.load' has no attribute {name!r}")
