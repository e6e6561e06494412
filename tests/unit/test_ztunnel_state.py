"""ztunnel's config state: applying istiod's pushes, lookups, endpoint choice, policies (pure)."""

from __future__ import annotations

import pytest
import trio

from mesh.ztunnel.resources import GatewayAddress, InvalidResource, Service, Workload
from mesh.ztunnel.state import ProxyState, StateHandle
from mesh.ztunnel.testing import address_push, authorization, authorization_push, service, workload

HTTPBIN = "default/httpbin.default.svc.cluster.local"


def first(options):
    return options[0]


def last(options):
    return options[-1]


def mesh(*extra) -> ProxyState:
    state = ProxyState()
    problems = state.apply(
        address_push(
            workload("sleep-1", "10.244.1.5"),
            workload("httpbin-1", "10.244.1.7", services={HTTPBIN: {8000: 80}}),
            workload("httpbin-2", "10.244.2.7", services={HTTPBIN: {8000: 8080}}),
            service("httpbin", "10.96.0.20", {8000: 80}),
            *extra,
        )
    )
    assert problems == []
    return state


def test_workload_defaults_follow_ztunnel():
    wl = Workload.from_xds({"uid": "u", "name": "n", "namespace": "ns", "trustDomain": "", "serviceAccount": ""})
    assert wl.identity == "spiffe://cluster.local/ns/ns/sa/default"
    assert wl.protocol == "TCP" and wl.healthy


def test_lookups_by_ip_vip_and_info():
    state = mesh()
    sleep = state.find_workload_by_ip("10.244.1.5")
    assert sleep.name == "sleep-1" and sleep.identity == "spiffe://cluster.local/ns/default/sa/sleep"
    assert state.find_workload_by_info("sleep-1", "default", "sleep") is sleep
    assert state.find_workload_by_info("sleep-1", "default", "other") is None
    assert state.find_service_by_vip("10.96.0.20").hostname == "httpbin.default.svc.cluster.local"
    assert state.find_workload_by_ip("10.96.0.20") is None


def test_service_vip_picks_a_healthy_endpoint_and_its_target_port():
    state = mesh()
    sleep = state.find_workload_by_ip("10.244.1.5")
    picks = {state.find_upstream(sleep, "10.96.0.20", 8000, rng).ip for rng in (first, last)}
    assert picks == {"10.244.1.7", "10.244.2.7"}
    up = state.find_upstream(sleep, "10.96.0.20", 8000, last)
    assert (up.ip, up.port, up.service.name) == ("10.244.2.7", 8080, "httpbin")  # the endpoint's own mapping
    assert up.sans == ("spiffe://cluster.local/ns/default/sa/httpbin",)


def test_unhealthy_and_portless_endpoints_are_skipped():
    state = mesh(workload("httpbin-2", "10.244.2.7", services={HTTPBIN: {8000: 8080}}, status="Unhealthy"))
    sleep = state.find_workload_by_ip("10.244.1.5")
    for rng in (first, last):
        assert state.find_upstream(sleep, "10.96.0.20", 8000, rng).ip == "10.244.1.7"
    assert state.find_upstream(sleep, "10.96.0.20", 9999) is None  # not a port of the service


def test_no_healthy_endpoint_gives_none():
    state = mesh(
        workload("httpbin-1", "10.244.1.7", services={HTTPBIN: {8000: 80}}, status="Unhealthy"),
        workload("httpbin-2", "10.244.2.7", services={HTTPBIN: {8000: 8080}}, status="Unhealthy"),
    )
    sleep = state.find_workload_by_ip("10.244.1.5")
    assert state.find_upstream(sleep, "10.96.0.20", 8000) is None


def test_pod_ip_goes_to_that_pod_and_unknown_ips_to_nobody():
    state = mesh()
    sleep = state.find_workload_by_ip("10.244.1.5")
    up = state.find_upstream(sleep, "10.244.1.7", 80)
    assert (up.workload.name, up.ip, up.port, up.service) == ("httpbin-1", "10.244.1.7", 80, None)
    assert state.find_upstream(sleep, "1.1.1.1", 443) is None


