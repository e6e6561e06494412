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

On SIGTERM the agent exits at once and leaves the pods' rules in place: a restarting agent must not
open a window where captured pods talk in plaintext. Its successor rebuilds its state from the API
(pods it marked before are re-enrolled, or released if no longer selected).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from contextlib import aclosing

import trio

from lab.api.protocol import ProtocolError
from lab.client import AsyncLabClient, LabError
from lab.runtime import netns
from mesh import paths
from mesh.cni import inpod
from mesh.cni.enrollment import (
    REDIRECTION_ANNOTATION,
    REDIRECTION_ENABLED,
    ClusterView,
    Workload,
    is_marked,
    plan,
)
from mesh.cni.ztunnelserver import ZtunnelLink, ZtunnelServer
from mesh.zds import AddWorkload, DelWorkload, SnapshotSent, WorkloadInfo, ZdsClosed
from lab.backoff import Backoff

log = logging.getLogger("mesh.cni")

WATCH_KINDS = ["Pod", "Namespace"]
_API_ERRORS = (OSError, LabError, ProtocolError, trio.BrokenResourceError)


class Agent:
    """One node's agent. `run` serves until cancelled; the attributes are there to be inspected."""

    def __init__(self, api_socket: str, node: str, zds_path: str):
        self.node = node
        self.api = AsyncLabClient(api_socket)
        self.ztunnels = ZtunnelServer(zds_path, self._poke)
        self.view = ClusterView(node)
        self.synced = trio.Event()
        #: Pods whose rules this process wrote, by uid.
        self.enrolled: dict[str, Workload] = {}
        #: The ztunnel connection that got our snapshot, and the pods it has acked.
        self._link: ZtunnelLink | None = None
        self._acked: set[str] = set()
        self._dirty = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports started once the ZDS socket accepts connections."""
        log.info("starting on node %s: watching %s at %s", self.node, ", ".join(WATCH_KINDS),
                 self.api.socket_path)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.ztunnels.serve)
            nursery.start_soon(self._watch)
            nursery.start_soon(self._reconcile_forever)
            task_status.started()

    def _poke(self) -> None:
        self._dirty.set()

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
                                log.info("%s with the lab API: %s to capture on %s",
                                         "re-synced" if self.synced.is_set() else "synced",
                                         _pods(len(fresh.wanted())), self.node)
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
        todo = plan(view.wanted(), self.enrolled, view.marked())
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
        return ok

    async def _capture(self, workload: Workload) -> bool:
        try:
            await trio.to_thread.run_sync(inpod.enroll, workload.netns)
        except inpod.InpodError as e:
            log.warning("cannot enroll pod %s: %s", workload, e)
            return False
        self.enrolled[workload.uid] = workload
        link = self._live_link()
        if link is None:
            log.info("enrolled pod %s (netns %s); %s", workload, workload.netns,
                     "no ztunnel connected yet: it gets the pod when it connects"
                     if self.ztunnels.current is None else "ztunnel gets it with its snapshot")
            return True
        problem = await self._add(link, workload)
        if problem is None:
            log.info("enrolled pod %s (netns %s); ztunnel acked", workload, workload.netns)
            return True
        log.warning("enrolled pod %s (netns %s), but ztunnel does not have it: %s", workload,
                    workload.netns, problem)
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
        log.info("un-enrolled pod %s (%s)", workload,
                 "deleted" if pod is None else "no longer selected for ambient")
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
            log.info("ztunnel connected (ZDS %s): sent a snapshot of %s", link.version,
                     _pods(len(self._acked)))
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
            await self.api.call("annotate", kind="Pod", namespace=workload.namespace,
                                name=workload.name, changes={REDIRECTION_ANNOTATION: value},
                                overwrite=True)
        except _API_ERRORS as e:
            log.warning("cannot %s pod %s: %s", "annotate" if value else "un-annotate", workload, e)
            return False
        return True


def _pods(count: int) -> str:
    return f"{count} pod" if count == 1 else f"{count} pods"


# --- the process ---------------------------------------------------------------------------------


async def _serve_until_signalled(api_socket: str, node: str, zds_path: str) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Agent(api_socket, node, zds_path).run)
            async for signum in signals:
                log.info("%s: exiting; captured pods keep their rules", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.cni", description=__doc__.split("\n")[0])
    parser.add_argument("--api-socket", default=os.environ.get("LAB_API_SOCKET"),
                        help="the lab API socket (default: $LAB_API_SOCKET)")
    parser.add_argument("--node", default=os.environ.get("LAB_NODE_NAME"),
                        help="this node's name (default: $LAB_NODE_NAME)")
    parser.add_argument("--zds-socket",
                        help="where to serve ZDS (default: the node's socket of lab $LAB_NAME)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s istio-cni %(levelname)s %(message)s")
    lab = os.environ.get("LAB_NAME")
    if not args.api_socket or not args.node or not (args.zds_socket or lab):
        log.error("need the lab API socket, the node name and the lab name "
                  "(LAB_API_SOCKET, LAB_NODE_NAME, LAB_NAME or the matching options)")
        return 2
    zds_path = args.zds_socket or paths.zds_socket_path(lab, args.node)
    status = 0
    try:
        trio.run(_serve_until_signalled, args.api_socket, args.node, zds_path)
    except* OSError as group:  # only serving the ZDS socket can fail this way
        for error in group.exceptions:
            log.error("cannot serve ZDS on %s: %s", zds_path, error)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

