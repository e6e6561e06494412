"""The kind registry: everything the lab knows about each kind it serves, in one record.

Group, served versions (the first preferred), scope, plural and short names (what kubectl users
type), the name rule and checks `apply` validates with, the table `get` prints, the fields an
update may not change, and whether the kind keeps a status. Validation, the API server, the store
and the printers look a kind up here rather than keeping their own lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from lab.apiserver import names, tables
from lab.apiserver.validation import core, webhooks, workloads
from lab.apiserver.validation.fields import Errors

Validator = Callable[[Mapping[str, Any], Errors], None]  # adds the object's problems to Errors
NameRule = Callable[[str], "str | None"]  # why a metadata.name is refused, or None


@dataclass(frozen=True)
class Kind:
    """One kind, as the API server, validation, the store and `get` need to know it."""

    kind: str
    plural: str
    short: tuple[str, ...]
    namespaced: bool
    group: str  # "" for the core group
    versions: tuple[str, ...] = ("v1",)  # served versions, the preferred first
    validator: Validator | None = None  # the built-in checks beyond metadata (add-ons add theirs)
    name_rule: NameRule = names.dns1123_subdomain
    table: tables.TableDef = tables.GENERIC
    immutable: tuple[str, ...] = ()  # dotted paths an update may not change
    appliable: bool = True  # False: only the lab writes these (apply refuses them)
    has_status: bool = True  # False: the store keeps no `status` for these objects

    @property
    def api_versions(self) -> tuple[str, ...]:
        """The apiVersion values objects of this kind may carry, e.g. `apps/v1`."""
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)

    @property
    def columns(self) -> tuple[tables.Column, ...]:
        return self.table.columns

    @property
    def resource(self) -> str:
        """kubectl's `kind.group` resource prefix: `pod`, `deployment.apps`."""
        return qualified(self.kind, self.group)


def qualified(kind: str, group: str | None) -> str:
    """`kind.group` in lower case, the prefix kubectl prints before `/name`."""
    return f"{kind.lower()}.{group}" if group else kind.lower()


def _core(kind: str, plural: str, short: tuple[str, ...], **details: Any) -> Kind:
    """A namespaced kind of the core group (v1)."""
    return Kind(kind, plural, short, True, "", **details)


def _workload(kind: str, plural: str, short: tuple[str, ...], table: tables.TableDef) -> Kind:
    """Deployment, ReplicaSet, DaemonSet: apps/v1, a pod template, a selector fixed at creation."""
    return Kind(
        kind, plural, short, True, "apps", validator=workloads.check_workload, table=table, immutable=("spec.selector",)
    )


def _mesh(
    kind: str,
    plural: str,
    short: tuple[str, ...],
    api: tuple[str, tuple[str, ...]],
    table: tables.TableDef = tables.GENERIC,
) -> Kind:
    """An Istio or Gateway API kind: namespaced; its deep checks come from the mesh add-on."""
    group, versions = api
    return Kind(kind, plural, short, True, group, versions, table=table)


_ISTIO_SECURITY = ("security.istio.io", ("v1", "v1beta1"))
_GATEWAY_API = ("gateway.networking.k8s.io", ("v1", "v1beta1"))
_ISTIO_NETWORKING = ("networking.istio.io", ("v1", "v1beta1", "v1alpha3"))

KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "namespaces", ("ns",), False, "", name_rule=names.dns1123_label, table=tables.NAMESPACE),
    Kind("Node", "nodes", ("no",), False, "", table=tables.NODE, appliable=False),
    _core("ServiceAccount", "serviceaccounts", ("sa",), table=tables.SERVICEACCOUNT, has_status=False),
    _core(
        "Service",
        "services",
        ("svc",),
        validator=core.check_service,
        name_rule=names.dns1035_label,
        table=tables.SERVICE,
        immutable=("spec.clusterIP",),
    ),
    _core("Endpoints", "endpoints", ("ep",), validator=core.check_endpoints, table=tables.ENDPOINTS, has_status=False),
    _core("Pod", "pods", ("po",), validator=workloads.check_pod, table=tables.POD),
    _core("ConfigMap", "configmaps", ("cm",), validator=core.check_configmap, table=tables.CONFIGMAP, has_status=False),
    _core("Secret", "secrets", (), validator=core.check_configmap, has_status=False),
    _core("Event", "events", ("ev",), table=tables.EVENT, appliable=False, has_status=False),
    _workload("Deployment", "deployments", ("deploy",), tables.DEPLOYMENT),
    _workload("ReplicaSet", "replicasets", ("rs",), tables.REPLICASET),
    _workload("DaemonSet", "daemonsets", ("ds",), tables.DAEMONSET),
    _mesh("AuthorizationPolicy", "authorizationpolicies", ("ap",), _ISTIO_SECURITY, tables.AUTHORIZATIONPOLICY),
    _mesh("RequestAuthentication", "requestauthentications", ("ra",), _ISTIO_SECURITY),
    _mesh("PeerAuthentication", "peerauthentications", ("pa",), _ISTIO_SECURITY, tables.PEERAUTHENTICATION),
    _mesh("Gateway", "gateways", ("gtw",), _GATEWAY_API, tables.GATEWAY),
    _mesh("HTTPRoute", "httproutes", (), _GATEWAY_API, tables.HTTPROUTE),
    _mesh("VirtualService", "virtualservices", ("vs",), _ISTIO_NETWORKING, tables.VIRTUALSERVICE),
    _mesh("DestinationRule", "destinationrules", ("dr",), _ISTIO_NETWORKING, tables.DESTINATIONRULE),
    _mesh("ServiceEntry", "serviceentries", ("se",), _ISTIO_NETWORKING, tables.SERVICEENTRY),
    Kind(
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        (),
        False,
        "admissionregistration.k8s.io",
        validator=webhooks.check_mutating_webhooks,
        table=tables.MUTATINGWEBHOOKCONFIGURATION,
    ),
)

_BY_KIND: dict[str, Kind] = {k.kind: k for k in KINDS}
_BY_LOWER_KIND: dict[str, Kind] = {k.kind.lower(): k for k in KINDS}
_BY_NAME: dict[str, Kind] = {}
for _k in KINDS:
    for _n in (_k.kind.lower(), _k.plural, *_k.short, qualified(_k.plural, _k.group), qualified(_k.kind, _k.group)):
        _BY_NAME[_n] = _k


class UnknownKind(ValueError):
    """A kind name the lab does not serve; the message is kubectl's."""


def resolve(name: str) -> Kind:
    """`pods`, `po`, `Pod`, `deploy`, `deployments.apps` → the Kind."""
    k = _BY_NAME.get(name.lower())
    if k is None:
        raise UnknownKind(f'the server doesn\'t have a resource type "{name}"')
    return k


def get(kind: str) -> Kind | None:
    """The Kind named exactly KIND (`Deployment`, as objects spell it), or None."""
    return _BY_KIND.get(kind)


def by_kind(kind: str) -> Kind:
    """The Kind named exactly KIND; UnknownKind for a kind the lab does not serve."""
    k = _BY_KIND.get(kind)
    if k is None:
        raise UnknownKind(f'unknown kind "{kind}"')
    return k


def find(kind: str) -> Kind | None:
    """The Kind named KIND in any case (`pod`, `Pod`: printers are called either way), or None."""
    return _BY_LOWER_KIND.get(kind.lower())


def for_apply(api_version: str, kind: str) -> Kind | None:
    """The Kind `apply` accepts for an object of KIND in API_VERSION, or None."""
    k = get(kind)
    return k if k is not None and k.appliable and api_version in k.api_versions else None


def split_type_name(arg: str) -> tuple[str, str | None]:
    """`deploy/httpbin` → ("deploy", "httpbin"); `pods` → ("pods", None)."""
    if "/" in arg:
        t, n = arg.split("/", 1)
        return t, n
    return arg, None
