"""The node-netns HTTP endpoints: readiness gating and the tiny h11 server."""

from __future__ import annotations

import trio

from mesh.ztunnel.admin import Readiness, json_response, serve_http


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"{method} {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_readiness_waits_for_every_blocker():
    ready = Readiness(["root", "config", "pods"])
    assert ready.route()[0] == 503 and b"config, pods, root" in ready.route()[2]
    for name in ("root", "config", "pods", "unknown"):
        ready.done(name)
    assert ready.ready and ready.route()[0] == 200


async def test_serve_http_routes():
    ready = Readiness(["config"])
    routes = {"/healthz/ready": ready.route, "/config_dump": lambda: json_response({"a": 1}), "/boom": lambda: 1 / 0}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, ("127.0.0.1", 0), routes)
        assert (await http_get(port, "/healthz/ready"))[0] == 503
        ready.done("config")
        assert await http_get(port, "/healthz/ready") == (200, b"ready\n")
        status, body = await http_get(port, "/config_dump?x=1")
        assert status == 200 and b'"a": 1' in body
        assert (await http_get(port, "/nope"))[0] == 404
        assert (await http_get(port, "/boom"))[0] == 500
        assert (await http_get(port, "/config_dump", "POST"))[0] == 405
        nursery.cancel_scope.cancel()
