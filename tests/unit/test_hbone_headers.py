"""HBONE request/response headers: what ztunnel sends and how its inbound judges it. Pure."""

import re

import pytest

from mesh.hbone.headers import (
    BAD_REQUEST,
    CONNECTED,
    POLICY_DENIED,
    UPSTREAM_FAILED,
    Authority,
    BadRequest,
    connect_request,
    format_forwarded,
    hbone_headers,
    new_traceparent,
    parse_authority,
    parse_baggage,
    parse_connect_request,
    parse_forwarded,
    parse_traceparent,
    response_headers,
    response_status,
    status_text,
    workload_baggage,
)

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-00$")


def test_status_codes_are_ztunnels():
    assert (CONNECTED, BAD_REQUEST, POLICY_DENIED, UPSTREAM_FAILED) == (200, 400, 401, 503)
    assert status_text(401) == "401 Unauthorized"
    assert status_text(503) == "503 Service Unavailable"
    assert status_text(599) == "599"


def test_request_headers_in_ztunnel_order():
    baggage = workload_baggage(
        cluster="Kubernetes", namespace="ns1", workload_name="sleep", service_name="sleep", service_version="v1"
    )
    block = connect_request(
        "10.244.1.7:8080",
        hbone_headers(source="10.244.0.5:40312", service_host="httpbin.ns1.svc.cluster.local", baggage=baggage),
    )
    names = [k for k, _ in block]
    assert names == [b":method", b":authority", b"baggage", b"forwarded", b"traceparent"]
    fields = dict(block)
    assert fields[b":method"] == b"CONNECT"
    assert fields[b":authority"] == b"10.244.1.7:8080"
    assert fields[b"baggage"] == (
        b"k8s.cluster.name=Kubernetes,k8s.namespace.name=ns1,k8s.deployment.name=sleep,"
        b"service.name=sleep,service.version=v1"
    )
    assert fields[b"forwarded"] == b'for="10.244.0.5:40312";host=httpbin.ns1.svc.cluster.local'
    assert TRACEPARENT.match(fields[b"traceparent"].decode())
    assert b":scheme" not in fields and b":path" not in fields  # a plain CONNECT


def test_forwarded_without_service_and_for_ipv6():
    assert format_forwarded("10.0.0.1:5555") == 'for="10.0.0.1:5555"'
    assert (
        format_forwarded("[fd00::5]:5555", "a.b.svc.cluster.local") == 'for="[fd00::5]:5555";host=a.b.svc.cluster.local'
    )


def test_empty_baggage_fields_and_header_are_left_out():
    assert (
        workload_baggage(namespace="ns", workload_type="pod", workload_name="p")
        == "k8s.namespace.name=ns,k8s.pod.name=p"
    )
    assert [k for k, _ in hbone_headers(source="1.1.1.1:1", baggage="")] == ["forwarded", "traceparent"]


def test_traceparent_is_random_per_call_and_kept_when_given():
    first, second = new_traceparent(), new_traceparent()
    assert TRACEPARENT.match(first) and first != second
    given = "00-" + "a" * 32 + "-" + "b" * 16 + "-00"
    assert dict(hbone_headers(source="1.1.1.1:1", traceparent=given))["traceparent"] == given


@pytest.mark.parametrize(
    "authority, host, port",
    [
        ("10.244.1.7:8080", "10.244.1.7", 8080),
        ("[fd00::1]:15008", "fd00::1", 15008),
        ("reviews.default.svc.cluster.local:9080", "reviews.default.svc.cluster.local", 9080),
    ],
)
def test_authority_forms(authority, host, port):
    parsed = parse_authority(authority)
    assert parsed == Authority(host, port)
    assert str(parsed) == authority
    assert (parsed.ip is None) == host.startswith("reviews")


@pytest.mark.parametrize(
    "authority",
    [
        "",
        "10.0.0.1",
        "10.0.0.1:",
        ":80",
        "10.0.0.1:0",
        "10.0.0.1:65536",
        "10.0.0.1:http",
        "fd00::1:80",
        "[fd00::1]",
        "[nope]:80",
        "999.1.1.1:80",
        "a b:80",
        "x/y:80",
        "1.2.3.4:80/path",
    ],
)
def test_bad_authority_is_400(authority):
    with pytest.raises(BadRequest) as info:
        parse_authority(authority)
    assert info.value.status == 400


def test_building_a_request_for_a_bad_target_fails_locally():
    with pytest.raises(BadRequest):
        connect_request("not-a-target")


def test_parse_what_the_client_builds():
    block = connect_request(
        "10.244.1.7:8080",
        hbone_headers(
            source="10.244.0.5:40312",
            service_host="httpbin.ns1.svc.cluster.local",
            baggage="k8s.namespace.name=ns1,service.name=sleep",
        ),
    )
    request = parse_connect_request(block)
    assert request.authority == Authority("10.244.1.7", 8080)
    assert request.forwarded_for == "10.244.0.5:40312"
    assert request.forwarded_host == "httpbin.ns1.svc.cluster.local"
    assert request.baggage == {"k8s.namespace.name": "ns1", "service.name": "sleep"}
    assert TRACEPARENT.match(request.traceparent)
    assert request.get(":method") == "CONNECT" and request.get("Forwarded").startswith("for=")


def test_minimal_connect_is_accepted():
    request = parse_connect_request([(":method", "CONNECT"), (":authority", "10.0.0.1:80")])
    assert request.forwarded_for is None and request.baggage == {} and request.traceparent is None


@pytest.mark.parametrize(
    "headers",
    [
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"10.0.0.1:80")],
        [(b":method", b"CONNECT")],
        [(b":method", b"CONNECT"), (b":authority", b"\xff\xfe:80")],
    ],
)
def test_bad_requests_are_400(headers):
    with pytest.raises(BadRequest):
        parse_connect_request(headers)


def test_baggage_parsing_matches_ztunnel():
    assert parse_baggage(["k8s.cluster.name=K1,k8s.namespace.name=", "service.name=N2;prop=1", "junk"]) == {
        "k8s.cluster.name": "K1",
        "service.name": "N2",
    }


def test_forwarded_and_traceparent_parsing():
    assert parse_forwarded('for="10.0.0.1:5";host=a.svc, for=10.9.9.9') == ("10.0.0.1:5", "a.svc")
    assert parse_forwarded("by=x") == (None, None)
    assert parse_traceparent("00-" + "0" * 32 + "-" + "1" * 16 + "-00") is None
    assert parse_traceparent("00-ABC-1-00") is None
    assert parse_traceparent(None) is None


def test_response_headers_round_trip():
    block = response_headers(401, [("baggage", "k8s.namespace.name=ns2")])
    assert block == [(b":status", b"401"), (b"baggage", b"k8s.namespace.name=ns2")]
    assert response_status(block) == 401
    assert response_status([(b"x", b"y")]) == 0
