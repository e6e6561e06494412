"""The Kubernetes endpoint's benchmarks (part of `make bench`, alone with `--only kubeapi`): real
kubectl against the same commands through `lab`, and many watches held while pods are made.

On one lab of the default topology (the article's, with the mesh):
- `kubectl get pods -A` against `lab get pods -A`, each a new process as a user runs it (median of
  N, kubectl's discovery cache warm), and the server's part alone: the same Table over a kept-alive
  HTTPS connection;
- `kubectl apply -f topologies/article/` (client-side) against `lab apply -f` of the same directory:
  into fresh namespaces (creating every object), then again (every object unchanged);
- 100 watches of one namespace held over raw HTTPS (trio, one task each) while a Deployment of 200
  pods is applied with kubectl and becomes Ready: the events each watcher got, the time to all
  Ready against the same without watches, and labd's RSS (/proc/<labd pid>/status, the pid from
  `lab status -o json`) before, with the watches open, after the pods, and once they are closed.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable
from urllib.parse import urlsplit

import trio
import yaml

from lab.client.paths import kubeconfig_path
from lab.cluster import kubectl_binary
from lab.testing import ARTICLE, DEFAULT_TOPOLOGY, TestLab, eventually, unique_lab_name
from tests.conftest import deployment, pause_container

Row = Callable[[str, str, str], None]
WATCH_NS = "bench-watch"
ARTICLE_NAMESPACES = {
    "ambient-apps": {"istio.io/dataplane-mode": "ambient"},
    "legacy-apps": {"istio-injection": "enabled"},
}
TYPE = re.compile(rb'"type"\s*:\s*"(\w+)"')


class Endpoint:
    """The lab's endpoint from its kubeconfig: address and a TLS context with its client certificate."""

    def __init__(self, kubeconfig: str, workdir: str):
        with open(kubeconfig) as f:
            cfg = yaml.safe_load(f)
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        url = urlsplit(cluster["server"])
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        files = {}
        for key in ("certificate-authority-data", "client-certificate-data", "client-key-data"):
            files[key] = os.path.join(workdir, key)
            with open(files[key], "wb") as out:
                out.write(base64.b64decode(user.get(key) or cluster[key]))
        self.ssl = ssl.create_default_context(cafile=files["certificate-authority-data"])
        self.ssl.load_cert_chain(files["client-certificate-data"], files["client-key-data"])


def _median_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms"


def _timed(argv: list[str], printed: list[str] | None = None) -> float:
    """Seconds ARGV took (it must succeed); its output lines go to PRINTED."""
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300)
    took = time.monotonic() - t0
    if printed is not None:
        printed[:] = r.stdout.splitlines()
    return took


def labd_rss_kib(t: TestLab) -> int:
    pid = json.loads(t.lab("status", "-o", "json").stdout)["pid"]
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def bench_get(t: TestLab, kubectl: list[str], ep: Endpoint, row: Row, runs: int) -> None:
    subprocess.run([*kubectl, "get", "pods", "-A"], capture_output=True, check=True)  # discovery cache warm
    pods = len(t.pods(None))
    ours = [_timed([sys.executable, "-m", "lab.cli", "--lab", t.name, "get", "pods", "-A"]) for _ in range(runs)]
    theirs = [_timed([*kubectl, "get", "pods", "-A"]) for _ in range(runs)]
    row("kubectl get pods -A", _median_ms(theirs), f"median of {runs} ({pods} pods); min {min(theirs) * 1000:.0f} ms")
    row(
        "lab get pods -A",
        _median_ms(ours),
        f"median of {runs}; {statistics.median(ours) / statistics.median(theirs):.1f}x kubectl's time "
        "(both new processes: Python's start-up and imports against Go's start-up, TLS and discovery)",
    )
    conn = http.client.HTTPSConnection(ep.host, ep.port, context=ep.ssl)
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    server = []
    for _ in range(runs * 5):
        t0 = time.monotonic()
        conn.request("GET", "/api/v1/pods?limit=500", headers={"Accept": accept})
        body = conn.getresponse().read()
        server.append(time.monotonic() - t0)
    conn.close()
    assert json.loads(body)["kind"] == "Table"
    row(
        "… the server's part: the Table for get pods -A",
        f"{statistics.median(server) * 1000:.1f} ms",
        f"median of {len(server)} on a kept-alive HTTPS connection",
    )


