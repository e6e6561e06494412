"""The kubelet: runs the pods bound to nodes, keeps their status, restarts their containers.

This module is the node agent as labd sees it: it turns the store's pods into `PodWorker` tasks
(lab/runtime/podworker.py: one pod's life), hands out pod IPs and per-pod groups, answers `lab exec`
and `lab top`, and stops every pod at shutdown. What a pod's containers do is in containers.py
(start, restart, hooks, stop), probes.py (readiness), projection.py (env and token) and podspec.py
(pure readings of the spec).

Resources: each pod gets a cgroup, and each container one beneath it (lab/runtime/cgroups.py),
journaled before they are made and set from the containers' `resources` (cpu shares and CFS
quota, memory limit without swap). `top` samples the cgroups for `lab top`.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import trio

from lab.apiserver.store import Store
from lab.client import contract
from lab.runtime import cgroups, processes, projection
from lab.runtime.journal import Journal
from lab.runtime.podspec import exec_argv, run_as
from lab.runtime.podworker import PodWorker
from lab.topology import Topology

log = logging.getLogger("labd.kubelet")


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


class Kubelet:
    def __init__(
        self,
        topo: Topology,
        store: Store,
        journal: Journal,
        lab_dir: str,
        api_socket: str,
        record_event: Callable[..., None],
        issue_token: Callable[[dict], str],
    ):
        self.topo = topo
        self.store = store
        self.journal = journal
        self.lab_dir = lab_dir
        self.api_socket = api_socket
        self.record_event = record_event
        self.issue_token = issue_token
        self.ipam = {n.name: NodeIPAM(topo.node_pod_cidr(n)) for n in topo.nodes}
        self.nodes = {n.name: n for n in topo.nodes}
        self.workers: dict[str, "PodWorker"] = {}  # by pod uid
        self.host_pid = processes.own_host_pid()
        self.limiter = trio.CapacityLimiter(8)  # concurrent netlink/netns work
        self._nursery: trio.Nursery | None = None
        self.cgroups = cgroups.machine()  # None: the machine has no usable cgroups
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
        self._next_gid = getattr(self, "_next_gid", contract.POD_GID_BASE) + 1
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
        result: dict = {
            "cgroupVersion": self.cgroups.version if self.cgroups else None,
            "interval": interval,
            "cores": cores,
            "memTotal": mem_total,
            "pods": [],
            "nodes": [],
        }
        # (pod entry, container entry or None, dirs)
        targets: list[tuple[dict[str, Any], dict[str, Any] | None, dict[str, str]]] = []
        for pod in pods:
            w = self.workers.get(pod["metadata"]["uid"])
            if w is None or w.pod_cgroup is None:
                continue
            entry: dict[str, Any] = {
                "namespace": w.ns,
                "name": w.name,
                "uid": w.uid,
                "node": pod["spec"].get("nodeName"),
                "cgroup": dict(w.pod_cgroup),
                "containers": [],
            }
            result["pods"].append(entry)
            targets.append((entry, None, w.pod_cgroup))
            for name, dirs in w.container_cgroups.items():
                if name not in w.specs:
                    continue  # init containers are done by the time anyone asks
                c: dict[str, Any] = {"name": name, "cgroup": dict(dirs)}
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
        for (entry, container, _), b, a in zip(targets, before, after):
            figures = {
                "cpu": round(cgroups.cpu_millicores(b, a, elapsed), 3),
                "memory": a.working_set,
                "raw": {
                    "cpuUsageNs": [b.cpu_ns, a.cpu_ns],
                    "memoryUsage": a.memory_usage,
                    "inactiveFile": a.inactive_file,
                    "oomKills": a.oom_kills,
                },
            }
            (container if container is not None else entry).update(figures)
        nodes: dict[str, dict] = {n.name: {"name": n.name, "cpu": 0.0, "memory": 0, "pods": 0} for n in self.topo.nodes}
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
        """CONTAINER's environment (lab/runtime/projection.py), with the pod's own group if it runs."""
        worker = self.workers.get(pod["metadata"]["uid"])
        return projection.container_env(
            self.topo, self.api_socket, pod, container, pod_ip, worker.gid if worker else None
        )
