"""istiod's CA: the CreateCertificate op (docs/ambient-facts.md §2.3-§2.5).

`issue` is the decision, pure: an authenticated caller, its request and a snapshot of the pods in,
a signed chain (leaf first, root last) or `Refused` out. `CertificateAuthority` is the shell that
authenticates the token, runs `issue` against istiod's current pod list and logs every decision.
A refusal tells the client only istiod's generic message; the real reason is logged.

Request: {"op": "CreateCertificate", "token", "csr", "validitySeconds", "impersonatedIdentity"?}
Reply:   {"ok": true, "certChain": [leaf, root]} or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping

from mesh.identity.ca import DEFAULT_CERT_TTL, CAError, RootCA, cert_info
from mesh.identity.caller import Caller
from mesh.identity.node_authz import CLIENT_MESSAGE, TRUSTED_NODE_ACCOUNTS, NotAuthorized, authorize
from mesh.identity.spiffe import Identity, InvalidIdentity
from mesh.istiod.auth import TokenReviewer, Unauthenticated

log = logging.getLogger("istiod.ca")

OP = "CreateCertificate"
_LONGER_THAN_ANY_TTL = 100 * 365 * 86400  # seconds; refused by sign_csr, and timedelta still holds it


class Refused(Exception):
    """The CA will not sign: `client_message` is what the caller is told, `reason` what is logged."""

    def __init__(self, client_message: str, reason: str):
        super().__init__(reason)
        self.client_message = client_message
        self.reason = reason


@dataclass(frozen=True)
class CertificateRequest:
    """What is asked for; the token was reviewed before this is parsed."""

    csr: str
    validity: timedelta
    impersonated: str | None

    @classmethod
    def parse(cls, message: Mapping[str, Any]) -> CertificateRequest:
        """Refused (invalid argument) for a request missing its CSR or with a bad validity."""
        csr, validity = message.get("csr"), message.get("validitySeconds", DEFAULT_CERT_TTL.total_seconds())
        impersonated = message.get("impersonatedIdentity") or None
        if not isinstance(csr, str) or not csr:
            raise Refused("invalid request: no CSR", "the request carries no CSR")
        if isinstance(validity, bool) or not isinstance(validity, (int, float)) or not math.isfinite(validity):
            raise Refused(
                "invalid request: validitySeconds must be a number", f"validitySeconds {validity!r} is not a number"
            )
        validity = min(validity, _LONGER_THAN_ANY_TTL)
        if impersonated is not None and not isinstance(impersonated, str):
            raise Refused(CLIENT_MESSAGE, f"impersonatedIdentity {impersonated!r} is not a string")
        return cls(csr, timedelta(seconds=validity), impersonated)


def issue(
    request: CertificateRequest,
    caller: Caller,
    pods: Iterable[Mapping],
    root: RootCA,
    trusted_node_accounts: Iterable[str] = TRUSTED_NODE_ACCOUNTS,
    now: datetime | None = None,
) -> tuple[Identity, list[str]]:
    """(the certified identity, the chain) for an authenticated caller, or Refused."""
    requested = None
    if request.impersonated is not None:
        try:
            requested = Identity.parse(request.impersonated)
        except InvalidIdentity as e:
            raise Refused(CLIENT_MESSAGE, str(e)) from None
    try:
        identity = authorize(caller, requested, pods, trusted_node_accounts, root.trust_domain)
    except NotAuthorized as e:
        raise Refused(e.client_message, e.reason) from None
    try:
        return identity, root.sign_csr(request.csr, [identity], request.validity, now)
    except CAError as e:
        raise Refused(f"CSR signing error ({e})", str(e)) from None


class CertificateAuthority:
    """Answers CreateCertificate requests; `pods` gives istiod's current view of the Pods."""

    def __init__(
        self,
        root: RootCA,
        reviewer: TokenReviewer,
        pods: Callable[[], Iterable[Mapping]],
        trusted_node_accounts: Iterable[str] = TRUSTED_NODE_ACCOUNTS,
    ):
        self._root = root
        self._reviewer = reviewer
        self._pods = pods
        self._trusted = frozenset(trusted_node_accounts)

    async def handle(self, message: Mapping[str, Any]) -> dict[str, Any]:
        wanted = message.get("impersonatedIdentity") or "the caller's own identity"
        try:
            caller = await self._reviewer.review(message.get("token"))
        except Unauthenticated as e:
            log.warning("refused a certificate for %s: authentication failed: %s", wanted, e.reason)
            return {"ok": False, "error": e.client_message}
        pods = list(self._pods())
        who, pod = f"{caller.service_account} on {_node_of(caller, pods)}", f"{caller.namespace}/{caller.pod_name}"
        try:
            identity, chain = issue(CertificateRequest.parse(message), caller, pods, self._root, self._trusted)
        except Refused as e:
            log.warning("refused %s for %s (pod %s): %s", wanted, who, pod, e.reason)
            return {"ok": False, "error": e.client_message}
        info = cert_info(chain[0])
        log.info(
            "issued %s for %s (pod %s, serial %s, expires %s)",
            identity,
            who,
            pod,
            info.serial_hex,
            info.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        return {"ok": True, "certChain": chain}


def _node_of(caller: Caller, pods: list[Mapping]) -> str:
    """The caller pod's node, as istiod's pod index has it (for the log)."""
    pod = next(
        (
            p
            for p in pods
            if (p.get("metadata") or {}).get("name") == caller.pod_name
            and (p.get("metadata") or {}).get("namespace") == caller.namespace
        ),
        None,
    )
    return ((pod or {}).get("spec") or {}).get("nodeName") or caller.node or "an unknown node"
