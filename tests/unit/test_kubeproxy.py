"""lab.runtime.kubeproxy: Services + Endpoints -> nft script (pure; tests/integration/test_network.py feeds the
SCENARIOS below to `nft -c` and applies them to real nodes)."""

from __future__ import annotations

import random
import re

import pytest

from lab.runtime import kubeproxy

VIP = "10.96.0.100"


def service(name, ports, cluster_ip=VIP, namespace="default", **spec):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": cluster_ip, "ports": ports, **spec},
    }


def endpoints(name, ips, ports, namespace="default", not_ready=()):
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace},
        "subsets": [
            {
                "addresses": [{"ip": ip} for ip in ips],
                "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                "ports": ports,
            }
        ],
    }


HTTP = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
HTTP_EP = {"name": "http", "port": 8080, "protocol": "TCP"}
DNS_UDP = {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}
DNS_UDP_EP = {"name": "dns", "port": 5353, "protocol": "UDP"}

SCENARIOS = {
    "one-endpoint": ([service("web", [HTTP])], [endpoints("web", ["10.244.0.10"], [HTTP_EP])]),
    "three-endpoints": (
        [service("web", [HTTP])],
        [endpoints("web", ["10.244.1.12", "10.244.0.11", "10.244.1.13"], [HTTP_EP])],
    ),
    "no-endpoints": ([service("web", [HTTP])], [endpoints("web", [], [HTTP_EP], not_ready=["10.244.0.11"])]),
    "named-target-port": (
        [service("web", [{"name": "http", "port": 80, "targetPort": "web"}])],
        [endpoints("web", ["10.244.0.11"], [{"name": "http", "port": 9090}])],
    ),
    "headless": ([service("db", [HTTP], cluster_ip="None")], [endpoints("db", ["10.244.0.11"], [HTTP_EP])]),
    "udp": (
        [service("kube-dns", [DNS_UDP], cluster_ip="10.96.0.10", namespace="kube-system")],
        [endpoints("kube-dns", ["10.244.1.12"], [DNS_UDP_EP], namespace="kube-system")],
    ),
    "empty": ([], []),
}


def render(name: str) -> str:
    return kubeproxy.render(*SCENARIOS[name])


def chains(script: str) -> dict[str, list[str]]:
    """{chain name: [rule, ...]} of the final `table ip kube_proxy {...}` block."""
    body = script.split("table ip kube_proxy {\n", 1)[1]
    return {
        name: [r.strip() for r in rules.strip().splitlines()]
        for name, rules in re.findall(r"\tchain (\S+) \{\n(.*?)\t\}\n", body, re.S)
    }


def goto_targets(rule: str) -> list[str]:
    return re.findall(r"goto (\S+?)(?:,| \}|$)", rule)


def dnat_targets(script: str) -> set[str]:
    return set(re.findall(r"dnat to (\S+)", script))


def test_script_recreates_the_table_in_one_transaction():
    lines = render("one-endpoint").splitlines()
    assert lines[:3] == ["table ip kube_proxy {}", "delete table ip kube_proxy", "table ip kube_proxy {"]
    assert lines[-1] == "}"


def test_base_chains_hook_dnat_and_masquerade_marked_packets():
    c = chains(render("one-endpoint"))
    assert c["prerouting"] == ["type nat hook prerouting priority dstnat; policy accept;", "jump services"]
    assert c["output"] == ["type nat hook output priority -100; policy accept;", "jump services"]
    assert c["postrouting"] == [
        "type nat hook postrouting priority srcnat; policy accept;",
        "meta mark & 0x4000 == 0 return",
        "meta mark set meta mark ^ 0x4000",
        "masquerade fully-random",
    ]