def test_shared_vip_prefers_the_clients_namespace():
    state = mesh(
        service("httpbin", "10.96.0.20", {8000: 80}, namespace="other"),
        workload(
            "httpbin-x", "10.244.3.3", namespace="other", services={"other/httpbin.other.svc.cluster.local": {8000: 80}}
        ),
    )
    assert state.find_service_by_vip("10.96.0.20", "other").namespace == "other"
    assert state.find_service_by_vip("10.96.0.20", "default").namespace == "default"


def test_host_network_workloads_are_not_found_by_ip():
    state = mesh(workload("ztunnel-abc", "172.18.0.10", network_mode="HOST_NETWORK", protocol="TCP"))
    assert state.find_workload_by_ip("172.18.0.10") is None


def test_updates_and_removals_reindex():
    state = mesh()
    state.apply(address_push(workload("httpbin-1", "10.244.1.8", services={HTTPBIN: {8000: 80}}), version="2"))
    assert state.find_workload_by_ip("10.244.1.7") is None
    assert state.find_workload_by_ip("10.244.1.8").name == "httpbin-1"
    state.apply(address_push(removed=["Kubernetes//Pod/default/httpbin-2", HTTPBIN]))
    assert state.find_workload_by_ip("10.244.2.7") is None
    assert state.find_service_by_vip("10.96.0.20") is None
    assert state.known()["Address"] == {
        "Kubernetes//Pod/default/sleep-1": "1",
        "Kubernetes//Pod/default/httpbin-1": "2",
    }


def test_a_bad_resource_is_reported_and_the_rest_applies():
    state = ProxyState()
    push = address_push(workload("sleep-1", "10.244.1.5"))
    push["resources"].append({"name": "broken", "version": "1", "resource": {"workload": {"name": "x"}}})
    problems = state.apply(push)
    assert len(problems) == 1 and "broken" in problems[0]
    assert state.find_workload_by_ip("10.244.1.5") is not None
    assert state.apply({"type": "Nonsense"}) == ["unknown resource type 'Nonsense'"]


def test_policies_for_a_workload():
    state = mesh(workload("httpbin-1", "10.244.1.7", policies=["default/only-sleep"]))
    state.apply(
        authorization_push(
            authorization("only-sleep", "default", "ALLOW", ["cluster.local/ns/default/sa/sleep"]),
            authorization("ns-wide", "default", "DENY", ["cluster.local/ns/x/sa/y"], scope="NAMESPACE"),
            authorization("elsewhere", "other", "DENY", ["cluster.local/ns/x/sa/y"], scope="NAMESPACE"),
            authorization("global", "istio-system", "DENY", ["cluster.local/ns/x/sa/z"], scope="GLOBAL"),
            authorization("unattached", "default", "DENY", ["cluster.local/ns/x/sa/y"]),
        )
    )
    names = [p.key for p in state.policies_for(state.find_workload_by_ip("10.244.1.7"))]
    assert names == ["default/ns-wide", "istio-system/global", "default/only-sleep"]
    state.apply(authorization_push(removed=["default/only-sleep"]))
    assert "default/only-sleep" not in state.known()["Authorization"]


def test_waypoint_resolution_by_hostname_and_membership():
    state = mesh(
        workload(
            "waypoint-1",
            "10.244.1.9",
            sa="waypoint",
            services={"default/waypoint.default.svc.cluster.local": {15008: 15008}},
        ),
        service("waypoint", "10.96.0.30", {15008: 15008}),
    )
    sleep = state.find_workload_by_ip("10.244.1.5")
    gw = GatewayAddress("default/waypoint.default.svc.cluster.local", None, 15008)
    up = state.resolve_waypoint(gw, sleep)
    assert (up.ip, up.port, up.workload.service_account) == ("10.244.1.9", 15008, "waypoint")
    assert state.waypoint_members(gw) == {"Kubernetes//Pod/default/waypoint-1"}
    assert state.resolve_waypoint(GatewayAddress("default/missing.default.svc.cluster.local"), sleep) is None


