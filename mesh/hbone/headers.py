"""HBONE's CONNECT request and response headers, as ztunnel writes and reads them. Pure.

The request (ztunnel `src/proxy/outbound.rs` `create_hbone_request`; docs/ambient-facts.md §1.3)::

    :method      CONNECT
    :authority   <pod IP>:<port>        (a service waypoint gets <service VIP>:<port>)
    baggage      k8s.cluster.name=...,k8s.namespace.name=...,k8s.deployment.name=...,...
    forwarded    for="<src IP>:<src port>"[;host=<service FQDN>]
    traceparent  00-<32 hex trace id>-<16 hex parent id>-00

No `:scheme` or `:path` (a plain RFC 9113 §8.5 CONNECT). The response is only a status
(docs/ambient-facts.md §1.4): 200 once the upstream connect succeeded, 400 for a malformed
request, 401 when L4 policy denies, 503 when the upstream cannot be reached.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus

Header = tuple[str, str]
RawHeader = tuple[bytes, bytes]

#: Sent only after the upstream TCP connect succeeded; the stream then carries the bytes.
CONNECTED = HTTPStatus.OK
#: Not a CONNECT, an unparseable :authority, or a target IP that is not this workload's.
BAD_REQUEST = HTTPStatus.BAD_REQUEST
#: An L4 AuthorizationPolicy denied the connection.
POLICY_DENIED = HTTPStatus.UNAUTHORIZED
#: The upstream connect failed (or timed out), the target is one of ztunnel's own ports,
#: or the local workload/port could not be resolved.
UPSTREAM_FAILED = HTTPStatus.SERVICE_UNAVAILABLE


class BadRequest(ValueError):
    """A received CONNECT that ztunnel would answer with 400."""

    status = BAD_REQUEST


def status_text(status: int) -> str:
    """'401 Unauthorized': the form ztunnel's access log uses (`http status: ...`)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


# --- building the request -------------------------------------------------------------


