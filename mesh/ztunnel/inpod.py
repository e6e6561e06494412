"""In-pod mode: the CNI agent hands ztunnel its pods over ZDS; each gets its own proxies
(ztunnel `src/inpod/{workloadmanager,statemanager}.rs`, `src/proxyfactory.rs`).

`WorkloadProxyManager` is ztunnel's side of ZDS (`mesh.zds`): connect to the node's agent (10 ms
backoff, doubling to 15 s), say hello, then take `add`/`keep`/`del`/`snapshot_sent` and ack each.
An `add` carries the pod's netns fd; the manager starts a `PodProxy` for it and acks once its
listeners are bound (a bind failure is a nack, and the pod is retried every 5 s). After a
(re)connect the agent re-sends every pod, then `snapshot_sent`: pods the snapshot did not name are
stopped. Pod proxies outlive ZDS reconnects: existing pods keep working while the agent restarts.

`PodProxy` is one pod's proxy set: 15001 outbound, 15006 inbound plaintext and 15008 inbound
HBONE, bound to 0.0.0.0 inside the pod's netns, running in one cancel scope. Cancelling it (a
`del`, a snapshot that leaves the pod out, ztunnel stopping) closes the listeners and the pod's
connections, releases its certificate and closes its netns fd.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from mesh import zds
from mesh.ztunnel.config import Config
from mesh.ztunnel.identity import SecretManager
from mesh.ztunnel.inbound import Inbound
from mesh.ztunnel.inbound_passthrough import InboundPassthrough
from mesh.ztunnel.metrics import Metrics
from mesh.ztunnel.outbound import Outbound
from mesh.ztunnel.proxy import LocalWorkload, Log, ProxyInputs, WorkloadInfo
from mesh.ztunnel.sockets import InpodNetns
from mesh.ztunnel.state import StateHandle

log = logging.getLogger("mesh.ztunnel.inpod")

RECONNECT_INITIAL = 0.010
RECONNECT_MAX = 15.0
PENDING_RETRY = 5.0  # ztunnel's RETRY_DURATION for pods whose proxies failed to start


@dataclass
class ProxyFactory:
    """What every pod's proxies are built from (ztunnel `ProxyFactory`)."""

    config: Config
    state: StateHandle
    secrets: SecretManager
    metrics: Metrics
    log: Log


