"""What a load run measured, as numbers: pure functions and the report, no I/O.

A run is a list of `Outcome`s, one per scheduled request: when it was scheduled (seconds after
the run's start), its latency in ms when an HTTP response came back, and its result, an HTTP
status (int) or an error kind (str). `summarize` turns them into a `LoadReport`; the report
travels as JSON (`to_json` / `from_json`) from the in-pod generator to the host and prints as a
short table (`table`).

Error kinds (`classify_error` maps an exception to one):
- `http <code>`: an answer that is not 2xx/3xx;
- `reset`: ECONNRESET / EPIPE (curl's 56, "Recv failure: Connection reset by peer");
- `closed`: the connection ended (EOF) before a whole response came (curl's 52, "Empty reply");
- `refused`: ECONNREFUSED (curl's 7);
- `timeout`: no (whole) answer within the run's timeout (curl's 28);
- `dns`: the host did not resolve (curl's 6);
- `unreachable`: EHOSTUNREACH / ENETUNREACH;
- `bad response`: bytes that are not an HTTP/1.x response;
- `unsent`: scheduled, but the generator was still behind when the run ended (it cannot drive
  that rate);
- `error <ERRNO>`: any other socket error.
"""

from __future__ import annotations

import errno
import json
import math
import socket
from dataclasses import asdict, dataclass, field
from typing import Iterable, NamedTuple

RESET = "reset"
CLOSED = "closed"
REFUSED = "refused"
TIMEOUT = "timeout"
DNS = "dns"
UNREACHABLE = "unreachable"
BAD_RESPONSE = "bad response"
UNSENT = "unsent"


class Outcome(NamedTuple):
    """One scheduled request: `at` s after the start, `latency_ms` (None without a response),
    `result` an HTTP status or an error kind."""

    at: float
    latency_ms: float | None
    result: int | str


class ProtocolError(Exception):
    """The peer's bytes are not an HTTP/1.x response."""


class ConnectionClosed(Exception):
    """The connection ended before a whole response arrived."""


def is_success(result: int | str) -> bool:
    return isinstance(result, int) and 200 <= result < 400


def error_kind(result: int | str) -> str | None:
    """None for a success, else the error kind the report counts it under."""
    if isinstance(result, int):
        return None if is_success(result) else f"http {result}"
    return result