def new_traceparent() -> str:
    """A W3C traceparent with random ids and no flags, fresh per outbound connection."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


def format_forwarded(source: str, service_host: str | None = None) -> str:
    """RFC 7239 `Forwarded` naming the original client, and the service when addressed by one.

    `source` is "ip:port" ("[v6]:port" for IPv6). The `for` value is quoted because it
    holds a colon; ztunnel leaves the host unquoted.
    """
    value = f'for="{source}"'
    if service_host:
        value += f";host={service_host}"
    return value


def format_baggage(fields: Mapping[str, str | None]) -> str:
    """'k=v,k=v' in the given order, leaving out empty values as ztunnel does."""
    return ",".join(f"{k}={v}" for k, v in fields.items() if v)


def workload_baggage(
    *,
    cluster: str | None = None,
    namespace: str | None = None,
    workload_type: str = "deployment",
    workload_name: str | None = None,
    service_name: str | None = None,
    service_version: str | None = None,
    region: str | None = None,
    zone: str | None = None,
) -> str:
    """ztunnel's baggage for a workload (`src/baggage.rs`); `workload_type` is
    deployment | cronjob | pod | job."""
    return format_baggage(
        {
            "k8s.cluster.name": cluster,
            "k8s.namespace.name": namespace,
            f"k8s.{workload_type}.name": workload_name,
            "service.name": service_name,
            "service.version": service_version,
            "cloud.region": region,
            "cloud.availability_zone": zone,
        }
    )


def hbone_headers(
    *, source: str, service_host: str | None = None, baggage: str | None = None, traceparent: str | None = None
) -> list[Header]:
    """The non-pseudo headers of an outbound CONNECT, in ztunnel's order.

    `source` is the original client "ip:port"; `service_host` the service FQDN when the
    client addressed a service. An empty baggage is left out; a missing traceparent is
    made up.
    """
    headers: list[Header] = []
    if baggage:
        headers.append(("baggage", baggage))
    headers.append(("forwarded", format_forwarded(source, service_host)))
    headers.append(("traceparent", traceparent or new_traceparent()))
    return headers


def connect_request(authority: str, extra: Iterable[Header] = ()) -> list[RawHeader]:
    """The full header block of a CONNECT to `authority`, ready for h2.

    The authority is validated here so a bad target fails at the caller, not at the peer.
    """
    parse_authority(authority)
    block = [(b":method", b"CONNECT"), (b":authority", authority.encode("ascii"))]
    block.extend((name.lower().encode("ascii"), value.encode("latin-1")) for name, value in extra)
    return block


# --- reading the request --------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """The CONNECT target: an IP (ztunnel `HboneAddress::SocketAddr`) or a service
    hostname (`HboneAddress::SvcHostname`, used through east-west gateways)."""

    host: str
    port: int

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


def parse_authority(authority: str) -> Authority:
    """'10.0.0.1:80', '[fd00::1]:80' or 'svc.ns.svc.cluster.local:80'; else BadRequest."""
    if authority.startswith("["):
        host, sep, port = authority[1:].partition("]:")
        if not sep:
            raise BadRequest(f"bad :authority {authority!r}: want [ipv6]:port")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadRequest(f"bad :authority {authority!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port = authority.rpartition(":")
        if not sep or not host:
            raise BadRequest(f"bad :authority {authority!r}: want ip:port")
        if ":" in host:
            raise BadRequest(f"bad :authority {authority!r}: IPv6 needs brackets")
        if not _HOSTNAME.match(host):
            raise BadRequest(f"bad :authority {authority!r}: bad host {host!r}")
        if host[0].isdigit() and host.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise BadRequest(f"bad :authority {authority!r}: {host!r} is not an IPv4 address") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BadRequest(f"bad :authority {authority!r}: bad port {port!r}")
    return Authority(host, int(port))


def parse_baggage(values: Iterable[str]) -> dict[str, str]:
    """Every 'k=v' member of the baggage header(s); empty values are dropped as ztunnel does."""
    baggage: dict[str, str] = {}
    for value in values:
        for member in value.split(","):
            key, sep, val = member.partition("=")
            val = val.split(";", 1)[0].strip()  # W3C members may carry ;properties
            if sep and key.strip() and val:
                baggage[key.strip()] = val
    return baggage


def parse_forwarded(value: str) -> tuple[str | None, str | None]:
    """(for, host) from the first element of a Forwarded header; quotes removed."""
    first = value.split(",", 1)[0]
    found: dict[str, str] = {}
    for pair in first.split(";"):
        key, sep, val = pair.partition("=")
        if sep:
            found.setdefault(key.strip().lower(), val.strip().strip('"'))
    return found.get("for") or None, found.get("host") or None


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def parse_traceparent(value: str | None) -> str | None:
    """The traceparent if well formed (W3C: lowercase hex, non-zero ids), else None."""
    if not value or not _TRACEPARENT.match(value):
        return None
    _, trace_id, parent_id, _ = value.split("-")
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return value


@dataclass(frozen=True)
class ConnectRequest:
    """A received HBONE CONNECT, validated."""

    authority: Authority
    #: The original client as the sender put it in `forwarded: for=`, e.g. "10.244.0.5:43122".
    forwarded_for: str | None = None
    #: The service FQDN from `forwarded: ...;host=`, when the client addressed a service.
    forwarded_host: str | None = None
    baggage: dict[str, str] = field(default_factory=dict)
    traceparent: str | None = None
    #: Every header as received (names lowercase), pseudo-headers included.
    headers: tuple[Header, ...] = ()

    def get(self, name: str) -> str | None:
        """The first value of header `name`."""
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


def parse_connect_request(raw: Iterable[tuple[bytes | str, bytes | str]]) -> ConnectRequest:
    """Validate a received request header block as ztunnel's inbound does; BadRequest → 400."""
    headers = tuple((k.lower(), v) for k, v in decode_headers(raw))
    pseudo = {k: v for k, v in headers if k.startswith(":")}
    method = pseudo.get(":method", "")
    if method != "CONNECT":
        raise BadRequest(f"method {method!r} is not CONNECT")
    authority = parse_authority(pseudo.get(":authority", ""))
    forwarded_for = forwarded_host = None
    forwarded = next((v for k, v in headers if k == "forwarded"), None)
    if forwarded:
        forwarded_for, forwarded_host = parse_forwarded(forwarded)
    return ConnectRequest(
        authority=authority,
        forwarded_for=forwarded_for,
        forwarded_host=forwarded_host,
        baggage=parse_baggage(v for k, v in headers if k == "baggage"),
        traceparent=parse_traceparent(next((v for k, v in headers if k == "traceparent"), None)),
        headers=headers,
    )


# --- the response ---------------------------------------------------------------------


def response_headers(status: int, extra: Iterable[Header] = ()) -> list[RawHeader]:
    """A response header block for h2."""
    block = [(b":status", str(int(status)).encode("ascii"))]
    block.extend((name.lower().encode("ascii"), value.encode("latin-1")) for name, value in extra)
    return block


def response_status(raw: Iterable[tuple[bytes | str, bytes | str]]) -> int:
    """The :status of a received response block (0 when it is missing or garbled)."""
    for name, value in raw:
        if _text(name) == ":status":
            value = _text(value)
            return int(value) if value.isdigit() else 0
    return 0


def decode_headers(raw: Iterable[tuple[bytes | str, bytes | str]]) -> tuple[Header, ...]:
    """A header block as text, whatever bytes a peer put in it."""
    return tuple((_text(k), _text(v)) for k, v in raw)


def _text(value: bytes | str) -> str:
    # latin-1 maps every byte, so a hostile peer cannot make decoding raise.
    return value.decode("latin-1") if isinstance(value, bytes) else value
