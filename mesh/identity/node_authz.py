"""istiod's node authorization for impersonated CSRs.

A node proxy (ztunnel) asks for certificates on behalf of the pods on its node, naming the wanted
identity in the request's `ImpersonatedIdentity` metadata. istiod grants it only if the caller is a
trusted node account and the wanted service account has a pod on the caller's own node, so a
compromised ztunnel cannot mint certificates for workloads elsewhere in the cluster.

Pure: the reviewed caller, the requested identity and a snapshot of Pod objects (Kubernetes dicts)
in; the identity to certify, or NotAuthorized with the reason for istiod's log, out. The client
only ever sees CLIENT_MESSAGE, so a probing caller learns nothing about other nodes.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from mesh.identity.caller import Caller
from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN, Identity

TRUSTED_NODE_ACCOUNTS = frozenset({"istio-system/ztunnel"})  # the Helm default of CA_TRUSTED_NODE_ACCOUNTS
CLIENT_MESSAGE = "request impersonation authentication failure"  # gRPC Unauthenticated, as istiod


class NotAuthorized(Exception):
    """The caller may not have a certificate for the requested identity; `reason` is for the log."""

    client_message = CLIENT_MESSAGE

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_trusted_node_accounts(value: str) -> frozenset[str]:
    """`CA_TRUSTED_NODE_ACCOUNTS` ("ns/sa,ns/sa") → the set authorize() takes."""
    accounts = frozenset(a.strip() for a in value.split(",") if a.strip())
    for account in accounts:
        ns, _, sa = account.partition("/")
        if not ns or not sa or "/" in sa:
            raise ValueError(f"invalid trusted node account {account!r}: expected <namespace>/<serviceaccount>")
    return accounts


def authorize(
    caller: Caller,
    requested: Identity | None,
    pods: Iterable[Mapping],
    trusted_node_accounts: Iterable[str] = TRUSTED_NODE_ACCOUNTS,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
) -> Identity:
    """The identity to put in the certificate, or NotAuthorized.

    `requested` is None (or the caller's own identity) without impersonation: a workload may always
    have a certificate for itself.
    """
    own = caller.identity(trust_domain)
    if requested is None or requested == own:
        return own

    caller_account = f"{caller.namespace}/{caller.service_account}"
    if caller_account not in set(trusted_node_accounts):
        raise NotAuthorized(
            f"caller {caller_account} (pod {caller.namespace}/{caller.pod_name}) "
            f"is not allowed to impersonate {requested}"
        )

    pods = list(pods)
    caller_pod = _find_pod(pods, caller.namespace, caller.pod_name)
    if caller_pod is None:
        raise NotAuthorized(f"pod {caller.namespace}/{caller.pod_name} not found")
    uid = caller_pod.get("metadata", {}).get("uid")
    if uid != caller.pod_uid:
        # A pod recreated under the same name with a stale token; the client retries.
        raise NotAuthorized(f"pod found, but UID does not match: {uid} vs {caller.pod_uid}")
    pod_account = _service_account(caller_pod)
    if pod_account != caller.service_account:
        raise NotAuthorized(f"pod found, but ServiceAccount does not match: {pod_account} vs {caller.service_account}")

    node = caller_pod.get("spec", {}).get("nodeName") or ""
    wanted = f"{requested.namespace}/{requested.service_account}"
    if not node or not any(_runs_on(p, node, requested) for p in pods):
        raise NotAuthorized(f'no instances of "{wanted}" found on node "{node}"')
    return requested


def _find_pod(pods: list[Mapping], namespace: str, name: str) -> Mapping | None:
    return next((p for p in pods if _namespace(p) == namespace and p.get("metadata", {}).get("name") == name), None)


def _runs_on(pod: Mapping, node: str, identity: Identity) -> bool:
    """istiod's (service account, node) index, which leaves failed pods out."""
    return (
        pod.get("spec", {}).get("nodeName") == node
        and _namespace(pod) == identity.namespace
        and _service_account(pod) == identity.service_account
        and pod.get("status", {}).get("phase") != "Failed"
    )


def _namespace(pod: Mapping) -> str:
    return pod.get("metadata", {}).get("namespace") or "default"


def _service_account(pod: Mapping) -> str:
    # Kubernetes' ServiceAccount admission fills serviceAccountName with "default"; the lab's
    # API server may not, so apply the same default here.
    spec = pod.get("spec", {})
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