def test_dump_lists_everything_with_derived_endpoints():
    state = mesh()
    dump = state.dump()
    assert [w["name"] for w in dump["workloads"]] == ["httpbin-1", "httpbin-2", "sleep-1"]
    (svc,) = dump["services"]
    assert sorted(svc["endpoints"]) == ["Kubernetes//Pod/default/httpbin-1", "Kubernetes//Pod/default/httpbin-2"]


async def test_wait_for_returns_when_the_workload_arrives():
    handle = StateHandle()

    async def arrive():
        await trio.sleep(0.05)
        handle.apply(address_push(workload("sleep-1", "10.244.1.5")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(arrive)
        found = await handle.wait_for(lambda s: s.find_workload_by_ip("10.244.1.5"), 5)
    assert found.name == "sleep-1"
    with trio.move_on_after(1):
        assert await handle.wait_for(lambda s: s.find_workload_by_ip("10.9.9.9"), 0.05) is None


@pytest.mark.parametrize("raw", [{"destination": "ns/h"}, {"address": "1.2.3.4", "hboneMtlsPort": 15009}, None])
def test_gateway_address_parsing(raw):
    wl = Workload.from_xds({"uid": "u", "name": "n", "namespace": "ns", "waypoint": raw})
    if raw is None:
        assert wl.waypoint is None
    else:
        assert wl.waypoint == GatewayAddress.from_xds(raw)
        assert wl.waypoint.hbone_mtls_port == raw.get("hboneMtlsPort", 15008)


@pytest.mark.parametrize(
    "raw, named",
    [
        ({"uid": "u", "namespace": "ns"}, "bad workload 'u': name is required"),
        ({"uid": "u", "name": "n", "namespace": "ns", "addresses": "10.0.0.1"}, "bad workload 'u': addresses"),
        ({"uid": "u", "name": "n", "namespace": "ns", "services": {"ns/h": {"x": 80}}}, "bad workload 'u': services"),
        ({"uid": "u", "name": "n", "namespace": "ns", "waypoint": "ns/w"}, "bad workload 'u': waypoint"),
        ({"uid": "u", "name": "n", "namespace": 7}, "bad workload 'u': namespace: must be a string"),
    ],
)
def test_a_bad_workload_names_its_field(raw, named):
    with pytest.raises(InvalidResource) as e:
        Workload.from_xds(raw)
    assert named in str(e.value)


def test_a_bad_service_names_its_field():
    with pytest.raises(InvalidResource, match="bad service 'h': ports.0.: servicePort is required"):
        Service.from_xds({"name": "s", "namespace": "ns", "hostname": "h", "ports": [{"targetPort": 80}]})


def test_a_bad_update_keeps_what_was_there():
    state = mesh()
    push = authorization_push(authorization("p", "default", "ALLOW", ["cluster.local/ns/default/sa/sleep"]))
    assert state.apply(push) == []
    bad = authorization_push(
        {
            **authorization("p", "default", "ALLOW"),
            "rules": [{"clauses": [{"matches": [{"sourceIps": ["nonsense"]}]}]}],
        },
        version="2",
    )
    (problem,) = state.apply(bad)
    assert problem.startswith("Authorization 'default/p': rules[0].clauses[0].matches[0].sourceIps[0]")
    assert state.known()["Authorization"] == {"default/p": "1"} and state.policies["default/p"].rules
    address = address_push(workload("sleep-1", "10.244.1.5"), version="2")
    address["resources"][0]["resource"]["workload"]["addresses"] = "10.244.1.5"
    assert len(state.apply(address)) == 1
    assert state.find_workload_by_ip("10.244.1.5").name == "sleep-1"
