"""Sidecar injection: istiod's mutating webhook for Pods, in the lab's terms. Pure.

labd calls `admit(pod, namespace, webhook)` on every Pod CREATE that the MutatingWebhookConfiguration
`istio-sidecar-injector` selects (its annotation `lab.ambient/handler` names this function). The
model is docs/sidecars.md; in short:

- **Whether** (`injection_wanted`): the webhook configuration's four selectors (namespace label
  `istio-injection=enabled`; namespace label `istio.io/rev=<revision>`; pod label
  `istio.io/rev=<revision>`; pod label `sidecar.istio.io/inject=true`), then the injector's own
  policy: never hostNetwork pods, pods of system namespaces, pods that opt out with
  `sidecar.istio.io/inject` (label, else annotation) set to a false value, or pods already injected.
  `istio.io/dataplane-mode=ambient` on the namespace changes nothing: such a pod gets a sidecar.
- **What** (`inject`): Istio's injection template with istio-cni's sidecar path off: an `istio-init`
  init container running `istio-iptables` (`mesh.sidecar.iptables`), an `istio-proxy` container
  running `proxy sidecar` as uid/gid 1337, the labels and annotations the template and the webhook
  add. Settings come from the pod's annotations (`proxy.istio.io/config`, `sidecar.istio.io/*`,
  `traffic.sidecar.istio.io/*`) over the mesh defaults of the ambient profile; the proxy image tag
  comes from the webhook object (`lab.ambient/proxy-tag`, written by the installer). Resolving
  them is `mesh.sidecar.injection_settings`.
- **Refusal**: a setting that cannot be honoured raises ValueError; labd refuses the pod with
  that message (the webhook's failurePolicy is Fail), so no half-made pod exists.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh.contract import (
    CANONICAL_NAME_LABEL,
    CANONICAL_REVISION_LABEL,
    DATAPLANE_MODE_LABEL,
    DATAPLANE_MODE_NONE,
    ENV_ISTIOD_ADDRESS,
    ENV_TRUST_DOMAIN,
    ENVOY_PROMETHEUS_PORT,
    ISTIO_NAMESPACE,
    ISTIOD_ADDRESS,
    METRICS_PORT,
    PROXY_UID,
    READINESS_PORT,
    REVISION_LABEL,
    SIDECAR_INJECT_LABEL,
    SIDECAR_STATUS_ANNOTATION,
    TUNNEL_LABEL,
)
from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN
from mesh.sidecar.injection_settings import DEFAULT_TAG, Settings, annotations_of, settings

# Labels and annotations (Istio's names; those other processes read too are mesh.contract's).
NAMESPACE_INJECTION = "istio-injection"
TLS_MODE = "security.istio.io/tlsMode"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
DEFAULT_LOGS_CONTAINER = "kubectl.kubernetes.io/default-logs-container"
PROMETHEUS_SCRAPE = "prometheus.io/scrape"
PROMETHEUS_PORT = "prometheus.io/port"
PROMETHEUS_PATH = "prometheus.io/path"

DEFAULT_REVISION = "default"
INIT_CONTAINER = "istio-init"
PROXY_CONTAINER = "istio-proxy"
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_ID = "Kubernetes"
# The volumes Istio's template adds, as its status annotation lists them. The lab mounts none: the
# proxy gets its certificate from istiod with the pod's token (LAB_SA_TOKEN_FILE).
TEMPLATE_VOLUMES = (
    "workload-socket",
    "credential-socket",
    "workload-certs",
    "istio-envoy",
    "istio-data",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
)
# Istio's injector skips the Kubernetes system namespaces; the lab also keeps the mesh's own pods
# (istio-system) out, as mesh.cni.enrollment does for ambient.
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage", ISTIO_NAMESPACE})
_TRUE_VALUES = ("y", "yes", "true", "on")  # the injector's reading of sidecar.istio.io/inject


# --- small accessors ------------------------------------------------------------------------------


def _meta(obj: Mapping | None) -> Mapping:
    return (obj or {}).get("metadata") or {}


def _labels(obj: Mapping | None) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def _namespace_name(pod: Mapping, namespace: Mapping | None) -> str:
    return _meta(pod).get("namespace") or _meta(namespace).get("name") or "default"


def is_injected(pod: Mapping) -> bool:
    """The pod went through the injector (the status annotation is the injector's own marker)."""
    return SIDECAR_STATUS_ANNOTATION in annotations_of(pod)


def proxy_container(pod: Mapping) -> dict | None:
    """The pod's `istio-proxy` container, if it has one."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == PROXY_CONTAINER:
            return container
    return None


# --- whether -------------------------------------------------------------------------------------


def _object_choice(pod: Mapping) -> bool | None:
    """`sidecar.istio.io/inject` as the injector reads it: the label wins over the annotation;
    a true value forces, any other non-empty value refuses, absence leaves it to the namespace."""
    value = annotations_of(pod).get(SIDECAR_INJECT_LABEL, "")
    labels = _labels(pod)
    if SIDECAR_INJECT_LABEL in labels:
        value = labels[SIDECAR_INJECT_LABEL]
    value = str(value).strip().lower()
    if not value:
        return None
    return value in _TRUE_VALUES


def _selected_by(pod_labels: Mapping[str, str], ns_labels: Mapping[str, str], revision: str) -> str | None:
    """Which of the webhook configuration's four selectors matches (labels only), or None."""
    ns_injection, ns_rev = ns_labels.get(NAMESPACE_INJECTION), ns_labels.get(REVISION_LABEL)
    pod_inject, pod_rev = pod_labels.get(SIDECAR_INJECT_LABEL), pod_labels.get(REVISION_LABEL)
    if ns_rev == revision and ns_injection is None and pod_inject != "false":
        return f"namespace label {REVISION_LABEL}={revision}"
    if ns_rev is None and ns_injection is None and pod_inject != "false" and pod_rev == revision:
        return f"pod label {REVISION_LABEL}={revision}"
    if ns_injection == "enabled" and pod_inject != "false":
        return f"namespace label {NAMESPACE_INJECTION}=enabled"
    if ns_injection is None and ns_rev is None and pod_inject == "true" and pod_rev is None:
        return f"pod label {SIDECAR_INJECT_LABEL}=true"
    return None


def injection_wanted(pod: Mapping, namespace: Mapping | None, revision: str = DEFAULT_REVISION) -> tuple[bool, str]:
    """(inject?, why) for POD in NAMESPACE (the Namespace object), for the injector of REVISION."""
    ns_name = _namespace_name(pod, namespace)
    if is_injected(pod):
        return False, f"already injected ({SIDECAR_STATUS_ANNOTATION} is set)"
    if (pod.get("spec") or {}).get("hostNetwork"):
        return False, "hostNetwork pod"
    if ns_name in IGNORED_NAMESPACES:
        return False, f"system namespace {ns_name}"
    if _object_choice(pod) is False:
        return False, f"pod opts out with {SIDECAR_INJECT_LABEL}"
    ns_labels, pod_labels = _labels(namespace), _labels(pod)
    how = _selected_by(pod_labels, ns_labels, revision)
    if how is not None:
        return True, how
    if ns_labels.get(NAMESPACE_INJECTION) not in (None, "enabled"):
        return False, f"namespace has {NAMESPACE_INJECTION}={ns_labels[NAMESPACE_INJECTION]}"
    if ns_labels.get(REVISION_LABEL) not in (None, revision):
        return False, f"namespace selects revision {ns_labels[REVISION_LABEL]!r}, not {revision!r}"
    if pod_labels.get(REVISION_LABEL) not in (None, revision):
        return False, f"pod selects revision {pod_labels[REVISION_LABEL]!r}, not {revision!r}"
    return False, (
        f"neither the namespace ({NAMESPACE_INJECTION}, {REVISION_LABEL}) nor the pod "
        f"({SIDECAR_INJECT_LABEL} label) asks for it"
    )


# --- what ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadMeta:
    """Istio's "deployment meta" of a pod: the workload that owns it, for names and ISTIO_META_OWNER."""

    name: str
    kind: str
    api_version: str


def workload_meta(pod: Mapping) -> WorkloadMeta:
    """A ReplicaSet with the pod's `pod-template-hash` stands for its Deployment; another
    controller stands for itself; a bare pod for itself."""
    md = _meta(pod)
    owner = next((r for r in md.get("ownerReferences") or [] if r.get("controller")), None)
    if owner is None:
        return WorkloadMeta(md.get("name") or "", "Pod", "v1")
    name, kind, api = owner.get("name") or "", owner.get("kind") or "", owner.get("apiVersion") or ""
    template_hash = _labels(pod).get("pod-template-hash")
    if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
        return WorkloadMeta(name[: -len(template_hash) - 1], "Deployment", "apps/v1")
    return WorkloadMeta(name, kind, api)


def _canonical_name(labels: Mapping[str, str], workload: WorkloadMeta) -> str:
    value = (
        labels.get(CANONICAL_NAME_LABEL) or labels.get("app.kubernetes.io/name") or labels.get("app") or workload.name
    )
    return value[:63].rstrip("-")


def _canonical_revision(labels: Mapping[str, str]) -> str:
    return (
        labels.get(CANONICAL_REVISION_LABEL)
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest"
    )


def _field(name: str, path: str) -> dict:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _pod_ports(containers: list[dict]) -> str:
    ports = []
    for container in containers:
        for port in container.get("ports") or []:
            entry = {k: port[k] for k in ("name", "containerPort", "protocol") if k in port}
            entry.setdefault("protocol", "TCP")
            ports.append(entry)
    return json.dumps(ports, separators=(",", ":"))


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"


def _init_container(s: Settings) -> dict:
    return {
        "name": INIT_CONTAINER,
        "image": s.image,
        "args": list(s.init_args),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": False,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "runAsUser": 0,
        },
    }


