"""Where an outbound connection goes: ztunnel's `build_request`, pure (docs/ambient-facts.md §4.3)."""

from __future__ import annotations

import pytest

from mesh.hbone.headers import parse_baggage, parse_forwarded
from mesh.ztunnel.outbound import build_request, connect_headers, request_labels
from mesh.ztunnel.proxy import NoHealthyUpstream, UnknownWaypoint
from mesh.ztunnel.state import ProxyState
from mesh.ztunnel.testing import address_push, service, workload

HTTPBIN = "default/httpbin.default.svc.cluster.local"
WAYPOINT_SVC = "default/waypoint.default.svc.cluster.local"
WAYPOINT = {"destination": WAYPOINT_SVC, "hboneMtlsPort": 15008}


def first(options):
    return options[0]


def state_with(*resources) -> tuple[ProxyState, object]:
    state = ProxyState()
    state.apply(
        address_push(
            workload("sleep-1", "10.244.1.5"),
            workload("httpbin-1", "10.244.1.7", services={HTTPBIN: {8000: 80}}),
            service("httpbin", "10.96.0.20", {8000: 80}),
            workload("legacy-1", "10.244.2.9", protocol="TCP"),
            workload("waypoint-1", "10.244.1.9", sa="waypoint", services={WAYPOINT_SVC: {15008: 15008}}),
            service("waypoint", "10.96.0.30", {15008: 15008}),
            *resources,
        )
    )
    return state, state.find_workload_by_ip("10.244.1.5")


def test_service_vip_is_hbone_to_an_endpoint():
    state, sleep = state_with()
    req = build_request(state, sleep, ("10.96.0.20", 8000), rng=first)
    assert req.protocol == "HBONE"
    assert req.actual_destination == ("10.244.1.7", 15008)
    assert req.hbone_target == "10.244.1.7:80"
    assert req.destination_workload.name == "httpbin-1"
    assert req.destination_service.hostname == "httpbin.default.svc.cluster.local"
    assert req.upstream_sans == ("spiffe://cluster.local/ns/default/sa/httpbin",)


def test_pod_ip_is_hbone_to_that_pod():
    state, sleep = state_with()
    req = build_request(state, sleep, ("10.244.1.7", 80))
    assert (req.protocol, req.actual_destination, req.hbone_target) == ("HBONE", ("10.244.1.7", 15008), "10.244.1.7:80")
    assert req.destination_service is None


def test_non_mesh_workload_is_plain_tcp():
    state, sleep = state_with()
    req = build_request(state, sleep, ("10.244.2.9", 5432))
    assert (req.protocol, req.actual_destination, req.hbone_target) == ("TCP", ("10.244.2.9", 5432), None)
    assert req.destination_workload.name == "legacy-1"


def test_unknown_destination_passes_through():
    state, sleep = state_with()
    req = build_request(state, sleep, ("93.184.216.34", 443))
    assert (req.protocol, req.actual_destination, req.destination_workload) == ("TCP", ("93.184.216.34", 443), None)


def test_service_without_healthy_endpoint_fails():
    state, sleep = state_with(workload("httpbin-1", "10.244.1.7", services={HTTPBIN: {8000: 80}}, status="Unhealthy"))
    with pytest.raises(NoHealthyUpstream, match="no healthy upstream: 10.96.0.20:8000"):
        build_request(state, sleep, ("10.96.0.20", 8000))


def test_service_with_waypoint_goes_to_the_waypoint_with_the_vip_as_authority():
    state, sleep = state_with(service("httpbin", "10.96.0.20", {8000: 80}, waypoint=WAYPOINT))
    req = build_request(state, sleep, ("10.96.0.20", 8000))
    assert req.actual_destination == ("10.244.1.9", 15008)
    assert req.hbone_target == "10.96.0.20:8000"
    assert req.upstream_sans == ("spiffe://cluster.local/ns/default/sa/waypoint",)
    assert req.destination_service.name == "httpbin"


def test_workload_waypoint_is_used_unless_we_are_the_waypoint():
    state, sleep = state_with(workload("httpbin-1", "10.244.1.7", services={HTTPBIN: {8000: 80}}, waypoint=WAYPOINT))
    req = build_request(state, sleep, ("10.244.1.7", 80))
    assert (req.actual_destination, req.hbone_target) == (("10.244.1.9", 15008), "10.244.1.7:80")
    from_waypoint = build_request(state, state.find_workload_by_ip("10.244.1.9"), ("10.244.1.7", 80))
    assert from_waypoint.actual_destination == ("10.244.1.7", 15008)


def test_missing_waypoint_fails_closed():
    gone = {"destination": "default/gone.default.svc.cluster.local"}
    state, sleep = state_with(service("httpbin", "10.96.0.20", {8000: 80}, waypoint=gone))
    with pytest.raises(UnknownWaypoint):
        build_request(state, sleep, ("10.96.0.20", 8000))


def test_connect_headers_and_labels():
    state, sleep = state_with()
    req = build_request(state, sleep, ("10.96.0.20", 8000), rng=first)
    headers = dict(connect_headers(req, ("10.244.1.5", 40312)))
    assert parse_forwarded(headers["forwarded"]) == ("10.244.1.5:40312", "httpbin.default.svc.cluster.local")
    assert parse_baggage([headers["baggage"]]) == {
        "k8s.cluster.name": "Kubernetes",
        "k8s.namespace.name": "default",
        "k8s.deployment.name": "sleep",
        "service.name": "sleep",
        "service.version": "v1",
    }
    labels = request_labels(req)
    assert labels.reporter == "source" and labels.connection_security_policy == "mutual_tls"
    assert labels.source_principal == "spiffe://cluster.local/ns/default/sa/sleep"
    assert labels.destination_principal == "spiffe://cluster.local/ns/default/sa/httpbin"
    assert labels.destination_service == "httpbin.default.svc.cluster.local"
    tcp = request_labels(build_request(state, sleep, ("10.244.2.9", 5432)))
    assert tcp.connection_security_policy == "unknown" and tcp.source_principal == "unknown"
