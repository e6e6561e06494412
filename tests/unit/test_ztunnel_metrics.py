"""The access log lines and Istio TCP metrics ztunnel writes (pure)."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from mesh.ztunnel import metrics
from mesh.ztunnel.metrics import (
    Bare,
    ConnectionResult,
    Metrics,
    Outcome,
    TrafficLabels,
    early_deny_line,
    format_access_log,
)
from mesh.ztunnel.proxy import HttpStatus, PolicyRejection, outcome_of
from mesh.ztunnel.resources import Service, Workload
from mesh.ztunnel.testing import service, workload

AT = datetime(2024, 5, 4, 9, 23, 49, 123456, tzinfo=timezone.utc)
SLEEP = Workload.from_xds(workload("sleep-6f9c", "10.244.1.5")["workload"])
HTTPBIN = Workload.from_xds(workload("httpbin-7d4b", "10.244.1.7")["workload"])
HTTPBIN_SVC = Service.from_xds(service("httpbin", "10.96.0.20", {8000: 80})["service"])


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def result(m: Metrics, lines: list, clock: Clock, *, outbound: bool = True) -> ConnectionResult:
    """sleep → httpbin over HBONE, as the outbound (source) or inbound (destination) ztunnel records it."""
    reporter = metrics.SOURCE if outbound else metrics.DESTINATION
    pair = {"source": SLEEP, "destination": HTTPBIN, "service": HTTPBIN_SVC}
    return ConnectionResult(
        m,
        lines.append,
        labels=TrafficLabels.build(reporter, source_identity=SLEEP.identity, mtls=True, **pair),
        src="10.244.1.5:40312",
        dst="10.244.1.7:15008",
        hbone_target="10.244.1.7:80",
        src_workload=SLEEP.name,
        dst_workload=HTTPBIN.name,
        clock=clock,
        wall=lambda: AT,
    )


def test_outbound_line_matches_ztunnels_format():
    m, lines, clock = Metrics(), [], Clock()
    conn = result(m, lines, clock)
    conn.stats.bytes_sent, conn.stats.bytes_recv = 80, 175
    clock.now += 0.0042
    line = conn.record()
    assert lines == [line]
    assert line == (
        '2024-05-04T09:23:49.123456Z info access connection complete src.addr=10.244.1.5:40312 '
        'src.workload="sleep-6f9c" src.namespace="default" src.identity="spiffe://cluster.local/ns/default/sa/sleep" '
        'dst.addr=10.244.1.7:15008 dst.hbone_addr=10.244.1.7:80 dst.service="httpbin.default.svc.cluster.local" '
        'dst.workload="httpbin-7d4b" dst.namespace="default" '
        'dst.identity="spiffe://cluster.local/ns/default/sa/httpbin" direction="outbound" '
        'bytes_sent=80 bytes_recv=175 duration="4ms"'
    )


def test_inbound_bytes_are_from_the_destinations_view():
    m, lines, clock = Metrics(), [], Clock()
    conn = result(m, lines, clock, outbound=False)
    conn.stats.bytes_sent, conn.stats.bytes_recv = 80, 175  # request in, response out
    line = conn.record()
    assert 'direction="inbound" bytes_sent=175 bytes_recv=80' in line
    # Both reporters count the request as received and the response as sent.
    text = m.render()
    assert re.search(r'istio_tcp_received_bytes_total\{reporter="destination".*\} 80$', text, re.M)
    assert re.search(r'istio_tcp_sent_bytes_total\{reporter="destination".*\} 175$', text, re.M)


def test_policy_denial_names_the_policy_and_who_decided():
    m, lines, clock = Metrics(), [], Clock()
    conn = result(m, lines, clock, outbound=False)
    line = conn.record(outcome_of(PolicyRejection("explicitly denied by: default/deny-sleep", "default/deny-sleep")))
    assert line.split(" ")[1] == "error"
    assert line.endswith(
        'bytes_sent=0 bytes_recv=0 duration="0ms" '
        'error="connection closed due to policy rejection: explicitly denied by: default/deny-sleep" '
        'decided_by="ztunnel" policy="default/deny-sleep"'
    )
    assert 'response_flags="DENY"' in m.render()


def test_source_side_of_a_refused_connect():
    m, lines, clock = Metrics(), [], Clock()
    line = result(m, lines, clock).record(outcome_of(HttpStatus(401)))
    assert line.endswith('bytes_sent=0 bytes_recv=0 duration="0ms" error="http status: 401 Unauthorized"')
    assert "decided_by" not in line


def test_plaintext_connection_has_no_identities_and_no_hbone_addr():
    m, lines = Metrics(), []
    labels = TrafficLabels.build(metrics.DESTINATION, source=None, destination=HTTPBIN, mtls=False)
    conn = ConnectionResult(
        m,
        lines.append,
        labels=labels,
        src="10.244.9.9:5555",
        dst="10.244.1.7:80",
        dst_workload=HTTPBIN.name,
        wall=lambda: AT,
    )
    line = conn.record(Outcome())
    assert "identity" not in line and "hbone_addr" not in line and "src.workload" not in line
    assert 'dst.workload="httpbin-7d4b" dst.namespace="default" direction="inbound"' in line


def test_early_deny_line():
    assert early_deny_line(AT, "10.244.1.5:1", "10.96.0.20:80", "outbound", "no healthy upstream: 10.96.0.20:80") == (
        '2024-05-04T09:23:49.123456Z warn access connection failed src.addr=10.244.1.5:1 dst.addr=10.96.0.20:80 '
        'direction="outbound" error="no healthy upstream: 10.96.0.20:80"'
    )


def test_values_are_quoted_and_escaped_unless_bare():
    line = format_access_log(AT, "info", "m", [("a", 'x"y'), ("b", 7), ("c", Bare("1.2.3.4:5")), ("d", None)])
    assert line.endswith('m a="x\\"y" b=7 c=1.2.3.4:5')


def test_metrics_text_has_istios_names_and_labels():
    m, lines, clock = Metrics(), [], Clock()
    conn = result(m, lines, clock)
    conn.stats.bytes_sent, conn.stats.bytes_recv = 1000, 2000
    live = m.render()  # bytes of open connections are already counted
    assert re.search(r'^istio_tcp_received_bytes_total\{.*\} 1000$', live, re.M)
    assert "istio_tcp_connections_closed_total{" not in live
    conn.record()
    text = m.render()
    assert text.endswith("# EOF\n")
    for name in ("tcp_connections_opened", "tcp_connections_closed", "tcp_received_bytes", "tcp_sent_bytes"):
        assert f"# TYPE istio_{name} counter" in text
        assert re.search(rf"^istio_{name}_total\{{.*\}} \d+$", text, re.M)
    sample = next(line for line in text.splitlines() if line.startswith("istio_tcp_connections_opened_total"))
    labels = dict(re.findall(r'(\w+)="([^"]*)"', sample))
    assert labels["reporter"] == "source"
    assert labels["source_workload"] == "sleep" and labels["source_workload_namespace"] == "default"
    assert labels["source_principal"] == "spiffe://cluster.local/ns/default/sa/sleep"
    assert labels["destination_workload"] == "httpbin" and labels["destination_workload_namespace"] == "default"
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/default/sa/httpbin"
    assert labels["destination_service"] == "httpbin.default.svc.cluster.local"
    assert labels["connection_security_policy"] == "mutual_tls"
    assert labels["response_flags"] == "-"
    assert sample.endswith(" 1")
    assert re.search(r'^istio_tcp_sent_bytes_total\{.*\} 2000$', text, re.M)


def test_label_values_are_escaped():
    m = Metrics()
    m.opened[TrafficLabels(source_workload='we"ird\\name')] += 1
    assert 'source_workload="we\\"ird\\\\name"' in m.render()


def test_labels_are_memoized_per_workload_and_service_objects():
    src = Workload.from_xds(workload("client-1", "10.244.0.5")["workload"])
    first = TrafficLabels.build(metrics.SOURCE, source=src, source_identity="spiffe://x", mtls=True)
    again = TrafficLabels.build(metrics.SOURCE, source=src, source_identity="spiffe://x", mtls=True)
    assert first is again
    assert first == TrafficLabels._build(
        metrics.SOURCE, source=src, source_identity="spiffe://x", destination=None, service=None, mtls=True
    )
    other = TrafficLabels.build(metrics.SOURCE, source=src, source_identity=None, mtls=False)
    assert other != first
