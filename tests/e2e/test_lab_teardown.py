"""Exact teardown: after `lab down`, and after `kill -9` of labd followed by `lab down`, nothing of
the lab remains — namespaces, links, nft tables, processes, files, cgroups — and other labs are
untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from lab.client.paths import ETC_NETNS, lab_dir, netns_prefix
from lab.runtime import cgroups
from lab.testing import REPO, eventually, unique_lab_name

TOPOLOGY = os.path.join(os.path.dirname(__file__), "data", "two-nodes.yaml")
APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: docker.io/kennethreitz/httpbin, ports: [{containerPort: 80}]}
      - {name: side, image: curlimages/curl, command: [/bin/sh, -c, "sleep 1000 & sleep 1000"]}
"""


def lab_cmd(*args, input=None):
    return subprocess.run(
        [sys.executable, "-m", "lab.cli", *args], capture_output=True, text=True, input=input, timeout=120, cwd=REPO
    )


def host_snapshot() -> dict:
    """What the host network namespace shows that a lab could leave behind (labs attach nothing
    here, so this must not change whatever other labs on the machine do meanwhile)."""
    return {
        "links": subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.count("\n"),
        "nft": subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout,
    }


def mounts_of(name: str) -> list[str]:
    """The lab's namespace bind mounts (and any other mount naming it) still on the host."""
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if netns_prefix(name) in line]


def processes_of(name: str) -> list[int]:
    """Processes that carry the lab's ownership marker (AMBIENT_LAB=<name>) in their environment."""
    marker = f"AMBIENT_LAB={name}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def cgroups_of(name: str) -> list[str]:
    """The lab's cgroup directories (`ambient-lab/<lab>` and below) in every hierarchy."""
    h = cgroups.machine()
    if h is None:
        return []
    found = []
    for top in h.unique(h.dirs(name)):
        for d, subdirs, _ in os.walk(top):
            found.append(d)
    return sorted(found)


def traces_of(name: str) -> dict:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {
        "netns": [line.split()[0] for line in netns.splitlines() if line.startswith(netns_prefix(name))],
        "etc": [d for d in os.listdir(ETC_NETNS) if d.startswith(netns_prefix(name))]
        if os.path.isdir(ETC_NETNS)
        else [],
        "dir": os.path.exists(lab_dir(name)),
        "processes": processes_of(name),
        "mounts": mounts_of(name),
        "cgroups": cgroups_of(name),
    }


NOTHING = {"netns": [], "etc": [], "dir": False, "processes": [], "mounts": [], "cgroups": []}


@pytest.fixture
def fresh_lab():
    name = unique_lab_name("d")
    before = host_snapshot()
    r = lab_cmd("up", TOPOLOGY, "--name", name)
    assert r.returncode == 0, r.stderr
    try:
        r = lab_cmd("--lab", name, "apply", "-f", "-", input=APP)
        assert r.returncode == 0, r.stderr
        r = lab_cmd("--lab", name, "wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=60s")
        assert r.returncode == 0, r.stderr
        t = traces_of(name)
        assert len(t["netns"]) == 1 + 3 + 2 + 1  # fabric, 3 nodes, 2 web pods, coredns
        assert len(t["processes"]) >= 2 * 3 + 1  # gunicorn + worker, sh + 2 sleeps, dns
        if cgroups.machine() is not None:  # per hierarchy: the lab's, 3 pods', 5 containers'
            assert len(t["cgroups"]) == len(cgroups.machine().unique(cgroups.machine().dirs(name))) * (1 + 3 + 5)
        yield name, before
    finally:
        lab_cmd("down", "--name", name)


def test_down_removes_everything(fresh_lab, lab):
    name, before = fresh_lab
    other_before = traces_of(lab.name)
    r = lab_cmd("down", "--name", name)
    assert r.returncode == 0, r.stderr
    assert "stopped" in r.stdout
    assert traces_of(name) == NOTHING
    assert host_snapshot() == before
    # The session's lab, running side by side, is untouched.
    assert traces_of(lab.name)["netns"] == other_before["netns"]
    assert lab.get("Namespace", "default", None)
    # Idempotent.
    r = lab_cmd("down", "--name", name)
    assert r.returncode == 0 and "was not running" in r.stdout


def test_down_after_labd_was_killed(fresh_lab):
    name, before = fresh_lab
    status = lab_cmd("--lab", name, "status", "-o", "json")
    import json

    pid = json.loads(status.stdout)["pid"]
    os.kill(pid, signal.SIGKILL)
    # Children do not outlive labd: its PID namespace dies with it.
    eventually(lambda: not processes_of(name), timeout=10, what="lab processes gone after SIGKILL")
    assert traces_of(name)["netns"], "namespaces are left for `lab down` to remove"
    if cgroups.machine() is not None:
        assert traces_of(name)["cgroups"], "cgroups are left for `lab down` to remove"
    r = lab_cmd("--lab", name, "get", "pods")
    assert r.returncode == 1 and "not running" in r.stderr
    r = lab_cmd("up", TOPOLOGY, "--name", name)
    assert r.returncode == 1 and "lab down" in r.stderr
    r = lab_cmd("down", "--name", name)
    assert r.returncode == 0, r.stderr
    assert traces_of(name) == NOTHING
    assert host_snapshot() == before


def test_up_over_a_running_lab_is_refused(lab):
    r = lab_cmd("up", TOPOLOGY, "--name", lab.name)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0
    assert f'lab "{lab.name}" is already running' in r.stderr


def test_topology_with_overlapping_cidrs_is_refused():
    name = unique_lab_name("o")
    r = lab_cmd("up", os.path.join(os.path.dirname(__file__), "data", "overlap.yaml"), "--name", name)
    assert r.returncode == 1
    assert "network.nodeCIDR 10.0.0.0/8 overlaps network.podCIDR 10.244.0.0/16" in r.stderr
    assert traces_of(name) == NOTHING