def _proxy_container(
    ns_name: str, app_containers: list[dict], s: Settings, workload: WorkloadMeta, prometheus_env: str | None
) -> dict:
    env = [
        {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
        {"name": "CA_ADDR", "value": ISTIOD_ADDRESS},
        {"name": ENV_ISTIOD_ADDRESS, "value": str(s.proxy_config.get("discoveryAddress") or ISTIOD_ADDRESS)},
        _field("POD_NAME", "metadata.name"),
        _field("POD_NAMESPACE", "metadata.namespace"),
        _field("INSTANCE_IP", "status.podIP"),
        _field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        _field("HOST_IP", "status.hostIP"),
        {"name": "PROXY_CONFIG", "value": json.dumps(s.proxy_config, sort_keys=True, separators=(",", ":"))},
        {"name": "ISTIO_META_POD_PORTS", "value": _pod_ports(app_containers)},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(c["name"] for c in app_containers)},
        {"name": "ISTIO_META_CLUSTER_ID", "value": CLUSTER_ID},
        {"name": "ISTIO_META_ISTIO_VERSION", "value": s.image.rpartition(":")[2] or DEFAULT_TAG},
        _field("ISTIO_META_NODE_NAME", "spec.nodeName"),
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": s.interception_mode},
    ]
    if workload.name:
        env.append({"name": "ISTIO_META_WORKLOAD_NAME", "value": workload.name})
        env.append(
            {
                "name": "ISTIO_META_OWNER",
                "value": f"kubernetes://apis/{workload.api_version}/namespaces/{ns_name}/"
                f"{workload.kind.lower()}s/{workload.name}",
            }
        )
    env += [
        {"name": "ISTIO_META_MESH_ID", "value": DEFAULT_TRUST_DOMAIN},
        {"name": ENV_TRUST_DOMAIN, "value": DEFAULT_TRUST_DOMAIN},
        {"name": "TERMINATION_DRAIN_DURATION_SECONDS", "value": _format_seconds(s.drain_seconds)},
    ]
    env += [{"name": k, "value": v} for k, v in sorted(s.proxy_config["proxyMetadata"].items())]
    if prometheus_env is not None:
        env.append({"name": "ISTIO_PROMETHEUS_ANNOTATIONS", "value": prometheus_env})
    container: dict[str, Any] = {
        "name": PROXY_CONTAINER,
        "image": s.image,
        "ports": [{"containerPort": ENVOY_PROMETHEUS_PORT, "protocol": "TCP", "name": "http-envoy-prom"}],
        "args": [
            "proxy",
            "sidecar",
            "--domain",
            f"{ns_name}.svc.{CLUSTER_DOMAIN}",
            f"--proxyLogLevel={s.log_level}",
            f"--proxyComponentLogLevel={s.component_log_level}",
            f"--log_output_level={s.agent_log_level}",
        ],
    }
    if s.hold:
        container["lifecycle"] = {"postStart": {"exec": {"command": ["pilot-agent", "wait"]}}}
    container.update(
        {
            "env": env,
            "readinessProbe": {
                "httpGet": {"path": "/healthz/ready", "port": READINESS_PORT},
                "initialDelaySeconds": 0,
                "periodSeconds": 1,
                "timeoutSeconds": 3,
                "failureThreshold": 4,
            },
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "privileged": False,
                "readOnlyRootFilesystem": True,
                "runAsGroup": PROXY_UID,
                "runAsNonRoot": True,
                "runAsUser": PROXY_UID,
            },
        }
    )
    return container


