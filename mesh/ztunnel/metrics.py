"""Connection telemetry: Istio's TCP metrics and ztunnel's access log (ztunnel `src/proxy/metrics.rs`).

Every proxied connection gets a `ConnectionResult` when ztunnel knows enough about it: that counts
it opened; `record()` at the end counts it closed, adds its bytes and writes one access-log line.
Byte counts of connections still open are added when the metrics are rendered, so a long transfer
shows up while it runs.

The pure parts, `TrafficLabels`, `format_access_log` and `Metrics.render` (OpenMetrics text, as
ztunnel's prometheus-client serves it), are unit tested; nothing here does I/O except calling the
log sink it was given.

Byte directions follow ztunnel: the metrics count `received` = client→server and `sent` =
server→client for both reporters; the access log shows bytes from the logging side's point of view.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, asdict, dataclass, field, fields, replace
from datetime import datetime, timezone

from mesh.hbone.splice import SpliceStats
from mesh.ztunnel.resources import Service, Workload

UNKNOWN = "unknown"

SOURCE = "source"  # reporter of outbound connections
DESTINATION = "destination"  # reporter of inbound connections

MUTUAL_TLS = "mutual_tls"
NO_TLS = "unknown"  # ztunnel's SecurityPolicy::unknown

# ResponseFlags (ztunnel's label values).
NO_FLAGS = "-"
DENY = "DENY"
CONNECT = "CONNECT"
TLS_FAILURE = "TLS_FAILURE"
H2_HANDSHAKE_FAILURE = "H2_HANDSHAKE_FAILURE"
NETWORK_POLICY = "NETWORK_POLICY"
IDENTITY_ERROR = "IDENTITY_ERROR"


def _known(value: str | None) -> str:
    return value or UNKNOWN


def _workload_labels(w: Workload) -> tuple[tuple[str, str], ...]:
    """A workload's labels, named without their `source_`/`destination_` prefix."""
    return (
        ("workload", w.workload_name),
        ("canonical_service", w.canonical_name),
        ("canonical_revision", w.canonical_revision),
        ("workload_namespace", w.namespace),
        ("app", w.canonical_name),
        ("version", w.canonical_revision),
        ("cluster", w.cluster_id),
    )


@dataclass(frozen=True)
class TrafficLabels:
    """ztunnel's CommonTrafficLabels, in its order (locality labels left out: the lab has none)."""

    reporter: str = SOURCE
    source_workload: str = UNKNOWN
    source_canonical_service: str = UNKNOWN
    source_canonical_revision: str = UNKNOWN
    source_workload_namespace: str = UNKNOWN
    source_principal: str = UNKNOWN
    source_app: str = UNKNOWN
    source_version: str = UNKNOWN
    source_cluster: str = UNKNOWN
    destination_service: str = UNKNOWN
    destination_service_namespace: str = UNKNOWN
    destination_service_name: str = UNKNOWN
    destination_workload: str = UNKNOWN
    destination_canonical_service: str = UNKNOWN
    destination_canonical_revision: str = UNKNOWN
    destination_workload_namespace: str = UNKNOWN
    destination_principal: str = UNKNOWN
    destination_app: str = UNKNOWN
    destination_version: str = UNKNOWN
    destination_cluster: str = UNKNOWN
    request_protocol: str = "tcp"
    response_flags: str = NO_FLAGS
    connection_security_policy: str = NO_TLS

    @classmethod
    def build(
        cls,
        reporter: str,
        *,
        source: Workload | None = None,
        source_identity: str | None = None,
        destination: Workload | None = None,
        service: Service | None = None,
        mtls: bool = False,
    ) -> TrafficLabels:
        """From what the proxy knows (ztunnel `From<ConnectionOpen>`).

        The source principal is only ever the identity proven in the TLS handshake (or our own,
        on the outbound side of an mTLS connection), never guessed from the source workload.

        Memoized: Workloads and Services are immutable and compared by identity, so the same
        inputs always give the same (frozen) labels; a new connection of a known pair reuses them.
        """
        key = (cls, reporter, source, source_identity, destination, service, mtls)
        labels = _LABELS_CACHE.get(key)
        if labels is None:
            if len(_LABELS_CACHE) >= _LABELS_CACHE_SIZE:
                _LABELS_CACHE.clear()  # state churned: forget old Workload/Service objects
            labels = _LABELS_CACHE[key] = cls._build(
                reporter,
                source=source,
                source_identity=source_identity,
                destination=destination,
                service=service,
                mtls=mtls,
            )
        return labels

    @classmethod
    def _build(
        cls,
        reporter: str,
        *,
        source: Workload | None,
        source_identity: str | None,
        destination: Workload | None,
        service: Service | None,
        mtls: bool,
    ) -> TrafficLabels:
        labels: dict[str, str] = {"reporter": reporter, "connection_security_policy": MUTUAL_TLS if mtls else NO_TLS}
        if source_identity:
            labels["source_principal"] = source_identity
        for side, workload in (("source", source), ("destination", destination)):
            if workload is not None:
                labels.update({f"{side}_{name}": _known(value) for name, value in _workload_labels(workload)})
        if destination is not None:
            labels["destination_principal"] = destination.identity
        if service is not None:
            labels.update(
                destination_service=service.hostname,
                destination_service_name=service.name,
                destination_service_namespace=service.namespace,
            )
        return cls(**labels)

    def items(self) -> list[tuple[str, str]]:
        return list(asdict(self).items())


