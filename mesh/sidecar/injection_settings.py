"""The sidecar injector's settings for one pod, resolved before the template is filled in. Pure.

The pod's annotations (`proxy.istio.io/config`, `sidecar.istio.io/*`, `traffic.sidecar.istio.io/*`)
over the ambient profile's mesh defaults, the proxy image from the webhook object's tag, and
istio-init's `istio-iptables` arguments, checked as istio-init would parse them. A setting that
cannot be honoured raises ValueError naming it. Apart from injection.py (whether a pod is injected
and the pod it becomes), which calls `settings`."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from lab.client.contract import HOLD_APPLICATION_ANNOTATION, PROXY_TAG_ANNOTATION
from mesh.contract import (
    ENVOY_PROMETHEUS_PORT,
    INBOUND_CAPTURE_PORT,
    ISTIOD_ADDRESS,
    METRICS_PORT,
    OUTBOUND_CAPTURE_PORT,
    PROXY_UID,
    READINESS_PORT,
)
from mesh.sidecar import iptables

# The annotations a pod sets its sidecar up with (Istio's names).
PROXY_CONFIG = "proxy.istio.io/config"
PROXY_IMAGE = "sidecar.istio.io/proxyImage"
INTERCEPTION_MODE = "sidecar.istio.io/interceptionMode"
LOG_LEVEL = "sidecar.istio.io/logLevel"
COMPONENT_LOG_LEVEL = "sidecar.istio.io/componentLogLevel"
AGENT_LOG_LEVEL = "sidecar.istio.io/agentLogLevel"
INCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/includeOutboundIPRanges"
EXCLUDE_OUTBOUND_IP_RANGES = "traffic.sidecar.istio.io/excludeOutboundIPRanges"
INCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/includeInboundPorts"
EXCLUDE_INBOUND_PORTS = "traffic.sidecar.istio.io/excludeInboundPorts"
EXCLUDE_OUTBOUND_PORTS = "traffic.sidecar.istio.io/excludeOutboundPorts"

DEFAULT_TAG = "1.24.0"
PROXY_REPOSITORY = "docker.io/istio/proxyv2"

# The ambient profile's mesh-wide proxy defaults (meshConfig.defaultConfig).
MESH_DEFAULT_PROXY_CONFIG: dict[str, Any] = {
    "discoveryAddress": ISTIOD_ADDRESS,
    "drainDuration": "45s",
    "terminationDrainDuration": "5s",
    "statusPort": METRICS_PORT,
    "interceptionMode": "REDIRECT",
    "holdApplicationUntilProxyStarts": False,
    "proxyMetadata": {"ISTIO_META_ENABLE_HBONE": "true"},
}
# ProxyConfig's fields (istio.io/api mesh/v1alpha1 ProxyConfig); anything else is refused, as the
# injector refuses an annotation that does not parse into a ProxyConfig.
PROXY_CONFIG_FIELDS = frozenset(
    {
        "configPath",
        "binaryPath",
        "serviceCluster",
        "drainDuration",
        "discoveryAddress",
        "discoveryRefreshDelay",
        "zipkinAddress",
        "statsdUdpAddress",
        "envoyMetricsServiceAddress",
        "proxyAdminPort",
        "availabilityZone",
        "controlPlaneAuthPolicy",
        "customConfigFile",
        "statNameLength",
        "concurrency",
        "proxyBootstrapTemplatePath",
        "interceptionMode",
        "tracing",
        "sds",
        "envoyAccessLogService",
        "envoyMetricsService",
        "proxyMetadata",
        "runtimeValues",
        "statusPort",
        "extraStatTags",
        "gatewayTopology",
        "terminationDrainDuration",
        "meshId",
        "readinessProbe",
        "proxyStatsMatcher",
        "holdApplicationUntilProxyStarts",
        "caCertificatesPem",
        "image",
        "privateKeyProvider",
        "proxyHeaders",
        "fileFlushInterval",
        "fileFlushMinSizeKb",
        "parentShutdownDuration",
    }
)
_DURATION_FIELDS = ("drainDuration", "terminationDrainDuration", "parentShutdownDuration", "fileFlushInterval")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def annotations_of(obj: Mapping | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("annotations") or {})


def parse_duration(value: Any, what: str) -> float:
    """A protobuf/Go duration ("5s", "1m30s", "500ms") in seconds."""
    text = str(value).strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"{what}: invalid duration {value!r} (want e.g. 5s, 1m30s, 500ms)")
    return total


def _proxy_config(pod: Mapping, webhook: Mapping | None) -> dict[str, Any]:
    """The pod's effective ProxyConfig: mesh defaults, then `proxy.istio.io/config` over them."""
    config = copy.deepcopy(MESH_DEFAULT_PROXY_CONFIG)
    if str(annotations_of(webhook).get(HOLD_APPLICATION_ANNOTATION, "")).lower() == "true":
        config["holdApplicationUntilProxyStarts"] = True
    raw = annotations_of(pod).get(PROXY_CONFIG)
    if raw is None:
        return config
    where = f"annotation {PROXY_CONFIG}"
    try:
        override = yaml.safe_load(raw) if str(raw).strip() else {}
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not YAML or JSON: {str(e).splitlines()[0]}") from None
    if override is None:
        override = {}
    if not isinstance(override, dict):
        raise ValueError(f"{where}: must be a ProxyConfig mapping, got {type(override).__name__}")
    unknown = sorted(set(override) - PROXY_CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown ProxyConfig field {unknown[0]!r}")
    hold = override.get("holdApplicationUntilProxyStarts")
    if hold is not None and not isinstance(hold, bool):
        raise ValueError(f"{where}: holdApplicationUntilProxyStarts must be true or false, got {hold!r}")
    for key in _DURATION_FIELDS:
        if key in override:
            parse_duration(override[key], f"{where}: {key}")
    metadata = override.get("proxyMetadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError(f"{where}: proxyMetadata must map names to strings")
        override = dict(override, proxyMetadata={**config["proxyMetadata"], **metadata})
    config.update(override)
    return config


@dataclass(frozen=True)
class Settings:
    """Everything the template needs, resolved from the pod, the webhook and the mesh defaults."""

    proxy_config: dict[str, Any]
    image: str
    hold: bool
    drain_seconds: float
    interception_mode: str
    init_args: list[str] = field(default_factory=list)
    log_level: str = "warning"
    component_log_level: str = "misc:error"
    agent_log_level: str = "default:info"


def _exclude_inbound_ports(extra: str) -> str:
    """Istio's `excludeInboundPort`: the status port, then the user's ports without it."""
    ports = [str(METRICS_PORT)] + [p for p in iptables.split(extra) if p != str(METRICS_PORT)]
    return ",".join(ports)


def settings(pod: Mapping, webhook: Mapping | None = None) -> Settings:
    """Resolve the injection settings; ValueError names the annotation that cannot be honoured."""
    annotations = annotations_of(pod)
    config = _proxy_config(pod, webhook)
    tag = str(annotations_of(webhook).get(PROXY_TAG_ANNOTATION) or DEFAULT_TAG)
    image = annotations.get(PROXY_IMAGE, "")
    if "/" not in image:
        image = f"{PROXY_REPOSITORY}:{tag}"
    mode = annotations.get(INTERCEPTION_MODE) or str(config.get("interceptionMode") or "REDIRECT")
    if mode not in ("REDIRECT", "NONE"):
        raise ValueError(f"interception mode {mode!r} is not supported in the lab (REDIRECT or NONE)")
    agent_level = annotations.get(AGENT_LOG_LEVEL, "default:info")
    init_args = [
        "istio-iptables",
        "-p",
        str(OUTBOUND_CAPTURE_PORT),
        "-z",
        str(INBOUND_CAPTURE_PORT),
        "-u",
        str(PROXY_UID),
        "-m",
        mode,
        "-i",
        annotations.get(INCLUDE_OUTBOUND_IP_RANGES, "*"),
        "-x",
        annotations.get(EXCLUDE_OUTBOUND_IP_RANGES, ""),
        "-b",
        annotations.get(INCLUDE_INBOUND_PORTS, "*"),
        "-d",
        f"{ENVOY_PROMETHEUS_PORT},{READINESS_PORT},"
        + _exclude_inbound_ports(annotations.get(EXCLUDE_INBOUND_PORTS, "")),
    ]
    if annotations.get(EXCLUDE_OUTBOUND_PORTS):
        init_args += ["-o", annotations[EXCLUDE_OUTBOUND_PORTS]]
    init_args.append(f"--log_output_level={agent_level}")
    if mode == "REDIRECT":
        try:
            iptables.parse_args(init_args[1:])
        except iptables.FlagError as e:
            raise ValueError(f"traffic.sidecar.istio.io annotations: {e}") from None
    return Settings(
        proxy_config=config,
        image=image,
        hold=bool(config["holdApplicationUntilProxyStarts"]),
        drain_seconds=parse_duration(config["terminationDrainDuration"], "terminationDrainDuration"),
        interception_mode=mode,
        init_args=init_args,
        log_level=annotations.get(LOG_LEVEL, "warning"),
        component_log_level=annotations.get(COMPONENT_LOG_LEVEL, "misc:error"),
        agent_log_level=agent_level,
    )
