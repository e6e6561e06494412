"""Request bodies: decoding (JSON, YAML, protobuf) and server-side field validation. Pure.

kubectl >= 1.27 sends `fieldValidation=Strict` on every write and leaves the check to the server;
the Python client sends nothing (the default, Warn). Unknown and duplicate fields are found while
decoding, as the kube-apiserver's strict decoder does (k8s.io/apimachinery/pkg/runtime/serializer
/json, KEP-2885 "Server Side Unknown Field Validation"): Strict refuses the request with 400
`strict decoding error: unknown field "spec.foo"`, Warn drops the field and adds a `Warning: 299`
header, Ignore drops it silently. The schema below is the lab's knowledge of each kind's fields;
where it does not go deeper, anything is accepted (the kind's validator still checks what the lab
uses). Field names follow the Kubernetes API reference (core/v1, apps/v1) and Istio's and the
Gateway API's CRDs.
"""

from __future__ import annotations

import json
from typing import Any, Union

import yaml

from lab.apiserver.rest import negotiate
from lab.apiserver.rest.status import StatusError, bad_request, unsupported_media_type
from lab.apiserver.validation.workloads import CONTAINER_FIELDS, CONTAINER_PORT_FIELDS

# A schema: None (anything), a dict of known fields, or a 1-tuple: a list of that schema.
Schema = Union[None, dict[str, Any], tuple[Any]]


def _known(*names: str, **nested: Any) -> dict[str, Any]:
    out: dict[str, Any] = {n: None for n in names}
    out.update(nested)
    return out


OWNER_REF = _known("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")
META = _known(
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "finalizers",
    "managedFields",
    ownerReferences=(OWNER_REF,),
)
CONTAINER = _known(
    *sorted(CONTAINER_FIELDS),
    "restartPolicyRules",  # the API knows it (decoding keeps it); the lab's validation refuses it
    ports=(_known(*sorted(CONTAINER_PORT_FIELDS)),),
    env=(_known("name", "value", "valueFrom"),),
    resources=_known("limits", "requests", "claims"),
)
POD_SPEC = _known(
    "activeDeadlineSeconds",
    "affinity",
    "automountServiceAccountToken",
    "dnsConfig",
    "dnsPolicy",
    "enableServiceLinks",
    "ephemeralContainers",
    "hostAliases",
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "hostUsers",
    "hostname",
    "hostnameOverride",
    "imagePullSecrets",
    "nodeName",
    "nodeSelector",
    "os",
    "overhead",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "readinessGates",
    "resourceClaims",
    "resources",
    "restartPolicy",
    "runtimeClassName",
    "schedulerName",
    "schedulingGates",
    "securityContext",
    "serviceAccount",
    "serviceAccountName",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "subdomain",
    "terminationGracePeriodSeconds",
    "tolerations",
    "topologySpreadConstraints",
    "volumes",
    "workloadRef",
    containers=(CONTAINER,),
    initContainers=(CONTAINER,),
)
TEMPLATE = _known(metadata=META, spec=POD_SPEC)
_WORKLOAD = ("minReadySeconds", "selector")
SERVICE_SPEC = _known(
    "allocateLoadBalancerNodePorts",
    "clusterIP",
    "clusterIPs",
    "externalIPs",
    "externalName",
    "externalTrafficPolicy",
    "healthCheckNodePort",
    "internalTrafficPolicy",
    "ipFamilies",
    "ipFamilyPolicy",
    "loadBalancerClass",
    "loadBalancerIP",
    "loadBalancerSourceRanges",
    "publishNotReadyAddresses",
    "selector",
    "sessionAffinity",
    "sessionAffinityConfig",
    "trafficDistribution",
    "type",
    ports=(_known("appProtocol", "name", "nodePort", "port", "protocol", "targetPort"),),
)
_ISTIO_SPECS: dict[str, dict[str, Any]] = {
    "AuthorizationPolicy": _known("selector", "targetRef", "targetRefs", "rules", "action", "provider"),
    "RequestAuthentication": _known("selector", "targetRef", "targetRefs", "jwtRules"),
    "PeerAuthentication": _known("selector", "mtls", "portLevelMtls"),
    "VirtualService": _known("hosts", "gateways", "http", "tls", "tcp", "exportTo"),
    "DestinationRule": _known("host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"),
    "ServiceEntry": _known(
        "hosts",
        "addresses",
        "ports",
        "location",
        "resolution",
        "endpoints",
        "workloadSelector",
        "exportTo",
        "subjectAltNames",
    ),
}