LABEL_NAMES = tuple(f.name for f in fields(TrafficLabels))

_LABELS_CACHE: dict[tuple, TrafficLabels] = {}
_LABELS_CACHE_SIZE = 4096


@dataclass(frozen=True)
class _Family:
    name: str  # without the istio_ prefix and the _total suffix
    help: str


OPENED = _Family("tcp_connections_opened", "The total number of TCP connections opened")
CLOSED = _Family("tcp_connections_closed", "The total number of TCP connections closed")
RECEIVED = _Family("tcp_received_bytes", "The size of total bytes received during request in case of a TCP connection")
SENT = _Family("tcp_sent_bytes", "The size of total bytes sent during response in case of a TCP connection")
PREFIX = "istio_"
CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(family: _Family, labels: TrafficLabels, value: int) -> str:
    body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
    return f"{PREFIX}{family.name}_total{{{body}}} {value}"


class Metrics:
    """The counters, keyed by label set; open connections are tracked for their live bytes."""

    def __init__(self) -> None:
        self.opened: Counter[TrafficLabels] = Counter()
        self.closed: Counter[TrafficLabels] = Counter()
        self.received_bytes: Counter[TrafficLabels] = Counter()
        self.sent_bytes: Counter[TrafficLabels] = Counter()
        self.live: dict[int, ConnectionResult] = {}
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    def render(self) -> str:
        """The OpenMetrics exposition (# HELP, # TYPE, samples, # EOF)."""
        received, sent = Counter(self.received_bytes), Counter(self.sent_bytes)
        for conn in self.live.values():
            received[conn.labels] += conn.stats_received
            sent[conn.labels] += conn.stats_sent
        out = []
        for family, counter in ((OPENED, self.opened), (CLOSED, self.closed), (RECEIVED, received), (SENT, sent)):
            out.append(f"# HELP {PREFIX}{family.name} {family.help}.")
            out.append(f"# TYPE {PREFIX}{family.name} counter")
            for labels in sorted(counter, key=lambda lab: tuple(asdict(lab).values())):
                out.append(_sample(family, labels, counter[labels]))
        out.append("# EOF")
        return "\n".join(out) + "\n"


# --- the access log ------------------------------------------------------------------------


class Bare(str):
    """A field value written as is (addresses, as ztunnel's `%` Display fields), not quoted."""


_PLAIN = re.compile(r'[^"\\\x00-\x1f\x7f]*')  # what json.dumps leaves as it is (ensure_ascii=False)


def _value(value: object) -> str:
    if isinstance(value, Bare) or isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text):  # the usual case: quoting is all json.dumps would do
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


