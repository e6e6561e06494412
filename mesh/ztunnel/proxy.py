"""What ztunnel's three proxies share (ztunnel `src/proxy.rs`): their inputs and their errors.

A pod's proxies (`inbound`, `outbound`, `inbound_passthrough`, started by `inpod`) each get the
same `ProxyInputs`: the shared config state, the certificate manager, the telemetry, and the pod
itself: its netns (every socket is made there) and `LocalWorkload`, which resolves the pod's own
Workload, waiting for it up to 5 s since a pod's first connection may beat istiod's push (docs/ambient-facts.md §4.4).

Errors carry ztunnel's messages, because they end up in access logs people compare with ztunnel's,
and the response flag their metrics get.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import trio

from mesh.hbone.headers import status_text
from mesh.ztunnel import metrics
from mesh.ztunnel.config import Config
from mesh.ztunnel.identity import SecretManager, WorkloadCertificate
from mesh.ztunnel.sockets import InpodNetns
from mesh.ztunnel.state import StateHandle, Workload


class ProxyError(Exception):
    """A connection ztunnel could not carry; `str()` is ztunnel's wording."""

    flag = metrics.CONNECT


class SelfCall(ProxyError):
    def __init__(self) -> None:
        super().__init__("attempted recursive call to ourselves")


class UnknownSourceWorkload(ProxyError):
    def __init__(self, info: WorkloadInfo) -> None:
        super().__init__(f"failed to fetch information about local workload: {info}")


class NoHealthyUpstream(ProxyError):
    def __init__(self, target: str) -> None:
        super().__init__(f"no healthy upstream: {target}")


class UnknownWaypoint(ProxyError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"unknown waypoint: {detail}")


class NoValidDestination(ProxyError):
    def __init__(self, workload: str) -> None:
        super().__init__(f"no valid routing destination for workload: {workload}")


class ConnectionFailed(ProxyError):
    def __init__(self, cause: object) -> None:
        super().__init__(f"connection failed: {cause}")


class HbonePortUnreachable(ProxyError):
    """A connect to 15008 timed out (ztunnel `MaybeHBONENetworkPolicyError`)."""

    flag = metrics.NETWORK_POLICY

    def __init__(self, cause: object) -> None:
        super().__init__(f"connection timed out, maybe a NetworkPolicy is blocking HBONE port 15008: {cause}")


class TlsFailed(ProxyError):
    flag = metrics.TLS_FAILURE

    def __init__(self, cause: object) -> None:
        super().__init__(f"tls error: {cause}")


class IdentityFailed(ProxyError):
    flag = metrics.IDENTITY_ERROR

    def __init__(self, cause: object) -> None:
        super().__init__(f"identity error: {cause}")


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
    def __init__(self, landed: str, target: str) -> None:
        super().__init__(f"ip mismatch: {landed} != {target}")


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

    def __init__(self, info: WorkloadInfo, state: StateHandle, secrets: SecretManager,
                 wait: float = 5.0) -> None:
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
            lambda s: s.find_workload_by_info(i.name, i.namespace, i.service_account), self._wait)
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
