"""One pod's life on its node: sandbox, CNI ADD, init containers, containers, status, teardown.

Each pod has one `PodWorker` task in the kubelet's nursery under its own cancel scope. Deleting a
pod cancels that scope; the worker's shielded cleanup stops the containers, removes the sandbox
and only then removes the pod object, so an object never outlives or predates what it stands for.
The worker also owns the pod's cgroups (journaled before they are made, set from the containers'
`resources`) and publishes the pod's status from its containers' states.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import trio

from lab.apiserver.store import now_rfc3339
from lab.client import paths
from lab.client.contract import NETNS_ANNOTATION
from lab.client.paths import cni_plugin_dir, pod_dir
from lab.runtime import cgroups, cniplugins, containers, projection, sandbox
from lab.runtime.containers import MAX_GRACE, ContainerState
from lab.runtime.podspec import seconds

if TYPE_CHECKING:
    from lab.runtime.kubelet import Kubelet

log = logging.getLogger("labd.kubelet")


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: dict):
        self.k = kubelet
        self.ns = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.pod = pod
        self.cancel = trio.CancelScope()
        self.stopped = trio.Event()
        self.grace = seconds(pod["spec"].get("terminationGracePeriodSeconds"), 30.0)
        specs = pod["spec"].get("containers", [])
        self.specs = {c["name"]: c for c in specs}
        self.states = {c["name"]: ContainerState(c["name"], c["image"]) for c in specs}
        self.init_states = {
            c["name"]: ContainerState(c["name"], c["image"]) for c in pod["spec"].get("initContainers", []) or []
        }
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
            self.grace = seconds(pod["metadata"].get("deletionGracePeriodSeconds"), self.grace)
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
        done = states and all(
            s.terminated is not None and s.running_since is None and s.waiting_reason is None and not s.restart_pending
            for s in states
        )
        if done and restart_policy != "Always":
            phase = (
                "Succeeded"
                if all(s.terminated is not None and s.terminated.get("exitCode") == 0 for s in states)
                else "Failed"
            )  # (all terminated: `done`)
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
            "conditions": [
                cond("PodScheduled", True),
                cond("Initialized", self.initialized),
                cond("ContainersReady", all_ready),
                cond("Ready", all_ready),
            ],
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

    def _annotate_netns(self) -> None:
        """Tell the API (exec, the CNI agent) which network namespace the pod lives in."""
        pod = self.k.store.get("Pod", self.ns, self.name)
        if pod is None or pod["metadata"]["uid"] != self.uid or self.sandbox is None:
            return
        upd = dict(pod, metadata=dict(pod["metadata"]))
        upd["metadata"]["annotations"] = dict(
            pod["metadata"].get("annotations") or {}, **{NETNS_ANNOTATION: self.sandbox.netns}
        )
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
                projection.write_token(self.dir, self.pod, self.k.issue_token(self.pod), self.gid, self.k.lab_dir)
                await trio.to_thread.run_sync(self._make_pod_cgroup)
                node_ns = paths.node_netns_name(self.k.topo.name, node_name)
                if self.pod["spec"].get("hostNetwork"):
                    self.sandbox = sandbox.Sandbox(node_ns, str(self.k.topo.node_ip(node)), None)
                else:
                    ip = self.k.ipam[node_name].allocate()
                    self.sandbox = await trio.to_thread.run_sync(
                        sandbox.create_pod_sandbox,
                        self.k.journal,
                        self.k.topo.name,
                        node_ns,
                        self.ns,
                        self.name,
                        self.uid,
                        ip,
                        self.k.topo.pod_gateway(node),
                        str(self.k.topo.cluster_dns_ip()),
                        limiter=self.k.limiter,
                    )
                self._annotate_netns()
                self.publish()
                if self.sandbox.host_ifname is not None:
                    # The node's CNI plugins (istio-cni) see the pod before any container runs;
                    # a failing one fails the sandbox, retried until it succeeds.
                    await cniplugins.add(
                        cni_plugin_dir(self.k.topo.name, node_name),
                        self.pod,
                        self.sandbox.netns,
                        self.sandbox.ip,
                        lambda msg: self.event("FailedCreatePodSandBox", msg, "Warning"),
                    )
                await containers.run_init_containers(self)
                self.initialized = True
                self.publish()
                async with trio.open_nursery() as nursery:
                    # In spec order; each one once the previous has started and its postStart
                    # hook has returned.
                    for spec in self.pod["spec"]["containers"]:
                        started = trio.Event()
                        nursery.start_soon(containers.supervise, self, spec, started)
                        await started.wait()
                # Every container finished for good (restartPolicy Never/OnFailure): the pod stays,
                # Succeeded or Failed, with its logs, until it is deleted.
                self.publish()
                await trio.sleep_forever()
        except Exception as e:  # one pod's failure must never take labd down
            log.exception("pod %s/%s failed", self.ns, self.name)
            self.event(
                "FailedCreatePodSandBox" if self.sandbox is None else "Failed", f"{type(e).__name__}: {e}", "Warning"
            )
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
                    nursery.start_soon(containers.stop_container, self, name, proc, min(self.grace, MAX_GRACE))
            if self.sandbox is not None and self.sandbox.host_ifname is not None:
                await cniplugins.delete(
                    cni_plugin_dir(self.k.topo.name, node_name), self.pod, self.sandbox.netns, self.sandbox.ip
                )
                node_ns = paths.node_netns_name(self.k.topo.name, node_name)
                await trio.to_thread.run_sync(
                    sandbox.remove_pod_sandbox, self.k.journal, node_ns, self.sandbox, limiter=self.k.limiter
                )
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

    def container_cgroup(self, spec: dict) -> dict[str, str] | None:
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

    def oom_kills(self, dirs: dict[str, str] | None) -> int:
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
