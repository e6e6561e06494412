"""Pod resources: quantities, the cgroup values and paths, what the kernel reports, validation,
OOMKilled in the tables, the `lab top` tables; and the writer against a scratch directory."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from fractions import Fraction

import pytest

from lab.apiserver import validation
from lab.cli import printers
from lab.runtime import cgroups
from lab.runtime.cgroups import Hierarchy, Resources
from lab.runtime.journal import Journal, outstanding

NOW = datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "text,value",
    [
        ("100m", Fraction(1, 10)),
        ("0.5", Fraction(1, 2)),
        ("2", 2),
        (2, 2),
        (0.25, Fraction(1, 4)),
        ("64Mi", 64 * 2**20),
        ("1G", 10**9),
        ("1Gi", 2**30),
        ("1k", 1000),
        ("1Ki", 1024),
        ("1e3", 1000),
        ("1E", 10**18),
        ("1.5Gi", 3 * 2**29),
        ("500u", Fraction(1, 2000)),
        (".5", Fraction(1, 2)),
        ("-1", -1),
        ("+3M", 3 * 10**6),
    ],
)
def test_quantities(text, value):
    assert cgroups.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["50MB", "1 Gi", "", "m", "1.2.3", "abc", "1K", "1mi", None, True, [1]])
def test_bad_quantities(text):
    with pytest.raises(cgroups.QuantityError, match="quantities must match"):
        cgroups.parse_quantity(text)


def test_conversions_round_up():
    assert cgroups.millicores("100m") == 100
    assert cgroups.millicores("0.5") == 500
    assert cgroups.millicores("0.0001") == 1
    assert cgroups.millicores(2) == 2000
    assert cgroups.memory_bytes("50Mi") == 50 * 2**20
    assert cgroups.memory_bytes("0.5") == 1


def test_shares_and_quota_follow_the_kubelet():
    assert cgroups.cpu_shares(None) == 2
    assert cgroups.cpu_shares(1) == 2
    assert cgroups.cpu_shares(100) == 102
    assert cgroups.cpu_shares(1000) == 1024
    assert cgroups.cpu_shares(10**6) == 262144
    assert cgroups.cpu_quota(None) is None
    assert cgroups.cpu_quota(100) == 10000
    assert cgroups.cpu_quota(1500) == 150000
    assert cgroups.cpu_quota(1) == 1000  # at least 1 ms
    assert cgroups.cpu_weight(2) == 1 and cgroups.cpu_weight(262144) == 10000
    assert cgroups.cpu_weight(1024) == 39


def test_requests_default_to_limits():
    c = {"resources": {"limits": {"cpu": "200m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}}
    assert cgroups.container_resources(c) == Resources(100, 200, 64 * 2**20, 64 * 2**20)
    assert cgroups.container_resources({}) == Resources()
    assert cgroups.container_resources({}).empty


def test_pod_figures():
    limited = {"resources": {"limits": {"cpu": "1", "memory": "100Mi"}}}
    requested = {"resources": {"requests": {"cpu": "250m"}}}
    spec = {"containers": [limited, dict(limited)]}
    assert cgroups.pod_resources(spec) == Resources(2000, 2000, 200 * 2**20, 200 * 2**20)
    # One container without limits: the pod is unlimited.
    spec = {"containers": [limited, requested]}
    assert cgroups.pod_resources(spec) == Resources(1250, None, 100 * 2**20, None)
    # A larger init container's request counts.
    spec = {"containers": [requested], "initContainers": [{"resources": {"requests": {"cpu": "2"}}}]}
    assert cgroups.pod_resources(spec).cpu_request == 2000
    assert cgroups.pod_resources({"containers": [{}]}) == Resources()


def test_settings_v1_and_v2():
    res = Resources(100, 100, 50 * 2**20, 50 * 2**20)
    assert cgroups.settings(1, res) == [
        ("cpu", "cpu.shares", "102"),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "10000"),
        ("memory", "memory.limit_in_bytes", str(50 * 2**20)),
        ("memory", "memory.memsw.limit_in_bytes", str(50 * 2**20)),
    ]
    assert cgroups.settings(1, Resources()) == [
        ("cpu", "cpu.shares", "2"),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "-1"),
    ]
    assert cgroups.settings(2, res) == [
        ("", "cpu.weight", "4"),
        ("", "cpu.max", "10000 100000"),
        ("", "memory.max", str(50 * 2**20)),
        ("", "memory.swap.max", "0"),
    ]
    assert cgroups.settings(2, Resources()) == [("", "cpu.weight", "1"), ("", "cpu.max", "max 100000")]


MOUNTINFO_V1 = """\
25 20 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
27 25 0:24 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
"""
MOUNTINFO_V2 = "27 20 0:24 / /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_detect_v1_comounted_and_v2():
    h = cgroups.detect(MOUNTINFO_V1)
    assert h == Hierarchy(
        1,
        {
            "cpu": "/sys/fs/cgroup/cpu,cpuacct",
            "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
            "memory": "/sys/fs/cgroup/memory",
        },
    )
    dirs = h.dirs(*cgroups.container_parts("lab1", "u-1", "web"))
    assert dirs["memory"] == "/sys/fs/cgroup/memory/ambient-lab/lab1/pod-u-1/web"
    assert h.unique(dirs) == [
        "/sys/fs/cgroup/cpu,cpuacct/ambient-lab/lab1/pod-u-1/web",
        "/sys/fs/cgroup/memory/ambient-lab/lab1/pod-u-1/web",
    ]
    h2 = cgroups.detect(MOUNTINFO_V2, read=lambda p: "cpuset cpu io memory pids\n")
    assert h2 == Hierarchy(2, {"": "/sys/fs/cgroup"})
    assert h2.dirs(*cgroups.pod_parts("x", "u"))[""] == "/sys/fs/cgroup/ambient-lab/x/pod-u"
    assert cgroups.detect(MOUNTINFO_V2, read=lambda p: "pids\n") is None
    # A hybrid machine whose v2 part has no controllers uses v1.
    assert cgroups.detect(MOUNTINFO_V1, read=lambda p: "").version == 1


def test_sample_v1_and_v2():
    files = {
        "/c/cpuacct.usage": "1500000000\n",
        "/m/memory.usage_in_bytes": "10485760\n",
        "/m/memory.stat": "cache 100\ninactive_file 7\ntotal_inactive_file 1048576\n",
        "/m/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    }
    h = Hierarchy(1, {"cpuacct": "/c", "memory": "/m", "cpu": "/c"})
    s = cgroups.sample(h, {"cpuacct": "/c", "memory": "/m", "cpu": "/c"}, read=lambda p: files[p])
    assert s == cgroups.Sample(1_500_000_000, 10485760, 1048576, 2)
    assert s.working_set == 9 * 2**20
    files2 = {
        "/g/cpu.stat": "usage_usec 2000\nuser_usec 1000\n",
        "/g/memory.current": "4096\n",
        "/g/memory.stat": "anon 1\ninactive_file 1024\n",
        "/g/memory.events": "low 0\noom 1\noom_kill 1\n",
    }
    s2 = cgroups.sample(Hierarchy(2, {"": "/g"}), {"": "/g"}, read=lambda p: files2[p])
    assert s2 == cgroups.Sample(2_000_000, 4096, 1024, 1)

    # Missing files read as 0.
    def missing(p):
        raise FileNotFoundError(p)

    assert cgroups.sample(Hierarchy(2, {"": "/g"}), {"": "/g"}, read=missing) == cgroups.Sample(0, 0, 0, 0)
    assert cgroups.cpu_millicores(cgroups.Sample(0, 0, 0, 0), cgroups.Sample(50_000_000, 0, 0, 0), 0.5) == 100.0


def test_join_argv_joins_every_hierarchy_once():
    h = cgroups.detect(MOUNTINFO_V1)
    dirs = h.dirs("l", "pod-u", "c")
    argv = cgroups.join_argv(h, dirs, ["ip", "netns", "exec", "ns", "sleep", "1"])
    assert argv[:4] == ["/bin/sh", "-c", cgroups.JOIN_SCRIPT, "cgroup-join"]
    assert argv[4:] == [
        "/sys/fs/cgroup/cpu,cpuacct/ambient-lab/l/pod-u/c/cgroup.procs",
        "/sys/fs/cgroup/memory/ambient-lab/l/pod-u/c/cgroup.procs",
        "--",
        "ip",
        "netns",
        "exec",
        "ns",
        "sleep",
        "1",
    ]


def test_make_journals_before_and_remove_records(tmp_path):
    root = tmp_path / "cg"
    root.mkdir()
    h = Hierarchy(1, {"cpu": str(root / "cpu"), "cpuacct": str(root / "cpu"), "memory": str(root / "memory")})
    (root / "cpu").mkdir()
    (root / "memory").mkdir()
    j = Journal(str(tmp_path / "journal"))
    lab = cgroups.make(j, h, cgroups.lab_parts("l"))
    pod = cgroups.make(j, h, cgroups.pod_parts("l", "u"))
    c = cgroups.make(j, h, cgroups.container_parts("l", "u", "c"))
    assert os.path.isdir(c["memory"]) and os.path.isdir(c["cpu"])
    assert [n for t, n in outstanding(j.path)] == h.unique(lab) + h.unique(pod) + h.unique(c)
    assert all(t == "cgroup" for t, _ in outstanding(j.path))
    # Children go first, also those not named.
    cgroups.remove_all(j, h.unique(pod))
    assert not os.path.exists(c["memory"]) and not os.path.exists(pod["cpu"])
    assert [n for _, n in outstanding(j.path)] == h.unique(lab) + h.unique(c)
    assert cgroups.remove(c["cpu"])  # already gone
    j.close()


def test_owned_by():
    assert cgroups.owned_by("/sys/fs/cgroup/memory/ambient-lab/l1/pod-u/c", "l1")
    assert cgroups.owned_by("/sys/fs/cgroup/ambient-lab/l1", "l1")
    assert not cgroups.owned_by("/sys/fs/cgroup/memory/ambient-lab/l2/pod-u", "l1")
    assert not cgroups.owned_by("/sys/fs/cgroup/memory/system.slice", "l1")
    assert not cgroups.owned_by("/sys/fs/cgroup/memory/ambient-lab", "l1")


def test_validation_of_resources():
    def pod(resources) -> str:
        return (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
            f"  - {{name: c, image: curlimages/curl, resources: {resources}}}\n"
        )

    validation.load(pod("{limits: {cpu: 100m, memory: 64Mi}, requests: {cpu: 0.05, memory: 1e6}}"), "x.yaml")
    validation.load(pod("{limits: {cpu: 2}, requests: {cpu: 2, example.com/gpu: 1}}"), "x.yaml")
    with pytest.raises(validation.ManifestError) as e:
        validation.load(pod("{limits: {memory: 50MB}}"), "x.yaml")
    assert "spec.containers[0].resources.limits.memory: Invalid value: \"50MB\": quantities must match" in str(e.value)
    assert 'did you mean "50M" or "50Mi"?' in str(e.value)
    with pytest.raises(
        validation.ManifestError,
        match=r"resources.requests: Invalid value: \"2\": must be less "
        r"than or equal to cpu limit of 1",
    ):
        validation.load(pod("{limits: {cpu: '1'}, requests: {cpu: '2'}}"), "x.yaml")
    with pytest.raises(
        validation.ManifestError,
        match=r"resources.limits.cpu: Invalid value: \"-1\": must be "
        r"greater than or equal to 0",
    ):
        validation.load(pod("{limits: {cpu: '-1'}}"), "x.yaml")
    with pytest.raises(validation.ManifestError, match=r"resources.limits.gpu: .*must be a standard resource type"):
        validation.load(pod("{limits: {gpu: 1}}"), "x.yaml")


def _pod(state: dict, last: dict | None = None, restarts: int = 1) -> dict:
    return {
        "metadata": {"name": "oom", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {
            "containers": [{"name": "c", "image": "curlimages/curl", "resources": {"limits": {"memory": "50Mi"}}}]
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "c",
                    "ready": False,
                    "restartCount": restarts,
                    "state": state,
                    "lastState": {"terminated": last} if last else {},
                }
            ],
        },
    }


def test_oomkilled_in_get_and_describe():
    term = {
        "exitCode": 137,
        "reason": "OOMKilled",
        "startedAt": "2024-01-01T00:00:00Z",
        "finishedAt": "2024-01-01T00:00:01Z",
        "signal": 9,
    }
    out = printers.table("pod", [_pod({"terminated": term}, term)], now=NOW)
    assert out.splitlines()[1].split()[:3] == ["oom", "0/1", "OOMKilled"]
    text = printers.describe("pod", _pod({"waiting": {"reason": "CrashLoopBackOff"}}, term), [], NOW)
    assert "Last State:     Terminated" in text
    assert "Reason:       OOMKilled" in text and "Exit Code:    137" in text


def test_top_tables():
    pods = [
        {
            "namespace": "default",
            "name": "web",
            "cpu": 12.4,
            "memory": 45 * 2**20 + 5,
            "containers": [
                {"name": "a", "cpu": 10.0, "memory": 40 * 2**20},
                {"name": "b", "cpu": 2.4, "memory": 5 * 2**20},
            ],
        }
    ]
    assert printers.top_pods(pods) == ("NAME   CPU(cores)   MEMORY(bytes)\nweb    12m          45Mi\n")
    assert printers.top_pods(pods, all_namespaces=True).splitlines()[0].split() == [
        "NAMESPACE",
        "NAME",
        "CPU(cores)",
        "MEMORY(bytes)",
    ]
    lines = printers.top_pods(pods, containers=True).splitlines()
    assert lines[0].split() == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert lines[1].split() == ["web", "a", "10m", "40Mi"] and lines[2].split() == ["web", "b", "2m", "5Mi"]
    nodes = [{"name": "worker1", "cpu": 250.0, "cpuPercent": 12.5, "memory": 100 * 2**20, "memoryPercent": 1.2}]
    assert printers.top_nodes(nodes).splitlines() == [
        "NAME      CPU(cores)   CPU%   MEMORY(bytes)   MEMORY%",
        "worker1   250m         12%    100Mi           1%",
    ]
    assert printers.top_nodes(nodes, headers=False).splitlines() == ["worker1   250m   12%   100Mi   1%"]
