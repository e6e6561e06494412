"""The istio-cni node agent (`python -m mesh.cni`): captures this node's ambient pods for ztunnel.

Istio's agent runs as a hostNetwork DaemonSet pod on every node; so does this one, in the node's
netns. Three tasks share one nursery:

- the watch follows Pods and Namespaces from the lab API. After a disconnect it reconnects with
  backoff and fills a fresh `ClusterView` from the new initial list, swapped in at SYNCED, so
  changes missed while away (a pod deleted, a label removed) are not remembered wrongly;
- the ZDS server (`ztunnelserver`) accepts the node's ztunnel, one at a time;
- the reconciler is the only task that changes anything. Each pass compares what the view wants
  with what is enrolled: it writes a pod's in-pod rules (`inpod`, in a worker thread), sends ZDS
  `add` with the pod's netns fd and waits for the ack, then sets `ambient.istio.io/redirection:
  enabled` (istiod then serves the pod as HBONE); releasing a pod is `del`, rules removed, annotation
  removed. Every new ztunnel connection first gets the snapshot (every enrolled pod, then
  `snapshot_sent`), sent only once the view is synced, so a snapshot is never partial.

With no ztunnel connected the rules are still written: the pod's traffic then fails closed (nothing
listens on 15001/15006/15008), as in Istio, until a ztunnel connects and gets the pod.

A fourth task serves the node's CNI plugin socket (`plugin_server`): the lab's kubelet sends ADD for
each new pod before its containers start and waits for the answer. For a pod the view selects,
`cni_add` wakes the reconciler and answers ok only once the pod is captured, acked by ztunnel and
annotated; with no ztunnel connected it answers "no ztunnel connection", so the kubelet holds the
pod (FailedCreatePodSandBox) and retries. Pods not selected get ok. Either way the reconciler stays
the only writer, so a pod enrolled for an ADD is not enrolled again when the watch shows it. DEL (the
pod being torn down) releases the pod before its netns goes. The watch alone still enrolls pods
that were running before their namespace was labelled.

On SIGTERM the agent exits at once and leaves the pods' rules in place: a restarting agent must not
open a window where captured pods talk in plaintext. Its successor rebuilds its state from the API
(pods it marked before are re-enrolled, or released if no longer selected).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable
from contextlib import aclosing

import trio

from lab.client import AsyncLabClient, LabError, netns
from lab.client.backoff import Backoff
from lab.client.contract import CNI_PLUGIN_SUFFIX, ENV_API_SOCKET, ENV_LAB_NAME, ENV_NODE_NAME
from lab.client.paths import cni_plugin_dir
from lab.client.process import open_nursery_until_signalled, run_main
from lab.client.protocol import ProtocolError
from mesh import paths
from mesh.cni import inpod
from mesh.cni.enrollment import NETNS_ANNOTATION, ClusterView, Workload, is_marked, plan
from mesh.cni.plugin_server import PluginRequest, PluginServer
from mesh.cni.ztunnelserver import ZtunnelLink, ZtunnelServer
from mesh.contract import REDIRECTION_ANNOTATION, REDIRECTION_ENABLED
from mesh.zds import AddWorkload, DelWorkload, SnapshotSent, WorkloadInfo, ZdsClosed

log = logging.getLogger("mesh.cni")

WATCH_KINDS = ["Pod", "Namespace"]
PLUGIN_SOCKET = "istio-cni" + CNI_PLUGIN_SUFFIX
#: How long an ADD waits for the pod to be seen and captured (the kubelet waits 10 s in all).
ADD_DEADLINE = 8.0
#: How long a DEL waits for the pod's release before answering anyway.
DEL_DEADLINE = 2.0
NO_ZTUNNEL = "no ztunnel connection"
_API_ERRORS = (OSError, LabError, ProtocolError, trio.BrokenResourceError)


class Agent:
    """One node's agent. `run` serves until cancelled; the attributes are there to be inspected."""

    def __init__(self, api_socket: str, node: str, zds_path: str, plugin_path: str | None = None):
        self.node = node
        self.api = AsyncLabClient(api_socket)
        self.ztunnels = ZtunnelServer(zds_path, self._poke)
        self.plugin = PluginServer(plugin_path, self.handle_plugin) if plugin_path else None
        self.view = ClusterView(node)
        self.synced = trio.Event()
        #: Pods whose rules this process wrote, by uid.
        self.enrolled: dict[str, Workload] = {}
        #: The ztunnel connection that got our snapshot, and the pods it has acked.
        self._link: ZtunnelLink | None = None
        self._acked: set[str] = set()
        self._dirty = trio.Event()
        #: Set and replaced whenever the view, the ztunnel connection or the enrollment changes.
        self._changed = trio.Event()
        #: Pods the kubelet has DELeted: never (re-)captured, even while the view still shows them.
        self._deleted: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports started once the ZDS socket accepts connections."""
        log.info("starting on node %s: watching %s at %s", self.node, ", ".join(WATCH_KINDS), self.api.socket_path)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.ztunnels.serve)
            nursery.start_soon(self._watch)
            nursery.start_soon(self._reconcile_forever)
            if self.plugin is not None:
                await nursery.start(self.plugin.serve)
            task_status.started()

    def _poke(self) -> None:
        self._dirty.set()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _wanted(self, view: ClusterView) -> dict[str, Workload]:
        return {uid: w for uid, w in view.wanted().items() if uid not in self._deleted}

    # --- the watch -------------------------------------------------------------------------------

    async def _watch(self) -> None:
        backoff = Backoff(0.01, 15.0)
        last_reason = None
        while True:
            fresh = ClusterView(self.node)
            try:
                async with aclosing(self.api.watch(WATCH_KINDS)) as events:
                    async for event in events:
                        if event.get("type") == "SYNCED":
                            if self.view is not fresh:
                                log.info(
                                    "%s with the lab API: %s to capture on %s",
                                    "re-synced" if self.synced.is_set() else "synced",
                                    _pods(len(fresh.wanted())),
                                    self.node,
                                )
                                self.view = fresh
                                self.synced.set()
                                backoff.reset()
                                last_reason = None
                        else:
                            fresh.apply(event.get("type", ""), event.get("object") or {})
                        if self.view is fresh:
                            self._poke()
                reason = "the lab API closed the watch"
            except _API_ERRORS as e:
                reason = f"watch failed: {e}"
            if reason != last_reason:
                log.warning("%s; retrying (backoff up to %gs)", reason, backoff.maximum)
                last_reason = reason
            await trio.sleep(backoff.next())

    # --- the reconciler --------------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        await self.synced.wait()
        retry = Backoff(0.1, 5.0)
        while True:
            self._dirty = trio.Event()
            if await self._reconcile_once():
                retry.reset()
                delay = math.inf
            else:
                delay = retry.next()
            with trio.move_on_after(delay):
                await self._dirty.wait()

    async def _reconcile_once(self) -> bool:
        """One pass; False if something failed and the pass should be retried."""
        view = self.view
        self._deleted = {uid for uid in self._deleted if view.pod(uid) is not None}
        todo = plan(self._wanted(view), self.enrolled, view.marked())
        ok = True
        for workload in todo.release:
            ok &= await self._release(workload, view)
        for workload in todo.capture:
            ok &= await self._capture(workload)
        ok &= await self._sync_ztunnel()
        for uid in sorted(self._acked):
            pod = view.pod(uid)
            if pod is not None and not is_marked(pod):
                ok &= await self._annotate(self.enrolled[uid], REDIRECTION_ENABLED)
        self._notify()
        return ok

    # --- the CNI plugin --------------------------------------------------------------------------

    async def handle_plugin(self, request: PluginRequest) -> str | None:
        """The answer to the kubelet's ADD or DEL: None for ok, else the error it reports."""
        began = trio.current_time()
        if request.command == "DEL":
            error = await self.cni_del(request)
        else:
            error = await self.cni_add(request)
        log.info(
            "CNI %s of pod %s: %s (%.0f ms)",
            request.command,
            request,
            error or "ok",
            (trio.current_time() - began) * 1000,
        )
        return error

    async def cni_add(self, request: PluginRequest) -> str | None:
        """Answer once the pod is captured (or is not for ambient); an error makes the kubelet retry."""
        uid = request.uid
        with trio.move_on_after(ADD_DEADLINE):
            # The kubelet publishes the pod's IP before it calls: wait until the watch shows it,
            # so the decision is the reconciler's own.
            await self._until(lambda: self.synced.is_set() and _has_sandbox(self.view.pod(uid)))
            if uid not in self._wanted(self.view):
                return None
            self._poke()
            outcome = await self._until(lambda: self._add_outcome(uid))
            return None if outcome is True else outcome
        if not self.synced.is_set():
            return f"not synced with the lab API within {ADD_DEADLINE:g}s"
        if self.view.pod(uid) is None:
            return f"pod not seen by the agent within {ADD_DEADLINE:g}s"
        return f"pod not captured within {ADD_DEADLINE:g}s"

    def _add_outcome(self, uid: str) -> bool | str | None:
        """True once the pod is done, an error to give up with, None to keep waiting."""
        if uid not in self._wanted(self.view):
            return True  # no longer selected (its namespace unlabelled meanwhile)
        if self.ztunnels.current is None:
            return NO_ZTUNNEL
        pod = self.view.pod(uid)
        if (
            uid in self.enrolled
            and uid in self._acked
            and self._live_link() is not None
            and pod is not None
            and is_marked(pod)
        ):
            return True
        return None

    async def cni_del(self, request: PluginRequest) -> str | None:
        """Release the pod before its netns goes; answers ok after DEL_DEADLINE at the latest."""
        self._deleted.add(request.uid)
        self._poke()
        with trio.move_on_after(DEL_DEADLINE):
            await self._until(lambda: request.uid not in self.enrolled)
        return None

    async def _until(self, check: Callable[[], object]):
        """CHECK's first truthy result, re-checked whenever something changes."""
        while True:
            changed = self._changed
            result = check()
            if result:
                return result
            await changed.wait()

    async def _capture(self, workload: Workload) -> bool:
        try:
            await trio.to_thread.run_sync(inpod.enroll, workload.netns)
        except inpod.InpodError as e:
            log.warning("cannot enroll pod %s: %s", workload, e)
            return False
        self.enrolled[workload.uid] = workload
        link = self._live_link()
        if link is None:
            log.info(
                "enrolled pod %s (netns %s); %s",
                workload,
                workload.netns,
                "no ztunnel connected yet: it gets the pod when it connects"
                if self.ztunnels.current is None
                else "ztunnel gets it with its snapshot",
            )
            return True
        problem = await self._add(link, workload)
        if problem is None:
            log.info("enrolled pod %s (netns %s); ztunnel acked", workload, workload.netns)
            return True
        log.warning("enrolled pod %s (netns %s), but ztunnel does not have it: %s", workload, workload.netns, problem)
        return False

    async def _release(self, workload: Workload, view: ClusterView) -> bool:
        link = self._live_link()
        if link is not None and workload.uid in self._acked:
            try:
                ack = await link.request(DelWorkload(workload.uid))
                if not ack.ok:
                    log.warning("ztunnel refused to delete pod %s: %s", workload, ack.error)
            except ZdsClosed:
                pass  # the next connection's snapshot will not name the pod
        self._acked.discard(workload.uid)
        if workload.netns:
            try:
                await trio.to_thread.run_sync(inpod.unenroll, workload.netns)
            except inpod.InpodError as e:
                log.warning("cannot un-enroll pod %s: %s", workload, e)
                return False
        self.enrolled.pop(workload.uid, None)
        pod = view.pod(workload.uid)
        if pod is not None and is_marked(pod) and not await self._annotate(workload, None):
            return False
        log.info("un-enrolled pod %s (%s)", workload, "deleted" if pod is None else "no longer selected for ambient")
        return True

    def _live_link(self) -> ZtunnelLink | None:
        """The connection that has our snapshot, if it is still the current one."""
        link = self._link
        if link is None or link is not self.ztunnels.current or link.closed.is_set():
            return None
        return link

    async def _sync_ztunnel(self) -> bool:
        """Snapshot a new ztunnel connection; re-send pods the current one has not acked."""
        link = self.ztunnels.current
        if link is None:
            return True
        fresh = link is not self._link
        if fresh:
            self._link, self._acked = link, set()
        problems = {}
        for workload in [w for uid, w in self.enrolled.items() if uid not in self._acked]:
            if (problem := await self._add(link, workload)) is not None:
                problems[workload] = problem
            if link.closed.is_set():
                return False
        if fresh:
            try:
                await link.request(SnapshotSent())
            except ZdsClosed:
                return False
            log.info("ztunnel connected (ZDS %s): sent a snapshot of %s", link.version, _pods(len(self._acked)))
        for workload, problem in problems.items():
            log.warning("ztunnel does not have pod %s: %s", workload, problem)
        return not problems

    async def _add(self, link: ZtunnelLink, workload: Workload) -> str | None:
        """Hand the pod and its netns fd to ztunnel; None once acked, else what went wrong."""
        try:
            fd = os.open(netns.path(workload.netns), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            return f"cannot open its netns: {e}"
        info = WorkloadInfo(workload.name, workload.namespace, workload.service_account)
        try:
            ack = await link.request(AddWorkload(workload.uid, info), [fd])
        except ZdsClosed as e:
            return str(e)
        finally:
            os.close(fd)
        if not ack.ok:
            return f"ztunnel refused it: {ack.error}"
        self._acked.add(workload.uid)
        return None

    async def _annotate(self, workload: Workload, value: str | None) -> bool:
        try:
            await self.api.call(
                "annotate",
                kind="Pod",
                namespace=workload.namespace,
                name=workload.name,
                changes={REDIRECTION_ANNOTATION: value},
                overwrite=True,
            )
        except _API_ERRORS as e:
            log.warning("cannot %s pod %s: %s", "annotate" if value else "un-annotate", workload, e)
            return False
        return True


def _has_sandbox(pod: dict | None) -> bool:
    """The pod as the kubelet has published it before its CNI ADD: with its IP and netns."""
    return (
        pod is not None
        and bool((pod.get("status") or {}).get("podIP"))
        and bool((pod["metadata"].get("annotations") or {}).get(NETNS_ANNOTATION))
    )


def _pods(count: int) -> str:
    return f"{count} pod" if count == 1 else f"{count} pods"


# --- the process ---------------------------------------------------------------------------------


async def _serve_until_signalled(api_socket: str, node: str, zds_path: str, plugin_path: str | None) -> None:
    async with open_nursery_until_signalled(
        lambda sig: log.info("%s: exiting; captured pods keep their rules", sig.name)
    ) as nursery:
        nursery.start_soon(Agent(api_socket, node, zds_path, plugin_path).run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.cni", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--api-socket", default=os.environ.get(ENV_API_SOCKET), help="the lab API socket (default: $LAB_API_SOCKET)"
    )
    parser.add_argument(
        "--node", default=os.environ.get(ENV_NODE_NAME), help="this node's name (default: $LAB_NODE_NAME)"
    )
    parser.add_argument("--zds-socket", help="where to serve ZDS (default: the node's socket of lab $LAB_NAME)")
    parser.add_argument(
        "--plugin-socket",
        help="where to serve the kubelet's CNI plugin calls (default: in the node's "
        "CNI plugin directory of lab $LAB_NAME; 'none' to serve none)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s istio-cni %(levelname)s %(message)s")
    lab = os.environ.get(ENV_LAB_NAME)
    if not args.api_socket or not args.node or not (args.zds_socket or lab):
        log.error(
            "need the lab API socket, the node name and the lab name "
            "(LAB_API_SOCKET, LAB_NODE_NAME, LAB_NAME or the matching options)"
        )
        return 2
    if args.zds_socket:
        zds_path = args.zds_socket
    else:
        assert lab is not None  # checked above: without --zds-socket the lab name is required
        zds_path = paths.zds_socket_path(lab, args.node)
    plugin_path = args.plugin_socket
    if plugin_path is None:
        plugin_path = os.path.join(cni_plugin_dir(lab, args.node), PLUGIN_SOCKET) if lab else "none"
    plugin_path = None if plugin_path == "none" else plugin_path
    # OSError: only serving the ZDS or plugin socket can fail this way.
    return run_main(
        _serve_until_signalled,
        args.api_socket,
        args.node,
        zds_path,
        plugin_path,
        on_os_error=lambda e: log.error("cannot serve ZDS on %s or the CNI plugin on %s: %s", zds_path, plugin_path, e),
    )


if __name__ == "__main__":
    sys.exit(main())
