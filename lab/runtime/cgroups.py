"""Pod resources: Kubernetes quantities, the lab's cgroups, and what they report.

The pure part (quantities, the values written, the paths, the parsing of what the kernel reports)
is separate from the thin writer below it. Layout, one cgroup per pod and one per container:

    <controller mount>/ambient-lab/<lab>/pod-<uid>/<container>     (cgroup v1: cpu, cpuacct, memory)
    /sys/fs/cgroup/ambient-lab/<lab>/pod-<uid>/<container>           (cgroup v2, unified)

Every directory the lab makes is written to its journal (type `cgroup`) before it is made, and
removed (its processes killed first, children first) by the kubelet or by `lab down`.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Mapping

PARENT = "ambient-lab"  # the lab's cgroups live under <root>/ambient-lab/<lab>/
CFS_PERIOD_US = 100_000  # 100 ms, as the kubelet
MIN_SHARES, MAX_SHARES = 2, 262_144
MIN_QUOTA_US = 1_000
V1_CONTROLLERS = ("cpu", "cpuacct", "memory")

# --- quantities (Kubernetes' resource.Quantity) ------------------------------------------------

QUANTITY_PATTERN = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"  # the API server's wording
_QUANTITY = re.compile(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)")
_SUFFIX = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    **{prefix: Fraction(1000**i) for i, prefix in enumerate("kMGTPE", 1)},  # decimal: k = 10^3 ... E = 10^18
    **{prefix + "i": Fraction(1024**i) for i, prefix in enumerate("KMGTPE", 1)},  # binary: Ki = 2^10 ... Ei = 2^60
}


class QuantityError(ValueError):
    pass


def parse_quantity(value) -> Fraction:
    """A quantity (`100m`, `0.5`, `2`, `64Mi`, `1G`, `1e3`; YAML numbers too) as an exact number."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise QuantityError(f"quantities must match the regular expression '{QUANTITY_PATTERN}'")
    text = repr(value) if isinstance(value, float) else str(value)
    m = _QUANTITY.fullmatch(text.strip())
    if m is None:
        raise QuantityError(f"quantities must match the regular expression '{QUANTITY_PATTERN}'")
    sign, number, exponent, suffix = m.groups()
    q = Fraction(number) * (Fraction(10) ** int(exponent[1:]) if exponent else _SUFFIX[suffix or ""])
    return -q if sign == "-" else q


