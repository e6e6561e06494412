"""The in-pod load generator: HTTP/1.1 at a fixed rate over keep-alive connections.

    python -m lab.load.generator --url URL --qps Q --duration D --allow CIDR [--allow CIDR ...]
        [--connections C] [--timeout T] [-H 'Name: value' ...] [-X METHOD]

It runs in the client pod's network namespace as the container's user (the runner starts it
through the exec API's prefix), so the pod's traffic capture applies to its connections as to the
app's. It prints one JSON line, the `LoadReport`, on stdout; a refusal or bad argument is one
`error: ...` line on stderr and exit status 2.

Open loop: request i is scheduled at t0 + i/Q, for i < Q*D. C worker threads each own one
connection and take the next scheduled request when free, so a slow connection does not hold
back the schedule while others are free. A request is timed from the moment it is sent (a new
connection's connect is part of it) to the end of its response; T bounds that. A connection that
fails is closed and the next request opens a new one. A request still waiting for a free
connection when the run's duration is over is not sent and counts as `unsent`. `--qps 0` sends
as fast as the connections go (never faster than MAX_QPS) until the duration is over.

Safety: the URL's host is resolved here, in the pod, and every address it resolves to must lie in
one of the `--allow` networks (the runner passes the lab's pod and service CIDRs), checked before
the first connection and again whenever the name is resolved anew; outside them the run is
refused (or stopped) without a packet sent to that address.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lab.load.stats import UNSENT, ConnectionClosed, LoadReport, Outcome, ProtocolError, classify_error, summarize

MAX_QPS = 20000
MAX_DURATION = 600.0
MAX_CONNECTIONS = 256
MAX_TIMEOUT = 60.0
MAX_HEAD = 65536
RESOLVE_TTL = 1.0  # seconds a resolution (or a failed one) is reused for new connections


class Refused(Exception):
    """The run is not allowed (target outside the allowed networks, bad URL or parameters)."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str  # path and query, as sent on the request line
    host_header: str


def parse_url(url: str) -> Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise Refused(f"invalid URL {url!r}: {e}") from None
    if parts.scheme != "http":
        raise Refused(f"invalid URL {url!r}: only http:// URLs are supported")
    if not parts.hostname:
        raise Refused(f"invalid URL {url!r}: no host")
    host = parts.hostname
    port = port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    return Target(host, port, path, host_header)


