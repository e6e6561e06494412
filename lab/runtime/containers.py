"""A pod's containers: how each starts, restarts with backoff, runs its hooks and stops, and the
status the API shows of it.

Apart from the pod's lifecycle (podworker.py) because Kubernetes' container semantics live here:
restartPolicy and CrashLoopBackOff, postStart/preStop hooks within the grace period, OOMKilled.

Containers start in spec order; a container's `lifecycle.postStart` exec hook runs right after
it starts, and the next container starts only once the hook has returned (a failing hook kills
the container, which restarts with backoff). A container, its hooks and its exec probes run in the
pod's namespaces as the uid/gid `podspec.run_as` gives, as `lab exec` runs a command. A container's
process joins its cgroups before it execs the container's program; one the memory cgroup's OOM
killer killed ends `OOMKilled` (exit code 137) and shows so while it waits for its restart.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from lab.apiserver.store import now_rfc3339
from lab.client.paths import container_log_path
from lab.runtime import cgroups, images, processes
from lab.runtime.podspec import exec_argv, lifecycle_command, run_as, user_argv
from lab.runtime.probes import probe_readiness

if TYPE_CHECKING:
    from lab.runtime.podworker import PodWorker

MAX_GRACE = 5.0  # the lab caps terminationGracePeriodSeconds: labs are for fast loops
BACKOFF_MAX = 20.0


@dataclass
class ContainerState:
    name: str
    image: str
    restarts: int = 0
    running_since: str | None = None
    pid: int | None = None
    ready: bool = False
    waiting_reason: str | None = "ContainerCreating"
    waiting_message: str | None = None
    terminated: dict | None = None
    last_terminated: dict | None = None
    restart_pending: bool = False  # terminated, its restart is due (shown while OOMKilled)

    def status(self) -> dict:
        st: dict = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restarts,
            "started": self.running_since is not None,
        }
        if self.running_since is not None:
            st["state"] = {"running": {"startedAt": self.running_since}}
        elif self.terminated is not None and self.waiting_reason is None:
            st["state"] = {"terminated": self.terminated}
        else:
            w = {"reason": self.waiting_reason or "ContainerCreating"}
            if self.waiting_message:
                w["message"] = self.waiting_message
            st["state"] = {"waiting": w}
        st["lastState"] = {"terminated": self.last_terminated} if self.last_terminated else {}
        if self.pid is not None:
            st["pid"] = self.pid
        return st


# --- running a pod's containers -----------------------------------------------------------------


async def run_init_containers(w: PodWorker) -> None:
    """Each init container in order, each until it succeeds (retried with backoff)."""
    for spec in w.pod["spec"].get("initContainers", []) or []:
        st = w.init_states[spec["name"]]
        while True:
            code = await _run_once(w, spec, st)
            if code == 0:
                st.waiting_reason = None
                w.publish()
                break
            st.restarts += 1
            st.waiting_reason = "Init:CrashLoopBackOff"
            w.publish()
            await trio.sleep(min(BACKOFF_MAX, 0.5 * 2 ** min(st.restarts, 6)))


async def supervise(w: PodWorker, spec: dict, started: trio.Event | None = None) -> None:
    """Runs the container, probing its readiness, and restarts it as its restartPolicy says."""
    st = w.states[spec["name"]]
    policy = w.pod["spec"].get("restartPolicy", "Always")
    while True:
        began = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe_readiness, w, spec, st)
            code = await _run_once(w, spec, st, started)
            nursery.cancel_scope.cancel()
        if started is not None:
            started.set()  # also when it could not start at all: the next one is not held
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if not restart:
            st.waiting_reason = None
            w.publish()
            return
        st.last_terminated = st.terminated
        st.restarts += 1
        ran = time.monotonic() - began
        delay = 0.0 if ran > 60 else min(BACKOFF_MAX, 0.5 * 2 ** min(st.restarts - 1, 6))
        st.waiting_reason = "CrashLoopBackOff" if st.restarts > 1 and ran < 10 else "ContainerCreating"
        st.waiting_message = (
            f"back-off {delay:g}s restarting failed container={spec['name']}"
            if st.waiting_reason == "CrashLoopBackOff"
            else None
        )
        if (st.terminated or {}).get("reason") == "OOMKilled":
            # Until it runs again the container shows how it ended (STATUS OOMKilled).
            st.waiting_reason = st.waiting_message = None
            st.restart_pending = True
        w.event(
            "BackOff" if delay else "Pulled",
            f"Back-off restarting container {spec['name']}"
            if delay
            else f"Container {spec['name']} exited with {(st.terminated or {}).get('exitCode')}, restarting",
            "Warning" if delay else "Normal",
        )
        w.publish()
        await trio.sleep(delay)
        st.restart_pending = False


async def stop_container(w: PodWorker, name: str, proc: trio.Process, grace: float) -> None:
    """The preStop exec hook (if any), then SIGTERM, SIGKILL when the grace period is over;
    the hook's time counts against the grace period, as in Kubernetes."""
    began = time.monotonic()
    spec = w.specs.get(name)
    hook = lifecycle_command(spec, "preStop") if spec is not None else None
    if spec is not None and hook and proc.returncode is None:
        with trio.move_on_after(grace):
            ok, output = await _run_hook(w, spec, hook)
            if not ok:
                w.event("FailedPreStopHook", _hook_message(w, hook, name, output), "Warning")
    await processes.stop(proc, max(0.0, grace - (time.monotonic() - began)))