def test_one_endpoint():
    c = chains(render("one-endpoint"))
    dispatch, catch_all = c["services"]
    assert dispatch.startswith(f"ip daddr {VIP} tcp dport 80 goto svc-")
    assert catch_all == f"ip daddr {{ {VIP} }} reject"
    (svc_chain,) = goto_targets(dispatch)
    assert svc_chain.endswith("-default/web/tcp/http")
    (pick,) = c[svc_chain]
    assert pick.startswith("numgen random mod 1 vmap { 0 : goto sep-")
    (sep,) = goto_targets(pick)
    assert c[sep] == [
        "ip saddr 10.244.0.10 meta mark set meta mark | 0x4000",
        "meta l4proto tcp dnat to 10.244.0.10:8080",
    ]


def test_three_endpoints_are_picked_uniformly_in_a_stable_order():
    c = chains(render("three-endpoints"))
    (svc_chain,) = goto_targets(c["services"][0])
    (pick,) = c[svc_chain]
    assert pick.startswith("numgen random mod 3 vmap { 0 : goto ")
    seps = goto_targets(pick)
    assert [c[s][1].rsplit(" ", 1)[1] for s in seps] == ["10.244.0.11:8080", "10.244.1.12:8080", "10.244.1.13:8080"]
    for sep in seps:
        ip = c[sep][1].rsplit(" ", 1)[1].split(":")[0]
        assert c[sep][0] == f"ip saddr {ip} meta mark set meta mark | 0x4000"


def test_service_port_without_ready_endpoints_rejects():
    script = render("no-endpoints")
    c = chains(script)
    (svc_chain,) = goto_targets(c["services"][0])
    assert c[svc_chain] == ["reject with tcp reset"]
    assert "10.244.0.11" not in script  # a not-ready address gets no traffic
    assert not dnat_targets(script)


def test_missing_endpoints_object_rejects_too():
    c = chains(kubeproxy.render([service("web", [HTTP])], []))
    (svc_chain,) = goto_targets(c["services"][0])
    assert c[svc_chain] == ["reject with tcp reset"]


def test_named_target_port_resolves_through_endpoints_port_names():
    assert dnat_targets(render("named-target-port")) == {"10.244.0.11:9090"}


def test_named_target_port_matches_an_endpoints_port_named_like_the_container_port():
    svc = service("web", [{"port": 80, "targetPort": "web"}])
    eps = endpoints("web", ["10.244.0.11"], [{"name": "metrics", "port": 9100}, {"name": "web", "port": 8000}])
    assert dnat_targets(kubeproxy.render([svc], [eps])) == {"10.244.0.11:8000"}


def test_numeric_target_port_without_endpoints_ports_is_used_as_is():
    svc = service("web", [{"port": 80, "targetPort": "8080"}])  # IntOrString as a string
    eps = endpoints("web", ["10.244.0.11"], [])
    assert dnat_targets(kubeproxy.render([svc], [eps])) == {"10.244.0.11:8080"}


def test_multi_port_service_takes_each_endpoint_port_by_name():
    svc = service("web", [HTTP, {"name": "admin", "port": 81, "targetPort": 9000}])
    eps = endpoints("web", ["10.244.0.11"], [{"name": "admin", "port": 9000}, HTTP_EP])
    script = kubeproxy.render([svc], [eps])
    assert dnat_targets(script) == {"10.244.0.11:8080", "10.244.0.11:9000"}
    assert f"ip daddr {VIP} tcp dport 81 goto svc-" in script


@pytest.mark.parametrize("cluster_ip", ["None", "", None])
def test_headless_and_unallocated_services_get_no_rules(cluster_ip):
    svc = service("db", [HTTP], cluster_ip=cluster_ip)
    c = chains(kubeproxy.render([svc], [endpoints("db", ["10.244.0.11"], [HTTP_EP])]))
    assert set(c) == {"prerouting", "output", "postrouting", "services"}
    assert c["services"] == []


def test_external_name_service_gets_no_rules():
    svc = service("ext", [HTTP], cluster_ip="", type="ExternalName", externalName="example.org")
    assert chains(kubeproxy.render([svc], []))["services"] == []