def _prometheus_merge(annotations: dict[str, str]) -> tuple[bool, str | None]:
    """Istio's metrics merge: (apply?, the app's own scrape settings for the agent, if any).
    A pod that says `prometheus.io/scrape: "false"` keeps its annotations."""
    scrape = annotations.get(PROMETHEUS_SCRAPE)
    if scrape is not None and scrape.strip().lower() in ("false", "0", "f"):
        return False, None
    if annotations.get(PROMETHEUS_PORT) == str(METRICS_PORT):
        return False, None
    own = {
        k: annotations[a]
        for k, a in (("scrape", PROMETHEUS_SCRAPE), ("path", PROMETHEUS_PATH), ("port", PROMETHEUS_PORT))
        if a in annotations
    }
    return True, (json.dumps(own, sort_keys=True, separators=(",", ":")) if own else None)


def status_annotation(s: Settings, revision: str = DEFAULT_REVISION) -> str:
    """`sidecar.istio.io/status`: what the injector added, in its field order."""
    return json.dumps(
        {
            "initContainers": [INIT_CONTAINER] if s.interception_mode != "NONE" else None,
            "containers": [PROXY_CONTAINER],
            "volumes": list(TEMPLATE_VOLUMES),
            "imagePullSecrets": None,
            "revision": revision,
        },
        separators=(",", ":"),
    )


