"""The scenario framework: build on a running lab, drive traffic, break something, measure, and
always put the lab back.

A scenario is a `Scenario` subclass with a `name`, a one-line `summary`, the `claims` it tests
(text and source) and a `run(ctx)` method. `run_scenario(client, name)` gives it a `Run` (the
context below), times it, and whatever happens — an error, a failed check, Ctrl-C (SIGINT) or
SIGTERM — undoes every step the scenario registered, newest first, and deletes the namespaces it
made (`sc-<scenario>-...`). It returns a `Result`: table rows (CLAIM, OBSERVED, VERDICT), raw
figures, per-group timelines on one time axis (seconds since the run started), the events placed
on it (the break, the restore) and notes.

What a scenario uses (`Run`):
- `namespace(suffix, ambient=True, labels=None)`: makes `sc-<scenario>-<suffix>`, deleted at the end;
- `apply(yaml)`, `delete(kind, name, ns)`, `scale(kind, name, ns, replicas)`, `pods`, `pod_names`,
  `wait_ready`, `exec`, `curl`, `logs`, `wait_until`;
- `undo(what, fn)`: a restore step, run at the end in every case (LIFO);
- `load(group, ns, pod, url, qps=, duration=)`: traffic (lab.load through `traffic.start_load`);
  `collect()` waits for every load and files its timeline under its group;
- `event(label)`: marks now on the time axis; `outage(ns, selector, hold)`: deletes the pods a
  selector matches and keeps the replacements away for `hold` seconds, then waits for one to be
  Ready (the break and the restore are marked);
- `verdict(claim, observed, agrees, figure)` (CLAIM one of the `claims` pairs), `figure(key, value)`,
  `bars(metric, {label: value})`, `note(text)`.

Pure helpers for verdicts (`window_rate`, `recovery_time`, `pct`, `merge_timelines`,
`untouched`, `proxies_crossed`, `table`) have unit tests in tests/unit/test_scenarios.py.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import textwrap
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

from lab.client import LabClient, LabError
from scenarios import manifests, traffic

SCENARIO_PREFIX = "sc-"
AMBIENT_LABEL = "istio.io/dataplane-mode"
REDIRECTION = "ambient.istio.io/redirection"
MESH_NAMESPACE = "istio-system"
_COUNTS = {1: "one", 2: "two", 3: "three"}


class ScenarioError(Exception):
    """A scenario could not run or build what it needs (the lab is still put back)."""


class Interrupted(BaseException):
    """SIGTERM during a run (SIGINT arrives as KeyboardInterrupt)."""


# ---- results ----------------------------------------------------------------------------------


@dataclass
class Row:
    claim: str
    observed: str
    agrees: bool
    figure: str = ""  # the measured figure the verdict rests on
    source: str = ""  # where the claim comes from

    @property
    def verdict(self) -> str:
        word = "agrees" if self.agrees else "differs"
        return f"{word} ({self.figure})" if self.figure else word

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


@dataclass
class Result:
    scenario: str
    summary: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    timelines: dict[str, list[dict]] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    bars: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    loads: dict[str, list[dict]] = field(default_factory=dict)  # raw load reports per group
    wall_s: float = 0.0
    error: str | None = None
    interrupted: bool = False
    cleanup_errors: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        """Every row agrees and the run completed."""
        return bool(self.rows) and all(r.agrees for r in self.rows) and not self.error and not self.interrupted

    def row(self, claim_start: str) -> Row:
        """The first row whose claim starts with CLAIM_START (for tests)."""
        for r in self.rows:
            if r.claim.startswith(claim_start):
                return r
        raise KeyError(claim_start)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rows"] = [r.to_dict() for r in self.rows]
        d["agrees"] = self.agrees
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


# ---- pure helpers -----------------------------------------------------------------------------


def pct(rate: float | None) -> str:
    """A success rate as text: 100%, 99.5%, 0%, n/a."""
    if rate is None:
        return "n/a"
    v = rate * 100
    return f"{v:.0f}%" if abs(v - round(v)) < 0.05 else f"{v:.1f}%"


def merge_timelines(reports: Iterable[dict], t0: float) -> list[dict]:
    """Per-second buckets of several load reports on one axis: seconds since T0 (epoch).

    A report's bucket `t` (its own seconds since its `started`) starts at `started - t0 + t` on
    the axis; the reports of a group are put on the first one's grid (buckets less than half a
    second apart are summed). Each bucket: t (float, its start), requests, ok, errors, rate (ok /
    requests, None without requests)."""
    reports = [r for r in reports]
    if not reports:
        return []
    base = float(reports[0].get("started", t0)) - t0
    frac = base - math.floor(base)
    acc: dict[int, list[int]] = {}
    for rep in reports:
        shift = float(rep.get("started", t0)) - t0
        for b in rep.get("timeline", []):
            start = shift + float(b.get("t", b.get("second", 0)))
            slot = acc.setdefault(int(round(start - frac)), [0, 0])
            slot[0] += int(b.get("requests", 0))
            slot[1] += int(b.get("ok", 0))
    return [
        {"t": round(k + frac, 3), "requests": r, "ok": ok, "errors": r - ok, "rate": (ok / r) if r else None}
        for k, (r, ok) in sorted(acc.items())
    ]


def window_rate(timeline: list[dict], start: float, end: float) -> tuple[float | None, int]:
    """(success rate, requests) over the buckets lying wholly inside [START, END]; (None, 0) if none."""
    req = ok = 0
    for b in timeline:
        if b["t"] >= start - 1e-9 and b["t"] + 1 <= end + 1e-9:
            req += b["requests"]
            ok += b["ok"]
    return (ok / req if req else None), req


def overlap_rate(timeline: list[dict], start: float, end: float) -> tuple[float | None, int]:
    """(success rate, requests) over the buckets that overlap [START, END] at all."""
    req = ok = 0
    for b in timeline:
        if b["t"] + 1 > start and b["t"] < end:
            req += b["requests"]
            ok += b["ok"]
    return (ok / req if req else None), req


def recovery_time(timeline: list[dict], since: float) -> float | None:
    """Seconds from SINCE to the start of the first all-success second after the last failing one
    (0.0 when nothing failed from the second holding SINCE on; None when the run ended failing)."""
    relevant = [b for b in timeline if b["t"] + 1 > since and b["requests"]]
    failing = [b for b in relevant if b["ok"] < b["requests"]]
    if not failing:
        return 0.0
    last = failing[-1]["t"]
    after = [b for b in relevant if b["t"] > last]
    if not after:
        return None
    return max(0.0, after[0]["t"] - since)


def pod_state(pods: Iterable[dict]) -> dict[str, dict]:
    """{name: {uid, restarts}} of app pods, to show they were not touched."""
    return {
        p["metadata"]["name"]: {
            "uid": p["metadata"]["uid"],
            "restarts": sum(c.get("restartCount", 0) for c in p.get("status", {}).get("containerStatuses", []) or []),
        }
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
    }


def untouched(before: dict[str, dict], after: dict[str, dict]) -> tuple[bool, str]:
    """Same pods (names and uids) and no restarts; (True/False, a short account)."""
    gone = sorted(set(before) - set(after))
    new = sorted(set(after) - set(before))
    changed = sorted(n for n in set(before) & set(after) if before[n]["uid"] != after[n]["uid"])
    restarts = sum(p["restarts"] for p in after.values())
    ok = not gone and not new and not changed and restarts == 0
    if ok:
        return True, f"{len(after)} pods, same uids, 0 restarts"
    parts = []
    if gone or new or changed:
        parts.append(f"{len(gone)} gone, {len(new)} new, {len(changed)} replaced")
    parts.append(f"{restarts} restarts")
    return False, ", ".join(parts)


def proxies_crossed(logs: dict[str, str], needle: str) -> list[str]:
    """The proxies (keys of LOGS: proxy name -> its access log) whose log mentions NEEDLE."""
    return sorted(name for name, text in logs.items() if needle in text)


def table(rows: list[Row], width: int = 118) -> str:
    """CLAIM / OBSERVED / VERDICT, long cells wrapped inside their column."""
    widths = [max(20, width * 4 // 10), max(20, width * 4 // 10)]
    widths.append(max(14, width - sum(widths) - 6))
    cells = [["CLAIM", "OBSERVED", "VERDICT"]] + [[r.claim, r.observed, r.verdict] for r in rows]
    out = []
    for cell in cells:
        wrapped = [textwrap.wrap(c, w) or [""] for c, w in zip(cell, widths)]
        for i in range(max(len(w) for w in wrapped)):
            line = "   ".join((w[i] if i < len(w) else "").ljust(widths[k]) for k, w in enumerate(wrapped))
            out.append(line.rstrip())
    return "\n".join(out)


def ready(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", []) or []
    )


# ---- the run context --------------------------------------------------------------------------


class Run:
    """What a scenario works with; see the module doc."""

    def __init__(
        self, client: LabClient, scenario: "Scenario", result: Result, log: Callable[[str], None] | None = None
    ):
        self.client = client
        self.scenario = scenario
        self.result = result
        self.t0 = time.time()
        self._log = log or (lambda msg: None)
        self._undo: list[tuple[str, Callable[[], Any]]] = []
        self._namespaces: list[str] = []
        self._loads: list[tuple[str, traffic.Load]] = []

    # progress, results
    def say(self, msg: str) -> None:
        self._log(f"[{self.now():5.1f}s] {msg}")

    def now(self) -> float:
        return time.time() - self.t0

    def verdict(self, claim: tuple[str, str], observed: str, agrees: bool, figure: str = "") -> Row:
        """One row of the report: CLAIM (its text and where it is made), what was OBSERVED, whether
        that AGREES, and the FIGURE it rests on."""
        r = Row(claim[0], observed, bool(agrees), figure, claim[1])
        self.result.rows.append(r)
        return r

    def figure(self, key: str, value: Any) -> Any:
        self.result.figures[key] = value
        return value

    def bars(self, metric: str, values: dict[str, float]) -> None:
        self.result.bars[metric] = dict(values)

    def note(self, text: str) -> None:
        self.result.notes.append(text)

    def event(self, label: str, at: float | None = None) -> float:
        t = self.now() if at is None else at
        self.result.events.append({"t": round(t, 3), "label": label})
        return t

    # building
    def undo(self, what: str, fn: Callable[[], Any]) -> None:
        self._undo.append((what, fn))

    def namespace(self, suffix: str = "", ambient: bool = True, labels: dict[str, str] | None = None) -> str:
        name = f"{SCENARIO_PREFIX}{self.scenario.name}" + (f"-{suffix}" if suffix else "")
        labels = dict(labels or {})
        if ambient:
            labels.setdefault(AMBIENT_LABEL, "ambient")
        self._namespaces.append(name)
        self.client.apply(
            json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        )
        return name

    def apply(self, text: str) -> list[dict]:
        return self.client.apply(text, f"scenario {self.scenario.name}")

    def get(self, kind: str, name: str | None = None, namespace: str | None = None, selector: str | None = None):
        return self.client.call("get", kind=kind, name=name, namespace=namespace, selector=selector)

    def delete(self, kind: str, name: str, namespace: str | None) -> None:
        self.client.call("delete", kind=kind, name=name, namespace=namespace, ignore_not_found=True)

    def scale(self, kind: str, name: str, namespace: str, replicas: int) -> None:
        self.client.call("scale", kind=kind, name=name, namespace=namespace, replicas=replicas)

    def pods(self, namespace: str | None, selector: str | None = None) -> list[dict]:
        return [
            p for p in self.get("Pod", None, namespace, selector)["items"] if not p["metadata"].get("deletionTimestamp")
        ]

    def pod_names(self, namespace: str, selector: str) -> list[str]:
        return [p["metadata"]["name"] for p in self.pods(namespace, selector)]

    def workers(self, at_least: int = 1) -> list[str]:
        """The nodes apps can land on, in order; a scenario that needs more stops here, saying so."""
        names = manifests.workers(self.get("Node")["items"])
        if len(names) < at_least:
            raise ScenarioError(
                f"needs at least {_COUNTS.get(at_least, at_least)} worker node{'s' if at_least > 1 else ''}"
            )
        return names

    def wait_until(self, check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                value = check()
                if value:
                    return value
                last = value
            except (LabError, OSError, ValueError, KeyError, IndexError) as e:
                last = e
            if time.monotonic() >= deadline:
                raise ScenarioError(f"{what}: not after {timeout:.0f}s (last: {last!r})")
            time.sleep(interval)

    def wait_ready(
        self, namespace: str, selector: str, count: int = 1, timeout: float = 60.0, enrolled: bool | None = None
    ) -> list[dict]:
        """COUNT ready pods (and no other) for SELECTOR; ENROLLED: also annotated by istio-cni."""

        def check():
            pods = self.pods(namespace, selector)
            good = [p for p in pods if ready(p)]
            if enrolled:
                good = [p for p in good if p["metadata"].get("annotations", {}).get(REDIRECTION) == "enabled"]
            return good if len(good) >= count and len(good) == len(pods) else None

        return self.wait_until(check, timeout, f"{count} ready pods {selector} in {namespace}")

    def exec(
        self,
        pod: str,
        namespace: str,
        command: list[str],
        timeout: float = 20.0,
        container: str | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        target = self.client.call("exec", namespace=namespace, pod=pod, container=container)
        prefix = target.get("argv", ["ip", "netns", "exec", target["netns"]])
        try:
            return subprocess.run(
                [*prefix, *command], env=target["env"], input=input, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(command, 124, "", "timeout")

    def curl(
        self, pod: str, namespace: str, url: str, *args: str, max_time: float = 3.0, container: str | None = None
    ) -> tuple[int | None, str, int]:
        """(HTTP status or None, body, curl's exit code) of one request from POD."""
        r = self.exec(
            pod,
            namespace,
            ["curl", "-sS", "--max-time", str(max_time), "-w", "\n%{http_code}", *args, url],
            timeout=max_time + 10,
            container=container,
        )
        body, _, code = r.stdout.rpartition("\n")
        return (int(code) if r.returncode == 0 and code.isdigit() else None), body, r.returncode

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        return self.client.call("logs", namespace=namespace, pod=pod, container=container)

    # traffic
    def load(
        self,
        group: str,
        namespace: str,
        pod: str,
        url: str,
        *,
        qps: float,
        duration: float,
        connections: int = 1,
        timeout: float = 2.0,
    ) -> traffic.Load:
        handle = traffic.start_load(
            self.client, namespace, pod, url, qps=qps, duration=duration, connections=connections, timeout=timeout
        )
        self._loads.append((group, handle))
        return handle

    def collect(self) -> dict[str, list[dict]]:
        """Waits for every running load; files reports and per-group timelines in the result."""
        by_group: dict[str, list[dict]] = {}
        loads, self._loads = self._loads, []
        for group, handle in loads:
            by_group.setdefault(group, []).append(handle.wait())
        for group, reports in by_group.items():
            self.result.loads.setdefault(group, []).extend(reports)
            self.result.timelines[group] = merge_timelines(self.result.loads[group], self.t0)
        return by_group

    def outage(
        self,
        namespace: str,
        selector: str,
        hold: float,
        node: str | None = None,
        pod: str | None = None,
        label: str = "break",
        timeout: float = 30.0,
    ) -> dict:
        """Deletes the pods SELECTOR matches (on NODE only, or just POD, if given), deletes every new
        pod matching SELECTOR (on NODE) that appears for HOLD seconds, then lets the controller bring
        one back and waits until it is Ready. Marks LABEL and `restore` on the time axis; returns
        {break, release, ready} (seconds on that axis)."""

        def matching():
            return [p for p in self.pods(namespace, selector) if node is None or p["spec"].get("nodeName") == node]

        current = matching()
        first = [p for p in current if pod is None or p["metadata"]["name"] == pod]
        if not first:
            raise ScenarioError(
                f"nothing matches {selector} in {namespace}"
                + (f" on {node}" if node else "")
                + (f" named {pod}" if pod else "")
            )
        known = {p["metadata"]["uid"] for p in current}
        t_break = self.event(label)
        for p in first:
            self.delete("Pod", p["metadata"]["name"], namespace)
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            for p in matching():
                if p["metadata"]["uid"] not in known:
                    known.add(p["metadata"]["uid"])
                    self.delete("Pod", p["metadata"]["name"], namespace)
            time.sleep(0.03)
        t_release = self.event("restore")
        self.wait_until(
            lambda: [p for p in matching() if ready(p) and p["metadata"]["uid"] not in known],
            timeout,
            f"a ready replacement for {selector}",
            interval=0.05,
        )
        t_ready = self.now()
        return {"break": round(t_break, 3), "release": round(t_release, 3), "ready": round(t_ready, 3)}

    # cleanup
    def _cleanup(self) -> None:
        for group, handle in self._loads:
            try:
                handle.stop()
            except Exception:  # noqa: BLE001 - best effort, a load ends by itself anyway
                pass
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - every step is tried; failures are reported
                self.result.cleanup_errors.append(f"{what}: {e}")
        for ns in reversed(self._namespaces):
            try:
                self.client.call("delete", kind="Namespace", name=ns, namespace=None, ignore_not_found=True)
            except LabError as e:
                self.result.cleanup_errors.append(f"delete namespace {ns}: {e}")
        deadline = time.monotonic() + 60
        for ns in self._namespaces:
            while time.monotonic() < deadline:
                try:
                    self.client.call("get", kind="Namespace", name=ns, namespace=None)
                except LabError:
                    break
                time.sleep(0.1)
            else:
                self.result.cleanup_errors.append(f"namespace {ns} still there after 60s")


class Scenario:
    """Subclass with `name`, `summary`, `claims` [(text, source)] and `run(ctx)`."""

    name: str = ""
    summary: str = ""
    claims: list[tuple[str, str]] = []

    def run(self, ctx: Run) -> None:
        raise NotImplementedError


# ---- the runner -------------------------------------------------------------------------------


def mesh_ready(client: LabClient) -> list[str]:
    """Problems with the mesh (empty when istiod, every ztunnel and istio-cni pod is Ready)."""
    problems = []
    try:
        pods = client.call("get", kind="Pod", namespace=MESH_NAMESPACE)["items"]
    except LabError as e:
        return [str(e)]
    apps: dict[str, list[dict]] = {}
    for p in pods:
        app = p["metadata"].get("labels", {}).get("app") or p["metadata"].get("labels", {}).get("k8s-app", "")
        apps.setdefault(app, []).append(p)
    for app in ("istiod", "ztunnel", "istio-cni-node"):
        if not apps.get(app):
            problems.append(f"no {app} pod (install the mesh: lab istioctl install --set profile=ambient -y)")
    for p in pods:
        if not ready(p):
            problems.append(f"{p['metadata']['name']} is not ready")
    return problems


def leftover_namespaces(client: LabClient, scenario: str | None = None) -> list[str]:
    prefix = SCENARIO_PREFIX + (f"{scenario}" if scenario else "")
    items = client.call("get", kind="Namespace", namespace=None)["items"]
    return sorted(
        n["metadata"]["name"]
        for n in items
        if n["metadata"]["name"].startswith(prefix)
        and (scenario is None or n["metadata"]["name"] == prefix or n["metadata"]["name"].startswith(prefix + "-"))
    )


def run_scenario(client: LabClient, scenario: "Scenario", log: Callable[[str], None] | None = None) -> Result:
    """Runs SCENARIO on the lab behind CLIENT and always undoes what it did; see the module doc.

    KeyboardInterrupt (SIGINT) and SIGTERM stop the scenario, the lab is put back, and the
    interruption is re-raised as KeyboardInterrupt. Other errors end up in `Result.error`."""
    result = Result(scenario.name, scenario.summary)
    ctx = Run(client, scenario, result, log)
    start = time.monotonic()
    main = threading.current_thread() is threading.main_thread()
    old_term = None

    def on_term(signum, frame):
        raise Interrupted()

    if main:
        old_term = signal.signal(signal.SIGTERM, on_term)
    interrupted: BaseException | None = None
    try:
        stale = leftover_namespaces(client, scenario.name)
        for ns in stale:  # an earlier run that was killed outright
            ctx._namespaces.append(ns)
        if stale:
            ctx.say(f"removing what an earlier run left: {', '.join(stale)}")
            ctx._cleanup()
            ctx._namespaces = []
        problems = mesh_ready(client)
        if problems:
            raise ScenarioError("the mesh is not ready: " + "; ".join(problems[:3]))
        scenario.run(ctx)
    except (KeyboardInterrupt, Interrupted) as e:
        result.interrupted = True
        interrupted = e
    except ScenarioError as e:
        result.error = str(e)
    except Exception as e:  # noqa: BLE001 - the lab is put back and the error reported
        result.error = f"{type(e).__name__}: {e}"
    finally:
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            ctx.say("restoring the lab")
            ctx._cleanup()
        finally:
            if main:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, old_term)
        result.wall_s = round(time.monotonic() - start, 2)
    if interrupted is not None:
        raise KeyboardInterrupt() from interrupted
    return result