def build_request(method: str, target: Target, headers: list[tuple[str, str]]) -> bytes:
    """The request's bytes, built once: -H replaces a default header of the same name."""
    names = {n.lower() for n, _ in headers}
    lines = [f"{method} {target.path} HTTP/1.1"]
    for name, value in (("Host", target.host_header), ("User-Agent", "lab-load"), ("Accept", "*/*")):
        if name.lower() not in names:
            lines.append(f"{name}: {value}")
    lines += [f"{n}: {v}" for n, v in headers]
    if method in ("POST", "PUT", "PATCH") and "content-length" not in names:
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n") or "\r" in value or "\n" in value:
        raise Refused(f"invalid header {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def allowed(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == n.version and ip in n for n in networks)


def resolve(host: str, port: int) -> list[str]:
    """The IPv4 addresses of HOST (socket.gaierror when it does not resolve)."""
    infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        address = info[4][0]  # AF_INET: (host, port), the host a str
        if isinstance(address, str) and address not in out:
            out.append(address)
    if not out:
        raise socket.gaierror(socket.EAI_NONAME, f"{host}: no IPv4 address")
    return out


def _recv(sock: socket.socket, buf: bytearray, deadline: float) -> None:
    left = deadline - time.perf_counter()
    if left <= 0:
        raise socket.timeout("timed out")
    sock.settimeout(left)
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionClosed("connection closed before a whole response")
    buf += chunk


def read_response(sock: socket.socket, buf: bytearray, deadline: float, no_body: bool = False) -> tuple[int, bool]:
    """Reads one response from SOCK (BUF holds bytes already read and keeps what follows it).

    Returns (status, the connection can be reused)."""
    while True:
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD:
                raise ProtocolError("response head too long")
            _recv(sock, buf, deadline)
        lines = bytes(buf[:end]).split(b"\r\n")
        del buf[: end + 4]
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1 status line: {lines[0][:60]!r}")
        try:
            status = int(status_line[1])
        except ValueError:
            raise ProtocolError(f"bad status in {lines[0][:60]!r}") from None
        length = None
        chunked = False
        conn = b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise ProtocolError("bad Content-Length") from None
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                conn = value.strip().lower()
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer (100 Continue): the real one follows
        break
    keep = conn != b"close" if status_line[0] == b"HTTP/1.1" else conn == b"keep-alive"
    if no_body or status in (204, 304) or 100 <= status < 200:
        return status, keep
    if chunked:
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                _recv(sock, buf, deadline)
            try:
                size = int(bytes(buf[:eol]).split(b";")[0].strip(), 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            del buf[: eol + 2]
            if size == 0:
                while True:  # trailers, up to the empty line
                    while (eol := buf.find(b"\r\n")) < 0:
                        _recv(sock, buf, deadline)
                    del buf[: eol + 2]
                    if eol == 0:
                        return status, keep
            while len(buf) < size + 2:
                _recv(sock, buf, deadline)
            del buf[: size + 2]
    if length is not None:
        while len(buf) < length:
            _recv(sock, buf, deadline)
        del buf[:length]
        return status, keep
    try:  # no length: the body ends with the connection
        while True:
            _recv(sock, buf, deadline)
    except ConnectionClosed:
        buf.clear()
    return status, False


@dataclass
class Config:
    url: str
    qps: float
    duration: float
    allow: list[str]
    connections: int = 4
    timeout: float = 2.0
    headers: list[tuple[str, str]] = field(default_factory=list)
    method: str = "GET"

    def check(self) -> None:
        if not 0 <= self.qps <= MAX_QPS:
            raise Refused(f"--qps {self.qps:g}: must be between 0 (as fast as possible) and {MAX_QPS}")
        if not 0 < self.duration <= MAX_DURATION:
            raise Refused(f"--duration {self.duration:g}: must be more than 0 and at most {MAX_DURATION:g} s")
        if not 1 <= self.connections <= MAX_CONNECTIONS:
            raise Refused(f"--connections {self.connections}: must be between 1 and {MAX_CONNECTIONS}")
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise Refused(f"--timeout {self.timeout:g}: must be more than 0 and at most {MAX_TIMEOUT:g} s")
        if not self.method.isalpha() or not self.method.isupper():
            raise Refused(f"-X {self.method!r}: an HTTP method is upper-case letters")
        if self.qps and self.qps * self.duration < 1:
            raise Refused(f"--qps {self.qps:g} for {self.duration:g} s schedules no request")
        if not self.allow:
            raise Refused("no --allow network: nothing may be reached")


class Generator:
    """One run. `prepare()` resolves and checks the target (raises Refused); `run()` returns the report."""

    def __init__(self, config: Config):
        config.check()
        self.config = config
        self.target = parse_url(config.url)
        try:
            self.networks = [ipaddress.ip_network(a, strict=False) for a in config.allow]
        except ValueError as e:
            raise Refused(f"--allow: {e}") from None
        self.request = build_request(config.method, self.target, config.headers)
        self.no_body = config.method == "HEAD"
        self.address = ""
        self._resolved_at = 0.0
        self._resolve_error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.fatal: str | None = None
        self.samples: dict[str, str] = {}

    def _check(self, addresses: list[str]) -> None:
        bad = [a for a in addresses if not allowed(a, self.networks)]
        if bad:
            nets = ", ".join(str(n) for n in self.networks)
            what = f"{self.target.host} is" + ("" if self.target.host == bad[0] else f" {bad[0]},")
            raise Refused(f"{what} outside the lab (allowed: {nets}); load goes only to the lab's own addresses")

    def prepare(self) -> str:
        """Resolves the host (in this process's network namespace) and checks where it points."""
        host = self.target.host
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            addresses = [str(ip)]
            self._check(addresses)
        else:
            try:
                addresses = resolve(host, self.target.port)
            except (socket.gaierror, UnicodeError) as e:
                raise Refused(
                    f"cannot resolve {host!r} in the client pod: {e}; load goes only to the lab's own addresses"
                ) from None
            self._check(addresses)
        self.address = addresses[0]
        self._resolved_at = time.monotonic()
        return self.address

    def _address(self) -> str:
        """The address for a new connection: re-resolved at most every RESOLVE_TTL seconds."""
        with self._lock:
            if time.monotonic() - self._resolved_at >= RESOLVE_TTL and self.target.host != self.address:
                self._resolved_at = time.monotonic()
                try:
                    addresses = resolve(self.target.host, self.target.port)
                    self._check(addresses)
                    self.address, self._resolve_error = addresses[0], None
                except socket.gaierror as e:
                    self._resolve_error = e
            if self._resolve_error is not None:
                raise self._resolve_error
            return self.address

    def _connect(self, deadline: float) -> socket.socket:
        address = self._address()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(max(deadline - time.perf_counter(), 0.001))
            sock.connect((address, self.target.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _worker(self, counter, t0: float, out: list[Outcome]) -> None:
        cfg = self.config
        qps, timeout, request, no_body = cfg.qps, cfg.timeout, self.request, self.no_body
        t_end = t0 + cfg.duration
        total = round(qps * cfg.duration) if qps else None
        step = 1.0 / (qps or MAX_QPS)
        perf, sleep = time.perf_counter, time.sleep
        sock: socket.socket | None = None
        buf = bytearray()
        try:
            while not self._stop.is_set():
                i = next(counter)
                if total is not None and i >= total:
                    return
                at = i * step
                now = perf()
                if now >= t_end:
                    if total is None:
                        return
                    out.append(Outcome(at, None, UNSENT))
                    continue
                if t0 + at > now:
                    sleep(t0 + at - now)
                start = perf()
                if total is None:
                    at = start - t0
                try:
                    if sock is None:
                        sock = self._connect(start + timeout)
                        buf.clear()
                    sock.sendall(request)
                    status, keep = read_response(sock, buf, start + timeout, no_body)
                    out.append(Outcome(at, (perf() - start) * 1000.0, status))
                    if not keep:
                        sock.close()
                        sock = None
                except Refused as e:
                    self.fatal = str(e)
                    self._stop.set()
                    return
                except Exception as e:  # noqa: BLE001 - every failure is an outcome
                    kind = classify_error(e)
                    if kind not in self.samples:
                        self.samples[kind] = f"{type(e).__name__}: {e}"
                    out.append(Outcome(at, None, kind))
                    if sock is not None:
                        sock.close()
                        sock = None
        finally:
            if sock is not None:
                sock.close()

    def run(self) -> LoadReport:
        if not self.address:
            self.prepare()
        cfg = self.config
        counter = itertools.count()
        outs: list[list[Outcome]] = [[] for _ in range(cfg.connections)]
        t0 = time.perf_counter() + 0.01
        threads = [
            threading.Thread(target=self._worker, args=(counter, t0, outs[i]), daemon=True, name=f"load-{i}")
            for i in range(cfg.connections)
        ]
        for t in threads:
            t.start()
        hard_end = t0 + cfg.duration + cfg.timeout + 5.0
        for t in threads:
            t.join(max(hard_end - time.perf_counter(), 0.0))
        self._stop.set()
        elapsed = time.perf_counter() - t0
        if self.fatal:
            raise Refused(self.fatal)
        outcomes = sorted(itertools.chain.from_iterable(list(o) for o in outs), key=lambda o: o.at)
        return summarize(
            outcomes,
            url=cfg.url,
            method=cfg.method,
            qps=cfg.qps,
            duration=cfg.duration,
            connections=cfg.connections,
            timeout=cfg.timeout,
            address=self.address,
            elapsed=elapsed,
            error_samples=self.samples,
        )


def run(config: Config) -> LoadReport:
    """A whole run in this process (raises Refused)."""
    g = Generator(config)
    g.prepare()
    return g.run()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.load.generator", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--qps", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("-H", "--header", dest="headers", action="append", default=[])
    p.add_argument("-X", "--method", type=str.upper, default="GET")
    p.add_argument("--allow", action="append", default=[], help="a network the URL's host may resolve into")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # the Config's fields, the headers still 'Name: value' text
    try:
        args.headers = [parse_header(h) for h in args.headers]
        report = run(Config(**vars(args)))
    except Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(report.to_json() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
