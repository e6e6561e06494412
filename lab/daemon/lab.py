"""labd: one lab's control plane and node agents in one trio process.

`python -m lab.daemon.lab --topology FILE --name NAME` (started by `lab up` under lab/init.py, which
makes it PID 2 of a PID namespace whose init dies with it). It builds the network, serves the API
socket, runs the controllers, the scheduler, the kubelet and kube-proxy, and on `shutdown` or
SIGTERM tears down everything it made before exiting.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import random
import sys
import time

import trio

from lab.apiserver import endpoint
from lab.apiserver.admission import AdmittingStore
from lab.apiserver.api import ApiServer
from lab.apiserver.dispatch import Dispatcher
from lab.apiserver.events import EventRecorder
from lab.apiserver.rest import service as rest_service
from lab.apiserver.selectors import from_label_selector
from lab.apiserver.tokens import CA_AUDIENCE, TokenIssuer
from lab.client import netns, paths, process
from lab.client.paths import api_socket_path, journal_path, lab_dir
from lab.controllers import endpoints, namespaces, scheduler, workloads
from lab.daemon import bootstrap
from lab.runtime import kubeproxy, network, sandbox
from lab.runtime.journal import Journal
from lab.runtime.kubelet import Kubelet
from lab.topology import Topology, load_file

log = logging.getLogger("labd")


class Lab:
    def __init__(self, topo: Topology):
        self.topo = topo
        self.dir = lab_dir(topo.name)
        self.socket_path = api_socket_path(topo.name)
        self.store = AdmittingStore()  # Pod CREATEs go through the mutating webhooks
        self.journal = Journal(journal_path(topo.name))
        self.rng = random.Random()
        self.api = ApiServer(self.store, topo, self.dir, **bootstrap.admission_hooks())
        self.tokens = TokenIssuer.generate()  # the ServiceAccount token signer (kube-apiserver's)
        self.record_event = EventRecorder(self.store)
        self.kubelet = Kubelet(
            topo, self.store, self.journal, self.dir, self.socket_path, self.record_event, self.issue_token
        )
        self.dispatcher = Dispatcher(
            self.api, self.tokens, self.kubelet, {"status": self.status, "shutdown": self._request_shutdown}
        )
        self.phase = "starting"
        self.kube_api_port: int | None = None  # the Kubernetes endpoint's, once it listens
        self.ready = False
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self._dirty = trio.Event()
        self._proxy_dirty = trio.Event()
        self._serving = trio.CancelScope()  # cancelled by SIGTERM/SIGINT or a `shutdown` request
        self._wake_at = float("inf")  # when controllers retry pods the webhooks refused
        self._wake_changed = trio.Event()
        self.store.record_event = self.record_event
        self.store.retry_after = self._wake_controllers_after
        self.store.subscribe(self._on_change)

    # Change notification -> controller wake-ups ----------------------------------------------
    def _on_change(self, type_: str, obj: dict) -> None:
        if obj["kind"] == "Event":
            return
        self._dirty.set()
        if obj["kind"] in ("Service", "Endpoints"):
            self._proxy_dirty.set()

    def _wake_controllers_after(self, delay: float) -> None:
        at = trio.current_time() + delay
        if at < self._wake_at:
            self._wake_at = at
            self._wake_changed.set()

    async def _wake_loop(self) -> None:
        while True:
            with trio.move_on_at(self._wake_at):
                await self._wake_changed.wait()
                self._wake_changed = trio.Event()
                continue
            self._wake_at = float("inf")
            self._dirty.set()

    def issue_token(self, pod: dict) -> str:
        md = pod["metadata"]
        return self.tokens.issue(
            md["namespace"],
            pod["spec"].get("serviceAccountName", "default"),
            md["name"],
            md["uid"],
            audience=CA_AUDIENCE,
            ttl=dt.timedelta(hours=24),
        )

    # Network ---------------------------------------------------------------------------------
    def build_network(self) -> None:
        """Fabric bridge, one netns per node, routes between pod CIDRs. Runs in a worker thread."""
        t = self.topo
        fabric = sandbox.fabric_netns_name(t.name)
        self.journal.added("netns", fabric)
        netns.create(fabric)
        network.build_fabric(fabric)
        for node in t.nodes:
            node_ns = paths.node_netns_name(t.name, node.name)
            self.journal.added("netns", node_ns)
            netns.create(node_ns)
            network.attach_node(
                fabric, node_ns, node.name, f"{t.node_ip(node)}/{t.node_cidr.prefixlen}", str(t.pod_gateway(node))
            )
            sandbox.write_resolver_files(
                self.journal,
                node_ns,
                sandbox.resolv_conf("", str(t.cluster_dns_ip())),
                sandbox.hosts_file(str(t.node_ip(node)), node.name),
            )
        for node in t.nodes:
            routes = [(str(t.node_pod_cidr(peer)), str(t.node_ip(peer))) for peer in t.nodes if peer != node]
            network.route_node_to_peers(paths.node_netns_name(t.name, node.name), routes)
            network.route_node_to_services(paths.node_netns_name(t.name, node.name), str(t.service_cidr))

    def teardown_network(self) -> None:
        t = self.topo
        for node in t.nodes:
            node_ns = paths.node_netns_name(t.name, node.name)
            netns.remove(node_ns)
            self.journal.removed("netns", node_ns)
            sandbox.remove_dir(self.journal, os.path.join(sandbox.ETC_NETNS, node_ns))
        fabric = sandbox.fabric_netns_name(t.name)
        netns.remove(fabric)
        self.journal.removed("netns", fabric)

    # Loops -------------------------------------------------------------------------------------
    async def controller_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            failed = False
            # Each controller on its own: one failing (a bad object, a conflict) must not stop the
            # others, and a failed pass is retried.
            for name, step in (
                ("namespaces", lambda: namespaces.reconcile(self.store)),
                ("deployments", lambda: workloads.reconcile_deployments(self.store)),
                ("replicasets", lambda: workloads.reconcile_replicasets(self.store, self.rng)),
                ("daemonsets", lambda: workloads.reconcile_daemonsets(self.store, self.rng)),
                ("garbage collector", lambda: workloads.collect_garbage(self.store)),
                ("scheduler", self._schedule),
                ("endpoints", lambda: endpoints.reconcile_endpoints(self.store, from_label_selector_map)),
                ("kubelet", self.kubelet.sync),
            ):
                try:
                    step()
                except Exception:
                    log.exception("%s controller failed; retrying", name)
                    failed = True
            if failed:
                self._dirty.set()
                await trio.sleep(0.5)
            await trio.sleep(0.005)  # coalesce bursts of changes into one pass

    def _schedule(self) -> None:
        for ns, pod, node in scheduler.schedule_pending(self.store):
            p = self.store.get("Pod", ns, pod)
            if p is not None:
                self.record_event(p, "Scheduled", f"Successfully assigned {ns}/{pod} to {node}")

    async def kube_proxy_loop(self) -> None:
        last = None
        nodes = [paths.node_netns_name(self.topo.name, n.name) for n in self.topo.nodes]
        while True:
            await self._proxy_dirty.wait()
            self._proxy_dirty = trio.Event()
            script = kubeproxy.render(self.store.list("Service"), self.store.list("Endpoints"))
            if script != last:
                try:
                    async with trio.open_nursery() as nursery:
                        for ns in nodes:
                            apply = functools.partial(network.apply_nft, ns, script)
                            nursery.start_soon(trio.to_thread.run_sync, apply)
                    last = script
                except* Exception as eg:
                    log.error("kube-proxy: applying rules failed: %s", eg.exceptions[0])
                    self._proxy_dirty.set()
                    await trio.sleep(1)
            await trio.sleep(0.01)

    # What labd itself answers ----------------------------------------------------------------
    def _request_shutdown(self) -> str:
        self._serving.cancel()
        return "shutting down"

    def status(self) -> dict:
        pods = self.store.list("Pod")
        return {
            "name": self.topo.name,
            "phase": self.phase,
            "ready": self.ready,
            "pid": self.kubelet.host_pid,
            "topology": self.topo.source,
            "dir": self.dir,
            "kubeApiPort": self.kube_api_port,
            "nodes": [
                {
                    "name": n.name,
                    "role": n.role,
                    "ip": str(self.topo.node_ip(n)),
                    "podCIDR": str(self.topo.node_pod_cidr(n)),
                    "netns": paths.node_netns_name(self.topo.name, n.name),
                    "pods": sum(1 for p in pods if p["spec"].get("nodeName") == n.name),
                }
                for n in self.topo.nodes
            ],
            "pods": len(pods),
            "running": sum(1 for p in pods if p.get("status", {}).get("phase") == "Running"),
            "ready_pods": sum(1 for p in pods if workloads.is_ready(p)),
            "services": len(self.store.list("Service")),
            "uptime": round(time.monotonic() - self.started, 3),
            "timings": self.timings,
        }

    # Main --------------------------------------------------------------------------------------
    async def run(self) -> None:
        t0 = time.monotonic()
        async with process.open_nursery_until_signalled(cancel=self._serving) as nursery:
            self.phase = "building network"
            await trio.to_thread.run_sync(self.build_network)
            self.timings["network"] = round(time.monotonic() - t0, 3)
            await nursery.start(self.kubelet.run)
            await nursery.start(endpoint.serve, self.socket_path, self.dispatcher.handle)
            # The Kubernetes endpoint (HTTPS on 127.0.0.1, a free port) and its kubeconfig.
            self.kube_api_port = await nursery.start(
                rest_service.serve, self.api, self.dispatcher, self.topo.name, self.dir
            )
            controllers = trio.CancelScope()

            async def run_controllers() -> None:
                with controllers:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(self.controller_loop)
                        inner.start_soon(self._wake_loop)
                        inner.start_soon(self.kube_proxy_loop)

            nursery.start_soon(run_controllers)
            self.phase = "starting system pods"
            bootstrap.seed(self)
            nursery.start_soon(self._wait_ready, t0)
            with self._serving:
                await trio.sleep_forever()
            self.phase = "shutting down"
            controllers.cancel()  # nothing may replace the pods we are about to stop
            with trio.CancelScope(shield=True):
                await self.kubelet.shutdown()
                await trio.to_thread.run_sync(self.teardown_network)
            nursery.cancel_scope.cancel()

    async def _wait_ready(self, t0: float) -> None:
        while not bootstrap.system_ready(self):
            await trio.sleep(0.02)
        self.timings["ready"] = round(time.monotonic() - t0, 3)
        await bootstrap.apply_topology_manifests(self)
        self.phase = "ready"
        self.ready = True
        log.info("lab %s ready in %.2fs", self.topo.name, time.monotonic() - t0)


def from_label_selector_map(match_labels: dict):
    return from_label_selector({"matchLabels": match_labels})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="labd")
    p.add_argument("--topology", required=True)
    p.add_argument("--name")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    topo = load_file(args.topology)
    if args.name:
        topo = topo.with_name(args.name)
    lab = Lab(topo)
    try:
        trio.run(lab.run)
    finally:
        lab.journal.close()
        with open(os.path.join(lab.dir, "labd.exit"), "w") as f:
            json.dump({"clean": lab.phase == "shutting down"}, f)


if __name__ == "__main__":
    main()
