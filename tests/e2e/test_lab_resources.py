"""Pod resources end to end: requests and limits become cgroup settings, the memory cgroup's OOM
killer gives `OOMKilled`, `lab top` reads the cgroups, a deleted pod leaves no cgroup.

Runs its own small lab (bench/two-workers.yaml: no mesh), so the figures are not disturbed by
other tests' pods."""

from __future__ import annotations

import os

import pytest

from lab.runtime import cgroups
from lab.testing import REPO, TestLab, eventually, manifest, unique_lab_name
from tests.conftest import bare_pod, curl_container

TOPOLOGY = os.path.join(REPO, "bench", "two-workers.yaml")
MiB = 1024 * 1024


def python(name: str, code: str, **resources: dict) -> dict:
    """A container running CODE with python3, with RESOURCES (limits=..., requests=...)."""
    return {**curl_container(name, ("python3", "-c", code)), **({"resources": resources} if resources else {})}


def oom_pod(name: str = "oom", memory: str = "50Mi") -> dict:
    """Allocates 100 MiB under a limit of MEMORY."""
    return bare_pod(
        name,
        None,
        python("hog", "b = bytearray(100*1024*1024); import time; time.sleep(60)", limits={"memory": memory}),
    )


PODS = [
    oom_pod(),
    bare_pod(
        "busy",
        None,
        python("spin", "while True: pass", limits={"cpu": "100m", "memory": "64Mi"}, requests={"cpu": "50m"}),
        curl_container("idle", ("sleep", "1000")),
    ),
    bare_pod(
        "holder",
        None,
        python("hold", "b = bytearray(40*1024*1024); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(600)"),
    ),
]


@pytest.fixture(scope="module")
def rlab():
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces)")
    h = cgroups.machine()
    if h is None:
        pytest.skip("the machine has no usable cgroups (cpu, cpuacct and memory v1, or v2 with cpu and memory)")
    t = TestLab(unique_lab_name("r"), TOPOLOGY)
    try:
        t.up()
        t.apply(PODS)
        t.wait_ready("default", "app in (busy, holder)", count=2)
        yield t
    finally:
        t.down()


def pod_dirs(lab: TestLab, name: str, container: str | None = None) -> dict[str, str]:
    h = cgroups.machine()
    uid = lab.get("Pod", name)["metadata"]["uid"]
    parts = cgroups.container_parts(lab.name, uid, container) if container else cgroups.pod_parts(lab.name, uid)
    return h.dirs(*parts)


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def top(lab: TestLab, *args: str) -> list[list[str]]:
    r = lab.lab("top", *args)
    assert r.returncode == 0, r.stderr
    return [line.split() for line in r.stdout.splitlines()]


def test_limits_and_requests_are_the_cgroups_settings(rlab):
    h = cgroups.machine()
    spin, oom = pod_dirs(rlab, "busy", "spin"), pod_dirs(rlab, "oom", "hog")
    if h.version == 1:
        assert read(os.path.join(spin["cpu"], "cpu.cfs_period_us")) == "100000"
        assert read(os.path.join(spin["cpu"], "cpu.cfs_quota_us")) == "10000"
        assert read(os.path.join(spin["cpu"], "cpu.shares")) == "51"  # 50m * 1024 / 1000
        assert read(os.path.join(spin["memory"], "memory.limit_in_bytes")) == str(64 * MiB)
        assert read(os.path.join(oom["memory"], "memory.limit_in_bytes")) == str(50 * MiB)
        idle = pod_dirs(rlab, "busy", "idle")
        assert read(os.path.join(idle["cpu"], "cpu.cfs_quota_us")) == "-1"
        assert read(os.path.join(idle["cpu"], "cpu.shares")) == "2"
        # The pod: one container without limits, so no pod-wide limit; requests summed.
        pod = pod_dirs(rlab, "busy")
        assert read(os.path.join(pod["cpu"], "cpu.cfs_quota_us")) == "-1"
        assert read(os.path.join(pod["cpu"], "cpu.shares")) == "51"
    else:
        assert read(os.path.join(spin[""], "cpu.max")) == "10000 100000"
        assert read(os.path.join(oom[""], "memory.max")) == str(50 * MiB)
    # The container's processes are in its cgroup (as labd's PID namespace numbers them, the
    # host sees other numbers: compare counts, not pids).
    status = {c["name"]: c for c in rlab.get("Pod", "busy")["status"]["containerStatuses"]}
    procs = read(os.path.join(next(iter(spin.values())), "cgroup.procs")).split()
    assert str(status["spin"]["pid"]) in procs