def test_udp():
    script = render("udp")
    c = chains(script)
    assert c["services"][0].startswith("ip daddr 10.96.0.10 udp dport 53 goto svc-")
    assert "meta l4proto udp dnat to 10.244.1.12:5353" in script
    no_eps = chains(kubeproxy.render(SCENARIOS["udp"][0], []))
    (svc_chain,) = goto_targets(no_eps["services"][0])
    assert no_eps[svc_chain] == ["reject"]  # ICMP port unreachable: a UDP client's ECONNREFUSED


def test_endpoints_of_another_protocol_do_not_serve_a_port():
    svc = service("dns", [DNS_UDP])
    eps = endpoints("dns", ["10.244.0.11"], [{"name": "dns", "port": 5353, "protocol": "TCP"}])
    assert not dnat_targets(kubeproxy.render([svc], [eps]))


def test_output_is_deterministic_and_independent_of_input_order():
    svcs = [service(f"s{i}", [HTTP], cluster_ip=f"10.96.0.{i}") for i in range(1, 6)]
    eps = [endpoints(f"s{i}", [f"10.244.0.{i}", f"10.244.1.{i}"], [HTTP_EP]) for i in range(1, 6)]
    first = kubeproxy.render(svcs, eps)
    shuffled_svcs, shuffled_eps = svcs[:], eps[:]
    random.Random(1).shuffle(shuffled_svcs)
    random.Random(2).shuffle(shuffled_eps)
    assert kubeproxy.render(shuffled_svcs, shuffled_eps) == first


def test_chain_names_are_valid_unique_nft_identifiers():
    svcs = [
        service("a-b", [HTTP], cluster_ip="10.96.0.1"),
        service("a", [HTTP], cluster_ip="10.96.0.2", namespace="b-default"),
    ]
    eps = [
        endpoints("a-b", ["10.244.0.1"], [HTTP_EP]),
        endpoints("a", ["10.244.0.1"], [HTTP_EP], namespace="b-default"),
    ]
    names = list(chains(kubeproxy.render(svcs, eps)))
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_./\-]*", name) and len(name) <= 200


def test_chain_names_stay_short_for_long_object_names():
    long = "x" * 63
    svc = service(long, [{"name": "p" * 15, "port": 80}], namespace=long)
    names = chains(
        kubeproxy.render([svc], [endpoints(long, ["10.244.0.1"], [{"name": "p" * 15, "port": 80}], namespace=long)])
    )
    assert all(len(n) <= kubeproxy.MAX_CHAIN_NAME for n in names)


def test_other_ports_of_a_cluster_ip_are_rejected_after_the_service_ports():
    c = chains(kubeproxy.render(*SCENARIOS["udp"]))
    assert c["services"][-1] == "ip daddr { 10.96.0.10 } reject"


@pytest.mark.parametrize(
    "bad",
    [
        {"cluster_ip": "10.96.0.300"},
        {"cluster_ip": "10.96.0.1; flush ruleset"},
        {"ports": [{"port": 0}]},
        {"ports": [{"port": "80; drop"}]},
        {"ports": [{"port": 80, "protocol": "ICMP"}]},
    ],
)
def test_invalid_objects_never_reach_the_script(bad):
    svc = service("web", bad.get("ports", [HTTP]), cluster_ip=bad.get("cluster_ip", VIP))
    with pytest.raises(ValueError):
        kubeproxy.render([svc], [])


def test_invalid_endpoint_address_is_refused():
    with pytest.raises(ValueError):
        kubeproxy.render([service("web", [HTTP])], [endpoints("web", ["10.244.0.1 } ; flush ruleset"], [HTTP_EP])])


def test_table_name_must_be_an_identifier():
    assert "table ip kp2 {" in kubeproxy.render([], [], table="kp2")
    with pytest.raises(ValueError):
        kubeproxy.render([], [], table="kube proxy")
