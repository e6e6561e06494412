"""Starting and stopping labs: `lab up` and `lab down`, also after labd was killed.

`up` starts `unshare --pid --fork --kill-child python -m lab.runtime.init -- python -m lab.daemon.lab ...`, so the
lab's processes live in a PID namespace that dies with labd, and waits until the lab reports ready.
`down` asks labd to tear down; if labd is gone or stuck it kills the recorded process (checked by
pid *and* start time, never by name), then replays the journal to remove exactly the namespaces and
files the lab recorded, and its cgroups (the processes still in them killed first, children
before parents), and finally the lab's directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from lab.client import LabClient, LabError, LabUnavailable, netns
from lab.client.paths import journal_path, lab_dir, node_netns_name
from lab.runtime import cgroups, journal
from lab.runtime.sandbox import fabric_netns_name
from lab.topology import Topology, TopologyError, check_lab_name, load_file


class LaunchError(Exception):
    """`lab up`/`lab down` could not do what was asked; the message says why."""


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_time: int  # /proc/<pid>/stat field 22: tells a reused pid apart

    @classmethod
    def of(cls, pid: int) -> "ProcessRecord | None":
        st = _start_time(pid)
        return cls(pid, st) if st is not None else None

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start_time


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _record_path(name: str) -> str:
    return os.path.join(lab_dir(name), "labd.json")


def _read_record(name: str) -> ProcessRecord | None:
    try:
        with open(_record_path(name)) as f:
            d = json.load(f)
        return ProcessRecord(d["pid"], d["start_time"])
    except (OSError, ValueError, KeyError):
        return None


def running(name: str) -> ProcessRecord | None:
    rec = _read_record(name)
    return rec if rec is not None and rec.alive() else None


def up(
    topology_path: str,
    name: str | None = None,
    progress: Callable[[str], None] = lambda s: None,
    timeout: float = 120.0,
) -> dict:
    topo: Topology = load_file(topology_path)
    if name:
        topo = topo.with_name(name)
    d = lab_dir(topo.name)
    if running(topo.name):
        raise LaunchError(f'lab "{topo.name}" is already running; run `lab down --name {topo.name}` first')
    if os.path.exists(d):
        raise LaunchError(
            f'lab "{topo.name}" left state behind in {d} (its labd died); '
            f"run `lab down --name {topo.name}` to clean it up first"
        )
    clashes = [
        n
        for n in [fabric_netns_name(topo.name)] + [node_netns_name(topo.name, x.name) for x in topo.nodes]
        if netns.exists(n)
    ]
    if clashes:
        raise LaunchError(
            f'network namespace "{clashes[0]}" already exists and is not recorded by lab '
            f'"{topo.name}"; remove it by hand (ip netns del {clashes[0]}) or pick another --name'
        )
    os.makedirs(d, mode=0o700)
    log_path = os.path.join(d, "labd.log")
    cmd = [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        sys.executable,
        "-m",
        "lab.runtime.init",
        "--",
        sys.executable,
        "-m",
        "lab.daemon.lab",
        "--topology",
        os.path.abspath(topology_path),
        "--name",
        topo.name,
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True
        )
    rec = ProcessRecord.of(proc.pid)
    with open(_record_path(topo.name), "w") as f:
        json.dump({"pid": proc.pid, "start_time": rec.start_time if rec else 0, "topology": topology_path}, f)
    client = LabClient(topo.name, timeout=5)
    t0 = time.monotonic()
    last_phase = None
    while True:
        if proc.poll() is not None:
            tail = _tail(log_path)
            down(topo.name)
            raise LaunchError(f'labd for lab "{topo.name}" exited with {proc.returncode} while starting:\n{tail}')
        try:
            st = client.call("status")
        except LabUnavailable:
            st = None
        except LabError:
            st = None
        if st is not None:
            if st["phase"] != last_phase:
                progress(st["phase"])
                last_phase = st["phase"]
            if st["ready"]:
                return st
        if time.monotonic() - t0 > timeout:
            tail = _tail(log_path)
            down(topo.name)
            raise LaunchError(f'lab "{topo.name}" was not ready after {timeout:.0f}s:\n{tail}')
        time.sleep(0.03)


def _tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def down(name: str, progress: Callable[[str], None] = lambda s: None, grace: float = 15.0) -> dict:
    """Tear lab NAME down; idempotent. Returns what was removed."""
    try:
        check_lab_name(name, "--name")
    except TopologyError as e:
        raise LaunchError(str(e)) from None
    d = lab_dir(name)
    removed: dict[str, Any] = {"graceful": False, "killed": False, "netns": [], "dirs": [], "cgroups": []}
    rec = _read_record(name)
    if rec is not None and rec.alive():
        try:
            LabClient(name, timeout=5).call("shutdown")
            deadline = time.monotonic() + grace
            while rec.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            removed["graceful"] = not rec.alive()
        except LabError:
            pass
        if rec.alive():
            progress("labd did not stop; killing it")
            try:
                os.kill(rec.pid, signal.SIGKILL)  # unshare --kill-child takes the PID namespace with it
            except ProcessLookupError:
                pass
            removed["killed"] = True
            deadline = time.monotonic() + 5
            while rec.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
    for type_, obj in reversed(journal.outstanding(journal_path(name))):
        if type_ == "netns":
            netns.remove(obj)
            removed["netns"].append(obj)
        elif type_ == "dir":
            shutil.rmtree(obj, ignore_errors=True)
            removed["dirs"].append(obj)
        elif type_ == "cgroup" and cgroups.owned_by(obj, name):
            cgroups.remove(obj)
            removed["cgroups"].append(obj)
    if os.path.exists(d):
        shutil.rmtree(d, ignore_errors=True)
    return removed
