"""Every path through the L7 engine meets the policy it should (regressions of fail-open paths).

The engine runs in-process with istiod's real config builder; the app is an HTTP server on
127.0.0.1 reached as a workload outside the mesh; the tunnel is a memory stream.
"""

from __future__ import annotations

import json

import h11
import pytest
import trio
import trio.testing

from mesh.contract import CLUSTER, LISTENER, ROUTE_CONFIGURATION
from mesh.policy.model import AuthorizationPolicy, parse_as
from mesh.proxy import authz
from mesh.proxy.agent import AgentSettings, ProxyAgent
from mesh.proxy.engine import Engine, Tunnel
from mesh.proxy.upstream import Upstreams
from mesh.ztunnel.rbac import waypoint_identities
from mesh.ztunnel.state import ProxyState

from .test_proxy_engine import SLEEP, VIP, Static, build, next_request, serve_app, upstream_server

NS = "ambient-apps"


def policy(name: str, spec: dict) -> dict:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


SELECTOR = {"selector": {"matchLabels": {"app": "httpbin-ambient"}}}
TARGET_GATEWAY = {
    "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "httpbin-ambient-waypoint"}]
}


class Client:
    """An HTTP/1.1 client on one tunnel into the engine."""

    def __init__(self, stream) -> None:
        self.stream, self.conn = stream, h11.Connection(h11.CLIENT)

    async def send(self, method: str, target: str, headers=(), body: bytes = b"") -> tuple[int, dict, bytes]:
        hdrs = [("Host", "httpbin-ambient.ambient-apps:8000"), *headers]
        if body:
            hdrs.append(("Content-Length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        data += (self.conn.send(h11.Data(data=body)) if body else b"") + self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(data)
        status, head, out = None, {}, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status, head = event.status_code, {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                out += event.data
            elif isinstance(event, h11.EndOfMessage):
                if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
                    self.conn.start_next_cycle()
                return status, head, out


@pytest.fixture
async def app(nursery):
    return await upstream_server(nursery)


async def make_engine(nursery, port, policies, authns=()):
    async def no_certificate():
        raise AssertionError("no certificate needed")

    source = Static(build(port, list(policies), list(authns)))
    return Engine(
        source,
        Upstreams(nursery, no_certificate, "127.0.0.1"),
        component="waypoint",
        own_identity="spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient-waypoint",
        log_line=lambda line: None,
    ), source


async def open_tunnel(nursery, engine, identity=SLEEP, leaf=None):
    client, server = trio.testing.memory_stream_pair()
    statuses = []

    async def respond(status, headers=()):
        statuses.append(status)

    async def serve():
        await engine.serve_connect(Tunnel("10.244.2.2", 40000, identity, leaf, VIP, 8000), respond, server)
        await server.aclose()

    nursery.start_soon(serve)
    return Client(client), statuses


def pols(*objs):
    return [parse_as(AuthorizationPolicy, o) for o in objs]


def conn(ip=VIP, port=8000):
    return authz.Connection("10.244.2.2", SLEEP, ip, port)


def test_tcp_path_denies_what_an_http_only_deny_would():
    deny_paths = pols(
        policy("no-admin", {**SELECTOR, "action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]})
    )
    verdict = authz.tcp_decision([(conn(), deny_paths)])
    assert not verdict.allowed and verdict.policy == "ambient-apps/no-admin"


def test_tcp_path_keeps_targetref_policies_and_fails_closed_on_http_allow():
    allow_get = pols(
        policy(
            "get-only",
            {
                **TARGET_GATEWAY,
                "rules": [
                    {
                        "from": [{"source": {"principals": ["cluster.local/ns/ambient-apps/sa/sleep-ambient"]}}],
                        "to": [{"operation": {"methods": ["GET"]}}],
                    }
                ],
            },
        )
    )
    assert not authz.tcp_decision([(conn(), allow_get)]).allowed
    allow_l4 = pols(
        policy(
            "sleep",
            {
                **TARGET_GATEWAY,
                "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/ambient-apps/sa/sleep-ambient"]}}]}],
            },
        )
    )
    assert authz.tcp_decision([(conn(), allow_l4)]).allowed


async def test_a_policy_change_reaches_an_open_connection(nursery, app):
    engine, source = await make_engine(nursery, app, [])
    client, statuses = await open_tunnel(nursery, engine)
    assert (await client.send("GET", "/one"))[0] == 200
    source.current = build(app, [policy("deny-all", {**SELECTOR, "action": "DENY", "rules": [{}]})], [])
    assert (await client.send("GET", "/two"))[0] == 403


async def test_rbac_sees_headers_after_jwt_authn(nursery, app):
    authn = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "ra", "namespace": NS},
        "spec": {
            **SELECTOR,
            "jwtRules": [
                {
                    "issuer": "testing@secure.istio.io",
                    "jwksUri": "https://raw.githubusercontent.com/istio/istio/release-1.18/security/tools/jwt/samples/jwks.json",
                    "outputClaimToHeaders": [{"header": "x-user", "claim": "sub"}],
                }
            ],
        },
    }
    allow_admin = policy(
        "admin", {**SELECTOR, "rules": [{"when": [{"key": "request.headers[x-user]", "values": ["admin"]}]}]}
    )
    engine, _ = await make_engine(nursery, app, [allow_admin], [authn])
    client, _ = await open_tunnel(nursery, engine)
    assert (await client.send("GET", "/", [("x-user", "admin")]))[0] == 403  # no token: the forged header is gone


