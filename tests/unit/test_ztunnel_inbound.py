"""Inbound checks: the CONNECT target, the status each failure gets, the service guess (pure)."""

from __future__ import annotations

import pytest

from mesh.hbone.headers import parse_baggage, parse_connect_request
from mesh.ztunnel.inbound import InboundConnection, _status_of, check_target, guess_inbound_service, response_baggage
from mesh.ztunnel.proxy import ConnectionFailed, IpMismatch, PolicyRejection, SelfCall
from mesh.ztunnel.state import ProxyState
from mesh.ztunnel.testing import address_push, service, workload

CONN = InboundConnection("10.244.1.5", 40312, "10.244.1.7", 15008, "spiffe://cluster.local/ns/default/sa/sleep")
ILLEGAL = frozenset({15001, 15006, 15008})


def connect(authority: str):
    return parse_connect_request([(b":method", b"CONNECT"), (b":authority", authority.encode())])


def test_target_must_be_this_pod():
    check_target(CONN, connect("10.244.1.7:80"), ILLEGAL)
    with pytest.raises(IpMismatch, match="ip mismatch: 10.244.1.7 != 10.244.1.8"):
        check_target(CONN, connect("10.244.1.8:80"), ILLEGAL)
    with pytest.raises(IpMismatch):
        check_target(CONN, connect("httpbin.default.svc.cluster.local:80"), ILLEGAL)


@pytest.mark.parametrize("port", [15001, 15006, 15008])
def test_ztunnels_own_ports_are_refused(port):
    with pytest.raises(SelfCall):
        check_target(CONN, connect(f"10.244.1.7:{port}"), ILLEGAL)


def test_status_codes_follow_ztunnel():
    assert _status_of(IpMismatch("a", "b")) == 400
    assert _status_of(PolicyRejection("x", None)) == 401
    assert _status_of(SelfCall()) == 503
    assert _status_of(ConnectionFailed("refused")) == 503


def test_guess_inbound_service():
    state = ProxyState()
    key = "default/httpbin.default.svc.cluster.local"
    state.apply(
        address_push(
            workload(
                "httpbin-1",
                "10.244.1.7",
                services={key: {8000: 80}, "default/named.default.svc.cluster.local": {9000: 81}},
            ),
            service("httpbin", "10.96.0.20", {8000: 80}),
            service("named", "10.96.0.21", {9000: 0}),
        )
    )
    local = state.find_workload_by_ip("10.244.1.7")
    assert guess_inbound_service(state, local, 80, None).name == "httpbin"
    assert guess_inbound_service(state, local, 81, None).name == "named"  # via the endpoint's port map
    assert guess_inbound_service(state, local, 81, "httpbin.default.svc.cluster.local").name == "httpbin"
    assert guess_inbound_service(state, local, 9999, None) is None
    assert parse_baggage([v for _, v in response_baggage(local)])["k8s.deployment.name"] == "httpbin"