class PodProxy:
    """One enrolled pod's proxies, living in one cancel scope."""

    def __init__(self, factory: ProxyFactory, uid: str, info: WorkloadInfo, netns: InpodNetns) -> None:
        self.factory = factory
        self.uid = uid
        self.info = info
        self.netns = netns
        self.scope = trio.CancelScope()
        self.stopped = trio.Event()
        self.identity = (
            f"spiffe://{factory.config.trust_domain}/ns/{info.namespace}/sa/{info.service_account or 'default'}"
        )

    @property
    def name(self) -> str:
        return f"{self.info.namespace}/{self.info.name}"

    async def run(self, *, task_status: trio.TaskStatus[PodProxy] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the three listeners (errors raise before `started`), then serve until cancelled."""
        f, cfg = self.factory, self.factory.config
        listeners = []
        try:
            with self.scope:
                for port in (cfg.outbound_port, cfg.inbound_plaintext_port, cfg.inbound_port):
                    listeners.append(self.netns.listener(port, cfg.listen_backlog))
                local = LocalWorkload(self.info, f.state, f.secrets, cfg.workload_wait)
                pi = ProxyInputs(cfg, f.state, f.secrets, f.metrics, f.log, self.netns, local, self.name)
                f.secrets.acquire(self.identity)  # prefetch, so the first connection need not wait
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(Outbound(pi, listeners[0]).run)
                        await nursery.start(InboundPassthrough(pi, listeners[1]).run)
                        await nursery.start(Inbound(pi, listeners[2]).run)
                        log.info("proxy for %s (%s) started", self.name, self.uid)
                        task_status.started(self)
                finally:
                    f.secrets.release(self.identity)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
            self.netns.close()
            self.stopped.set()
            log.info("proxy for %s (%s) stopped", self.name, self.uid)

    def stop(self) -> None:
        self.scope.cancel()


@dataclass
class _Pending:
    info: WorkloadInfo
    netns: InpodNetns


@dataclass
class PodStates:
    """The bookkeeping of ztunnel's `WorkloadProxyManagerState`: running pods, pods that failed to
    start, and the snapshot being received."""

    running: dict[str, PodProxy] = field(default_factory=dict)
    pending: dict[str, _Pending] = field(default_factory=dict)
    snapshot_received: bool = False
    snapshot_names: set[str] = field(default_factory=set)

    def reset_snapshot(self) -> None:
        """A new ZDS connection: the agent will send a fresh snapshot."""
        self.snapshot_names.clear()
        self.snapshot_received = False

    def missing_from_snapshot(self) -> list[str]:
        return [uid for uid in self.running if uid not in self.snapshot_names]


class ProtocolError(Exception):
    pass


class WorkloadProxyManager:
    """ztunnel's ZDS client and the pods it runs (run with `nursery.start(manager.run)`)."""

    def __init__(self, factory: ProxyFactory, path: str, *, on_snapshot: Callable[[], None] = lambda: None) -> None:
        self.factory = factory
        self.path = path
        self.on_snapshot = on_snapshot
        self.pods = PodStates()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[WorkloadProxyManager] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._retry_pending)
                task_status.started(self)
                await self._connection_loop()
        finally:
            for pending in self.pods.pending.values():
                pending.netns.close()
            self.pods.pending.clear()

    async def _connection_loop(self) -> None:
        backoff = RECONNECT_INITIAL
        while True:
            try:
                sock = await zds.connect_zds(self.path)
            except OSError as exc:
                log.debug("ZDS connect to %s failed: %s; retrying in %.3fs", self.path, exc, backoff)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX)
                continue
            backoff = RECONNECT_INITIAL
            async with sock:
                try:
                    await self._serve(sock)
                except (zds.ZdsClosed, OSError, ProtocolError) as exc:
                    log.warning("ZDS connection to %s ended: %s", self.path, exc)
            self.pods.reset_snapshot()
            await trio.sleep(RECONNECT_INITIAL)

    async def _serve(self, sock: zds.ZdsSocket) -> None:
        await sock.send(zds.ZdsHello())
        while True:
            try:
                request, fd = await sock.receive_request()
            except zds.ZdsError as exc:
                await sock.send(zds.Ack(f"bad request: {exc}"))
                continue
            try:
                await self.process(request, fd)
            except Exception as exc:
                log.warning("ZDS %s failed: %s", type(request).__name__, exc)
                await sock.send(zds.Ack(str(exc) or type(exc).__name__))
            else:
                await sock.send(zds.Ack())

    # --- the messages --------------------------------------------------------------------

    async def process(self, request: zds.WorkloadRequest, fd: int | None) -> None:
        """Act on one ZDS request; raising means nack (the fd, if any, is taken care of)."""
        pods = self.pods
        match request:
            case zds.AddWorkload(uid, winfo):
                if fd is None:  # not from the transport, which refuses an AddWorkload without one
                    raise ProtocolError("AddWorkload carries no netns fd")
                if winfo is None:
                    os.close(fd)
                    raise ProtocolError("workload_info is required but not present")
                if not pods.snapshot_received:
                    pods.snapshot_names.add(uid)
                info = WorkloadInfo(winfo.name, winfo.namespace, winfo.service_account)
                await self.add(uid, info, InpodNetns(fd, mark=self.factory.config.inpod_mark))
            case zds.KeepWorkload(uid):
                if pods.snapshot_received:
                    raise ProtocolError("pod keep received after snapshot")
                pods.snapshot_names.add(uid)
            case zds.DelWorkload(uid):
                if not pods.snapshot_received:
                    pods.snapshot_names.discard(uid)
                self.delete(uid)
            case zds.SnapshotSent():
                if pods.snapshot_received:
                    raise ProtocolError("pod snapshot received already")
                for uid in pods.missing_from_snapshot():
                    self.delete(uid)
                pods.snapshot_names.clear()
                pods.snapshot_received = True
                self.on_snapshot()

    async def add(self, uid: str, info: WorkloadInfo, netns: InpodNetns) -> None:
        existing = self.pods.running.get(uid)
        if existing is not None:
            if existing.netns.id == netns.id:
                netns.close()  # the same pod re-sent after a reconnect: keep it running
                return
            self.delete(uid)
        stale = self.pods.pending.pop(uid, None)
        if stale is not None:
            stale.netns.close()
        proxy = PodProxy(self.factory, uid, info, netns.dup())  # the proxy closes its own fd
        try:
            assert self._nursery is not None  # `run` sets it before any ZDS request is processed
            await self._nursery.start(proxy.run)
        except Exception:
            self.pods.pending[uid] = _Pending(info, netns)  # retried every PENDING_RETRY seconds
            raise
        netns.close()
        self.pods.running[uid] = proxy

    def delete(self, uid: str) -> None:
        proxy = self.pods.running.pop(uid, None)
        if proxy is not None:
            proxy.stop()
        pending = self.pods.pending.pop(uid, None)
        if pending is not None:
            pending.netns.close()

    async def _retry_pending(self) -> None:
        while True:
            await trio.sleep(PENDING_RETRY)
            for uid, pending in list(self.pods.pending.items()):
                if self.pods.pending.get(uid) is not pending:
                    continue
                del self.pods.pending[uid]
                try:
                    await self.add(uid, pending.info, pending.netns)
                except Exception as exc:
                    log.warning("retrying proxy for %s/%s failed: %s", pending.info.namespace, pending.info.name, exc)

    def dump(self) -> list[dict]:
        """The pods and their proxies' state, for config_dump."""
        out = [
            {
                "uid": uid,
                "name": p.info.name,
                "namespace": p.info.namespace,
                "serviceAccount": p.info.service_account,
                "state": "Up",
            }
            for uid, p in sorted(self.pods.running.items())
        ]
        out += [
            {
                "uid": uid,
                "name": p.info.name,
                "namespace": p.info.namespace,
                "serviceAccount": p.info.service_account,
                "state": "Pending",
            }
            for uid, p in sorted(self.pods.pending.items())
        ]
        return out
