"""lab.load.generator against small HTTP servers on 127.0.0.1 (threads of this process) for real
seconds, and the process itself (`python -m lab.load.generator`). Its pace and its timeouts' wall
time are figures of `make bench` (bench/checks.py)."""

import json
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from lab.load import generator
from lab.load.generator import Config
from lab.load.stats import LoadReport
from tests.unit.test_load_generator import LOCAL, FakeClient, ok


class Server:
    """A keep-alive HTTP/1.1 server; `answer(n, head)` returns the bytes for the n-th request (0-based),
    or None to close the connection, "rst" to reset it, "hang" to never answer."""

    def __init__(self, answer):
        self.answer = answer
        self.count = 0
        self.heads: list[bytes] = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                with self.lock:
                    n = self.count
                    self.count += 1
                    self.heads.append(head)
                out = self.answer(n, head)
                if out is None:
                    return
                if out == "rst":
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if out == "hang":
                    time.sleep(5)
                    return
                c.sendall(out)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() so the port stops listening
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def server(request):
    servers = []

    def make(answer=lambda n, head: ok()):
        s = Server(answer)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def run(url, qps=100, duration=1.0, **kw):
    return generator.run(Config(url=url, qps=qps, duration=duration, allow=LOCAL, **kw))


def test_fixed_rate_all_ok(server):
    s = server()
    r = run(s.url, qps=100, duration=1.0, connections=4)
    assert r.requests == 100 and r.successes == 100 and r.success_rate == 1.0
    assert s.count == 100
    assert r.errors == {} and r.codes == {"200": 100}
    assert 0 < r.latency_ms.p50 <= r.latency_ms.p90 <= r.latency_ms.p99 <= r.latency_ms.max
    assert len(r.timeline) == 1 and r.timeline[0].requests == 100
    assert s.connections <= 4  # keep-alive
    assert r.address == "127.0.0.1"


def test_rate_is_spread_over_the_run(server):
    s = server()
    r = run(s.url, qps=40, duration=2.0, connections=2)
    assert [x.requests for x in r.timeline] == [40, 40]
    assert r.actual_qps == 40.0


def test_http_errors_counted_by_code(server):
    s = server(lambda n, head: ok(b"no", b"503 Service Unavailable") if n % 10 == 9 else ok())
    r = run(s.url, qps=100, duration=1.0)
    assert r.requests == 100
    assert r.successes == 90
    assert r.errors == {"http 503": 10}
    assert r.codes == {"200": 90, "503": 10}
    assert r.latency_ms.count == 100  # an error answer is still an answer


def test_redirect_is_success(server):
    s = server(lambda n, head: ok(b"", b"302 Found", b"Location: /x\r\n"))
    r = run(s.url, qps=20, duration=0.5)
    assert r.successes == r.requests == 10


def test_refused(server):
    s = server()
    s.close()
    r = run(s.url, qps=50, duration=0.4)
    assert r.requests == 20 and r.successes == 0
    assert r.errors == {"refused": 20}
    assert r.latency_ms.count == 0
    assert "ConnectionRefusedError" in r.error_samples["refused"]


def test_timeout(server):
    s = server(lambda n, head: "hang")
    r = run(s.url, qps=10, duration=0.5, timeout=0.2, connections=5)
    assert r.requests == 5
    assert r.errors == {"timeout": 5}


def test_reset_and_reconnect(server):
    s = server(lambda n, head: "rst" if n % 5 == 4 else ok())
    r = run(s.url, qps=50, duration=1.0, connections=2)
    assert r.requests == 50
    assert r.errors == {"reset": 10}
    assert r.successes == 40
    assert s.connections >= 10  # a failed connection is opened again


def test_closed_without_answer(server):
    s = server(lambda n, head: None if n == 3 else ok())
    r = run(s.url, qps=20, duration=0.5, connections=1)
    assert r.errors == {"closed": 1}
    assert r.successes == 9


def test_connection_close_and_chunked(server):
    def answer(n, head):
        if n % 2:
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
        return ok(b"bye", extra=b"Connection: close\r\n")

    s = server(answer)
    r = run(s.url, qps=40, duration=0.5, connections=1)
    assert r.successes == r.requests == 20
    assert s.connections == 11  # every "Connection: close" answer ends its connection (10 of 20)


def test_open_loop_counts_what_it_could_not_send(server):
    def slow(n, head):
        time.sleep(0.1)
        return ok()

    s = server(slow)
    r = run(s.url, qps=100, duration=0.5, connections=1)
    assert r.requests == 50  # every scheduled request is counted
    assert 3 <= r.successes <= 6
    assert r.errors["unsent"] == r.requests - r.successes
    assert r.latency_ms.p50 >= 100


def test_max_rate(server):
    s = server()
    r = run(s.url, qps=0, duration=0.5, connections=2)
    assert r.requests > 100 and r.successes == r.requests
    assert r.requests <= generator.MAX_QPS * 0.5 + 2


def test_headers_and_method(server):
    s = server()
    r = run(
        s.url + "path?codes=200",
        qps=10,
        duration=0.3,
        method="POST",
        headers=[("X-Test", "1"), ("Host", "echo.example")],
    )
    assert r.successes == 3
    head = s.heads[0].decode()
    assert head.startswith("POST /path?codes=200 HTTP/1.1\r\n")
    assert "\r\nX-Test: 1" in head and "\r\nHost: echo.example" in head
    assert head.count("Host:") == 1
    assert "Content-Length: 0" in head


def test_head_request_has_no_body(server):
    s = server(lambda n, head: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    r = run(s.url, qps=20, duration=0.5, method="HEAD", connections=1)
    assert r.successes == r.requests == 10


def test_name_resolving_inside_allowed(server):
    s = server()
    r = run(f"http://localhost:{s.port}/", qps=10, duration=0.3)
    assert r.successes == 3


def test_process_prints_one_json_line(server):
    s = server(lambda n, head: ok(b"no", b"503 Service Unavailable") if n % 2 else ok())
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.load.generator",
            "--url",
            s.url,
            "--qps",
            "20",
            "--duration",
            "0.5",
            "--allow",
            "127.0.0.0/8",
            "-H",
            "X-A: 1",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 1
    r = LoadReport.from_json(lines[0])
    assert r.requests == 10 and r.successes == 5 and r.errors == {"http 503": 5}
    assert json.loads(lines[0])["timeline"][0]["requests"] == 10


def test_process_refuses_with_one_line():
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.load.generator",
            "--url",
            "http://8.8.8.8/",
            "--qps",
            "10",
            "--duration",
            "1",
            "--allow",
            "10.244.0.0/16",
            "--allow",
            "10.96.0.0/16",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.strip() == (
        "error: 8.8.8.8 is outside the lab (allowed: 10.244.0.0/16, 10.96.0.0/16); "
        "load goes only to the lab's own addresses"
    )


def test_runner_runs_the_generator_with_the_exec_prefix(server, tmp_path):
    from lab.load import start

    s = server()
    client = FakeClient(str(tmp_path / "gone.yaml"))
    with start(client, "ns", "pod", s.url, qps=20, duration=0.5, networks=["127.0.0.0/8"], headers={"X-A": "1"}) as run:
        assert run.argv[:2] == ["env", "--"]
        report = run.wait()
    assert report.requests == report.successes == 10
    assert b"X-A: 1" in s.heads[0]
    assert run.wait() is report
    with pytest.raises(Exception, match="outside the lab"):
        start(client, "ns", "pod", s.url, qps=20, duration=0.5, networks=["10.244.0.0/16"]).wait()
