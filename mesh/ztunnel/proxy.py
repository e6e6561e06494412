"""What ztunnel's three proxies share (ztunnel `src/proxy.rs`): their inputs, their errors, their
listener and how a spliced connection ends.

A pod's proxies (`inbound`, `outbound`, `inbound_passthrough`, started by `inpod`) each get the
same `ProxyInputs`: the shared config state, the certificate manager, the telemetry, and the pod
itself: its netns (every socket is made there) and `LocalWorkload`, which resolves the pod's own
Workload, waiting for it up to 5 s since a pod's first connection may beat istiod's push (docs/ambient-facts.md §4.4).

Errors carry ztunnel's messages, because they end up in access logs people compare with ztunnel's,
and the response flag their metrics get.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import trio

from mesh.contract import HBONE_PORT
from mesh.hbone.headers import status_text, workload_baggage
from mesh.ztunnel import metrics
from mesh.ztunnel.config import Config
from mesh.ztunnel.identity import SecretManager, WorkloadCertificate
from mesh.ztunnel.resources import Workload
from mesh.ztunnel.sockets import InpodNetns, abort, close_now, serve_guarded
from mesh.ztunnel.state import StateHandle


class ProxyError(Exception):
    """A connection ztunnel could not carry; `str()` is ztunnel's wording: the subclass's
    `message` with the constructor's arguments filled in."""

    flag = metrics.CONNECT
    message = "{}"

    def __init__(self, *details: object) -> None:
        super().__init__(self.message.format(*details))


class SelfCall(ProxyError):
    message = "attempted recursive call to ourselves"


class UnknownSourceWorkload(ProxyError):
    message = "failed to fetch information about local workload: {}"  # a WorkloadInfo


class NoHealthyUpstream(ProxyError):
    message = "no healthy upstream: {}"  # the target address


class UnknownWaypoint(ProxyError):
    message = "unknown waypoint: {}"


class NoValidDestination(ProxyError):
    message = "no valid routing destination for workload: {}"  # the workload's name


class ConnectionFailed(ProxyError):
    message = "connection failed: {}"  # the cause


class HbonePortUnreachable(ProxyError):
    """A connect to 15008 timed out (ztunnel `MaybeHBONENetworkPolicyError`)."""

    flag = metrics.NETWORK_POLICY
    message = f"connection timed out, maybe a NetworkPolicy is blocking HBONE port {HBONE_PORT}: {{}}"


class TlsFailed(ProxyError):
    flag = metrics.TLS_FAILURE
    message = "tls error: {}"


class IdentityFailed(ProxyError):
    flag = metrics.IDENTITY_ERROR
    message = "identity error: {}"


class HttpStatus(ProxyError):
    """The peer refused the CONNECT; a 401 is the destination's policy saying no."""

    def __init__(self, status: int) -> None:
        super().__init__(f"http status: {status_text(status)}")
        self.status = status
        if status == 401:
            self.flag = metrics.DENY


class PolicyRejection(ProxyError):
    """The L4 AuthorizationPolicy denied the connection (ztunnel `AuthorizationPolicyRejection`)."""

    flag = metrics.DENY

    def __init__(self, reason: str, policy: str | None) -> None:
        super().__init__(f"connection closed due to policy rejection: {reason}")
        self.policy = policy


class IpMismatch(ProxyError):
    message = "ip mismatch: {} != {}"  # where the connection landed, the CONNECT's target


def outcome_of(error: BaseException | None) -> metrics.Outcome:
    """The access-log outcome of a connection that ended with `error` (None: it went fine)."""
    if error is None:
        return metrics.Outcome()
    if isinstance(error, PolicyRejection):
        return metrics.Outcome(str(error), error.flag, error.policy, denied_by_policy=True)
    if isinstance(error, ProxyError):
        return metrics.Outcome(str(error), error.flag)
    return metrics.Outcome(str(error) or type(error).__name__, metrics.CONNECT)


#: How a connection that was cancelled (its pod removed, ztunnel stopping) is logged.
DRAINED = metrics.Outcome("connection closed due to connection drain", metrics.CONNECT)


@dataclass(frozen=True)
class WorkloadInfo:
    """Who a pod is, as the CNI agent names it over ZDS."""

    name: str
    namespace: str
    service_account: str

    def __str__(self) -> str:  # ztunnel's Display: "sa.ns (name)"
        return f"{self.service_account}.{self.namespace} ({self.name})"


