"""What the kubelet reads out of a pod spec: who a container runs as, the command line that gets
it there, its lifecycle hooks, duration fields. Pure, so the rules are tested without processes.

A container with `securityContext.runAsUser` / `runAsGroup` (or the pod's) runs as that uid/gid:
`ip netns exec NS setpriv --reuid=U --regid=G ... -- CMD`, so the switch happens inside the pod's
namespaces; hooks and exec probes run the same way, and `exec_argv` gives `lab exec` the same
prefix (docs/internals.md, "Processes").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from lab.runtime import processes


def seconds(value, default: float) -> float:
    """A duration field (grace periods, probe timings) in seconds; DEFAULT when unset or bad."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _id(value, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ValueError(f"securityContext.{field}: {value!r} is not a valid id (an integer >= 0)")
    return value


def run_as(pod_spec: dict, container: dict, pod_gid: int | None = None) -> RunAs | None:
    """The uid/gid a container runs as: its securityContext, else the pod's; None for root as is.

    As Kubernetes: runAsGroup unset means gid 0; the pod's supplementalGroups and fsGroup are the
    process's supplementary groups; runAsNonRoot refuses a container that would run as uid 0.
    ValueError when the container cannot be run (the kubelet's CreateContainerConfigError)."""
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}

    def pick(key: str):
        return sc[key] if sc.get(key) is not None else pod_sc.get(key)

    uid, gid = _id(pick("runAsUser"), "runAsUser"), _id(pick("runAsGroup"), "runAsGroup")
    groups = [_id(g, "supplementalGroups") for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        groups.append(_id(pod_sc["fsGroup"], "fsGroup"))
    if pick("runAsNonRoot") and not uid:
        raise ValueError("container has runAsNonRoot and image will run as root")
    if uid is None and gid is None and not groups:
        return None
    if uid and pod_gid is not None:
        groups.append(pod_gid)  # the pod's own group: its token file, and no other pod's
    return RunAs(uid or 0, gid or 0, tuple(sorted(set(g for g in groups if g is not None))))


def user_argv(who: RunAs | None, argv: list[str]) -> list[str]:
    """ARGV run as WHO (setpriv from util-linux switches ids, then execs ARGV)."""
    if who is None:
        return list(argv)
    groups = f"--groups={','.join(map(str, who.groups))}" if who.groups else "--clear-groups"
    return ["setpriv", f"--reuid={who.uid}", f"--regid={who.gid}", groups, "--", *argv]


def exec_argv(netns: str, who: RunAs | None, argv: Sequence[str] = ()) -> list[str]:
    """The command line of ARGV in a container: its network namespace, then its ids."""
    return processes.container_command(netns, user_argv(who, list(argv)))


def lifecycle_command(container: dict, hook: str) -> list[str] | None:
    """`lifecycle.<hook>.exec.command` (hook is postStart or preStop), or None."""
    handler = (container.get("lifecycle") or {}).get(hook) or {}
    command = (handler.get("exec") or {}).get("command")
    return [str(a) for a in command] if command else None


def has_non_root(pod_spec: dict) -> bool:
    """Whether some container runs as a uid other than 0 (then the pod's files need its group)."""
    for c in (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or []):
        try:
            who = run_as(pod_spec, c)
        except ValueError:
            continue
        if who is not None and who.uid != 0:
            return True
    return False