def inject(
    pod: Mapping, namespace: Mapping | None = None, webhook: Mapping | None = None, revision: str = DEFAULT_REVISION
) -> dict:
    """POD with the sidecar added (a new dict; POD is not changed). ValueError when a setting
    cannot be honoured."""
    s = settings(pod, webhook)
    out = copy.deepcopy(dict(pod))
    md = out.setdefault("metadata", {})
    spec = out.setdefault("spec", {})
    ns_name = _namespace_name(pod, namespace)
    labels = dict(md.get("labels") or {})
    annotations = dict(md.get("annotations") or {})
    workload = workload_meta(pod)
    app_containers = [c for c in spec.get("containers") or [] if c.get("name") != PROXY_CONTAINER]
    if not app_containers:
        raise ValueError("the pod has no containers to put a sidecar next to")

    labels.setdefault(TLS_MODE, "istio")
    if s.proxy_config["proxyMetadata"].get("ISTIO_META_ENABLE_HBONE") == "true":
        labels.setdefault(TUNNEL_LABEL, "http")
    labels[CANONICAL_NAME_LABEL] = _canonical_name(labels, workload)
    labels[CANONICAL_REVISION_LABEL] = _canonical_revision(labels)
    # A sidecar pod is never also captured for ztunnel (istio-cni skips injected pods).
    labels[DATAPLANE_MODE_LABEL] = DATAPLANE_MODE_NONE

    annotations[REVISION_LABEL] = revision
    first = app_containers[0]["name"]
    annotations.setdefault(DEFAULT_LOGS_CONTAINER, first)
    annotations.setdefault(DEFAULT_CONTAINER, first)
    merge, prometheus_env = _prometheus_merge(annotations)
    if merge:
        for key in (PROMETHEUS_SCRAPE, PROMETHEUS_PORT, PROMETHEUS_PATH):
            annotations.pop(key, None)
        annotations[PROMETHEUS_PATH] = "/stats/prometheus"
        annotations[PROMETHEUS_PORT] = str(METRICS_PORT)
        annotations[PROMETHEUS_SCRAPE] = "true"
    annotations[SIDECAR_STATUS_ANNOTATION] = status_annotation(s, revision)

    proxy = _proxy_container(ns_name, app_containers, s, workload, prometheus_env)
    # The proxy goes last so `exec`/`logs` default to the app, or first when the app must wait for it.
    spec["containers"] = [proxy, *app_containers] if s.hold else [*app_containers, proxy]
    init_containers = [c for c in spec.get("initContainers") or [] if c.get("name") != INIT_CONTAINER]
    if s.interception_mode != "NONE":
        # istio-init runs last, so the pod's own init containers are not captured.
        init_containers.append(_init_container(s))
    if init_containers:
        spec["initContainers"] = init_containers
    md["labels"], md["annotations"] = labels, annotations
    return out


def admit(pod: dict, namespace: dict, webhook: dict) -> dict | None:
    """labd's handler: the mutated pod, None to leave it as it is, ValueError to refuse it."""
    wanted, _ = injection_wanted(pod, namespace, revision=_webhook_revision(webhook))
    if not wanted:
        return None
    return inject(pod, namespace, webhook, revision=_webhook_revision(webhook))


def _webhook_revision(webhook: Mapping | None) -> str:
    return _labels(webhook).get(REVISION_LABEL) or DEFAULT_REVISION