def test_top_pod_agrees_with_the_cgroup_files(rlab):
    h = cgroups.machine()
    dirs = pod_dirs(rlab, "holder")
    rows = {r[0]: r for r in top(rlab, "pod")[1:]}
    assert top(rlab, "pod")[0] == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert set(rows) == {"busy", "holder", "oom"}
    shown = int(rows["holder"][2].removesuffix("Mi"))
    usage = (
        int(
            read(
                os.path.join(
                    dirs["memory"] if h.version == 1 else dirs[""],
                    "memory.usage_in_bytes" if h.version == 1 else "memory.current",
                )
            )
        )
        // MiB
    )
    assert 40 <= shown <= 60 and abs(shown - usage) <= 4, (shown, usage)
    # The op's raw figures are the files' figures.
    data = rlab.client.call("top", namespace="default", selector="app=holder")
    [pod] = data["pods"]
    assert pod["name"] == "holder" and abs(pod["raw"]["memoryUsage"] - usage * MiB) < 4 * MiB
    assert pod["memory"] == pod["raw"]["memoryUsage"] - pod["raw"]["inactiveFile"]
    assert [c["name"] for c in pod["containers"]] == ["hold"]
    # -A adds NAMESPACE, -l selects, --containers shows a line per container.
    all_rows = top(rlab, "pod", "-A")
    assert all_rows[0] == ["NAMESPACE", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert {r[1] for r in all_rows[1:] if r[0] == "kube-system"}  # coredns
    assert [r[0] for r in top(rlab, "pod", "-l", "app=busy")[1:]] == ["busy"]
    containers = top(rlab, "pod", "busy", "--containers")
    assert containers[0] == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert sorted(r[1] for r in containers[1:]) == ["idle", "spin"]


def test_cpu_limit_holds_a_busy_loop_near_100m(rlab):
    def near_100m():
        rows = {r[0]: r for r in top(rlab, "pod", "--interval", "1")[1:]}
        millis = int(rows["busy"][1].removesuffix("m"))
        assert 50 <= millis <= 150, millis
        return millis

    eventually(near_100m, timeout=20, interval=0.2, what="busy at about 100m")


def test_top_node_sums_its_pods(rlab):
    rows = top(rlab, "node")
    assert rows[0] == ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
    assert sorted(r[0] for r in rows[1:]) == ["control-plane", "worker1", "worker2"]
    data = rlab.client.call("top")
    for node in data["nodes"]:
        pods = [p for p in data["pods"] if p["node"] == node["name"]]
        assert node["memory"] == sum(p["memory"] for p in pods)
        assert node["cpuPercent"] == pytest.approx(100 * node["cpu"] / (data["cores"] * 1000), abs=0.01)


def test_memory_limit_ooms_the_container(rlab):
    seen = eventually(
        lambda: "OOMKilled" in rlab.lab("get", "pod", "oom").stdout.splitlines()[-1],
        timeout=30,
        interval=0.05,
        what="STATUS OOMKilled",
    )
    assert seen
    cs = eventually(
        lambda: (c := rlab.get("Pod", "oom")["status"]["containerStatuses"][0])["restartCount"] >= 1 and c, timeout=30
    )
    last = cs["lastState"]["terminated"]
    assert last["reason"] == "OOMKilled" and last["exitCode"] == 137
    r = rlab.lab("describe", "pod", "oom")
    assert "Reason:       OOMKilled" in r.stdout and "Exit Code:    137" in r.stdout
    # The other pods go on.
    assert rlab.get("Pod", "holder")["status"]["containerStatuses"][0]["restartCount"] == 0


def test_invalid_quantities_are_refused_at_apply(rlab):
    r = rlab.lab("apply", "-f", "-", input=manifest(oom_pod("bad", memory="50MB")))
    assert r.returncode == 1
    assert 'spec.containers[0].resources.limits.memory: Invalid value: "50MB"' in r.stderr
    assert 'did you mean "50M" or "50Mi"?' in r.stderr
    assert not rlab.pods("default", "app=bad")


def test_a_deleted_pod_leaves_no_cgroup(rlab):
    rlab.apply(
        bare_pod("brief", None, {**curl_container("c", ("sleep", "1000")), "resources": {"limits": {"memory": "32Mi"}}})
    )
    rlab.wait_ready("default", "app=brief")
    dirs = cgroups.machine().unique(pod_dirs(rlab, "brief"))
    assert all(os.path.isdir(d) for d in dirs)
    r = rlab.lab("delete", "pod", "brief")
    assert r.returncode == 0, r.stderr
    assert not any(os.path.exists(d) for d in dirs)
    journal = os.path.join(rlab.status["dir"], "journal.jsonl")
    from lab.runtime.journal import outstanding

    assert not [n for t, n in outstanding(journal) if t == "cgroup" and any(n.startswith(d) for d in dirs)]
