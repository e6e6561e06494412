"""cert-expiry: short-lived workload certificates. ztunnel asks for SECRET_TTL_SECONDS of validity
and renews at half-life; with istiod away it keeps using its certificate until NOT AFTER, then new
connections fail closed, and they work again once istiod is back and the renewal succeeds."""

from __future__ import annotations

import statistics
import threading
import time
from datetime import datetime

from scenarios import manifests as m
from scenarios import meshops
from scenarios.framework import Run, Scenario, ScenarioError

ISTIO = "Istio's ambient docs (ztunnel certificates); ztunnel's SECRET_TTL"
FACTS = "Istio's ambient docs: ztunnel keeps its state while istiod is down, certificates until they expire"
TTL_ENV = "SECRET_TTL_SECONDS"
MIN_REFRESH = 1.0  # ztunnel never renews sooner than this after a fetch (mesh.ztunnel.identity)


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def expected_refresh(not_before: float, not_after: float, issued: float, floor: float = MIN_REFRESH) -> float:
    """Seconds from ISSUED to the renewal of a certificate valid NOT_BEFORE..NOT_AFTER (epoch): its
    half-life, or FLOOR when that is sooner (a backdated short-lived certificate is past it at once)."""
    half = not_before + (not_after - not_before) / 2
    return max(half - issued, floor)


def intervals(sightings: list[tuple[float, str]]) -> list[float]:
    """Seconds between the first sightings of successive serials in SIGHTINGS [(time, serial)]."""
    firsts: list[float] = []
    seen: set[str] = set()
    for t, serial in sorted(sightings):
        if serial not in seen:
            seen.add(serial)
            firsts.append(t)
    return [round(b - a, 3) for a, b in zip(firsts, firsts[1:])]


def fail_closed(probes: list[dict], expiry: float, back: float) -> dict:
    """What new-connection PROBES [{t, ok}] show around a certificate's EXPIRY with istiod back at
    BACK (one time axis): the last success before the failures, the first failure, the first
    success after it, and whether every probe between expiry+grace and BACK failed.

    Keys: last_ok_before, first_fail, recovered_at (None when never), fail_after_expiry_s
    (first_fail - expiry), ok_until_expiry (no probe failed before the expiry), all_failed_while_expired."""
    probes = sorted(probes, key=lambda p: p["t"])
    first_fail = next((p["t"] for p in probes if not p["ok"]), None)
    before = [p for p in probes if first_fail is None or p["t"] < first_fail]
    last_ok = before[-1]["t"] if before else None
    recovered = None
    if first_fail is not None:
        recovered = next(
            (
                p["t"]
                for p in probes
                if p["t"] > first_fail and p["ok"] and all(q["ok"] for q in probes if q["t"] >= p["t"])
            ),
            None,
        )
    window = [p for p in probes if first_fail is not None and first_fail <= p["t"] < back]
    return {
        "last_ok_before": last_ok,
        "first_fail": first_fail,
        "recovered_at": recovered,
        "fail_after_expiry_s": None if first_fail is None else round(first_fail - expiry, 3),
        "ok_until_expiry": all(p["ok"] for p in probes if p["t"] < expiry - 0.3),
        "all_failed_while_expired": bool(window) and not any(p["ok"] for p in window),
    }


