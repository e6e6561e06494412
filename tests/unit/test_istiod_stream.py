"""The sans-IO parts of istiod's two ops: the CA decision and the config stream's deltas."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio
import trio.testing

from mesh.contract import ADDRESS, AUTHORIZATION
from mesh.identity.ca import RootCA, make_csr, verify_chain
from mesh.identity.caller import Caller
from mesh.identity.spiffe import Identity
from mesh.istiod.ca import CertificateRequest, Refused, issue
from mesh.istiod.client import ConfigCache
from mesh.istiod.translate import Versioned, versioned
from mesh.istiod.xds import BadRequest, ConfigPublisher, delta_messages, parse_known

ROOT = RootCA.generate()
ZTUNNEL = Caller("ztunnel-w1", "uid-z", "istio-system", "ztunnel")
HTTPBIN = Identity("cluster.local", "demo", "httpbin")


def pod(name: str, ns: str, sa: str, node: str, uid: str | None = None, phase: str = "Running") -> dict:
    return {
        "metadata": {"name": name, "namespace": ns, "uid": uid or f"uid-{name}"},
        "spec": {"nodeName": node, "serviceAccountName": sa},
        "status": {"phase": phase},
    }


PODS = [
    pod("ztunnel-w1", "istio-system", "ztunnel", "worker1", "uid-z"),
    pod("httpbin-1", "demo", "httpbin", "worker1"),
]


def request(identity: Identity | None = None, **fields) -> CertificateRequest:
    _, csr = make_csr(identity or HTTPBIN)
    message = {"token": "t", "csr": csr, **fields}
    if identity:
        message["impersonatedIdentity"] = str(identity)
    return CertificateRequest.parse(message)


# ---- CreateCertificate ------------------------------------------------------------------------------


def test_issue_for_an_impersonated_identity_on_the_node():
    identity, chain = issue(request(HTTPBIN), ZTUNNEL, PODS, ROOT)
    assert identity == HTTPBIN
    assert verify_chain(chain, ROOT.cert_pem) == [HTTPBIN]
    assert chain[-1] == ROOT.cert_pem


def test_issue_defaults_to_24_hours():
    assert request().validity == timedelta(hours=24)
    assert request(validitySeconds=3600).validity == timedelta(hours=1)


@pytest.mark.parametrize(
    "fields, pods, client_message, reason",
    [
        (
            {"impersonatedIdentity": "spiffe://cluster.local/ns/demo/sa/sleep"},
            PODS,
            "request impersonation authentication failure",
            'no instances of "demo/sleep" found on node "worker1"',
        ),
        (
            {"impersonatedIdentity": "spiffe://cluster.local/demo/httpbin"},
            PODS,
            "request impersonation authentication failure",
            "invalid SPIFFE identity",
        ),
        (
            {"impersonatedIdentity": str(HTTPBIN)},
            [pod("ztunnel-w1", "istio-system", "ztunnel", "worker1", "uid-old"), PODS[1]],
            "request impersonation authentication failure",
            "UID does not match",
        ),
        (
            {"impersonatedIdentity": str(HTTPBIN)},
            [PODS[0], pod("httpbin-1", "demo", "httpbin", "worker1", phase="Failed")],
            "request impersonation authentication failure",
            "no instances",
        ),
        ({"validitySeconds": 91 * 86400}, PODS, "CSR signing error", "greater than the max allowed TTL"),
    ],
)
def test_issue_refusals(fields, pods, client_message, reason):
    _, csr = make_csr(HTTPBIN)
    with pytest.raises(Refused) as refused:
        issue(CertificateRequest.parse({"token": "t", "csr": csr, **fields}), ZTUNNEL, pods, ROOT)
    assert refused.value.client_message.startswith(client_message)
    assert reason in refused.value.reason


@pytest.mark.parametrize(
    "message", [{"csr": ""}, {"csr": "x", "validitySeconds": "1d"}, {"csr": "x", "validitySeconds": float("nan")}]
)
def test_malformed_requests(message):
    with pytest.raises(Refused):
        CertificateRequest.parse(message)


# ---- Subscribe ------------------------------------------------------------------------------------


def resources(**by_type: dict[str, dict]) -> dict[str, dict[str, Versioned]]:
    return {t: {name: versioned(r) for name, r in items.items()} for t, items in by_type.items()}


def test_delta_messages_policies_first_and_only_differences():
    old = resources(Address={"a": {"x": 1}, "b": {"x": 2}}, Authorization={"p": {"y": 1}})
    new = resources(Address={"a": {"x": 1}, "c": {"x": 3}}, Authorization={"p": {"y": 2}})
    messages = delta_messages(old, new)
    assert [m["type"] for m in messages] == [AUTHORIZATION, ADDRESS]
    assert messages[1] == {
        "type": ADDRESS,
        "removed": ["b"],
        "resources": [{"name": "c", "version": new[ADDRESS]["c"].version, "resource": {"x": 3}}],
    }
    assert delta_messages(new, new) == []
    known = parse_known({t: {n: r.version for n, r in items.items()} for t, items in new.items()})
    assert delta_messages(known, new) == []


@pytest.mark.parametrize("known", [[], {"Address": []}, {"Address": {"a": 1}}])
def test_parse_known_refuses_other_shapes(known):
    with pytest.raises(BadRequest):
        parse_known(known)


def test_config_cache_follows_the_stream():
    cache = ConfigCache()
    new = resources(Address={"a": {"x": 1}, "b": {"x": 2}}, Authorization={})
    for message in delta_messages({}, new):
        cache.apply(message)
    assert not cache.synced
    cache.apply({"type": "SYNCED"})
    assert cache.synced and cache.resources[ADDRESS] == {"a": {"x": 1}, "b": {"x": 2}}
    [removal] = delta_messages(new, resources(Address={"a": {"x": 1}}))
    assert cache.apply(removal) == ([], ["b"])
    assert cache.known() == {AUTHORIZATION: {}, ADDRESS: {"a": new[ADDRESS]["a"].version}}


async def test_publisher_wakes_waiters_with_the_newest_state():
    publisher = ConfigPublisher()
    first, second = resources(Address={}), resources(Address={"a": {}})
    got = []

    async def waiter():
        got.append(await publisher.next(None))
        got.append(await publisher.next(got[-1]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        publisher.publish(first)
        await trio.testing.wait_all_tasks_blocked()
        publisher.publish(resources(Address={"skipped": {}}))
        publisher.publish(second)  # a slow reader sees only the newest
    assert got == [first, second]
