"""The L7 engine end to end in one process: a tunnel in, the filter chain, a real HTTP upstream.

istiod's real translation (`waypoint_resources`) builds the config from the article's objects; the
endpoint is an HTTP server on 127.0.0.1 reached as a workload outside the mesh (plain TCP), so no
netns or certificate is needed. The tunnel is a memory stream the test writes requests into.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import h11
import jwt as pyjwt
import pytest
import trio
import trio.testing
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from mesh.contract import CLUSTER, LISTENER, ROUTE_CONFIGURATION
from mesh.istiod.proxyconfig import waypoint_resources
from mesh.proxy.config import ProxyConfig
from mesh.proxy.engine import Engine, Tunnel
from mesh.proxy.upstream import Upstreams

ARTICLE = Path(__file__).resolve().parents[2] / "topologies" / "article"
SLEEP = "spiffe://cluster.local/ns/ambient-apps/sa/sleep-ambient"
ROGUE = "spiffe://cluster.local/ns/ambient-apps/sa/rogue-sa"
VIP = "10.96.0.20"
TOKEN = (ARTICLE / "demo.jwt").read_text().strip()


def manifest(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ARTICLE / name).read_text()) if d]


def of_kind(docs: list[dict], kind: str) -> dict:
    return next(d for d in docs if d["kind"] == kind)


def httpbin_pod(port: int) -> dict:
    return {
        "kind": "Pod",
        "metadata": {
            "name": "httpbin-ambient-1",
            "namespace": "ambient-apps",
            "labels": {"app": "httpbin-ambient", "version": "v1"},
        },
        "spec": {
            "serviceAccountName": "httpbin-ambient",
            "containers": [{"name": "httpbin", "ports": [{"containerPort": port}]}],
        },
        "status": {"podIP": "127.0.0.1", "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def service(port: int) -> dict:
    svc = of_kind(manifest("httpbin-ambient.yaml"), "Service")
    svc["spec"]["clusterIP"] = VIP
    svc["spec"]["ports"][0]["targetPort"] = port
    return svc


def build(port: int, policies: list[dict], authns: list[dict]) -> ProxyConfig:
    gateway = manifest("waypoint.yaml")[0]
    pod = httpbin_pod(port)
    jwks_text = (
        Path(__file__).resolve().parents[2] / "mesh" / "istiod" / "jwks_mirror" / "istio-samples-jwks.json"
    ).read_text()
    res = waypoint_resources(
        gateway,
        [service(port)],
        [],
        [pod],
        policies,
        authns,
        jwks_for=lambda uri: jwks_text,
        enrolled=lambda pod: False,
    )
    return ProxyConfig.build(res[LISTENER], res[CLUSTER], res[ROUTE_CONFIGURATION])


class Static:
    def __init__(self, config: ProxyConfig) -> None:
        self.current = config


async def next_request(conn: h11.Connection, stream) -> h11.Request | None:
    """The next whole request (body read) an app's h11 server connection gets; None once the client left."""
    request = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            if not data:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.EndOfMessage):
            return request
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def serve_app(nursery, handle) -> int:
    """An app on 127.0.0.1 running `handle(stream)` per connection; its port."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def upstream_server(nursery) -> int:
    """An app that answers every request with JSON of what it received (like httpbin's /anything)."""

    async def handle(stream):
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while (request := await next_request(conn, stream)) is not None:
                body = json.dumps(
                    {"path": request.target.decode(), "headers": {k.decode(): v.decode() for k, v in request.headers}}
                ).encode()
                await stream.send_all(
                    conn.send(
                        h11.Response(
                            status_code=200, headers=[("content-length", str(len(body))), ("server", "gunicorn")]
                        )
                    )
                    + conn.send(h11.Data(data=body))
                    + conn.send(h11.EndOfMessage())
                )
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()

    return await serve_app(nursery, handle)


async def exchange(engine: Engine, identity: str | None, requests: list[tuple[list, str]], port: int = 8000):
    """Send HTTP/1.1 GETs through one tunnel; (CONNECT status, responses, log lines)."""
    client, server = trio.testing.memory_stream_pair()
    statuses = []

    async def respond(status, headers=()):
        statuses.append(status)

    tunnel = Tunnel("10.244.2.2", 40000, identity, None, VIP, port)
    responses = []

    async def serve():  # as the HBONE server does: the stream ends with its handler
        await engine.serve_connect(tunnel, respond, server)
        await server.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            conn = h11.Connection(h11.CLIENT)
            for headers, target in requests:
                try:
                    await client.send_all(
                        conn.send(h11.Request(method="GET", target=target, headers=headers))
                        + conn.send(h11.EndOfMessage())
                    )
                except trio.BrokenResourceError:
                    break  # the tunnel was refused and closed
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await client.receive_some(65536)
                        conn.receive_data(data)
                        if not data and statuses and statuses[0] != 200:
                            break
                        continue
                    if isinstance(event, h11.Response):
                        response = [event.status_code, dict((k.decode(), v.decode()) for k, v in event.headers), b""]
                    elif isinstance(event, h11.Data):
                        response[2] += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        responses.append(tuple(response))
                        conn.start_next_cycle()
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        break
                if statuses and statuses[0] != 200:
                    break
            await client.aclose()
    return statuses, responses


def get(path: str, token: str | None = None) -> tuple[list, str]:
    headers = [("Host", "httpbin-ambient.ambient-apps:8000"), ("User-Agent", "curl/7.88.1")]
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    return headers, path


@pytest.fixture
async def app(nursery):
    return await upstream_server(nursery)


async def engine_for(nursery, port: int, policies: list[dict], authns: list[dict], lines: list[str]) -> Engine:
    async def no_certificate():
        raise AssertionError("an endpoint outside the mesh needs no certificate")

    upstreams = Upstreams(nursery, no_certificate, "127.0.0.1")
    return Engine(
        Static(build(port, policies, authns)),
        upstreams,
        component="waypoint",
        own_identity="spiffe://cluster.local/ns/ambient-apps/sa/httpbin-ambient-waypoint",
        log_line=lines.append,
    )


async def test_article_jwt_and_path_rules(nursery, app):
    lines: list[str] = []
    engine = await engine_for(nursery, app, manifest("l7-authz-policy.yaml"), manifest("jwt-policy.yaml"), lines)
    statuses, responses = await exchange(
        engine, SLEEP, [get("/headers", TOKEN), get("/ip"), get("/ip", TOKEN), get("/ip", "deadbeef")]
    )
    assert statuses == [200]
    assert [r[0] for r in responses] == [403, 403, 200, 401]
    assert responses[0][2] == b"RBAC: access denied"
    upstream_saw = json.loads(responses[2][2])
    assert upstream_saw["path"] == "/ip"
    assert "authorization" not in upstream_saw["headers"]  # forwardOriginalToken defaults to false
    assert upstream_saw["headers"]["x-forwarded-for"] == "10.244.2.2"
    assert responses[2][1]["server"] == "istio-envoy"
    assert 'error="invalid_token"' in responses[3][1]["www-authenticate"]
    assert len(lines) == 4
    assert 'decision="deny"' in lines[0] and 'policy="ambient-apps/allow-ip-path-with-jwt"' in lines[0]
    assert 'decided_by="waypoint jwt_authn"' in lines[3]
    assert f'src.identity="{SLEEP}"' in lines[2]


async def test_l4_only_policy_refuses_the_tunnel_of_a_rogue_client(nursery, app):
    lines: list[str] = []
    engine = await engine_for(nursery, app, manifest("l4-policy.yaml"), [], lines)
    statuses, responses = await exchange(engine, ROGUE, [get("/headers")])
    assert statuses == [401] and responses == []
    assert 'decided_by="waypoint rbac (L4)"' in lines[0]
    statuses, responses = await exchange(engine, SLEEP, [get("/headers"), get("/headers")])
    assert statuses == [200] and [r[0] for r in responses] == [200, 200]


async def test_no_chain_for_an_unserved_target(nursery, app):
    engine = await engine_for(nursery, app, [], [], [])
    statuses, _ = await exchange(engine, SLEEP, [get("/")], port=9999)
    assert statuses == [503]


async def test_tokens_minted_by_the_test(nursery, app):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "test"
    authn = {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "ra", "namespace": "ambient-apps"},
        "spec": {"jwtRules": [{"issuer": "me", "jwks": json.dumps({"keys": [jwk]}), "audiences": ["billing"]}]},
    }
    engine = await engine_for(nursery, app, [], [authn], [])
    now = int(time.time())

    def token(**claims):
        return pyjwt.encode(
            {"iss": "me", "sub": "u", "aud": "billing", "exp": now + 60, **claims},
            key,
            algorithm="RS256",
            headers={"kid": "test"},
        )

    _, responses = await exchange(
        engine,
        SLEEP,
        [
            get("/a", token()),
            get("/b", token(exp=now - 3600)),
            get("/c", token(aud="other")),
            get(f"/d?access_token={token()}"),
        ],
    )
    assert [r[0] for r in responses] == [200, 401, 403, 200]
    assert responses[1][2] == b"Jwt is expired"
    assert json.loads(responses[3][2])["path"] == "/d"  # the token left the query once verified