class Prober:
    """New HBONE connections at a steady pace. ztunnel pools HBONE connections per (source,
    destination pod), so a probe needs a new one only to a pod the client has not reached yet:
    each probe is one curl to the current fresh pod; after a success that pod has a pooled
    connection and the next probe moves to the next fresh pod, after a failure it tries the same
    pod again (a failed connection is not pooled)."""

    def __init__(self, ctx: Run, ns: str, pod: str, ips: list[str], every: float, port: int = 8080):
        target = ctx.client.call("exec", namespace=ns, pod=pod, container=None)
        self._prefix = target.get("argv", ["ip", "netns", "exec", target["netns"]])
        self._env = target["env"]
        self.ctx, self.ips, self.every, self.port = ctx, list(ips), every, port
        self.results: list[dict] = []
        self.start_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self, at: float) -> None:
        """Starts probing at AT (seconds on the scenario's axis)."""
        self.start_at = at
        self._thread.start()

    def stop(self) -> list[dict]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        return self.results

    def _loop(self) -> None:
        import subprocess

        self._stop.wait(max(0.0, self.start_at - self.ctx.now()))
        i = 0
        while not self._stop.is_set() and i < len(self.ips):
            t = self.ctx.now()
            try:
                r = subprocess.run(
                    [
                        *self._prefix,
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "--max-time",
                        "1.5",
                        f"http://{self.ips[i]}:{self.port}/",
                    ],
                    env=self._env,
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                code, status = r.returncode, r.stdout.strip()
            except subprocess.TimeoutExpired:
                code, status = 124, ""
            ok = code == 0 and status == "200"
            self.results.append({"t": round(t, 3), "pod_ip": self.ips[i], "ok": ok, "curl_exit": code})
            if ok:
                i += 1
            self._stop.wait(max(0.0, self.every - (self.ctx.now() - t)))


class CertExpiry(Scenario):
    name = "cert-expiry"
    summary = "short-lived workload certificates: rotation, then istiod away past NOT AFTER: fail closed, recovery"
    claims = [
        ("ztunnel asks for SECRET_TTL_SECONDS of validity and renews a certificate at its half-life", ISTIO),
        (
            "with istiod away ztunnel keeps using a certificate until it expires; then new connections fail closed",
            FACTS,
        ),
        ("traffic recovers when istiod returns (the next renewal succeeds)", FACTS),
    ]
    ttl = 8  # seconds
    watch = 2.5  # seconds of watching serials change
    probe_every = 0.4
    fresh = 6  # server pods reached only by the probes, one new HBONE connection each
    recover_wait = 30.0

    def run(self, ctx: Run) -> None:
        workers = ctx.workers(at_least=2)
        client_node, server_node = workers[0], workers[1]
        meshops.patch_ztunnel(ctx, lambda c: meshops.set_env(c, TTL_ENV, str(self.ttl)), f"{TTL_ENV}={self.ttl}")
        ns = ctx.namespace()
        ctx.apply(m.echo(ns, node=server_node, sa="server"))
        ctx.apply(m.echo(ns, "fresh", node=server_node, sa="server", replicas=self.fresh))
        ctx.apply(m.client(ns, "client", node=client_node, sa="client"))
        ctx.wait_ready(ns, "app=echo", enrolled=True)
        fresh_ips = [p["status"]["podIP"] for p in ctx.wait_ready(ns, "app=fresh", self.fresh, enrolled=True)]
        client = ctx.wait_ready(ns, "app=client", enrolled=True)[0]["metadata"]["name"]
        url = f"http://echo.{ns}/"
        ctx.wait_until(lambda: ctx.curl(client, ns, url)[0] == 200, 30, "a first answer", 0.2)
        ident = {
            "client": f"spiffe://cluster.local/ns/{ns}/sa/client",
            "server": f"spiffe://cluster.local/ns/{ns}/sa/server",
        }
        nodes = {"client": client_node, "server": server_node}

        # Rotation: serials seen on the client's ztunnel.
        sightings: list[tuple[float, str]] = []
        certs: dict[str, dict] = {}
        deadline = time.monotonic() + self.watch
        while time.monotonic() < deadline:
            c = self._leaf(ctx, client_node, ident["client"])
            if c:
                sightings.append((time.time(), c["serialHex"]))
                certs.setdefault(c["serialHex"], {**c, "first_seen": time.time()})
            time.sleep(0.1)
        table = meshops.lab_cli(ctx, "istioctl", "ztunnel-config", "certificates", "--node", client_node)
        ctx.figure(
            "certificates_table",
            [ln for ln in table.splitlines() if ln.startswith("CERTIFICATE") or ident["client"] in ln],
        )
        gaps = intervals(sightings)
        if not certs:
            raise ScenarioError(f"no certificate for {ident['client']} on the ztunnel of {client_node}")
        # A serial first seen during the watch was issued within one poll of that sighting (the first
        # one may be older).
        later = list(certs.values())[1:] or list(certs.values())
        first = later[0]
        nb, na, issued = epoch(first["validFrom"]), epoch(first["expirationTime"]), first["first_seen"]
        expect = expected_refresh(nb, na, issued)
        interval = statistics.median(gaps) if gaps else None
        ctx.figure(
            "rotation",
            {
                "serials": [
                    {
                        "serial": s,
                        "not_before": c["validFrom"],
                        "not_after": c["expirationTime"],
                        "first_seen": round(c["first_seen"] - ctx.t0, 3),
                    }
                    for s, c in certs.items()
                ],
                "intervals_s": gaps,
                "median_interval_s": interval,
                "expected_interval_s": round(expect, 3),
                "lifetime_after_issue_s": round(na - issued, 3),
                "backdated_s": round(issued - nb, 3),
            },
        )

        # istiod away past the expiry, with new connections probed and one kept-alive load.
        prober = Prober(ctx, ns, client, fresh_ips, self.probe_every)
        ctx.undo("stop the probes", prober.stop)
        ctx.load("kept-alive connection", ns, client, url, qps=5, duration=self.ttl + 5.0, timeout=2.0)
        meshops.scale_istiod(ctx, 0)
        ctx.wait_until(lambda: meshops.istiod_ready(ctx, 0), 30, "istiod gone", interval=0.05)
        t_down = ctx.event("istiod scaled to 0")
        time.sleep(1.2)  # the last renewal, if one was in flight, has ended by now
        leaves = {k: self._leaf(ctx, nodes[k], ident[k]) for k in ident}
        last = {k: c for k, c in leaves.items() if c}
        if len(last) != len(leaves):
            raise ScenarioError("a workload certificate is missing after istiod went away")
        expiry_epoch = {k: epoch(c["expirationTime"]) for k, c in last.items()}
        expiry = min(expiry_epoch.values()) - ctx.t0
        ctx.event("certificate NOT AFTER", at=expiry)
        prober.start(expiry - 3 * self.probe_every)
        ctx.say(f"istiod down at {t_down:.1f}s; certificates expire at {expiry:.1f}s")
        try:
            ctx.wait_until(
                lambda: ctx.now() >= expiry + 2.0 and any(not p["ok"] for p in prober.results if p["t"] >= expiry - 1),
                self.ttl + 10,
                "new connections failing after the expiry",
                interval=0.1,
            )
        except ScenarioError:
            pass  # reported: no failure
        meshops.scale_istiod(ctx, 1)
        ctx.wait_until(lambda: meshops.istiod_ready(ctx, 1), 60, "istiod Ready", interval=0.05)
        t_back = ctx.event("restore")
        ctx.say(f"istiod Ready at {t_back:.1f}s; waiting for new connections to work again")

        def recovered():
            res = list(prober.results)
            return len([p for p in res if p["t"] > t_back]) >= 3 and all(p["ok"] for p in res[-3:])

        try:
            ctx.wait_until(recovered, self.recover_wait, "new connections working again", interval=0.1)
        except ScenarioError:
            pass  # reported as no recovery
        probes = prober.stop()
        ctx.collect()
        fc = fail_closed(probes, expiry, t_back)
        rec = None if fc["recovered_at"] is None else round(fc["recovered_at"] - t_back, 3)
        kept = ctx.result.loads["kept-alive connection"][0]
        kept_tl = ctx.result.timelines["kept-alive connection"]
        after = [b for b in kept_tl if b["t"] >= expiry]
        kept_after = (sum(b["ok"] for b in after), sum(b["requests"] for b in after))
        kinds = sorted({p["curl_exit"] for p in probes if not p["ok"]})
        ctx.figure("istiod_down_at", round(t_down, 3))
        ctx.figure("istiod_ready_at", round(t_back, 3))
        ctx.figure("expiry_at", round(expiry, 3))
        ctx.figure(
            "last_certificates",
            {k: {"serial": c["serialHex"], "not_after": c["expirationTime"]} for k, c in last.items()},
        )
        ctx.figure("probes", probes)
        ctx.figure("fail_closed", fc)
        ctx.figure("recovery_after_istiod_ready_s", rec)
        ctx.figure("probe_curl_exits", kinds)
        ctx.figure(
            "kept_alive_after_expiry",
            {"ok": kept_after[0], "requests": kept_after[1], "errors": kept.get("errors", {})},
        )
        ctx.result.timelines["new connections"] = [
            {"t": p["t"], "requests": 1, "ok": int(p["ok"]), "errors": int(not p["ok"]), "rate": float(p["ok"])}
            for p in probes
        ]

        ctx.verdict(
            self.claims[0],
            f"{TTL_ENV}={self.ttl}: NOT AFTER {na - issued:.1f}s after issue, NOT BEFORE {issued - nb:.0f}s before "
            f"it (istiod backdates 2 min), so the half-life is {(nb + (na - nb) / 2) - issued:.0f}s from issue and "
            f"ztunnel renews at its {MIN_REFRESH:g}s floor: {len(certs)} serials in {self.watch:g}s, every "
            f"{interval:.1f}s"
            if interval is not None
            else f"{len(certs)} serial(s) in {self.watch:g}s",
            interval is not None and abs(na - issued - self.ttl) <= 2 and abs(interval - expect) <= 0.6,
            f"every {interval:.1f}s, expected {expect:.1f}s" if interval is not None else "no renewal seen",
        )
        ff = fc["fail_after_expiry_s"]
        ctx.verdict(
            self.claims[1],
            f"istiod scaled to 0 at {t_down:.1f}s; new connections succeeded until NOT AFTER ({expiry:.1f}s) and "
            + (
                f"failed from {ff:+.1f}s after it (curl exit {', '.join(map(str, kinds))})"
                if ff is not None
                else "never failed"
            )
            + f"; a kept-alive connection opened before: {kept_after[0]}/{kept_after[1]} ok after the expiry",
            ff is not None and fc["ok_until_expiry"] and fc["all_failed_while_expired"] and -0.5 <= ff <= 3.0,
            f"fails {ff:+.1f}s after NOT AFTER" if ff is not None else "no failure",
        )
        ctx.verdict(
            self.claims[2],
            f"istiod Ready at {t_back:.1f}s; new connections work again "
            + (
                f"{rec:.1f}s later (ztunnel's renewal backoff: 1 s doubling while istiod was away)"
                if rec is not None
                else f"not within {self.recover_wait:g}s"
            ),
            rec is not None,
            f"recovery {rec:.1f}s" if rec is not None else "no recovery",
        )
        ctx.note(
            "ztunnel pools HBONE connections per source and destination pod, and TLS checks a certificate "
            "at the handshake only: a connection made before the expiry keeps carrying requests (the "
            "kept-alive load, and new requests to pods already reached, still succeed). So each probe is a "
            "curl to a server pod the client has not reached yet (one of "
            f"{self.fresh} replicas), retried on the same pod while it fails."
        )
        ctx.note(
            f"the ztunnel DaemonSet's {TTL_ENV} is put back as it was (every ztunnel restarts), and istiod's "
            f"replicas too."
        )

    @staticmethod
    def _leaf(ctx: Run, node: str, identity: str) -> dict | None:
        from mesh.istioctl.common import IstioctlError
        from mesh.istioctl.ztunnel_config import fetch_config_dump

        try:
            dump = fetch_config_dump(ctx.client.name, node)
        except (IstioctlError, OSError):
            return None
        for c in dump.get("certificates") or []:
            if c.get("identity") == identity and c.get("certChain"):
                return {**c["certChain"][0], "state": c.get("state")}
        return None