class LocalWorkload:
    """The pod a proxy serves: its Workload from the state (waited for) and its certificate."""

    def __init__(self, info: WorkloadInfo, state: StateHandle, secrets: SecretManager, wait: float = 5.0) -> None:
        self.info = info
        self._state = state
        self._secrets = secrets
        self._wait = wait

    def current(self) -> Workload | None:
        i = self.info
        return self._state.state.find_workload_by_info(i.name, i.namespace, i.service_account)

    async def get_workload(self) -> Workload:
        """The pod's Workload; UnknownSourceWorkload if istiod has not sent it within the wait."""
        i = self.info
        wl = await self._state.wait_for(
            lambda s: s.find_workload_by_info(i.name, i.namespace, i.service_account), self._wait
        )
        if wl is None:
            raise UnknownSourceWorkload(i)
        return wl

    async def fetch_certificate(self) -> WorkloadCertificate:
        wl = await self.get_workload()
        try:
            return await self._secrets.fetch_certificate(wl.identity)
        except Exception as exc:
            raise IdentityFailed(exc) from exc


Log = Callable[[str], None]


@dataclass(frozen=True)
class ProxyInputs:
    """Everything one pod's proxies need (ztunnel `ProxyInputs`)."""

    config: Config
    state: StateHandle
    secrets: SecretManager
    metrics: metrics.Metrics
    log: Log
    netns: InpodNetns
    local: LocalWorkload
    #: "ns/name" of the pod, for config_dump's per-pod views.
    pod: str

    def early_deny(self, src: str, dst: str, direction: str, error: BaseException) -> None:
        self.log(metrics.early_deny_line(datetime.now(timezone.utc), src, dst, direction, str(error)))

    async def connect_app(self, target: tuple[str, int], client_ip: str) -> trio.SocketStream:
        """Dial the pod's app at `target` from inside the pod, with the client's IP as source
        (both inbound paths); a timeout or refusal is `ConnectionFailed`."""
        try:
            return await self.netns.connect(target, source_ip=client_ip, timeout=self.config.connect_timeout)
        except trio.TooSlowError as exc:
            raise ConnectionFailed("deadline has elapsed") from exc
        except OSError as exc:
            raise ConnectionFailed(exc) from exc


class PodListener:
    """One of a pod's listeners (`Outbound`, `InboundPassthrough`, `Inbound`): `run` serves every
    accepted connection with `handle`, each in its own task, logged under the subclass's module."""

    #: How the listener names itself when one of its connections fails unexpectedly.
    what = "proxy"

    def __init__(self, pi: ProxyInputs, listener: trio.SocketListener) -> None:
        self.pi = pi
        self.listener = listener

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        await serve_guarded(
            self.listener, self.accept, self.what, logging.getLogger(type(self).__module__), task_status=task_status
        )

    async def accept(self, stream: trio.SocketStream) -> None:
        """`handle` an accepted connection, told its peer's address; reset if the peer already left."""
        try:
            peer = stream.socket.getpeername()[:2]
        except OSError:  # the client already gave up
            abort(stream)
            return
        await self.handle(stream, peer)

    async def handle(self, stream: trio.SocketStream, peer: tuple[str, int]) -> None:
        raise NotImplementedError


#: A Workload is immutable, so its baggage is computed once (per Workload object).
_BAGGAGE: weakref.WeakKeyDictionary[Workload, str] = weakref.WeakKeyDictionary()


def baggage_of(workload: Workload) -> str:
    """The `baggage` header describing `workload`: the source's on a CONNECT, the destination's
    on the 200 (ztunnel's `baggage` from a workload's cluster, namespace, kind and canonical names)."""
    baggage = _BAGGAGE.get(workload)
    if baggage is None:
        baggage = _BAGGAGE[workload] = workload_baggage(
            cluster=workload.cluster_id,
            namespace=workload.namespace,
            workload_type=workload.workload_type,
            workload_name=workload.workload_name or workload.name,
            service_name=workload.canonical_name,
            service_version=workload.canonical_revision,
        )
    return baggage


#: How a reset, or a side already closed, shows while splicing.
RESETS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@asynccontextmanager
async def closing_upstream(upstream: trio.abc.AsyncResource, *pass_reset_to: trio.SocketStream) -> AsyncIterator[None]:
    """Around the splice of one connection: a reset on either side is no error (as in ztunnel)
    and is passed on by resetting `pass_reset_to`; `upstream` is closed at once in any case."""
    try:
        yield
    except RESETS:
        for stream in pass_reset_to:
            abort(stream)
    finally:
        await close_now(upstream)
