"""The kubelet: runs the pods bound to nodes, keeps their status, restarts their containers.

One `PodWorker` task per pod lives in the kubelet's nursery under its own cancel scope. Deleting a
pod cancels that scope; the worker's shielded cleanup stops the containers, removes the sandbox
and only then removes the pod object, so an object never outlives or predates what it stands for.

Containers start in spec order; a container's `lifecycle.postStart` exec hook runs right after
it starts, and the next container starts only once the hook has returned (a failing hook kills
the container, which restarts with backoff). A container with `securityContext.runAsUser` /
`runAsGroup` (or the pod's) runs as that uid/gid: `ip netns exec NS setpriv --reuid=U --regid=G
... -- CMD`, so the switch happens inside the pod's namespaces; hooks and exec probes run the same
way, and `exec_argv` gives `lab exec` the same prefix (docs/internals.md, "Processes").

Resources: each pod gets a cgroup, and each container one beneath it (lab/runtime/cgroups.py),
journaled before they are made and set from the containers' `resources` (cpu shares and CFS
quota, memory limit without swap). A container's process joins its cgroups before it execs the
container's program; a container the memory cgroup's OOM killer killed ends `OOMKilled` (exit
code 137) and shows so while it waits for its restart. `top` samples the cgroups for `lab top`.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import logging

import trio

from lab.runtime import images
from lab.runtime.journal import Journal
from lab.client.paths import cni_plugin_dir, pod_dir
from lab.runtime import cgroups, cniplugins, processes, sandbox
from lab.client import netns, paths
from lab.apiserver.store import Store, now_rfc3339
from lab.topology import Topology

log = logging.getLogger("labd.kubelet")
MAX_GRACE = 5.0          # the lab caps terminationGracePeriodSeconds: labs are for fast loops
BACKOFF_MAX = 20.0
NETNS_ANNOTATION = "lab.ambient/netns"
TOKEN_FILE = "serviceaccount-token"  # the projected token (audience istio-ca), as /var/run/secrets/tokens


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
    restart_pending: bool = False   # terminated, its restart is due (shown while OOMKilled)

    def status(self) -> dict:
        st: dict = {"name": self.name, "image": self.image, "imageID": "", "ready": self.ready,
                    "restartCount": self.restarts, "started": self.running_since is not None}
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


@dataclass
class NodeIPAM:
    cidr: ipaddress.IPv4Network
    used: set = field(default_factory=set)

    def allocate(self) -> ipaddress.IPv4Address:
        for host in list(self.cidr.hosts())[1:]:  # .1 is the node's gateway address
            if host not in self.used:
                self.used.add(host)
                return host
        raise RuntimeError(f"pod CIDR {self.cidr} is exhausted")

    def release(self, ip: ipaddress.IPv4Address) -> None:
        self.used.discard(ip)


def _seconds(value, default: float) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return default


# --- who a container runs as ------------------------------------------------------------------

@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _id(value, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 31:
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
    handler = ((container.get("lifecycle") or {}).get(hook) or {})
    command = (handler.get("exec") or {}).get("command")
    return [str(a) for a in command] if command else None


POD_GID_BASE = 3_000_000  # per-pod groups: far above any uid/gid a pod spec is likely to name


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


class Kubelet:
    def __init__(self, topo: Topology, store: Store, journal: Journal, lab_dir: str, api_socket: str,
                 record_event: Callable[..., None], issue_token: Callable[[dict], str]):
        self.topo = topo
        self.store = store
        self.journal = journal
        self.lab_dir = lab_dir
        self.api_socket = api_socket
        self.record_event = record_event
        self.issue_token = issue_token
        self.ipam = {n.name: NodeIPAM(topo.node_pod_cidr(n)) for n in topo.nodes}
        self.nodes = {n.name: n for n in topo.nodes}
        self.workers: dict[str, "PodWorker"] = {}   # by pod uid
        self.host_pid = processes.own_host_pid()
        self.limiter = trio.CapacityLimiter(8)       # concurrent netlink/netns work
        self._nursery: trio.Nursery | None = None
        self.cgroups = cgroups.machine()             # None: the machine has no usable cgroups
        self.lab_cgroup: dict[str, str] | None = None

    def lab_cgroup_dirs(self) -> dict[str, str] | None:
        """The lab's own cgroup (parent of its pods'), made on first use; None without cgroups."""
        if self.cgroups is None:
            return None
        if self.lab_cgroup is None:
            self.lab_cgroup = cgroups.make(self.journal, self.cgroups, cgroups.lab_parts(self.topo.name))
        return self.lab_cgroup

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def sync(self) -> None:
        """Start workers for newly bound pods; tell workers of deleted pods to stop."""
        assert self._nursery is not None
        seen = set()
        for pod in self.store.list("Pod"):
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            node = pod["spec"].get("nodeName")
            terminating = bool(pod["metadata"].get("deletionTimestamp"))
            w = self.workers.get(uid)
            if w is None and node and not terminating:
                try:
                    w = PodWorker(self, pod)
                except Exception:
                    log.exception("cannot run pod %s/%s", pod["metadata"]["namespace"], pod["metadata"]["name"])
                    continue
                self.workers[uid] = w
                self._nursery.start_soon(w.run, name=f"pod {pod['metadata']['namespace']}/{pod['metadata']['name']}")
            elif w is None and terminating:
                self.store.delete("Pod", pod["metadata"]["namespace"], pod["metadata"]["name"])
            elif w is not None and terminating:
                w.terminate(pod)
        for uid, w in list(self.workers.items()):
            if uid not in seen:
                w.terminate(None)

    def exec_argv(self, pod: dict, container: dict, netns: str) -> list[str]:
        """`lab exec`'s prefix for CONTAINER: its netns and uid/gid (ValueError if it has bad ids)."""
        worker = self.workers.get(pod["metadata"]["uid"])
        return exec_argv(netns, run_as(pod["spec"], container, worker.gid if worker else None))

    def allocate_gid(self) -> int:
        """A group of the pod's own (Istio's sidecars all run as uid 1337: a uid cannot keep one
        pod's token from another, a group per pod does)."""
        self._next_gid = getattr(self, "_next_gid", POD_GID_BASE) + 1
        return self._next_gid

    async def shutdown(self) -> None:
        """Stop every pod (in parallel) and wait until their sandboxes are gone."""
        for w in list(self.workers.values()):
            w.terminate(None, grace=0.5)
        while self.workers:
            await trio.sleep(0.02)
        if self.cgroups is not None and self.lab_cgroup is not None:
            await trio.to_thread.run_sync(cgroups.remove_all, self.journal, self.cgroups.unique(self.lab_cgroup))
            self.lab_cgroup = None

    async def top(self, pods: list[dict], interval: float = 0.5) -> dict:
        """What PODS' cgroups report: CPU sampled twice INTERVAL apart (a rate in millicores) and
        memory (the working set, as the kubelet's: usage minus inactive file pages), per pod and
        per container, with the raw figures, and the sums per node."""
        cores, mem_total = cgroups.machine_figures()
        result: dict = {"cgroupVersion": self.cgroups.version if self.cgroups else None,
                        "interval": interval, "cores": cores, "memTotal": mem_total, "pods": [], "nodes": []}
        targets = []   # (pod entry, container entry or None, dirs)
        for pod in pods:
            w = self.workers.get(pod["metadata"]["uid"])
            if w is None or w.pod_cgroup is None:
                continue
            entry = {"namespace": w.ns, "name": w.name, "uid": w.uid, "node": pod["spec"].get("nodeName"),
                     "cgroup": dict(w.pod_cgroup), "containers": []}
            result["pods"].append(entry)
            targets.append((entry, None, w.pod_cgroup))
            for name, dirs in w.container_cgroups.items():
                if name not in w.specs:
                    continue  # init containers are done by the time anyone asks
                c = {"name": name, "cgroup": dict(dirs)}
                entry["containers"].append(c)
                targets.append((entry, c, dirs))
        if self.cgroups is None:
            return result
        h = self.cgroups
        before = await trio.to_thread.run_sync(lambda: [cgroups.sample(h, d) for _, _, d in targets])
        t0 = time.monotonic()
        await trio.sleep(interval)
        after = await trio.to_thread.run_sync(lambda: [cgroups.sample(h, d) for _, _, d in targets])
        elapsed = time.monotonic() - t0
        for (entry, c, _), b, a in zip(targets, before, after):
            figures = {"cpu": round(cgroups.cpu_millicores(b, a, elapsed), 3), "memory": a.working_set,
                       "raw": {"cpuUsageNs": [b.cpu_ns, a.cpu_ns], "memoryUsage": a.memory_usage,
                               "inactiveFile": a.inactive_file, "oomKills": a.oom_kills}}
            (c if c is not None else entry).update(figures)
        nodes: dict[str, dict] = {n.name: {"name": n.name, "cpu": 0.0, "memory": 0, "pods": 0}
                                  for n in self.topo.nodes}
        for entry in result["pods"]:
            n = nodes.get(entry["node"])
            if n is not None:
                n["cpu"] += entry.get("cpu", 0.0)
                n["memory"] += entry.get("memory", 0)
                n["pods"] += 1
        for n in nodes.values():
            n["cpu"] = round(n["cpu"], 3)
            n["cpuPercent"] = round(100.0 * n["cpu"] / (cores * 1000), 2)
            n["memoryPercent"] = round(100.0 * n["memory"] / mem_total, 2) if mem_total else 0.0
        result["nodes"] = list(nodes.values())
        return result

    def container_env(self, pod: dict, container: dict, pod_ip: str | None) -> dict[str, str]:
        md, spec = pod["metadata"], pod["spec"]
        node = spec.get("nodeName", "")
        node_ip = str(self.topo.node_ip(self.nodes[node])) if node in self.nodes else ""
        fields = {"metadata.name": md["name"], "metadata.namespace": md["namespace"],
                  "metadata.uid": md["uid"], "spec.nodeName": node,
                  "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
                  "status.podIP": pod_ip or "", "status.hostIP": node_ip}
        image = images.lookup(container["image"])
        try:
            worker = self.workers.get(md["uid"])
            who = run_as(spec, container, worker.gid if worker else None)
        except ValueError:
            who = None
        # The venv's bin first: the images' programs and console scripts (pilot-agent) resolve.
        env = {"PATH": os.path.dirname(sys.executable) + ":" + processes.BASE_PATH,
               "HOME": "/root" if who is None or who.uid == 0 else "/", "LANG": "C.UTF-8",
               "PYTHONUNBUFFERED": "1",
               "HOSTNAME": node if spec.get("hostNetwork") else md["name"],
               "AMBIENT_LAB": self.topo.name, "LAB_NAME": self.topo.name, "LAB_API_SOCKET": self.api_socket,
               "LAB_POD_NAME": md["name"], "LAB_POD_NAMESPACE": md["namespace"], "LAB_NODE_NAME": node,
               "LAB_POD_IP": pod_ip or "", "LAB_POD_UID": md["uid"],
               "LAB_SERVICE_ACCOUNT": fields["spec.serviceAccountName"],
               "LAB_SA_TOKEN_FILE": os.path.join(pod_dir(self.topo.name, md["namespace"], md["name"], md["uid"]),
                                                 TOKEN_FILE)}
        env.update(dict(image.env))
        for e in container.get("env", []) or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
            elif (ref := (e.get("valueFrom") or {}).get("fieldRef")) is not None:
                env[e["name"]] = fields.get(ref.get("fieldPath"), "")
        return env


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: dict):
        self.k = kubelet
        self.ns = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.pod = pod
        self.cancel = trio.CancelScope()
        self.stopped = trio.Event()
        self.grace = _seconds(pod["spec"].get("terminationGracePeriodSeconds"), 30.0)
        specs = pod["spec"].get("containers", [])
        self.specs = {c["name"]: c for c in specs}
        self.states = {c["name"]: ContainerState(c["name"], c["image"]) for c in specs}
        self.init_states = {c["name"]: ContainerState(c["name"], c["image"])
                            for c in pod["spec"].get("initContainers", []) or []}
        self.sandbox: sandbox.Sandbox | None = None
        self.dir = pod_dir(kubelet.topo.name, self.ns, self.name, self.uid)
        self.gid = kubelet.allocate_gid()
        self.started_at = now_rfc3339()
        self.initialized = False
        self.procs: dict[str, trio.Process] = {}
        self.pod_cgroup: dict[str, str] | None = None
        self.container_cgroups: dict[str, dict[str, str]] = {}

    def terminate(self, pod: dict | None, grace: float | None = None) -> None:
        if grace is not None:
            self.grace = grace
        elif pod is not None:
            self.grace = _seconds(pod["metadata"].get("deletionGracePeriodSeconds"), self.grace)
        self.stopped.set()
        self.cancel.cancel()

    # Status -------------------------------------------------------------------------------
    def publish(self) -> None:
        pod = self.k.store.get("Pod", self.ns, self.name)
        if pod is None or pod["metadata"]["uid"] != self.uid:
            return
        states = list(self.states.values())
        all_ready = bool(states) and all(s.ready for s in states)
        running = any(s.running_since for s in states)
        restart_policy = pod["spec"].get("restartPolicy", "Always")
        done = states and all(s.terminated is not None and s.running_since is None and
                              s.waiting_reason is None and not s.restart_pending for s in states)
        if done and restart_policy != "Always":
            phase = "Succeeded" if all(s.terminated.get("exitCode") == 0 for s in states) else "Failed"
        elif running or (self.initialized and any(s.restarts for s in states)):
            phase = "Running"
        else:
            phase = "Pending"
        t = now_rfc3339()
        old = pod.get("status", {})
        old_conds = {c["type"]: c for c in old.get("conditions", []) or []}

        def cond(type_: str, ok: bool) -> dict:
            prev = old_conds.get(type_)
            status = "True" if ok else "False"
            if prev and prev.get("status") == status:
                return prev
            return {"type": type_, "status": status, "lastTransitionTime": t}

        status = {
            "phase": phase,
            "conditions": [cond("PodScheduled", True), cond("Initialized", self.initialized),
                           cond("ContainersReady", all_ready), cond("Ready", all_ready)],
            "hostIP": str(self.k.topo.node_ip(self.k.nodes[pod["spec"]["nodeName"]])),
            "startTime": self.started_at,
            "containerStatuses": [s.status() for s in states],
        }
        if self.init_states:
            status["initContainerStatuses"] = [s.status() for s in self.init_states.values()]
        if self.sandbox is not None:
            status["podIP"] = self.sandbox.ip
            status["podIPs"] = [{"ip": self.sandbox.ip}]
        self.k.store.patch_status("Pod", self.ns, self.name, status)

    def _write_token(self) -> None:
        """The ServiceAccount token: root's only, or, when a container runs as another uid,
        readable by the pod's own group (and the pod's directory enterable by it alone)."""
        path = os.path.join(self.dir, TOKEN_FILE)
        shared = has_non_root(self.pod["spec"])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.k.issue_token(self.pod))
            if shared:
                os.fchown(f.fileno(), 0, self.gid)
                os.fchmod(f.fileno(), 0o640)
        if shared:
            os.chown(self.dir, 0, self.gid)
            os.chmod(self.dir, 0o750)
            self._make_traversable(os.path.dirname(self.dir))

    def _make_traversable(self, d: str) -> None:
        """Containers that run as another uid reach their files in the pod's directory: the lab's
        directories on the way (the lab's own is 0700) get the search bit, not the read bit."""
        while True:
            st = os.stat(d)
            if not st.st_mode & 0o001:
                os.chmod(d, (st.st_mode & 0o7777) | 0o011)
            if os.path.normpath(d) == os.path.normpath(self.k.lab_dir) or os.path.dirname(d) == d:
                break
            d = os.path.dirname(d)

    def _annotate_netns(self) -> None:
        """Tell the API (exec, the CNI agent) which network namespace the pod lives in."""
        pod = self.k.store.get("Pod", self.ns, self.name)
        if pod is None or pod["metadata"]["uid"] != self.uid or self.sandbox is None:
            return
        upd = dict(pod, metadata=dict(pod["metadata"]))
        upd["metadata"]["annotations"] = dict(pod["metadata"].get("annotations") or {},
                                              **{NETNS_ANNOTATION: self.sandbox.netns})
        self.k.store.update(upd, spec_changed=False)

    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.k.record_event(self.pod, reason, message, type_)

    # Lifecycle ----------------------------------------------------------------------------
    async def run(self) -> None:
        node_name = self.pod["spec"]["nodeName"]
        node = self.k.nodes.get(node_name)
        ip = None
        try:
            with self.cancel:
                if node is None:
                    self.event("FailedScheduling", f'node "{node_name}" does not exist', "Warning")
                    await trio.sleep_forever()
                os.makedirs(self.dir, exist_ok=True)
                self._write_token()
                await trio.to_thread.run_sync(self._make_pod_cgroup)
                node_ns = paths.node_netns_name(self.k.topo.name, node_name)
                if self.pod["spec"].get("hostNetwork"):
                    self.sandbox = sandbox.Sandbox(node_ns, str(self.k.topo.node_ip(node)), None)
                else:
                    ip = self.k.ipam[node_name].allocate()
                    self.sandbox = await trio.to_thread.run_sync(
                        sandbox.create_pod_sandbox, self.k.journal, self.k.topo.name, node_ns, self.ns,
                        self.name, self.uid, ip, self.k.topo.pod_gateway(node), str(self.k.topo.cluster_dns_ip()),
                        limiter=self.k.limiter)
                self._annotate_netns()
                self.publish()
                if self.sandbox.host_ifname is not None:
                    # The node's CNI plugins (istio-cni) see the pod before any container runs;
                    # a failing one fails the sandbox, retried until it succeeds.
                    await cniplugins.add(
                        cni_plugin_dir(self.k.topo.name, node_name), self.pod, self.sandbox.netns,
                        self.sandbox.ip, lambda msg: self.event("FailedCreatePodSandBox", msg, "Warning"))
                await self._run_init_containers()
                self.initialized = True
                self.publish()
                async with trio.open_nursery() as nursery:
                    # In spec order; each one once the previous has started and its postStart
                    # hook has returned.
                    for spec in self.pod["spec"]["containers"]:
                        started = trio.Event()
                        nursery.start_soon(self._supervise, spec, started)
                        await started.wait()
                # Every container finished for good (restartPolicy Never/OnFailure): the pod stays,
                # Succeeded or Failed, with its logs, until it is deleted.
                self.publish()
                await trio.sleep_forever()
        except Exception as e:  # one pod's failure must never take labd down
            log.exception("pod %s/%s failed", self.ns, self.name)
            self.event("FailedCreatePodSandBox" if self.sandbox is None else "Failed",
                       f"{type(e).__name__}: {e}", "Warning")
            for st in self.states.values():
                st.waiting_reason, st.waiting_message = "RunContainerError", f"{type(e).__name__}: {e}"
            self.publish()
            await self.stopped.wait()  # stays visible (and deletable) in its failed state
        finally:
            with trio.CancelScope(shield=True):
                await self._cleanup(node_name, ip)

    async def _cleanup(self, node_name: str, ip) -> None:
        try:
            if self.procs:
                self.event("Killing", "Stopping containers")
            async with trio.open_nursery() as nursery:
                for name, proc in list(self.procs.items()):
                    nursery.start_soon(self._stop_container, name, proc, min(self.grace, MAX_GRACE))
            if self.sandbox is not None and self.sandbox.host_ifname is not None:
                await cniplugins.delete(cni_plugin_dir(self.k.topo.name, node_name), self.pod,
                                        self.sandbox.netns, self.sandbox.ip)
                node_ns = paths.node_netns_name(self.k.topo.name, node_name)
                await trio.to_thread.run_sync(sandbox.remove_pod_sandbox, self.k.journal, node_ns, self.sandbox,
                                              limiter=self.k.limiter)
            await trio.to_thread.run_sync(self._remove_cgroups)
        except Exception:
            # What could not be removed stays in the journal; `lab down` removes it by name.
            log.exception("cleaning up pod %s/%s failed", self.ns, self.name)
        finally:
            if ip is not None:
                self.k.ipam[node_name].release(ip)
            self.k.workers.pop(self.uid, None)
            pod = self.k.store.get("Pod", self.ns, self.name)
            if pod is not None and pod["metadata"]["uid"] == self.uid:
                self.k.store.delete("Pod", self.ns, self.name)

    # cgroups -----------------------------------------------------------------------------------
    def _make_pod_cgroup(self) -> None:
        h = self.k.cgroups
        if h is None or self.k.lab_cgroup_dirs() is None:
            return
        dirs = cgroups.make(self.k.journal, h, cgroups.pod_parts(self.k.topo.name, self.uid))
        self.pod_cgroup = dirs
        cgroups.configure(h, dirs, cgroups.pod_resources(self.pod["spec"]))

    def _container_cgroup(self, spec: dict) -> dict[str, str] | None:
        """The container's cgroup, made and set on its first start (kept across restarts)."""
        h = self.k.cgroups
        if h is None or self.pod_cgroup is None:
            return None
        dirs = self.container_cgroups.get(spec["name"])
        if dirs is None:
            dirs = cgroups.make(self.k.journal, h, cgroups.container_parts(self.k.topo.name, self.uid, spec["name"]))
            cgroups.configure(h, dirs, cgroups.container_resources(spec))
            self.container_cgroups[spec["name"]] = dirs  # only once its limits are in (a failure retries them)
        return dirs

    def _oom_kills(self, dirs: dict[str, str] | None) -> int:
        """OOM kills counted in the container's cgroup and in the pod's (a pod-wide limit)."""
        if self.k.cgroups is None or dirs is None:
            return 0
        total = cgroups.sample(self.k.cgroups, dirs).oom_kills
        if self.pod_cgroup is not None:
            total += cgroups.sample(self.k.cgroups, self.pod_cgroup).oom_kills
        return total

    def _remove_cgroups(self) -> None:
        h = self.k.cgroups
        if h is None:
            return
        for dirs in self.container_cgroups.values():
            cgroups.remove_all(self.k.journal, h.unique(dirs))
        self.container_cgroups.clear()
        if self.pod_cgroup is not None:
            cgroups.remove_all(self.k.journal, h.unique(self.pod_cgroup))
            self.pod_cgroup = None

    async def _stop_container(self, name: str, proc: trio.Process, grace: float) -> None:
        """The preStop exec hook (if any), then SIGTERM, SIGKILL when the grace period is over;
        the hook's time counts against the grace period, as in Kubernetes."""
        began = time.monotonic()
        spec = self.specs.get(name)
        hook = lifecycle_command(spec, "preStop") if spec is not None else None
        if hook and proc.returncode is None:
            with trio.move_on_after(grace):
                ok, output = await self._run_hook(spec, hook)
                if not ok:
                    self.event("FailedPreStopHook", self._hook_message(hook, name, output), "Warning")
        await processes.stop(proc, max(0.0, grace - (time.monotonic() - began)))

    def _hook_message(self, hook: list[str], container: str, output: str) -> str:
        return (f'Exec lifecycle hook ({hook}) for Container "{container}" in Pod '
                f'"{self.name}_{self.ns}({self.uid})" failed - error: {output}')

    async def _run_hook(self, spec: dict, command: list[str]) -> tuple[bool, str]:
        """COMMAND in SPEC's container, as `lab exec` runs it (netns, env, uid): (ok, what it said)."""
        assert self.sandbox is not None
        try:
            who = run_as(self.pod["spec"], spec, self.gid)
        except ValueError as e:
            return False, str(e)
        env = self.k.container_env(self.pod, spec, self.sandbox.ip)

        async def kill_group(proc: trio.Process) -> None:  # the hook's children go with it
            processes.signal_group(proc, signal.SIGKILL)

        try:
            res = await trio.run_process(exec_argv(self.sandbox.netns, who, command), env=env, cwd="/",
                                         check=False, stdin=b"", capture_stdout=True,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         deliver_cancel=kill_group)
        except OSError as e:
            return False, str(e)
        output = res.stdout.decode(errors="replace").strip()[-1024:]
        if res.returncode != 0:
            return False, f"command {' '.join(command)!r} exited with {res.returncode}: {output}"
        return True, output

    async def _run_init_containers(self) -> None:
        for spec in self.pod["spec"].get("initContainers", []) or []:
            st = self.init_states[spec["name"]]
            while True:
                code = await self._run_once(spec, st)
                if code == 0:
                    st.waiting_reason = None
                    self.publish()
                    break
                st.restarts += 1
                st.waiting_reason = "Init:CrashLoopBackOff"
                self.publish()
                await trio.sleep(min(BACKOFF_MAX, 0.5 * 2 ** min(st.restarts, 6)))

    async def _run_once(self, spec: dict, st: ContainerState, started: trio.Event | None = None) -> int:
        """Runs the container once, until it exits; sets STARTED once it runs and its postStart
        hook has returned (or it could not start)."""
        image = images.lookup(spec["image"])
        argv = images.container_argv(image, spec.get("command"), spec.get("args"))
        env = self.k.container_env(self.pod, spec, self.sandbox.ip if self.sandbox else None)
        log_path = os.path.join(self.dir, f"{spec['name']}.{st.restarts}.log")
        try:
            who = run_as(self.pod["spec"], spec, self.gid)
        except ValueError as e:
            st.waiting_reason, st.waiting_message = "CreateContainerConfigError", f"Error: {e}"
            self.event("Failed", f"Error: {e}", "Warning")
            self.publish()
            return 128
        try:
            cg = await trio.to_thread.run_sync(self._container_cgroup, spec)
            ooms_before = self._oom_kills(cg)
            proc = await self._start(cg, user_argv(who, argv), env, log_path)
        except OSError as e:
            st.waiting_reason, st.waiting_message = "RunContainerError", str(e)
            self.publish()
            return 128
        self.procs[spec["name"]] = proc
        began = now_rfc3339()
        st.pid = processes.host_pid_of_child(proc.pid, self.k.host_pid) or proc.pid
        st.terminated = None
        hook, hook_error = lifecycle_command(spec, "postStart"), None
        if hook:
            # Until the hook returns the container is still being created (as in Kubernetes).
            st.waiting_reason, st.waiting_message = "ContainerCreating", None
            self.publish()
            ok, output = await self._run_hook(spec, hook)
            if not ok:
                hook_error = output
                self.event("FailedPostStartHook", self._hook_message(hook, spec["name"], output), "Warning")
                await processes.stop(proc, min(self.grace, MAX_GRACE))
        if hook_error is None:
            st.running_since, st.waiting_reason, st.waiting_message = began, None, None
            if st.restarts == 0:
                self.event("Started", f"Started container {spec['name']}")
            self.publish()
        if started is not None:
            started.set()
        code = await proc.wait()  # on cancellation the process stays in self.procs for _cleanup
        self.procs.pop(spec["name"], None)
        finished = now_rfc3339()
        st.ready = False
        oom = code != 0 and self._oom_kills(cg) > ooms_before
        term = {"exitCode": code if code >= 0 else 128 - code,
                "reason": "OOMKilled" if oom else "Completed" if code == 0 else "Error",
                "startedAt": st.running_since or began, "finishedAt": finished}
        if code < 0:
            term["signal"] = -code
        if hook_error is not None:
            term["message"] = f"PostStartHookError: {hook_error}"
        st.terminated = term
        st.running_since, st.pid = None, None
        return code

    async def _start(self, cg: dict[str, str] | None, argv: list[str], env: dict[str, str],
                     log_path: str) -> trio.Process:
        """The container's process in the pod's namespaces; with CG, it first joins those cgroups
        (outside `ip netns exec`, whose fresh /sys has no cgroup mounts), then execs: same pid."""
        if cg is None:
            return await processes.start(self.sandbox.netns, argv, env, log_path)
        command = cgroups.join_argv(self.k.cgroups, cg, processes.container_command(self.sandbox.netns, argv))
        with open(log_path, "ab", buffering=0) as log_file:
            return await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                                    stderr=log_file, env=env, cwd="/", start_new_session=True)

    async def _supervise(self, spec: dict, started: trio.Event | None = None) -> None:
        st = self.states[spec["name"]]
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while True:
            began = time.monotonic()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._probe_readiness, spec, st)
                code = await self._run_once(spec, st, started)
                nursery.cancel_scope.cancel()
            if started is not None:
                started.set()  # also when it could not start at all: the next one is not held
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if not restart:
                st.waiting_reason = None
                self.publish()
                return
            st.last_terminated = st.terminated
            st.restarts += 1
            ran = time.monotonic() - began
            delay = 0.0 if ran > 60 else min(BACKOFF_MAX, 0.5 * 2 ** min(st.restarts - 1, 6))
            st.waiting_reason = "CrashLoopBackOff" if st.restarts > 1 and ran < 10 else "ContainerCreating"
            st.waiting_message = f"back-off {delay:g}s restarting failed container={spec['name']}" \
                if st.waiting_reason == "CrashLoopBackOff" else None
            if (st.terminated or {}).get("reason") == "OOMKilled":
                # Until it runs again the container shows how it ended (STATUS OOMKilled).
                st.waiting_reason = st.waiting_message = None
                st.restart_pending = True
            self.event("BackOff" if delay else "Pulled",
                       f"Back-off restarting container {spec['name']}" if delay else
                       f"Container {spec['name']} exited with {(st.terminated or {}).get('exitCode')}, "
                       f"restarting",
                       "Warning" if delay else "Normal")
            self.publish()
            await trio.sleep(delay)
            st.restart_pending = False

    async def _probe_readiness(self, spec: dict, st: ContainerState) -> None:
        """Readiness: the probe if one is given, else every declared TCP port accepts connections."""
        probe = spec.get("readinessProbe") or {}
        targets: list[tuple[str, int, str | None]] = []  # (kind, port, http path)
        if "tcpSocket" in probe:
            targets.append(("tcp", self._port(spec, probe["tcpSocket"].get("port")), None))
        elif "httpGet" in probe:
            targets.append(("http", self._port(spec, probe["httpGet"].get("port")), probe["httpGet"].get("path", "/")))
        elif "exec" in probe:
            targets.append(("exec", 0, None))
        else:
            targets = [("tcp", p["containerPort"], None) for p in spec.get("ports", []) or []
                       if p.get("protocol", "TCP") == "TCP"]
        await trio.sleep(_seconds(probe.get("initialDelaySeconds"), 0.0))
        period = _seconds(probe.get("periodSeconds"), 2.0) or 2.0
        failure_threshold = int(_seconds(probe.get("failureThreshold"), 3)) or 1
        while st.running_since is None:
            await trio.sleep(0.02)
        failures = 0
        while True:
            ok = True
            for kind, port, path in targets:
                ok = ok and port is not None and await self._check(spec, kind, port, path, probe)
            failures = 0 if ok else failures + 1
            # Not yet ready: probe every 50 ms so pods become Ready fast (a lab's loops are short).
            # Ready: drop out only after failureThreshold failures in a row, one period apart.
            if ok and not st.ready or st.ready and failures >= failure_threshold:
                st.ready = ok
                self.publish()
            await trio.sleep(period if st.ready else 0.05)

    def _port(self, spec: dict, port) -> int | None:
        """A probe's port: a number or the name of a container port (None if there is no such)."""
        if isinstance(port, int):
            return port
        for p in spec.get("ports", []) or []:
            if p.get("name") == port:
                return p["containerPort"]
        return int(port) if isinstance(port, str) and port.isdigit() else None

    async def _check(self, spec: dict, kind: str, port: int, path: str | None, probe: dict) -> bool:
        assert self.sandbox is not None
        if kind == "exec":  # in the container as `lab exec` runs it: its env and uid
            command = list((probe.get("exec") or {}).get("command") or ["false"])
            try:
                cmd = exec_argv(self.sandbox.netns, run_as(self.pod["spec"], spec, self.gid), command)
            except ValueError:
                return False
            env = self.k.container_env(self.pod, spec, self.sandbox.ip)
            try:
                with trio.fail_after(_seconds(probe.get("timeoutSeconds"), 1.0) or 1.0):
                    res = await trio.run_process(cmd, check=False, capture_stdout=True, capture_stderr=True,
                                                 env=env, cwd="/")
            except (trio.TooSlowError, OSError):
                return False
            return res.returncode == 0
        try:
            raw = netns.socket_in(self.sandbox.netns, socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return False
        sock = trio.socket.from_stdlib_socket(raw)
        try:
            with trio.move_on_after(_seconds(probe.get("timeoutSeconds"), 1.0) or 1.0):
                await sock.connect((self.sandbox.ip, port))
                if kind == "tcp":
                    return True
                await sock.send(f"GET {path} HTTP/1.1\r\nHost: {self.sandbox.ip}:{port}\r\n"
                                f"User-Agent: lab-probe\r\nConnection: close\r\n\r\n".encode())
                head = await sock.recv(64)
                parts = head.split(b" ", 2)
                return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
            return False  # timed out
        except OSError:
            return False
        finally:
            sock.close()

