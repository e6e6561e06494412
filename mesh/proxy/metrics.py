"""Istio's request metrics as the L7 proxy reports them (pure; Prometheus text on 15020/15090).

`istio_requests_total` and `istio_request_duration_milliseconds` (a histogram), labelled as
Istio's standard metrics are (`reporter`, source and destination principal, workload and
namespace, `response_code`, `response_flags`), plus `istio_tcp_connections_opened_total` for
connections the proxy carried as TCP. The names and labels are Istio's (docs/proxy.md).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)


@dataclass(frozen=True)
class RequestLabels:
    reporter: str  # "waypoint", "destination" (sidecar inbound) or "source" (sidecar outbound)
    source_principal: str
    destination_principal: str
    destination_workload: str
    destination_workload_namespace: str
    response_code: str
    response_flags: str = "-"
    request_protocol: str = "http"

    def items(self) -> list[tuple[str, str]]:
        return [
            ("reporter", self.reporter),
            ("source_principal", self.source_principal),
            ("destination_principal", self.destination_principal),
            ("destination_workload", self.destination_workload),
            ("destination_workload_namespace", self.destination_workload_namespace),
            ("request_protocol", self.request_protocol),
            ("response_code", self.response_code),
            ("response_flags", self.response_flags),
        ]


def _labels(items: list[tuple[str, str]], extra: str = "") -> str:
    body = ",".join(f'{k}="{v}"' for k, v in items if v is not None)
    return "{" + body + (("," + extra) if extra and body else extra) + "}"


class RequestMetrics:
    """Counters and histograms, rendered on demand."""

    def __init__(self) -> None:
        self.requests: dict[RequestLabels, int] = defaultdict(int)
        self.duration_buckets: dict[RequestLabels, list[int]] = {}
        self.duration_sum: dict[RequestLabels, float] = defaultdict(float)
        self.tcp_opened: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)

    def record_request(self, labels: RequestLabels, duration_ms: float) -> None:
        self.requests[labels] += 1
        buckets = self.duration_buckets.setdefault(labels, [0] * len(BUCKETS_MS))
        for i, bound in enumerate(BUCKETS_MS):
            if duration_ms <= bound:
                buckets[i] += 1
        self.duration_sum[labels] += duration_ms

    def record_tcp(self, reporter: str, source_principal: str, destination: str) -> None:
        self.tcp_opened[
            (("reporter", reporter), ("source_principal", source_principal), ("destination_workload", destination))
        ] += 1

    def render(self) -> str:
        out = ["# TYPE istio_requests_total counter"]
        for labels, n in sorted(self.requests.items(), key=lambda kv: kv[0].items()):
            out.append(f"istio_requests_total{_labels(labels.items())} {n}")
        out.append("# TYPE istio_request_duration_milliseconds histogram")
        for labels, buckets in sorted(self.duration_buckets.items(), key=lambda kv: kv[0].items()):
            items = labels.items()
            for bound, count in zip(BUCKETS_MS, buckets):
                le = 'le="%g"' % bound
                out.append(f"istio_request_duration_milliseconds_bucket{_labels(items, le)} {count}")
            total = self.requests[labels]
            le = 'le="+Inf"'
            out.append(f"istio_request_duration_milliseconds_bucket{_labels(items, le)} {total}")
            out.append(f"istio_request_duration_milliseconds_sum{_labels(items)} {self.duration_sum[labels]:.3f}")
            out.append(f"istio_request_duration_milliseconds_count{_labels(items)} {total}")
        out.append("# TYPE istio_tcp_connections_opened_total counter")
        for tcp_items, n in sorted(self.tcp_opened.items()):
            out.append(f"istio_tcp_connections_opened_total{_labels(list(tcp_items))} {n}")
        return "\n".join(out) + "\n"
