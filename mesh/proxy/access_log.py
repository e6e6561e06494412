"""The proxy's access log: one line per HTTP request, one per TCP connection (pure formatting).

Lines use ztunnel's layout (`<ts> <level> access <message> key=value ...`, `mesh.ztunnel.metrics`)
so the two proxies' logs read alike, with the fields a learner needs from Envoy's default format:
method, path, protocol, status and response flags, plus who the client and the destination are,
the decision and which component and policy took it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from mesh.ztunnel.metrics import format_access_log


@dataclass
class RequestRecord:
    """What one request's line says; the engine fills it as the request goes through the filters."""

    method: str
    path: str
    protocol: str
    authority: str
    src_addr: str
    src_identity: str | None
    component: str  # "waypoint" or "sidecar"
    chain: str = ""
    status: int | None = None
    flags: str = "-"  # Envoy's response flags: UH (no healthy upstream), UF (connect failure), ...
    dst_addr: str | None = None
    dst_workload: str | None = None
    dst_identity: str | None = None
    decision: str = "allow"
    decided_by: str | None = None  # "waypoint rbac", "waypoint jwt_authn", ...
    policy: str | None = None
    reason: str | None = None
    request_principal: str | None = None
    audit: tuple[str, ...] = ()
    bytes_received: int = 0
    bytes_sent: int = 0
    user_agent: str | None = None
    request_id: str | None = None
    started: float = 0.0
    extra: dict = field(default_factory=dict)

    def line(self, duration_ms: float, at: datetime | None = None) -> str:
        level = "info" if self.decision == "allow" and (self.status or 0) < 500 else "warn"
        return format_access_log(
            at or datetime.now(timezone.utc),
            level,
            "request complete",
            [
                ("method", self.method),
                ("path", self.path),
                ("protocol", self.protocol),
                ("authority", self.authority),
                ("status", self.status),
                ("response_flags", self.flags),
                ("src.addr", self.src_addr),
                ("src.identity", self.src_identity),
                ("dst.addr", self.dst_addr),
                ("dst.workload", self.dst_workload),
                ("dst.identity", self.dst_identity),
                ("route", self.chain or None),
                ("request.auth.principal", self.request_principal),
                ("decision", self.decision),
                ("decided_by", self.decided_by),
                ("policy", self.policy),
                ("reason", self.reason),
                ("audit", ",".join(self.audit) or None),
                ("user_agent", self.user_agent),
                ("request_id", self.request_id),
                ("bytes_recv", self.bytes_received),
                ("bytes_sent", self.bytes_sent),
                ("duration", f"{duration_ms:.0f}ms"),
            ],
        )


def connection_line(
    *,
    component: str,
    direction: str = "inbound",
    src_addr: str,
    src_identity: str | None,
    target: str,
    chain: str | None,
    decision: str,
    decided_by: str | None,
    policy: str | None,
    reason: str | None,
    dst_addr: str | None = None,
    dst_workload: str | None = None,
    bytes_recv: int = 0,
    bytes_sent: int = 0,
    duration_ms: float = 0.0,
    error: str | None = None,
    at: datetime | None = None,
) -> str:
    """The line for a tunnel that carried raw TCP, or was refused before its first byte."""
    level = "info" if decision == "allow" and error is None else "warn"
    return format_access_log(
        at or datetime.now(timezone.utc),
        level,
        "connection complete",
        [
            ("src.addr", src_addr),
            ("src.identity", src_identity),
            ("dst.hbone_addr", target),
            ("dst.addr", dst_addr),
            ("dst.workload", dst_workload),
            ("route", chain),
            ("protocol", "TCP"),
            ("decision", decision),
            ("decided_by", decided_by),
            ("policy", policy),
            ("reason", reason),
            ("error", error),
            ("bytes_recv", bytes_recv),
            ("bytes_sent", bytes_sent),
            ("duration", f"{duration_ms:.0f}ms"),
            ("direction", direction),
            ("component", component),
        ],
    )