def classify_error(exc: BaseException) -> str:
    """The error kind of an exception raised while connecting, sending or receiving."""
    if isinstance(exc, socket.gaierror):
        return DNS
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TIMEOUT
    if isinstance(exc, ConnectionClosed):
        return CLOSED
    if isinstance(exc, ProtocolError):
        return BAD_RESPONSE
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return RESET
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return RESET
        if exc.errno == errno.ECONNREFUSED:
            return REFUSED
        if exc.errno == errno.ETIMEDOUT:
            return TIMEOUT
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return UNREACHABLE
        return f"error {errno.errorcode.get(exc.errno, exc.errno)}"
    return f"error {type(exc).__name__}"


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (0-100) of already sorted values, nearest-rank; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    if p <= 0:
        return sorted_values[0]
    rank = math.ceil(p / 100.0 * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


@dataclass
class Latency:
    """Latency of the requests that got an HTTP answer (any status), in ms."""

    count: int = 0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0
    avg: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> "Latency":
        v = sorted(values)
        if not v:
            return cls()
        return cls(
            len(v), _r(percentile(v, 50)), _r(percentile(v, 90)), _r(percentile(v, 99)), _r(v[-1]), _r(sum(v) / len(v))
        )


@dataclass
class Second:
    """One second of the run (by scheduled time): requests, successes, errors, p50 in ms."""

    second: int
    requests: int = 0
    ok: int = 0
    errors: int = 0
    p50_ms: float = 0.0


@dataclass
class LoadReport:
    url: str
    method: str = "GET"
    qps: float = 0.0  # the rate asked for; 0 means as fast as the connections go
    duration: float = 0.0
    connections: int = 0
    timeout: float = 0.0
    address: str = ""  # where the URL's host resolved to (in the client pod)
    requests: int = 0
    successes: int = 0
    success_rate: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)  # every HTTP status received, as text
    latency_ms: Latency = field(default_factory=Latency)
    actual_qps: float = 0.0  # requests sent per second of the run
    elapsed: float = 0.0  # seconds from the first scheduled request to the last answer
    timeline: list[Second] = field(default_factory=list)
    error_samples: dict[str, str] = field(default_factory=dict)  # kind: one message seen

    @property
    def failures(self) -> int:
        return self.requests - self.successes

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> "LoadReport":
        d = dict(d)
        d["latency_ms"] = Latency(**d.get("latency_ms", {}))
        d["timeline"] = [Second(**s) for s in d.get("timeline", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> "LoadReport":
        return cls.from_dict(json.loads(text))

    def table(self) -> str:
        """The text output of `lab load`: a summary and the per-second timeline."""
        rate = "max rate" if not self.qps else f"{self.qps:g} qps"
        lines = [
            f"{self.method} {self.url} ({self.address or '?'}): {rate} for {self.duration:g}s over "
            f"{self.connections} connection{'s' if self.connections != 1 else ''}, timeout {self.timeout:g}s",
            f"requests   {self.requests} in {self.elapsed:.2f}s ({self.actual_qps:.1f}/s)",
            f"success    {self.successes}/{self.requests} ({self.success_rate * 100:.1f}%)",
        ]
        lat = self.latency_ms
        lines.append(
            f"latency    p50 {lat.p50:.2f} ms   p90 {lat.p90:.2f} ms   p99 {lat.p99:.2f} ms   "
            f"max {lat.max:.2f} ms   ({lat.count} answered)"
        )
        if self.errors:
            lines.append(
                "errors     "
                + ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0])))
            )
        rows = [["SECOND", "REQUESTS", "OK", "ERRORS", "P50(ms)"]]
        rows += [[str(s.second), str(s.requests), str(s.ok), str(s.errors), f"{s.p50_ms:.2f}"] for s in self.timeline]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines += ["   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)


def _r(x: float) -> float:
    return round(x, 3)


def timeline(outcomes: Iterable[Outcome], seconds: int) -> list[Second]:
    """Per-second buckets by scheduled time; SECONDS buckets at least (later ones are added)."""
    buckets: dict[int, tuple[Second, list[float]]] = {i: (Second(i), []) for i in range(max(seconds, 0))}
    for o in outcomes:
        i = max(int(o.at), 0)
        if i not in buckets:
            buckets[i] = (Second(i), [])
        s, lats = buckets[i]
        s.requests += 1
        if is_success(o.result):
            s.ok += 1
        else:
            s.errors += 1
        if o.latency_ms is not None:
            lats.append(o.latency_ms)
    out = []
    for i in sorted(buckets):
        s, lats = buckets[i]
        lats.sort()
        s.p50_ms = _r(percentile(lats, 50))
        out.append(s)
    return out


def summarize(
    outcomes: list[Outcome],
    *,
    url: str,
    method: str = "GET",
    qps: float = 0.0,
    duration: float = 0.0,
    connections: int = 0,
    timeout: float = 0.0,
    address: str = "",
    elapsed: float = 0.0,
    error_samples: dict[str, str] | None = None,
) -> LoadReport:
    """The report of a run from its outcomes."""
    errors: dict[str, int] = {}
    codes: dict[str, int] = {}
    successes = sent = 0
    for o in outcomes:
        if isinstance(o.result, int):
            codes[str(o.result)] = codes.get(str(o.result), 0) + 1
        kind = error_kind(o.result)
        if kind is None:
            successes += 1
        else:
            errors[kind] = errors.get(kind, 0) + 1
        if o.result != UNSENT:
            sent += 1
    n = len(outcomes)
    return LoadReport(
        url=url,
        method=method,
        qps=qps,
        duration=duration,
        connections=connections,
        timeout=timeout,
        address=address,
        requests=n,
        successes=successes,
        success_rate=round(successes / n, 4) if n else 0.0,
        errors=errors,
        codes=codes,
        latency_ms=Latency.of(o.latency_ms for o in outcomes if o.latency_ms is not None),
        actual_qps=round(sent / duration, 1) if duration else 0.0,
        elapsed=round(elapsed, 3),
        timeline=timeline(outcomes, math.ceil(duration - 1e-9)),
        error_samples=dict(error_samples or {}),
    )
