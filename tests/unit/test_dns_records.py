"""The cluster DNS zone: every name form, headless services, NODATA vs NXDOMAIN, deletes."""

from __future__ import annotations

from typing import Any

import pytest
from dnslib import CLASS, EDNS0, OPCODE, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord

from lab.dns.records import ClusterZone


def service(
    name: str,
    ns: str = "default",
    cluster_ip: str = "10.96.0.20",
    ports: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    spec = {"clusterIP": cluster_ip, "ports": ports if ports is not None else [{"name": "http", "port": 8000}], **spec}
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def endpoints(name: str, ns: str = "default", subsets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"kind": "Endpoints", "metadata": {"name": name, "namespace": ns}, "subsets": subsets or []}


def pod(name: str, ip: str | None, ns: str = "default", phase: str = "Running") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns}, "status": status}


def ask(zone: ClusterZone, name: str, qtype: str = "A") -> DNSRecord:
    reply = zone.answer(DNSRecord.question(name, qtype))
    return DNSRecord.parse(reply.pack())  # what a client sees on the wire


def answers(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


def is_nodata(reply: DNSRecord) -> bool:
    return reply.header.rcode == RCODE.NOERROR and not reply.rr and [rr.rtype for rr in reply.auth] == [QTYPE.SOA]


def is_nxdomain_with_soa(reply: DNSRecord) -> bool:
    return (
        reply.header.rcode == RCODE.NXDOMAIN
        and not reply.rr
        and [rr.rtype for rr in reply.auth] == [QTYPE.SOA]
        and reply.header.aa == 1
    )


@pytest.fixture
def zone() -> ClusterZone:
    z = ClusterZone()
    z.apply_event("ADDED", service("httpbin", "demo", "10.96.0.20", [{"name": "http", "port": 8000}, {"port": 9000}]))
    z.apply_event(
        "ADDED",
        service(
            "dns",
            "kube-system",
            "10.96.0.10",
            [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
        ),
    )
    z.apply_event("ADDED", service("db", "demo", "None", [{"name": "pg", "port": 5432}]))
    z.apply_event(
        "ADDED",
        endpoints(
            "db",
            "demo",
            [
                {
                    "addresses": [{"ip": "10.244.0.5", "hostname": "db-0"}, {"ip": "10.244.1.7"}],
                    "notReadyAddresses": [{"ip": "10.244.1.9", "hostname": "db-2"}],
                    "ports": [{"name": "pg", "port": 15432, "protocol": "TCP"}],
                }
            ],
        ),
    )
    z.apply_event("ADDED", pod("httpbin-1", "10.244.0.3", "demo"))
    return z


# ---- services ----------------------------------------------------------------------------


def test_service_a_record_is_the_cluster_ip(zone: ClusterZone) -> None:
    reply = ask(zone, "httpbin.demo.svc.cluster.local")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1 and reply.header.qr == 1
    assert answers(reply) == ["10.96.0.20"]
    assert reply.rr[0].ttl == 5 and reply.rr[0].rtype == QTYPE.A


def test_names_are_case_insensitive_and_keep_the_asked_case(zone: ClusterZone) -> None:
    reply = ask(zone, "HttpBin.DEMO.svc.Cluster.Local.")
    assert answers(reply) == ["10.96.0.20"]
    assert str(reply.rr[0].rname) == "HttpBin.DEMO.svc.Cluster.Local."


def test_other_types_of_an_existing_name_are_nodata(zone: ClusterZone) -> None:
    for qtype in ("AAAA", "TXT", "MX", "SRV"):
        assert is_nodata(ask(zone, "httpbin.demo.svc.cluster.local", qtype)), qtype


def test_unknown_names_in_the_zone_are_nxdomain_with_soa(zone: ClusterZone) -> None:
    for name in (
        "nope.demo.svc.cluster.local",
        "httpbin.other.svc.cluster.local",
        "x.httpbin.demo.svc.cluster.local",
        "foo.cluster.local",
    ):
        reply = ask(zone, name)
        assert is_nxdomain_with_soa(reply), name
        assert str(reply.auth[0].rname) == "cluster.local." and reply.auth[0].ttl == 5


def test_names_are_matched_exactly_search_expansion_is_the_resolvers(zone: ClusterZone) -> None:
    for name in ("httpbin", "httpbin.demo", "httpbin.demo.svc", "httpbin.demo.demo.svc.cluster.local"):
        assert ask(zone, name).header.rcode == RCODE.NXDOMAIN, name


def test_names_outside_the_zone_are_nxdomain_without_authority(zone: ClusterZone) -> None:
    for name in ("example.com", "cluster.local.example.com", "localcluster.local", "."):
        reply = ask(zone, name)
        assert reply.header.rcode == RCODE.NXDOMAIN and not reply.auth and reply.header.aa == 0, name


def test_ancestors_of_records_exist(zone: ClusterZone) -> None:
    for name in (
        "demo.svc.cluster.local",
        "svc.cluster.local",
        "pod.cluster.local",
        "demo.pod.cluster.local",
        "_tcp.httpbin.demo.svc.cluster.local",
    ):
        assert is_nodata(ask(zone, name)), name


def test_apex_has_soa_and_ns_with_the_kube_dns_address() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", service("kube-dns", "kube-system", "10.96.0.10", [{"name": "dns", "port": 53}]))
    soa = ask(z, "cluster.local", "SOA")
    assert soa.rr[0].rtype == QTYPE.SOA and soa.rr[0].rdata.times[4] == 5
    ns = ask(z, "cluster.local", "NS")
    assert answers(ns) == ["ns.dns.cluster.local."]
    assert answers(ask(z, "ns.dns.cluster.local")) == ["10.96.0.10"]


def test_service_without_cluster_ip_exists_without_address() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", service("pending", cluster_ip=""))
    assert is_nodata(ask(z, "pending.default.svc.cluster.local"))


def test_dual_stack_service_answers_aaaa() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", service("dual", cluster_ip="10.96.0.30", clusterIPs=["10.96.0.30", "fd00:10:96::30"]))
    assert answers(ask(z, "dual.default.svc.cluster.local")) == ["10.96.0.30"]
    assert answers(ask(z, "dual.default.svc.cluster.local", "AAAA")) == ["fd00:10:96::30"]


def test_external_name_is_a_cname() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", service("ext", cluster_ip="", type="ExternalName", externalName="db.example.org"))
    z.apply_event(
        "ADDED", service("alias", cluster_ip="", type="ExternalName", externalName="real.default.svc.cluster.local")
    )
    z.apply_event("ADDED", service("real", cluster_ip="10.96.0.40"))
    reply = ask(z, "ext.default.svc.cluster.local")
    assert reply.header.rcode == RCODE.NOERROR
    assert [(rr.rtype, str(rr.rdata)) for rr in reply.rr] == [(QTYPE.CNAME, "db.example.org.")]
    chased = ask(z, "alias.default.svc.cluster.local")
    assert [(rr.rtype, str(rr.rname), str(rr.rdata)) for rr in chased.rr] == [
        (QTYPE.CNAME, "alias.default.svc.cluster.local.", "real.default.svc.cluster.local."),
        (QTYPE.A, "real.default.svc.cluster.local.", "10.96.0.40"),
    ]
    assert answers(ask(z, "ext.default.svc.cluster.local", "CNAME")) == ["db.example.org."]


def test_cname_loop_is_servfail() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", service("a", cluster_ip="", type="ExternalName", externalName="b.default.svc.cluster.local"))
    z.apply_event("ADDED", service("b", cluster_ip="", type="ExternalName", externalName="a.default.svc.cluster.local"))
    assert ask(z, "a.default.svc.cluster.local").header.rcode == RCODE.SERVFAIL


# ---- SRV ---------------------------------------------------------------------------------


def test_srv_of_named_ports_points_at_the_service(zone: ClusterZone) -> None:
    reply = ask(zone, "_http._tcp.httpbin.demo.svc.cluster.local", "SRV")
    [srv] = reply.rr
    assert (srv.rdata.port, str(srv.rdata.target), srv.ttl) == (8000, "httpbin.demo.svc.cluster.local.", 5)
    assert [(str(rr.rname), str(rr.rdata)) for rr in reply.ar] == [("httpbin.demo.svc.cluster.local.", "10.96.0.20")]
    udp = ask(zone, "_dns._udp.dns.kube-system.svc.cluster.local", "SRV")
    assert [rr.rdata.port for rr in udp.rr] == [53]


def test_srv_needs_the_right_protocol_and_a_port_name(zone: ClusterZone) -> None:
    assert is_nxdomain_with_soa(ask(zone, "_http._udp.httpbin.demo.svc.cluster.local", "SRV"))
    assert is_nxdomain_with_soa(ask(zone, "_dns-tcp._udp.dns.kube-system.svc.cluster.local", "SRV"))
    assert is_nodata(ask(zone, "_http._tcp.httpbin.demo.svc.cluster.local", "A"))


def test_headless_srv_lists_each_ready_endpoint(zone: ClusterZone) -> None:
    reply = ask(zone, "_pg._tcp.db.demo.svc.cluster.local", "SRV")
    assert sorted((rr.rdata.port, str(rr.rdata.target)) for rr in reply.rr) == [
        (15432, "10-244-1-7.db.demo.svc.cluster.local."),
        (15432, "db-0.db.demo.svc.cluster.local."),
    ]
    assert sorted(str(rr.rdata) for rr in reply.ar) == ["10.244.0.5", "10.244.1.7"]


# ---- headless ----------------------------------------------------------------------------


def test_headless_service_answers_ready_endpoint_addresses(zone: ClusterZone) -> None:
    assert answers(ask(zone, "db.demo.svc.cluster.local")) == ["10.244.0.5", "10.244.1.7"]


def test_headless_endpoint_names(zone: ClusterZone) -> None:
    assert answers(ask(zone, "db-0.db.demo.svc.cluster.local")) == ["10.244.0.5"]
    assert answers(ask(zone, "10-244-1-7.db.demo.svc.cluster.local")) == ["10.244.1.7"]
    assert is_nxdomain_with_soa(ask(zone, "db-2.db.demo.svc.cluster.local"))  # not ready


def test_endpoint_hostnames_only_for_headless_services() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", service("web"))
    z.apply_event("ADDED", endpoints("web", subsets=[{"addresses": [{"ip": "10.244.0.8", "hostname": "w"}]}]))
    assert answers(ask(z, "web.default.svc.cluster.local")) == ["10.96.0.20"]
    assert is_nxdomain_with_soa(ask(z, "w.web.default.svc.cluster.local"))


def test_headless_addresses_merge_subsets_without_duplicates() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", service("h", cluster_ip="None"))
    z.apply_event(
        "ADDED",
        endpoints(
            "h",
            subsets=[
                {"addresses": [{"ip": "10.244.0.2"}], "ports": [{"name": "a", "port": 1}]},
                {"addresses": [{"ip": "10.244.0.2"}, {"ip": "10.244.0.3"}], "ports": [{"name": "b", "port": 2}]},
            ],
        ),
    )
    assert answers(ask(z, "h.default.svc.cluster.local")) == ["10.244.0.2", "10.244.0.3"]
    assert len(ask(z, "_b._tcp.h.default.svc.cluster.local", "SRV").rr) == 2


def test_headless_service_without_endpoints_is_nodata() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", service("lonely", cluster_ip="None"))
    assert is_nodata(ask(z, "lonely.default.svc.cluster.local"))


# ---- pods --------------------------------------------------------------------------------


def test_pod_a_record_by_dashed_ip(zone: ClusterZone) -> None:
    assert answers(ask(zone, "10-244-0-3.demo.pod.cluster.local")) == ["10.244.0.3"]
    assert is_nodata(ask(zone, "10-244-0-3.demo.pod.cluster.local", "AAAA"))


def test_pod_records_are_verified_against_pods(zone: ClusterZone) -> None:
    assert is_nxdomain_with_soa(ask(zone, "10-244-0-3.other.pod.cluster.local"))
    assert is_nxdomain_with_soa(ask(zone, "10-244-0-99.demo.pod.cluster.local"))


def test_pods_without_ip_or_finished_have_no_record() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", pod("pending", None))
    z.apply_event("ADDED", pod("done", "10.244.0.9", phase="Succeeded"))
    assert is_nxdomain_with_soa(ask(z, "10-244-0-9.default.pod.cluster.local"))


# ---- changes -----------------------------------------------------------------------------


def test_modify_and_delete_service(zone: ClusterZone) -> None:
    assert zone.apply_event("MODIFIED", service("httpbin", "demo", "10.96.0.21"))
    assert answers(ask(zone, "httpbin.demo.svc.cluster.local")) == ["10.96.0.21"]
    assert zone.apply_event("DELETED", service("httpbin", "demo"))
    assert is_nxdomain_with_soa(ask(zone, "httpbin.demo.svc.cluster.local"))
    assert not zone.apply_event("DELETED", service("httpbin", "demo"))  # already gone


def test_delete_endpoints_and_pods(zone: ClusterZone) -> None:
    zone.apply_event("DELETED", endpoints("db", "demo"))
    assert is_nodata(ask(zone, "db.demo.svc.cluster.local"))
    assert is_nxdomain_with_soa(ask(zone, "db-0.db.demo.svc.cluster.local"))
    zone.apply_event("DELETED", pod("httpbin-1", None, "demo"))
    assert is_nxdomain_with_soa(ask(zone, "10-244-0-3.demo.pod.cluster.local"))


def test_last_service_of_a_namespace_takes_the_namespace_name_along() -> None:
    z = ClusterZone()
    z.apply_event("ADDED", service("only", "solo"))
    assert is_nodata(ask(z, "solo.svc.cluster.local"))
    z.apply_event("DELETED", service("only", "solo"))
    assert is_nxdomain_with_soa(ask(z, "solo.svc.cluster.local"))


def test_soa_serial_moves_with_changes(zone: ClusterZone) -> None:
    before = ask(zone, "cluster.local", "SOA").rr[0].rdata.times[0]
    zone.apply_event("ADDED", service("new"))
    assert ask(zone, "cluster.local", "SOA").rr[0].rdata.times[0] > before


def test_junk_objects_are_ignored() -> None:
    z = ClusterZone()
    for event, obj in [
        ("ADDED", None),
        ("ADDED", "text"),
        ("ADDED", {"kind": "Deployment"}),
        ("ADDED", {"kind": "Service", "metadata": {}}),
        ("BOOKMARK", service("x")),
    ]:
        assert not z.apply_event(event, obj)
    z.apply_event(
        "ADDED", {"kind": "Service", "metadata": {"name": "bad"}, "spec": {"clusterIP": "not-an-ip", "ports": "nope"}}
    )
    z.apply_event("ADDED", {"kind": "Service", "metadata": {"name": "h"}, "spec": {"clusterIP": "None"}})
    z.apply_event(
        "ADDED",
        {
            "kind": "Endpoints",
            "metadata": {"name": "h"},
            "subsets": [
                {
                    "addresses": [{"ip": 7}, "x", {"ip": "10.244.0.1", "hostname": "a.b"}],
                    "ports": [{"name": "p", "port": "80"}, None],
                }
            ],
        },
    )
    z.apply_event("ADDED", {"kind": "Pod", "metadata": {"name": "p"}, "status": {"podIPs": "bad"}})
    assert is_nodata(ask(z, "bad.default.svc.cluster.local"))
    assert answers(ask(z, "h.default.svc.cluster.local")) == ["10.244.0.1"]
    assert answers(ask(z, "10-244-0-1.h.default.svc.cluster.local")) == ["10.244.0.1"]  # bad hostname
    assert z.counts() == {"Service": 2, "Endpoints": 1, "Pod": 1}


# ---- request handling --------------------------------------------------------------------


def test_any_returns_every_record_of_a_name() -> None:
    z = ClusterZone()
    reply = ask(z, "cluster.local", "ANY")
    assert sorted(rr.rtype for rr in reply.rr) == sorted([QTYPE.SOA, QTYPE.NS])


def test_rejections(zone: ClusterZone) -> None:
    notify = DNSRecord(DNSHeader(opcode=OPCODE.NOTIFY), q=DNSQuestion("cluster.local"))
    assert zone.answer(notify).header.rcode == RCODE.NOTIMP
    assert zone.answer(DNSRecord(DNSHeader())).header.rcode == RCODE.FORMERR
    chaos = DNSRecord(q=DNSQuestion("version.bind", QTYPE.TXT, CLASS.CH))
    assert zone.answer(chaos).header.rcode == RCODE.REFUSED
    assert zone.answer(DNSRecord.question("cluster.local", "AXFR")).header.rcode == RCODE.REFUSED


def test_reply_mirrors_id_and_rd() -> None:
    query = DNSRecord(DNSHeader(id=4242, bitmap=0), q=DNSQuestion("cluster.local", QTYPE.SOA))
    reply = ClusterZone().answer(query)
    assert (reply.header.id, reply.header.rd, reply.header.ra, reply.header.qr) == (4242, 0, 1, 1)


def test_respond_formerr_for_garbage_and_drops_what_is_not_a_query(zone: ClusterZone) -> None:
    query = DNSRecord.question("httpbin.demo.svc.cluster.local")
    wire = query.pack()
    reply = DNSRecord.parse(zone.respond(wire, udp=True))
    assert answers(reply) == ["10.96.0.20"] and reply.header.id == query.header.id
    garbage = wire[:12] + b"\xff" * 8
    bad = DNSRecord.parse(zone.respond(garbage, udp=True))
    assert bad.header.rcode == RCODE.FORMERR and bad.header.id == query.header.id and bad.header.qr == 1
    assert zone.respond(b"\x00\x01\x02", udp=True) is None
    assert zone.respond(zone.respond(wire, udp=True), udp=True) is None  # a response: never answer it


def _big_headless_zone() -> ClusterZone:
    z = ClusterZone()
    z.apply_event("ADDED", service("big", cluster_ip="None"))
    z.apply_event("ADDED", endpoints("big", subsets=[{"addresses": [{"ip": f"10.244.0.{i}"} for i in range(2, 60)]}]))
    return z


def test_udp_truncates_large_answers_tcp_does_not() -> None:
    z = _big_headless_zone()
    wire = DNSRecord.question("big.default.svc.cluster.local").pack()
    udp = DNSRecord.parse(z.respond(wire, udp=True))
    assert udp.header.tc == 1 and not udp.rr and len(udp.questions) == 1
    tcp = DNSRecord.parse(z.respond(wire, udp=False))
    assert tcp.header.tc == 0 and len(tcp.rr) == 58


def test_edns_raises_the_udp_limit_and_is_echoed() -> None:
    z = _big_headless_zone()
    query = DNSRecord.question("big.default.svc.cluster.local")
    query.add_ar(EDNS0(udp_len=4096))
    reply = DNSRecord.parse(z.respond(query.pack(), udp=True))
    assert reply.header.tc == 0 and len(reply.rr) == 58
    [opt] = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    assert opt.rclass == 1232


def test_unknown_edns_version_is_badvers() -> None:
    query = DNSRecord.question("cluster.local")
    query.add_ar(EDNS0(udp_len=1232, version=1))
    reply = ClusterZone().answer(query)
    [opt] = reply.ar
    assert reply.header.rcode == 0 and (opt.ttl >> 24) == 1 and not reply.rr  # ext rcode 16