def format_timestamp(at: datetime) -> str:
    """RFC 3339 in UTC with microseconds, as ztunnel's log lines start."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_access_log(at: datetime, level: str, message: str, entries: Iterable[tuple[str, object]]) -> str:
    """`<ts> <level> access <message> k=v ...`; entries whose value is None are left out, as
    tracing leaves out unset fields. Strings are quoted, `Bare` values and numbers are not."""
    fields_text = " ".join(f"{k}={_value(v)}" for k, v in entries if v is not None)
    return f"{format_timestamp(at)} {level} access {message} {fields_text}".rstrip()


def early_deny_line(at: datetime, src: str, dst: str, direction: str, error: str) -> str:
    """What ztunnel logs when a connection fails before it knows its workloads (`log_early_deny`)."""
    return format_access_log(
        at,
        "warn",
        "connection failed",
        [("src.addr", Bare(src)), ("dst.addr", Bare(dst)), ("direction", direction), ("error", error)],
    )


@dataclass(frozen=True)
class Outcome:
    """How a connection ended: no error, or the error text and, for policy denials, who decided."""

    error: str | None = None
    flag: str = NO_FLAGS
    #: "ns/name" of the policy that denied, for `decided_by="ztunnel" policy=...`.
    policy: str | None = None
    denied_by_policy: bool = False


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(eq=False)
class ConnectionResult:
    """One connection's telemetry from open to close (ztunnel `ConnectionResult`).

    `stats` is handed to `splice`, so the bytes are known even when the copy fails. `record`
    must be called once; it writes the access-log line through `log`.
    """

    metrics: Metrics
    log: Callable[[str], None]
    _: KW_ONLY
    labels: TrafficLabels
    src: str
    dst: str
    hbone_target: str | None = None
    original_dst: str | None = None
    src_workload: str | None = None
    dst_workload: str | None = None
    pod: str = ""
    protocol: str = "TCP"
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    wall: Callable[[], datetime] = field(default=_utc_now, repr=False)
    # Set as the connection opens:
    id: int = field(init=False)
    stats: SpliceStats = field(init=False, default_factory=SpliceStats)
    started: float = field(init=False)
    started_at: datetime = field(init=False)
    recorded: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.id = self.metrics.next_id()
        self.started = self.clock()
        self.started_at = self.wall()
        self.metrics.opened[self.labels] += 1
        self.metrics.live[self.id] = self

    @property
    def outbound(self) -> bool:
        return self.labels.reporter == SOURCE

    # The splice runs downstream→upstream as `bytes_sent`. Downstream is the client side on both
    # paths (the app outbound, the HBONE stream inbound), so that is the request direction.
    @property
    def stats_received(self) -> int:
        return self.stats.bytes_sent

    @property
    def stats_sent(self) -> int:
        return self.stats.bytes_recv

    def record(self, outcome: Outcome = Outcome()) -> str:
        """Count the close, add the bytes, write the access-log line (returned too)."""
        if self.recorded:
            return ""
        self.recorded = True
        self.metrics.live.pop(self.id, None)
        # As in ztunnel, the open was counted without flags and the close carries the outcome's.
        labels = self.labels
        if labels.response_flags != outcome.flag:
            labels = replace(labels, response_flags=outcome.flag)
        self.metrics.closed[labels] += 1
        if self.stats_received:
            self.metrics.received_bytes[labels] += self.stats_received
        if self.stats_sent:
            self.metrics.sent_bytes[labels] += self.stats_sent
        line = self.access_log_line(outcome, labels)
        self.log(line)
        return line

    def access_log_line(self, outcome: Outcome, labels: TrafficLabels | None = None) -> str:
        labels = labels or self.labels
        mtls = labels.connection_security_policy == MUTUAL_TLS
        # The log shows bytes from this side's view: outbound sends the request, inbound the response.
        sent, recv = (self.stats_received, self.stats_sent) if self.outbound else (self.stats_sent, self.stats_received)
        millis = int((self.clock() - self.started) * 1000)
        entries: list[tuple[str, object]] = [
            ("src.addr", Bare(self.src)),
            ("src.workload", self.src_workload or _or_none(labels.source_canonical_service)),
            ("src.namespace", _or_none(labels.source_workload_namespace)),
            ("src.identity", _or_none(labels.source_principal) if mtls else None),
            ("dst.addr", Bare(self.dst)),
            ("dst.hbone_addr", Bare(self.hbone_target) if self.hbone_target else None),
            ("dst.service", _or_none(labels.destination_service)),
            ("dst.workload", self.dst_workload or _or_none(labels.destination_canonical_service)),
            ("dst.namespace", _or_none(labels.destination_workload_namespace)),
            ("dst.identity", _or_none(labels.destination_principal) if mtls else None),
            ("direction", "outbound" if self.outbound else "inbound"),
            ("bytes_sent", sent),
            ("bytes_recv", recv),
            ("duration", f"{millis}ms"),
        ]
        if outcome.error is not None:
            entries.append(("error", outcome.error))
            if outcome.denied_by_policy:
                entries.append(("decided_by", "ztunnel"))
                entries.append(("policy", outcome.policy))
        level = "info" if outcome.error is None else "error"
        return format_access_log(self.wall(), level, "connection complete", entries)

    def dump(self) -> dict:
        """This connection as ztunnel's connection manager dumps it (plus its bytes so far).

        Outbound: `originalDst` is where the app connected, `actualDst` where ztunnel went.
        Inbound: `originalDst` is the destination service (as ztunnel), `actualDst` the app.
        """
        return {
            "src": self.src,
            "originalDst": self.original_dst,
            "actualDst": self.dst if self.outbound else (self.hbone_target or self.dst),
            "protocol": self.protocol,
            "startedAt": format_timestamp(self.started_at),
            "bytesSent": self.stats_received if self.outbound else self.stats_sent,
            "bytesRecv": self.stats_sent if self.outbound else self.stats_received,
        }


def _or_none(value: str) -> str | None:
    return None if value == UNKNOWN else value