def _hook_message(w: PodWorker, hook: list[str], container: str, output: str) -> str:
    return (
        f'Exec lifecycle hook ({hook}) for Container "{container}" in Pod '
        f'"{w.name}_{w.ns}({w.uid})" failed - error: {output}'
    )


async def _run_hook(w: PodWorker, spec: dict, command: list[str]) -> tuple[bool, str]:
    """COMMAND in SPEC's container, as `lab exec` runs it (netns, env, uid): (ok, what it said)."""
    assert w.sandbox is not None
    try:
        who = run_as(w.pod["spec"], spec, w.gid)
    except ValueError as e:
        return False, str(e)
    env = w.k.container_env(w.pod, spec, w.sandbox.ip)

    async def kill_group(proc: trio.Process) -> None:  # the hook's children go with it
        processes.signal_group(proc, signal.SIGKILL)

    try:
        res = await trio.run_process(
            exec_argv(w.sandbox.netns, who, command),
            env=env,
            cwd="/",
            check=False,
            stdin=b"",
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            deliver_cancel=kill_group,
        )
    except OSError as e:
        return False, str(e)
    output = res.stdout.decode(errors="replace").strip()[-1024:]
    if res.returncode != 0:
        return False, f"command {' '.join(command)!r} exited with {res.returncode}: {output}"
    return True, output


async def _run_once(w: PodWorker, spec: dict, st: ContainerState, started: trio.Event | None = None) -> int:
    """Runs the container once, until it exits; sets STARTED once it runs and its postStart
    hook has returned (or it could not start)."""
    image = images.lookup(spec["image"])
    argv = images.container_argv(image, spec.get("command"), spec.get("args"))
    env = w.k.container_env(w.pod, spec, w.sandbox.ip if w.sandbox else None)
    log_path = container_log_path(w.dir, spec["name"], st.restarts)
    try:
        who = run_as(w.pod["spec"], spec, w.gid)
    except ValueError as e:
        st.waiting_reason, st.waiting_message = "CreateContainerConfigError", f"Error: {e}"
        w.event("Failed", f"Error: {e}", "Warning")
        w.publish()
        return 128
    try:
        cg = await trio.to_thread.run_sync(w.container_cgroup, spec)
        ooms_before = w.oom_kills(cg)
        proc = await _start(w, cg, user_argv(who, argv), env, log_path)
    except OSError as e:
        st.waiting_reason, st.waiting_message = "RunContainerError", str(e)
        w.publish()
        return 128
    w.procs[spec["name"]] = proc
    began = now_rfc3339()
    st.pid = processes.host_pid_of_child(proc.pid, w.k.host_pid) or proc.pid
    st.terminated = None
    hook, hook_error = lifecycle_command(spec, "postStart"), None
    if hook:
        # Until the hook returns the container is still being created (as in Kubernetes).
        st.waiting_reason, st.waiting_message = "ContainerCreating", None
        w.publish()
        ok, output = await _run_hook(w, spec, hook)
        if not ok:
            hook_error = output
            w.event("FailedPostStartHook", _hook_message(w, hook, spec["name"], output), "Warning")
            await processes.stop(proc, min(w.grace, MAX_GRACE))
    if hook_error is None:
        st.running_since, st.waiting_reason, st.waiting_message = began, None, None
        if st.restarts == 0:
            w.event("Started", f"Started container {spec['name']}")
        w.publish()
    if started is not None:
        started.set()
    code = await proc.wait()  # on cancellation the process stays in w.procs for the pod's cleanup
    w.procs.pop(spec["name"], None)
    finished = now_rfc3339()
    st.ready = False
    oom = code != 0 and w.oom_kills(cg) > ooms_before
    term = {
        "exitCode": code if code >= 0 else 128 - code,
        "reason": "OOMKilled" if oom else "Completed" if code == 0 else "Error",
        "startedAt": st.running_since or began,
        "finishedAt": finished,
    }
    if code < 0:
        term["signal"] = -code
    if hook_error is not None:
        term["message"] = f"PostStartHookError: {hook_error}"
    st.terminated = term
    st.running_since, st.pid = None, None
    return code


async def _start(
    w: PodWorker, cg: dict[str, str] | None, argv: list[str], env: dict[str, str], log_path: str
) -> trio.Process:
    """The container's process in the pod's namespaces; with CG, it first joins those cgroups
    (outside `ip netns exec`, whose fresh /sys has no cgroup mounts), then execs: same pid."""
    assert w.sandbox is not None  # containers start in the pod's sandbox, made first
    if cg is None:
        return await processes.start(w.sandbox.netns, argv, env, log_path)
    assert w.k.cgroups is not None  # CG was made in this hierarchy (PodWorker.container_cgroup)
    command = cgroups.join_argv(w.k.cgroups, cg, processes.container_command(w.sandbox.netns, argv))
    with open(log_path, "ab", buffering=0) as log_file:
        return await trio.lowlevel.open_process(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
            cwd="/",
            start_new_session=True,
        )
