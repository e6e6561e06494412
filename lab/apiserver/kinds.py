"""The kinds the lab API serves, and the names kubectl users type for them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short: tuple[str, ...]
    namespaced: bool
    group: str  # "" for the core group


KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "namespaces", ("ns",), False, ""),
    Kind("Node", "nodes", ("no",), False, ""),
    Kind("ServiceAccount", "serviceaccounts", ("sa",), True, ""),
    Kind("Service", "services", ("svc",), True, ""),
    Kind("Endpoints", "endpoints", ("ep",), True, ""),
    Kind("Pod", "pods", ("po",), True, ""),
    Kind("ConfigMap", "configmaps", ("cm",), True, ""),
    Kind("Secret", "secrets", (), True, ""),
    Kind("Event", "events", ("ev",), True, ""),
    Kind("Deployment", "deployments", ("deploy",), True, "apps"),
    Kind("ReplicaSet", "replicasets", ("rs",), True, "apps"),
    Kind("DaemonSet", "daemonsets", ("ds",), True, "apps"),
    Kind("AuthorizationPolicy", "authorizationpolicies", ("ap",), True, "security.istio.io"),
    Kind("RequestAuthentication", "requestauthentications", ("ra",), True, "security.istio.io"),
    Kind("PeerAuthentication", "peerauthentications", ("pa",), True, "security.istio.io"),
    Kind("Gateway", "gateways", ("gtw",), True, "gateway.networking.k8s.io"),
    Kind("HTTPRoute", "httproutes", (), True, "gateway.networking.k8s.io"),
    Kind("VirtualService", "virtualservices", ("vs",), True, "networking.istio.io"),
    Kind("DestinationRule", "destinationrules", ("dr",), True, "networking.istio.io"),
    Kind("ServiceEntry", "serviceentries", ("se",), True, "networking.istio.io"),
    Kind("MutatingWebhookConfiguration", "mutatingwebhookconfigurations", (), False,
         "admissionregistration.k8s.io"),
)

_BY_NAME: dict[str, Kind] = {}
for _k in KINDS:
    for _n in (_k.kind.lower(), _k.plural, *_k.short, f"{_k.plural}.{_k.group}" if _k.group else _k.plural,
               f"{_k.kind.lower()}.{_k.group}" if _k.group else _k.kind.lower()):
        _BY_NAME[_n] = _k


class UnknownKind(ValueError):
    pass


def resolve(name: str) -> Kind:
    """`pods`, `po`, `Pod`, `deploy`, `deployments.apps` → the Kind."""
    k = _BY_NAME.get(name.lower())
    if k is None:
        raise UnknownKind(f'the server doesn\'t have a resource type "{name}"')
    return k


def by_kind(kind: str) -> Kind:
    for k in KINDS:
        if k.kind == kind:
            return k
    raise UnknownKind(f'unknown kind "{kind}"')


def split_type_name(arg: str) -> tuple[str, str | None]:
    """`deploy/httpbin` → ("deploy", "httpbin"); `pods` → ("pods", None)."""
    if "/" in arg:
        t, n = arg.split("/", 1)
        return t, n
    return arg, None