def millicores(value) -> int:
    """CPU in millicores, rounded up (as Quantity.MilliValue)."""
    q = parse_quantity(value) * 1000
    return -((-q.numerator) // q.denominator)


def memory_bytes(value) -> int:
    """Memory in bytes, rounded up."""
    q = parse_quantity(value)
    return -((-q.numerator) // q.denominator)


def format_cpu(millis: float) -> str:
    """`kubectl top`'s CPU cell: whole millicores."""
    return f"{int(round(millis))}m"


def format_memory(nbytes: float) -> str:
    """`kubectl top`'s memory cell: whole MiB."""
    return f"{int(nbytes) // (1024 * 1024)}Mi"


# --- what the cgroups are set to ---------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    cpu_request: int | None = None  # millicores
    cpu_limit: int | None = None
    memory_request: int | None = None  # bytes
    memory_limit: int | None = None

    @property
    def empty(self) -> bool:
        return self == Resources()


def container_resources(container: Mapping) -> Resources:
    """A container's cpu/memory requests and limits; a request left out defaults to its limit (as
    the API server defaults it). Quantities are assumed valid (validation refused the others)."""
    res = container.get("resources") or {}
    requests, limits = res.get("requests") or {}, res.get("limits") or {}

    def get(d: Mapping, key: str, conv):
        return conv(d[key]) if d.get(key) is not None else None

    cpu_limit, mem_limit = get(limits, "cpu", millicores), get(limits, "memory", memory_bytes)
    cpu_request, mem_request = get(requests, "cpu", millicores), get(requests, "memory", memory_bytes)
    return Resources(
        cpu_limit if cpu_request is None else cpu_request,
        cpu_limit,
        mem_limit if mem_request is None else mem_request,
        mem_limit,
    )


def pod_resources(pod_spec: Mapping) -> Resources:
    """The pod cgroup's figures: the containers' requests summed (or the largest init container's
    if larger), limits summed only when every container has one (else unlimited)."""
    app = [container_resources(c) for c in pod_spec.get("containers") or []]
    init = [container_resources(c) for c in pod_spec.get("initContainers") or []]

    def request(attr: str) -> int | None:
        total = sum(getattr(r, attr) or 0 for r in app)
        total = max([total] + [getattr(r, attr) or 0 for r in init])
        return total or None

    def limit(attr: str) -> int | None:
        values = [getattr(r, attr) for r in app]
        if not values or any(v is None for v in values):
            return None
        return max([sum(values)] + [getattr(r, attr) or 0 for r in init if getattr(r, attr)])

    return Resources(request("cpu_request"), limit("cpu_limit"), request("memory_request"), limit("memory_limit"))


def cpu_shares(request_millis: int | None) -> int:
    """cpu.shares from a CPU request: millicores*1024/1000, at least 2 (none: 2)."""
    if not request_millis:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, request_millis * 1024 // 1000))


def cpu_quota(limit_millis: int | None, period_us: int = CFS_PERIOD_US) -> int | None:
    """cpu.cfs_quota_us from a CPU limit (None: unlimited), at least 1 ms."""
    if limit_millis is None:
        return None
    return max(MIN_QUOTA_US, limit_millis * period_us // 1000)


def cpu_weight(shares: int) -> int:
    """cgroup v2 cpu.weight for cpu.shares (the mapping the Kubernetes runtimes use)."""
    return 1 + ((shares - 2) * 9999) // 262142


def settings(version: int, res: Resources) -> list[tuple[str, str, str]]:
    """(controller, file, value) to write, in order; controller "" on cgroup v2. Unlimited values
    are left at the kernel's default (a new cgroup is unlimited)."""
    quota = cpu_quota(res.cpu_limit)
    shares = cpu_shares(res.cpu_request)
    out: list[tuple[str, str, str]] = []
    if version == 1:
        out.append(("cpu", "cpu.shares", str(shares)))
        out.append(("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)))
        out.append(("cpu", "cpu.cfs_quota_us", str(quota if quota is not None else -1)))
        if res.memory_limit is not None:
            out.append(("memory", "memory.limit_in_bytes", str(res.memory_limit)))
            out.append(("memory", "memory.memsw.limit_in_bytes", str(res.memory_limit)))  # no swap
    else:
        out.append(("", "cpu.weight", str(cpu_weight(shares))))
        out.append(("", "cpu.max", f"{quota if quota is not None else 'max'} {CFS_PERIOD_US}"))
        if res.memory_limit is not None:
            out.append(("", "memory.max", str(res.memory_limit)))
            out.append(("", "memory.swap.max", "0"))
    return out


# --- where the cgroups are ---------------------------------------------------------------------


@dataclass(frozen=True)
class Hierarchy:
    """The machine's cgroup mounts the lab uses: v1 {controller: mount point} or v2 {"": mount}."""

    version: int
    mounts: Mapping[str, str]

    def dirs(self, *parts: str) -> dict[str, str]:
        """{controller: directory} of the cgroup PARTS (relative to the lab's parent), one per
        controller (v1 controllers mounted together share one directory)."""
        return {c: os.path.join(m, PARENT, *parts) for c, m in self.mounts.items()}

    def unique(self, dirs: Mapping[str, str]) -> list[str]:
        return list(dict.fromkeys(dirs.values()))


def lab_parts(lab: str) -> tuple[str, ...]:
    return (lab,)


def pod_parts(lab: str, uid: str) -> tuple[str, ...]:
    return (lab, f"pod-{uid}")


def container_parts(lab: str, uid: str, container: str) -> tuple[str, ...]:
    return (lab, f"pod-{uid}", container)


def detect(mountinfo: str, read=None) -> Hierarchy | None:
    """The hierarchy from /proc/self/mountinfo text: cgroup v1 when cpu, cpuacct and memory are all
    mounted as v1 controllers (also on hybrid machines), else v2 when its root offers cpu and
    memory; None when neither."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        point, fstype, options = fields[4], tail[0], tail[2].split(",")
        if fstype == "cgroup":
            for c in V1_CONTROLLERS:
                if c in options and c not in v1:
                    v1[c] = point
        elif fstype == "cgroup2" and v2 is None:
            v2 = point
    if all(c in v1 for c in V1_CONTROLLERS):
        return Hierarchy(1, {c: v1[c] for c in V1_CONTROLLERS})
    if v2 is not None:
        read = read or _read
        try:
            offered = read(os.path.join(v2, "cgroup.controllers")).split()
        except OSError:
            offered = []
        if "cpu" in offered and "memory" in offered:
            return Hierarchy(2, {"": v2})
    return None


def machine() -> Hierarchy | None:
    try:
        with open("/proc/self/mountinfo") as f:
            return detect(f.read())
    except OSError:
        return None


# --- what the kernel reports -------------------------------------------------------------------


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.stat, memory.oom_control, memory.events, cpu.stat)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


@dataclass(frozen=True)
class Sample:
    cpu_ns: int  # CPU time used since the cgroup was made
    memory_usage: int  # what the memory controller charges (page cache included)
    inactive_file: int  # page cache the kernel can reclaim first
    oom_kills: int  # processes the OOM killer killed in this cgroup

    @property
    def working_set(self) -> int:
        """The kubelet's figure: usage minus inactive file pages."""
        return max(0, self.memory_usage - self.inactive_file)


def sample(h: Hierarchy, dirs: Mapping[str, str], read=None) -> Sample:
    """The cgroup's figures now (0 for what cannot be read)."""
    read = read or _read

    def num(path: str) -> int:
        try:
            return int(read(path).split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def keyed(path: str) -> dict[str, int]:
        try:
            return parse_flat_keyed(read(path))
        except OSError:
            return {}

    if h.version == 1:
        stat = keyed(os.path.join(dirs["memory"], "memory.stat"))
        return Sample(
            num(os.path.join(dirs["cpuacct"], "cpuacct.usage")),
            num(os.path.join(dirs["memory"], "memory.usage_in_bytes")),
            stat.get("total_inactive_file", stat.get("inactive_file", 0)),
            keyed(os.path.join(dirs["memory"], "memory.oom_control")).get("oom_kill", 0),
        )
    d = dirs[""]
    stat = keyed(os.path.join(d, "memory.stat"))
    return Sample(
        keyed(os.path.join(d, "cpu.stat")).get("usage_usec", 0) * 1000,
        num(os.path.join(d, "memory.current")),
        stat.get("inactive_file", 0),
        keyed(os.path.join(d, "memory.events")).get("oom_kill", 0),
    )


def cpu_millicores(before: Sample, after: Sample, seconds: float) -> float:
    """CPU rate between two samples, in millicores."""
    if seconds <= 0:
        return 0.0
    return max(0, after.cpu_ns - before.cpu_ns) / 1e6 / seconds


def machine_figures() -> tuple[int, int]:
    """(CPU cores, MemTotal bytes) of the machine."""
    total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return os.cpu_count() or 1, total


# --- the writer --------------------------------------------------------------------------------


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def make(journal, h: Hierarchy, parts: tuple[str, ...]) -> dict[str, str]:
    """Makes the cgroup PARTS in every hierarchy (journaled first); its parents must exist, except
    the shared `ambient-lab` directory, made (never removed) when missing."""
    dirs = h.dirs(*parts)
    for d in h.unique(dirs):
        if len(parts) == 1:
            os.makedirs(os.path.dirname(d), exist_ok=True)
            if h.version == 2:
                _enable_controllers(os.path.dirname(os.path.dirname(d)))
                _enable_controllers(os.path.dirname(d))
        journal.added("cgroup", d)
        try:
            os.mkdir(d)
        except FileExistsError:
            pass
        if h.version == 2 and len(parts) < 3:
            _enable_controllers(d)
    return dirs


def _enable_controllers(d: str) -> None:
    """cgroup v2: let the children of D use the cpu and memory controllers."""
    try:
        enabled = _read(os.path.join(d, "cgroup.subtree_control")).split()
    except OSError:
        return
    missing = [c for c in ("cpu", "memory") if c not in enabled]
    if missing:
        _write(os.path.join(d, "cgroup.subtree_control"), " ".join("+" + c for c in missing))


def configure(h: Hierarchy, dirs: Mapping[str, str], res: Resources) -> None:
    """Writes RES's figures; a knob the kernel lacks (memory.memsw.* without swap accounting,
    memory.swap.max without swap) is skipped."""
    for controller, name, value in settings(h.version, res):
        path = os.path.join(dirs[controller], name)
        if name in ("memory.memsw.limit_in_bytes", "memory.swap.max") and not os.path.exists(path):
            continue
        _write(path, value)


# Joins the cgroups named by its arguments up to `--` (their cgroup.procs files), then execs the
# rest: the container's program starts inside its cgroups, with no window in which it runs outside.
JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'


def join_argv(h: Hierarchy, dirs: Mapping[str, str], argv: list[str]) -> list[str]:
    procs = [os.path.join(d, "cgroup.procs") for d in h.unique(dirs)]
    return ["/bin/sh", "-c", JOIN_SCRIPT, "cgroup-join", *procs, "--", *argv]


def owned_by(path: str, lab: str) -> bool:
    """Whether PATH is lab LAB's cgroup (`.../ambient-lab/<lab>` or below): a check on what a
    journal names before anything is killed or removed."""
    parts = os.path.normpath(path).split(os.sep)
    return any(parts[i] == PARENT and parts[i + 1] == lab for i in range(len(parts) - 1)) and ".." not in parts


def pids(d: str) -> list[int]:
    """The processes in cgroup D (v1 and v2: cgroup.procs), as this process's PID namespace sees them."""
    try:
        return [int(p) for p in _read(os.path.join(d, "cgroup.procs")).split() if int(p) > 0]
    except (OSError, ValueError):
        return []


def remove(d: str, timeout: float = 5.0) -> bool:
    """Removes cgroup directory D: its child cgroups first, then the processes still in it are
    killed (only those listed in its own cgroup.procs), then rmdir. True when D is gone."""
    if not os.path.isdir(d):
        return True
    try:
        children = [os.path.join(d, e) for e in os.listdir(d) if os.path.isdir(os.path.join(d, e))]
    except OSError:
        children = []
    for child in children:
        remove(child, timeout)
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids(d):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                return False
        time.sleep(0.02)


def remove_all(journal, dirs: Iterable[str]) -> None:
    """Removes each cgroup directory and records it; one that cannot be removed stays in the journal."""
    for d in dirs:
        if remove(d):
            journal.removed("cgroup", d)
