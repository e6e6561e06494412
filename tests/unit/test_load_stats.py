"""lab.load.stats: percentiles, error kinds, the per-second timeline, the report and its forms."""

import errno
import json
import socket

import pytest

from lab.load.stats import (
    ConnectionClosed,
    LoadReport,
    Outcome,
    ProtocolError,
    classify_error,
    error_kind,
    is_success,
    percentile,
    summarize,
    timeline,
)


def test_percentile_nearest_rank():
    values = sorted(float(i) for i in range(1, 101))
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([], 50) == 0.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0


@pytest.mark.parametrize(
    "exc, kind",
    [
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "reset"),
        (BrokenPipeError(errno.EPIPE, "Broken pipe"), "reset"),
        (OSError(errno.ECONNRESET, "reset"), "reset"),
        (OSError(errno.EPIPE, "pipe"), "reset"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "refused"),
        (OSError(errno.ECONNREFUSED, "refused"), "refused"),
        (socket.timeout("timed out"), "timeout"),
        (TimeoutError(), "timeout"),
        (OSError(errno.ETIMEDOUT, "timed out"), "timeout"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "dns"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable"),
        (ConnectionClosed("eof"), "closed"),
        (ProtocolError("junk"), "bad response"),
        (OSError(errno.EADDRNOTAVAIL, "x"), "error EADDRNOTAVAIL"),
        (ValueError("x"), "error ValueError"),
    ],
)
def test_classify_error(exc, kind):
    assert classify_error(exc) == kind


def test_success_and_error_kinds():
    assert is_success(200) and is_success(204) and is_success(302)
    assert not is_success(404) and not is_success(503) and not is_success("reset")
    assert error_kind(200) is None and error_kind(301) is None
    assert error_kind(503) == "http 503" and error_kind(404) == "http 404"
    assert error_kind("timeout") == "timeout"


def outcomes():
    out = []
    for i in range(100):  # 50 qps for 2 s: a 503 every tenth, one reset, one unsent at the end
        at = i / 50
        if i == 42:
            out.append(Outcome(at, None, "reset"))
        elif i == 99:
            out.append(Outcome(at, None, "unsent"))
        elif i % 10 == 9:
            out.append(Outcome(at, 10.0, 503))
        else:
            out.append(Outcome(at, 1.0 + (i % 5), 200))
    return out


def test_timeline_buckets_by_scheduled_second():
    t = timeline(outcomes(), 2)
    assert [s.second for s in t] == [0, 1]
    assert [s.requests for s in t] == [50, 50]
    assert t[0].ok == 44 and t[0].errors == 6  # 5 × 503, the reset
    assert t[1].ok == 45 and t[1].errors == 5  # 4 × 503, the unsent one
    assert t[0].p50_ms == 3.0
    empty = timeline([], 3)
    assert [(s.second, s.requests, s.p50_ms) for s in empty] == [(0, 0, 0.0), (1, 0, 0.0), (2, 0, 0.0)]
    late = timeline([Outcome(2.5, 1.0, 200)], 2)
    assert [s.second for s in late] == [0, 1, 2]


def report(**extra) -> LoadReport:
    """The report of outcomes(): 50 qps for 2 s over 4 connections to echo (10.96.0.20)."""
    return summarize(
        outcomes(), url="http://echo:8080/", qps=50, duration=2, connections=4, timeout=2, address="10.96.0.20", **extra
    )


def test_summarize():
    r = report(elapsed=2.01, error_samples={"reset": "ConnectionResetError: x"})
    assert r.requests == 100
    assert r.successes == 89
    assert r.success_rate == 0.89
    assert r.failures == 11
    assert r.errors == {"http 503": 9, "reset": 1, "unsent": 1}
    assert r.codes == {"200": 89, "503": 9}
    assert r.latency_ms.count == 98
    assert r.latency_ms.p50 == 3.0
    assert r.latency_ms.max == 10.0
    assert r.latency_ms.p99 == 10.0
    assert r.actual_qps == 49.5  # the unsent one was not sent
    assert len(r.timeline) == 2
    assert r.error_samples == {"reset": "ConnectionResetError: x"}


def test_summarize_nothing():
    r = summarize([], url="http://x/", qps=10, duration=1)
    assert r.requests == 0 and r.success_rate == 0.0 and r.latency_ms.p50 == 0.0
    assert len(r.timeline) == 1


def test_json_round_trip():
    r = report()
    d = json.loads(r.to_json())
    for key in ("requests", "successes", "success_rate", "errors", "codes", "latency_ms", "timeline"):
        assert key in d
    assert set(d["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    assert set(d["timeline"][0]) == {"second", "requests", "ok", "errors", "p50_ms"}
    back = LoadReport.from_json(r.to_json())
    assert back == r
    assert LoadReport.from_dict({**d, "something_new": 1}) == r


def test_table():
    r = report(elapsed=2.0)
    text = r.table()
    assert "GET http://echo:8080/ (10.96.0.20): 50 qps for 2s over 4 connections" in text
    assert "success    89/100 (89.0%)" in text
    assert "errors     http 503: 9, reset: 1, unsent: 1" in text
    assert "p50 3.00 ms" in text
    lines = text.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("SECOND")))
    assert lines[head].split() == ["SECOND", "REQUESTS", "OK", "ERRORS", "P50(ms)"]
    assert lines[head + 1].split() == ["0", "50", "44", "6", "3.00"]
    assert len(lines) == head + 3
