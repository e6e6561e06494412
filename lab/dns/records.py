"""The cluster DNS zone: Kubernetes DNS records computed from API objects (sans-IO).

`ClusterZone` is fed the watch stream's Service, Endpoints and Pod objects and answers parsed
`dnslib.DNSRecord` queries (`answer`) or raw wire messages (`respond`). No sockets here: the
trio shell is `lab.dns.server`.

Records (the Kubernetes DNS-based service discovery spec, zone `cluster.local`, TTL 5 s):

- `<svc>.<ns>.svc.cluster.local` A/AAAA: the Service's cluster IPs; for a headless Service
  (`clusterIP: None`) the ready addresses of its Endpoints (`notReadyAddresses` are left out);
  for `type: ExternalName` a CNAME to `spec.externalName`.
- `<host>.<svc>.<ns>.svc.cluster.local` A/AAAA, headless Services only: one name per ready
  endpoint address, `<host>` being the address's `hostname`, or its dashed IP when it has none
  (as CoreDNS does, so that every SRV target resolves).
- `_<port>._<proto>.<svc>.<ns>.svc.cluster.local` SRV for each named port: target the Service
  name (cluster IP) or, headless, one record per ready endpoint address with its endpoint port.
  The targets' addresses go in the additional section.
- `<a-b-c-d>.<ns>.pod.cluster.local` A: only for a Pod of that namespace that has the IP (CoreDNS
  `pods verified`), so a made-up IP does not resolve.
- `cluster.local` SOA and NS (`ns.dns.cluster.local`, with the `kube-system/kube-dns` cluster IP).

Answers: a name that owns records, or is an ancestor of one (`<ns>.svc.cluster.local`), exists.
Other types for an existing name are NODATA (NOERROR, no answer, SOA in authority); unknown
names in the zone are NXDOMAIN with the SOA. Names are matched exactly and case-insensitively;
short names work through the pod resolver's search list (`ndots:5`).

Names outside `cluster.local` get NXDOMAIN, not REFUSED: the lab has no internet, so there is
no upstream to recurse to, and REFUSED makes resolvers (and so curl) report a server failure
instead of "could not resolve host". Such answers are not authoritative and carry no SOA.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any, NamedTuple

from dnslib import (
    AAAA,
    CLASS,
    CNAME,
    EDNS0,
    NS,
    OPCODE,
    QTYPE,
    RCODE,
    RD,
    RR,
    SOA,
    SRV,
    A,
    DNSError,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)

DEFAULT_DOMAIN = "cluster.local"
TTL = 5
EDNS_UDP_SIZE = 1232  # what we accept and advertise (the DNS flag day 2020 value)
PLAIN_UDP_SIZE = 512  # the limit for a client that sent no EDNS option
MAX_CNAME_CHAIN = 8
CLASS_ANY = 255  # dnslib names it "*"
KINDS = ("Service", "Endpoints", "Pod")
_STOPPED_PHASES = ("Succeeded", "Failed")  # their IPs are released and may be reused


class Record(NamedTuple):
    rtype: int
    rdata: RD


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A valid IP address or None: objects come from users, so nothing here may raise."""
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _ips(values: list[Any]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The valid IP addresses among VALUES, in order (see `_ip`)."""
    return [ip for ip in map(_ip, values) if ip is not None]


def _address_record(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Record:
    if ip.version == 4:
        return Record(QTYPE.A, A(str(ip)))
    return Record(QTYPE.AAAA, AAAA(str(ip)))


def _dashed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(ip).replace(".", "-").replace(":", "-")


def _label(value: Any) -> str | None:
    """A lower-cased single DNS label, or None if the value cannot be one."""
    if not isinstance(value, str) or not value or len(value) > 63 or "." in value:
        return None
    return value.lower()


def _key(qname: DNSLabel) -> str | None:
    """The lookup key of a query name: lower case, no trailing dot; None if it cannot be ours."""
    labels = []
    for raw in qname.label:
        try:
            label = raw.decode("ascii").lower()
        except UnicodeDecodeError:
            return None
        if "." in label:
            return None
        labels.append(label)
    return ".".join(labels)


class ClusterZone:
    """The zone's source objects plus an index of records rebuilt lazily after a change."""

    def __init__(self, domain: str = DEFAULT_DOMAIN, ttl: int = TTL):
        self.domain = domain.strip(".").lower()
        self.ttl = ttl
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self._serial = 1
        self._index: dict[str, list[Record]] | None = None

    # ---- feeding -------------------------------------------------------------------------

    def apply_event(self, event_type: str | None, obj: Any) -> bool:
        """Applies one watch event; returns whether the zone's sources changed."""
        if not isinstance(obj, dict) or obj.get("kind") not in self._objects:
            return False
        meta = _as_dict(obj.get("metadata"))
        name, namespace = meta.get("name"), meta.get("namespace") or "default"
        if not isinstance(name, str) or not name or not isinstance(namespace, str):
            return False
        store, key = self._objects[obj["kind"]], (namespace.lower(), name.lower())
        if event_type in ("ADDED", "MODIFIED"):
            store[key] = obj
        elif event_type == "DELETED":
            if store.pop(key, None) is None:
                return False
        else:
            return False
        self._serial = self._serial % 0xFFFFFFFF + 1
        self._index = None
        return True

    def counts(self) -> dict[str, int]:
        """Objects per kind, for the server's sync log line."""
        return {kind: len(objs) for kind, objs in self._objects.items()}

    # ---- the records ---------------------------------------------------------------------

    def _records(self) -> dict[str, list[Record]]:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _build_index(self) -> dict[str, list[Record]]:
        owners: dict[str, dict[tuple[int, str], Record]] = {}

        def add(owner: str, record: Record | None = None) -> None:
            records = owners.setdefault(owner, {})
            if record is not None:
                records.setdefault((record.rtype, repr(record.rdata)), record)

        add(self.domain, Record(QTYPE.SOA, self._soa()))
        add(self.domain, Record(QTYPE.NS, NS(f"ns.dns.{self.domain}.")))
        add(f"svc.{self.domain}")
        add(f"pod.{self.domain}")
        for (namespace, name), service in self._objects["Service"].items():
            for owner, record in self._service_records(namespace, name, service):
                add(owner, record)
        for (namespace, _), pod in self._objects["Pod"].items():
            for owner, record in self._pod_records(namespace, pod):
                add(owner, record)
        # Every ancestor of an owner exists (an empty non-terminal): NODATA there, not NXDOMAIN.
        suffix = "." + self.domain
        for owner in list(owners):
            while owner.endswith(suffix):
                owner = owner.partition(".")[2]
                owners.setdefault(owner, {})
        return {owner: list(records.values()) for owner, records in owners.items()}

    def _soa(self) -> SOA:
        return SOA(f"ns.dns.{self.domain}.", f"hostmaster.{self.domain}.", (self._serial, 7200, 1800, 86400, self.ttl))

    def _service_records(
        self, namespace: str, name: str, service: dict[str, Any]
    ) -> Iterator[tuple[str, Record | None]]:
        spec = _as_dict(service.get("spec"))
        base = f"{name}.{namespace}.svc.{self.domain}"
        yield base, None  # the Service's name exists even while it has no address
        if spec.get("type") == "ExternalName":
            target = spec.get("externalName")
            if isinstance(target, str) and target.strip("."):
                yield base, Record(QTYPE.CNAME, CNAME(target.strip(".") + "."))
            return
        if spec.get("clusterIP") == "None":
            yield from self._headless_records(base, self._objects["Endpoints"].get((namespace, name)))
            return
        cluster_ips = [spec.get("clusterIP"), *_as_list(spec.get("clusterIPs"))]
        for ip in _ips(cluster_ips):
            yield base, _address_record(ip)
        if (namespace, name) == ("kube-system", "kube-dns"):
            for ip in _ips(cluster_ips):
                yield f"ns.dns.{self.domain}", _address_record(ip)
        for port in map(_as_dict, _as_list(spec.get("ports"))):
            srv_name = self._srv_name(port, base)
            if srv_name and isinstance(port.get("port"), int):
                yield srv_name, Record(QTYPE.SRV, SRV(0, 100, port["port"], base + "."))

    def _headless_records(self, base: str, endpoints: dict[str, Any] | None) -> Iterator[tuple[str, Record]]:
        for subset in map(_as_dict, _as_list(_as_dict(endpoints).get("subsets"))):
            ports = [_as_dict(p) for p in _as_list(subset.get("ports"))]
            for address in map(_as_dict, _as_list(subset.get("addresses"))):
                ip = _ip(address.get("ip"))
                if ip is None:
                    continue
                host = f"{_label(address.get('hostname')) or _dashed(ip)}.{base}"
                yield base, _address_record(ip)
                yield host, _address_record(ip)
                for port in ports:
                    srv_name = self._srv_name(port, base)
                    if srv_name and isinstance(port.get("port"), int):
                        yield srv_name, Record(QTYPE.SRV, SRV(0, 100, port["port"], host + "."))

    @staticmethod
    def _srv_name(port: dict[str, Any], base: str) -> str | None:
        name, protocol = _label(port.get("name")), _label(port.get("protocol") or "TCP")
        if name is None or protocol is None:
            return None  # unnamed ports have no SRV record
        return f"_{name}._{protocol}.{base}"

    def _pod_records(self, namespace: str, pod: dict[str, Any]) -> Iterator[tuple[str, Record]]:
        status = _as_dict(pod.get("status"))
        if status.get("phase") in _STOPPED_PHASES:
            return
        ips = [status.get("podIP"), *(_as_dict(p).get("ip") for p in _as_list(status.get("podIPs")))]
        for ip in _ips(ips):
            yield f"{_dashed(ip)}.{namespace}.pod.{self.domain}", _address_record(ip)

    # ---- answering -----------------------------------------------------------------------

    def in_zone(self, key: str) -> bool:
        return key == self.domain or key.endswith("." + self.domain)

    def answer(self, request: DNSRecord) -> DNSRecord:
        """The reply to one parsed query (never raises for well-formed dnslib records)."""
        reply = DNSRecord(
            DNSHeader(id=request.header.id, qr=1, opcode=request.header.opcode, rd=request.header.rd, ra=1),
            questions=list(request.questions),
        )
        options = [rr for rr in request.ar if rr.rtype == QTYPE.OPT]
        if options:
            version = (options[0].ttl >> 16) & 0xFF
            reply.add_ar(EDNS0(udp_len=EDNS_UDP_SIZE, ext_rcode=1 if version else 0))
            if version:  # BADVERS: only EDNS version 0 exists
                return reply
        if request.header.opcode != OPCODE.QUERY:
            reply.header.rcode = RCODE.NOTIMP
        elif len(request.questions) != 1 or len(options) > 1:
            reply.header.rcode = RCODE.FORMERR
        elif request.q.qclass not in (CLASS.IN, CLASS_ANY) or request.q.qtype in (QTYPE.AXFR, QTYPE.IXFR):
            reply.header.rcode = RCODE.REFUSED
        else:
            self._resolve(request.q, reply)
        return reply

    def _resolve(self, question: DNSQuestion, reply: DNSRecord) -> None:
        key = _key(question.qname)
        if key is None or not self.in_zone(key):
            reply.header.rcode = RCODE.NXDOMAIN  # no upstream: see the module docstring
            return
        reply.header.aa = 1
        index, qtype, owner = self._records(), question.qtype, question.qname
        found = False
        for _ in range(MAX_CNAME_CHAIN):
            records = index.get(key)
            if records is None:
                reply.header.rcode = RCODE.NXDOMAIN
                break
            matches = [r for r in records if qtype in (r.rtype, QTYPE.ANY)]
            cname = next((r for r in records if r.rtype == QTYPE.CNAME), None)
            if matches or cname is None:
                found = bool(matches)
                for record in matches:
                    reply.add_answer(self._rr(owner, record))
                    if record.rtype == QTYPE.SRV:
                        self._add_glue(reply, record.rdata.target)
                break
            reply.add_answer(self._rr(owner, cname))
            owner = cname.rdata.label
            key = _key(owner)
            if key is None or not self.in_zone(key):
                return  # the resolver follows a target outside the zone itself
        else:
            reply.header.rcode = RCODE.SERVFAIL  # a CNAME loop (ExternalName services naming each other)
            return
        if not found:  # NXDOMAIN or NODATA: the SOA tells resolvers how long to cache that
            reply.add_auth(self._rr(DNSLabel(self.domain + "."), Record(QTYPE.SOA, self._soa())))

    def _add_glue(self, reply: DNSRecord, target: DNSLabel) -> None:
        for record in self._records().get(_key(target) or "", []):
            if record.rtype in (QTYPE.A, QTYPE.AAAA):
                reply.add_ar(self._rr(target, record))

    def _rr(self, owner: DNSLabel, record: Record) -> RR:
        return RR(owner, record.rtype, CLASS.IN, self.ttl, record.rdata)

    def respond(self, wire: bytes, *, udp: bool) -> bytes | None:
        """The reply to a wire message, or None to drop it (too short to answer, or a response).

        Unparseable queries get FORMERR; UDP replies larger than the client can take are
        truncated (TC set) so it retries over TCP.
        """
        if len(wire) < 12 or wire[2] & 0x80:
            return None
        try:
            request = DNSRecord.parse(wire)
        except DNSError:
            return formerr(wire)
        reply = self.answer(request)
        data = reply.pack()
        if udp:
            option = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
            limit = PLAIN_UDP_SIZE if option is None else max(PLAIN_UDP_SIZE, min(option.rclass, EDNS_UDP_SIZE))
            if len(data) > limit:
                truncated = DNSRecord(
                    DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, tc=1),
                    questions=list(reply.questions),
                    ar=[rr for rr in reply.ar if rr.rtype == QTYPE.OPT],
                )
                data = truncated.pack()
        return data


def error_reply(wire: bytes, rcode: int) -> bytes:
    """A bare reply carrying only the query's id, opcode and RD bit (for unparseable input)."""
    header = DNSHeader(
        id=int.from_bytes(wire[:2], "big"),
        bitmap=0,
        qr=1,
        ra=1,
        rcode=rcode,
        opcode=(wire[2] >> 3) & 0xF,
        rd=wire[2] & 1,
    )
    return DNSRecord(header).pack()


def formerr(wire: bytes) -> bytes:
    return error_reply(wire, RCODE.FORMERR)