def _settled(t: TestLab) -> None:
    def ready(pod: dict) -> bool:
        conditions = (pod.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def all_ready() -> bool:
        pods = [p for ns in ARTICLE_NAMESPACES for p in t.pods(ns)]
        return bool(pods) and all(ready(p) for p in pods)

    eventually(all_ready, timeout=120, interval=0.1, what="the article's pods Ready")
    time.sleep(0.5)


def bench_apply(t: TestLab, kubectl: list[str], row: Row, rounds: int) -> None:
    tools = {
        "kubectl apply -f topologies/article/": [*kubectl, "apply", "-f", ARTICLE],
        "lab apply -f topologies/article/": [sys.executable, "-m", "lab.cli", "--lab", t.name, "apply", "-f", ARTICLE],
    }
    how = {
        "kubectl apply -f topologies/article/": "client-side apply: a GET, then a POST or PATCH, per object",
        "lab apply -f topologies/article/": "one all-or-nothing request",
    }
    created: dict[str, list[float]] = {name: [] for name in tools}
    unchanged: dict[str, list[float]] = {name: [] for name in tools}
    printed: list[str] = []
    for _ in range(rounds):
        for name, argv in tools.items():  # interleaved, so drift hits both alike
            for ns, labels in ARTICLE_NAMESPACES.items():
                t.create_namespace(ns, labels)
            try:
                created[name].append(_timed(argv, printed))
                _settled(t)  # the pods the first apply made are up: the second meets a quiet labd
                unchanged[name].append(_timed(argv))
            finally:
                for ns in ARTICLE_NAMESPACES:
                    t.delete_namespace(ns)
    for name in tools:
        row(
            f"{name}, creating",
            _median_ms(created[name]),
            f"median of {rounds}; {len(printed)} objects in 2 namespaces; {how[name]}",
        )
        row(f"{name}, all unchanged", _median_ms(unchanged[name]), f"median of {rounds}")


async def _watch(ep: Endpoint, counts: dict[str, int], connected: Callable[[], None]) -> None:
    """One watch of WATCH_NS's pods, counting events by type (until cancelled)."""
    stream = await trio.open_ssl_over_tcp_stream(ep.host, ep.port, ssl_context=ep.ssl, https_compatible=True)
    async with stream:
        path = f"/api/v1/namespaces/{WATCH_NS}/pods?watch=true&timeoutSeconds=3600"
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {ep.host}\r\nAccept: application/json\r\n\r\n".encode())
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += await stream.receive_some(65536)
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"chunked" in head.lower(), head
        connected()
        raw, body = bytearray(rest), bytearray()
        while True:
            _dechunk(raw, body)
            while (end := body.find(b"\n")) >= 0:
                line, body[: end + 1] = bytes(body[:end]), b""
                if m := TYPE.search(line[:64]):
                    kind = m.group(1).decode()
                    counts[kind] = counts.get(kind, 0) + 1
            data = await stream.receive_some(65536)
            if not data:
                return
            raw += data


def _dechunk(raw: bytearray, body: bytearray) -> None:
    """Move the complete chunks of RAW (HTTP/1.1 chunked coding) into BODY."""
    while (eol := raw.find(b"\r\n")) >= 0:
        size = int(bytes(raw[:eol]).split(b";")[0], 16)
        if len(raw) < eol + 2 + size + 2:
            return
        body += raw[eol + 2 : eol + 2 + size]
        del raw[: eol + 2 + size + 2]


def _ready_time(t: TestLab, kubectl: list[str], n: int) -> float:
    t0 = time.monotonic()
    subprocess.run(
        [*kubectl, "apply", "-f", "-"],
        input=json.dumps(deployment("many", WATCH_NS, pause_container(), replicas=n)),
        text=True,
        check=True,
        capture_output=True,
    )
    eventually(
        lambda: t.get("Deployment", "many", WATCH_NS)["status"].get("readyReplicas", 0) == n, timeout=300, interval=0.05
    )
    return time.monotonic() - t0


def _delete_pods(t: TestLab, kubectl: list[str]) -> None:
    subprocess.run([*kubectl, "delete", "deployment", "many", "-n", WATCH_NS], check=True, capture_output=True)
    eventually(lambda: not t.pods(WATCH_NS), timeout=300, interval=0.1)


def bench_watches(t: TestLab, kubectl: list[str], ep: Endpoint, row: Row, watchers: int, pods: int) -> None:
    t.create_namespace(WATCH_NS)
    baseline = _ready_time(t, kubectl, pods)
    _delete_pods(t, kubectl)
    rss: dict[str, int] = {"before": labd_rss_kib(t)}
    counts: list[dict[str, int]] = [{} for _ in range(watchers)]
    figures: dict[str, float] = {}

    async def main() -> None:
        up = trio.Semaphore(0)
        async with trio.open_nursery() as nursery:
            for c in counts:
                nursery.start_soon(_watch, ep, c, up.release)
            for _ in range(watchers):
                with trio.fail_after(60):
                    await up.acquire()
            await trio.sleep(0.5)
            rss["watching"] = await trio.to_thread.run_sync(labd_rss_kib, t)
            figures["ready"] = await trio.to_thread.run_sync(_ready_time, t, kubectl, pods)
            # the pods' last status changes: wait until no watcher gets anything for a second
            last, quiet_since = -1, trio.current_time()
            while trio.current_time() - quiet_since < 1.0:
                total = sum(sum(c.values()) for c in counts)
                if total != last:
                    last, quiet_since = total, trio.current_time()
                await trio.sleep(0.1)
            rss["after pods"] = await trio.to_thread.run_sync(labd_rss_kib, t)
            nursery.cancel_scope.cancel()  # every watcher hangs up

    trio.run(main)
    time.sleep(1.0)
    rss["closed"] = labd_rss_kib(t)
    totals = sorted(sum(c.values()) for c in counts)
    one = counts[0]
    row(
        f"{watchers} watches held, {pods} pods applied (kubectl) to all Ready",
        f"{figures['ready']:.2f} s",
        f"without the watches {baseline:.2f} s",
    )
    row(
        "… events delivered per watcher",
        f"{statistics.median(totals):.0f}",
        f"min {totals[0]} max {totals[-1]} over {watchers} watchers; "
        + ", ".join(f"{k} {v}" for k, v in sorted(one.items())),
    )
    row(
        "… labd RSS before / watching / after pods / watches closed",
        " / ".join(f"{rss[k] / 1024:.1f}" for k in ("before", "watching", "after pods", "closed")) + " MiB",
        f"{(rss['watching'] - rss['before']) / watchers:.0f} KiB per open watch",
    )
    _delete_pods(t, kubectl)
    t.delete_namespace(WATCH_NS)


def run(row: Row, runs: int = 20, rounds: int = 3, watchers: int = 100, pods: int = 200) -> None:
    t = TestLab(unique_lab_name("k"), DEFAULT_TOPOLOGY).up()
    workdir = tempfile.mkdtemp(prefix="bench-kubeapi-")
    try:
        kubeconfig = kubeconfig_path(t.name)
        kubectl = [kubectl_binary(), "--kubeconfig", kubeconfig, "--cache-dir", os.path.join(workdir, "cache")]
        ep = Endpoint(kubeconfig, workdir)
        bench_get(t, kubectl, ep, row, runs)
        bench_apply(t, kubectl, row, rounds)
        bench_watches(t, kubectl, ep, row, watchers, pods)
    finally:
        t.down()
        shutil.rmtree(workdir, ignore_errors=True)