_TOP: dict[str, dict[str, Any]] = {
    "Pod": _known("status", spec=POD_SPEC),
    "Deployment": _known(
        "status",
        spec=_known(
            *_WORKLOAD,
            "paused",
            "progressDeadlineSeconds",
            "replicas",
            "revisionHistoryLimit",
            "strategy",
            template=TEMPLATE,
        ),
    ),
    "ReplicaSet": _known("status", spec=_known(*_WORKLOAD, "replicas", template=TEMPLATE)),
    "DaemonSet": _known("status", spec=_known(*_WORKLOAD, "revisionHistoryLimit", "updateStrategy", template=TEMPLATE)),
    "Service": _known("status", spec=SERVICE_SPEC),
    "Namespace": _known("status", spec=_known("finalizers")),
    "ServiceAccount": _known("automountServiceAccountToken", "imagePullSecrets", "secrets"),
    "ConfigMap": _known("data", "binaryData", "immutable"),
    "Secret": _known("data", "stringData", "type", "immutable"),
    "Endpoints": _known("subsets"),
    "Node": _known("spec", "status"),
    "MutatingWebhookConfiguration": _known("webhooks"),
    **{k: _known("status", spec=spec) for k, spec in _ISTIO_SPECS.items()},
}


def schema(kind: str) -> Schema:
    """The known fields of KIND's objects; None when the lab does not check them (Event, Gateway)."""
    top = _TOP.get(kind)
    if top is None and kind in ("Gateway", "HTTPRoute"):
        top = _known("spec", "status")
    if top is None:
        return None
    return {**_known("apiVersion", "kind"), "metadata": META, **top}


def unknown_fields(obj: Any, kind: str) -> list[str]:
    """Dotted paths (`spec.containers[0].foo`) of OBJ's fields the kind does not have."""
    found: list[str] = []
    _walk(obj, schema(kind), "", found)
    return found


def _walk(value: Any, sch: Schema, path: str, found: list[str]) -> None:
    if sch is None:
        return
    if isinstance(sch, tuple):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _walk(item, sch[0], f"{path}[{i}]", found)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in sch:
            found.append(where)
        else:
            _walk(item, sch[key], where, found)


def prune(obj: Any, kind: str) -> Any:
    """OBJ without the fields the kind does not have (what Warn and Ignore store)."""
    return _prune(obj, schema(kind))


def _prune(value: Any, sch: Schema) -> Any:
    if sch is None:
        return value
    if isinstance(sch, tuple):
        return [_prune(v, sch[0]) for v in value] if isinstance(value, list) else value
    if not isinstance(value, dict):
        return value
    return {k: _prune(v, sch[k]) for k, v in value.items() if k in sch}


class _Loader(yaml.SafeLoader):  # type: ignore[misc, unused-ignore]
    """YAML as the API reads it: timestamps stay strings, so objects remain plain JSON."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class Decoded:
    """A decoded body: the value and the fields a strict decoder would refuse."""

    def __init__(self, value: Any, duplicates: list[str]):
        self.value, self.duplicates = value, duplicates


def _pairs(duplicates: list[str]) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                duplicates.append(k)
            out[k] = v
        return out

    return hook


def decode(body: bytes, content_type: str | None, *, api_version: str = "", kind: str = "") -> Decoded:
    """A POST/PUT body as JSON-shaped data: JSON (also with no Content-Type, as the Python client
    sends), YAML, or Kubernetes protobuf; 415 for other types, 400 for a malformed body."""
    mt = negotiate.media_type(content_type)
    if mt in ("", "application/json", "*/*"):
        duplicates: list[str] = []
        try:
            return Decoded(json.loads(body, object_pairs_hook=_pairs(duplicates)), duplicates)
        except (ValueError, UnicodeDecodeError) as e:
            raise bad_request(f"error decoding JSON: {e}") from None
    if mt in ("application/yaml", "application/apply-patch+yaml"):
        try:
            return Decoded(yaml.load(body, Loader=_Loader), [])
        except yaml.YAMLError as e:
            raise bad_request(f"error converting YAML to JSON: {e}") from None
    if mt == "application/vnd.kubernetes.protobuf":
        from lab.apiserver.rest import protobuf

        try:
            return Decoded(protobuf.decode(body, api_version=api_version, kind=kind), [])
        except protobuf.ProtobufError as e:
            if "not supported" in str(e):
                raise StatusError(415, "UnsupportedMediaType", str(e)) from None
            raise bad_request(str(e)) from None
    raise unsupported_media_type(content_type or "")


FIELD_VALIDATION = ("Strict", "Warn", "Ignore")


def field_validation(value: str | None) -> str:
    """The `fieldValidation` parameter (default Warn, as the kube-apiserver's)."""
    if value in (None, ""):
        return "Warn"
    if value not in FIELD_VALIDATION:
        raise bad_request(f'fieldValidation must be one of "Ignore", "Warn" or "Strict", not "{value}"')
    return value


def check_fields(
    obj: dict[str, Any], kind: str, mode: str, duplicates: list[str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """OBJ as stored under MODE, and the warnings to send; Strict raises 400 for unknown or
    duplicate fields."""
    problems = [f'unknown field "{p}"' for p in unknown_fields(obj, kind)]
    problems += [f'duplicate field "{d}"' for d in duplicates or []]
    if not problems or mode == "Ignore":
        return (prune(obj, kind) if problems else obj), []
    if mode == "Strict":
        raise bad_request("strict decoding error: " + ", ".join(problems))
    return prune(obj, kind), problems