async def test_selector_policies_see_the_workloads_port(nursery, app):
    deny_app_port = policy(
        "no-app-port", {**SELECTOR, "action": "DENY", "rules": [{"to": [{"operation": {"ports": [str(app)]}}]}]}
    )
    engine, _ = await make_engine(nursery, app, [deny_app_port])
    client, statuses = await open_tunnel(nursery, engine)
    await trio.testing.wait_all_tasks_blocked()
    # Denied at CONNECT (L4, certain for every request), as ztunnel would deny it at the pod.
    assert statuses == [401]


async def test_plaintext_clients_cannot_forge_xfcc(nursery, app):
    engine, _ = await make_engine(nursery, app, [])
    client, _ = await open_tunnel(nursery, engine, identity=None)
    forged = "By=x;Hash=y;Subject=\"\";URI=spiffe://cluster.local/ns/ambient-apps/sa/admin"
    status, _, body = await client.send("GET", "/", [("x-forwarded-client-cert", forged)])
    assert status == 200 and "x-forwarded-client-cert" not in json.loads(body)["headers"]


async def test_a_post_is_never_sent_twice(nursery):
    seen = []

    async def handle(stream):  # answers the first request, then reads a POST and hangs up unanswered
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while (request := await next_request(conn, stream)) is not None:
                seen.append(request.method.decode())
                if seen[-1] == "POST":
                    return
                await stream.send_all(
                    conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                    + conn.send(h11.EndOfMessage())
                )
                conn.start_next_cycle()

    port = await serve_app(nursery, handle)
    engine, _ = await make_engine(nursery, port, [])
    client, _ = await open_tunnel(nursery, engine)
    assert (await client.send("GET", "/"))[0] == 200
    assert (await client.send("POST", "/pay", body=b"1"))[0] == 503
    assert seen == ["GET", "POST"]


def test_a_rejected_update_does_not_block_later_ones():
    agent = ProxyAgent(
        AgentSettings(
            "/nonexistent", "/nonexistent", "istiod:15012", NS, "wp", "spiffe://cluster.local/ns/ambient-apps/sa/wp"
        )
    )
    good = build(8080, [], []).raw
    prefix = f"{NS}/wp/"

    def push(type_, name, resource, version):
        agent._apply({"type": type_, "resources": [{"name": prefix + name, "version": version, "resource": resource}]})
        agent._rebuild()

    for type_, items in good.items():
        for name, res in items.items():
            agent._apply({"type": type_, "resources": [{"name": prefix + name, "version": "1", "resource": res}]})
    agent._rebuild()
    assert agent.rejected is None and agent.current.chains
    broken = dict(good[ROUTE_CONFIGURATION][next(iter(good[ROUTE_CONFIGURATION]))], virtual_hosts=[])
    push(ROUTE_CONFIGURATION, next(iter(good[ROUTE_CONFIGURATION])), broken, "2")
    assert agent.rejected and agent.versions[ROUTE_CONFIGURATION][prefix + next(iter(good[ROUTE_CONFIGURATION]))] == "1"
    main = dict(good[LISTENER]["main_internal"])
    push(LISTENER, "main_internal", main, "3")  # an unrelated, valid update still lands
    assert agent.rejected is None and agent.versions[LISTENER][prefix + "main_internal"] == "3"
    assert CLUSTER in agent.resources


def test_only_the_waypoints_own_account_skips_ztunnel_policy():
    state = ProxyState()

    def workload(name, sa, ip, labels_service=True):
        return {
            "workload": {
                "uid": f"Kubernetes//Pod/{NS}/{name}",
                "name": name,
                "namespace": NS,
                "addresses": [ip],
                "serviceAccount": sa,
                "protocol": "HBONE",
                "services": {f"{NS}/wp.{NS}.svc.cluster.local": {"15008": 15008}} if labels_service else {},
                "waypoint": None if labels_service else {"destination": f"{NS}/wp.{NS}.svc.cluster.local"},
            }
        }

    state.apply(
        {
            "type": "Address",
            "resources": [
                {
                    "name": "svc",
                    "version": "1",
                    "resource": {
                        "service": {
                            "name": "wp",
                            "namespace": NS,
                            "hostname": f"wp.{NS}.svc.cluster.local",
                            "addresses": ["10.96.0.9"],
                            "ports": [],
                        }
                    },
                },
                {"name": "a", "version": "1", "resource": workload("wp-1", "wp", "10.244.1.9")},
                {"name": "b", "version": "1", "resource": workload("rogue", "rogue-sa", "10.244.1.10")},
                {"name": "c", "version": "1", "resource": workload("app", "app", "10.244.2.9", labels_service=False)},
            ],
        }
    )
    app = state.find_workload_by_ip("10.244.2.9")
    assert waypoint_identities(state, app) == {f"spiffe://cluster.local/ns/{NS}/sa/wp"}


async def test_a_draining_proxy_ends_each_connection_after_its_response(nursery, app):
    engine, _ = await make_engine(nursery, app, [])
    client, _ = await open_tunnel(nursery, engine)
    assert (await client.send("GET", "/"))[1].get("connection") is None
    engine.draining = True
    status, headers, _ = await client.send("GET", "/")
    assert status == 200 and headers["connection"] == "close"
    assert await client.stream.receive_some(1) == b""  # the proxy closed it: the client reconnects elsewhere
