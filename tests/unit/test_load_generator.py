"""lab.load.generator's pure parts: bounds, URLs, requests, response parsing (over a socketpair),
refusals before any packet, and the runner's checks. Runs against servers and the process:
tests/integration/test_load_generator.py."""

import socket
import time

import pytest

from lab.load import generator
from lab.load.generator import Config, Generator, Refused, build_request, parse_url, read_response

LOCAL = ["127.0.0.0/8"]


def ok(body=b"ok", status=b"200 OK", extra=b""):
    return b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body


@pytest.mark.parametrize("url", ["http://8.8.8.8/", "http://10.244.1.5:8080/", "http://[::1]:80/"])
def test_outside_allowed_networks_is_refused_before_any_packet(url, monkeypatch):
    monkeypatch.setattr(Generator, "_connect", lambda *a: pytest.fail("connected"))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("resolved"))
    g = Generator(Config(url=url, qps=10, duration=1, allow=LOCAL))
    with pytest.raises(Refused, match="outside the lab"):
        g.prepare()


def test_name_resolving_outside_is_refused(monkeypatch):
    monkeypatch.setattr(Generator, "_connect", lambda *a: pytest.fail("connected"))
    g = Generator(Config(url="http://localhost:9/", qps=10, duration=1, allow=["10.96.0.0/16"]))
    with pytest.raises(Refused, match="localhost is 127.0.0.1, outside the lab"):
        g.run()


def test_unresolvable_name_is_refused():
    g = Generator(Config(url="http://no-such-host.invalid/", qps=10, duration=1, allow=LOCAL))
    with pytest.raises(Refused, match="cannot resolve 'no-such-host.invalid'"):
        g.prepare()


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(qps=20001), "--qps"),
        (dict(qps=-1), "--qps"),
        (dict(duration=601), "--duration"),
        (dict(duration=0), "--duration"),
        (dict(connections=0), "--connections"),
        (dict(timeout=0), "--timeout"),
        (dict(method="G ET"), "-X"),
        (dict(allow=[]), "--allow"),
        (dict(qps=0.5, duration=1), "no request"),
        (dict(url="https://127.0.0.1/"), "only http"),
        (dict(url="http:///x"), "no host"),
    ],
)
def test_bounds(kw, message):
    args = dict(url="http://127.0.0.1:9/", qps=10, duration=1, allow=LOCAL)
    args.update(kw)
    with pytest.raises(Refused, match=message):
        Generator(Config(**args))


def test_parse_url_and_request():
    t = parse_url("http://echo.ns:8080/a/b?codes=503:1,200:9")
    assert (t.host, t.port, t.path, t.host_header) == ("echo.ns", 8080, "/a/b?codes=503:1,200:9", "echo.ns:8080")
    assert parse_url("http://echo").path == "/"
    assert parse_url("http://echo").port == 80
    req = build_request("GET", parse_url("http://echo/"), [("X-A", "b")])
    assert req == b"GET / HTTP/1.1\r\nHost: echo\r\nUser-Agent: lab-load\r\nAccept: */*\r\nX-A: b\r\n\r\n"
    with pytest.raises(Refused):
        generator.parse_header("no colon")


def test_read_response_pipelined():
    a, b = socket.socketpair()
    try:
        b.sendall(
            ok(b"one")
            + b"HTTP/1.1 100 Continue\r\n\r\n"
            + ok(b"two", b"404 Not Found")
            + b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"
        )
        buf = bytearray()
        deadline = time.perf_counter() + 1
        assert read_response(a, buf, deadline) == (200, True)
        assert read_response(a, buf, deadline) == (404, True)
        assert read_response(a, buf, deadline) == (200, False)  # HTTP/1.0 without keep-alive
        assert buf == b""
        b.sendall(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        b.close()
        assert read_response(a, buf, deadline) == (200, False)
    finally:
        a.close()


def test_read_response_junk():
    a, b = socket.socketpair()
    try:
        b.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
        with pytest.raises(generator.ProtocolError):
            read_response(a, bytearray(), time.perf_counter() + 1)
    finally:
        a.close()
        b.close()


class FakeClient:
    """The lab API calls the runner makes, recorded."""

    def __init__(self, topology_file):
        self.calls = []
        self.topology_file = topology_file

    def call(self, op, **kw):
        self.calls.append(op)
        if op == "status":
            return {
                "topology": self.topology_file,
                "nodes": [{"podCIDR": "10.244.0.0/24"}, {"podCIDR": "10.244.1.0/24"}],
            }
        if op == "exec":
            return {"netns": "none", "env": {}, "argv": ["env", "--"]}
        raise AssertionError(op)


def test_runner_networks_from_the_topology(tmp_path):
    from lab.load import lab_networks

    topo = tmp_path / "t.yaml"
    topo.write_text(
        "name: x\nnodes: [{name: cp, role: control-plane}, {name: w1}]\n"
        "network: {podCIDR: 10.244.0.0/16, serviceCIDR: 10.97.0.0/16}\n"
    )
    assert lab_networks(FakeClient(str(topo))) == ["10.244.0.0/16", "10.97.0.0/16"]
    assert lab_networks(FakeClient(str(tmp_path / "gone.yaml"))) == ["10.244.0.0/24", "10.244.1.0/24", "10.96.0.0/16"]


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://8.8.8.8/", "8.8.8.8 is outside the lab"),
        ("ftp://10.244.1.2/", "only http"),
        ("http://10.244.1.2/", "--qps"),
    ],
)
def test_runner_refuses_before_entering_the_pod(tmp_path, url, message):
    from lab.load import LoadError, start

    client = FakeClient(str(tmp_path / "gone.yaml"))
    with pytest.raises(LoadError, match=message):
        start(client, "ns", "pod", url, qps=30000 if "qps" in message else 10, duration=1)
    assert "exec" not in client.calls
