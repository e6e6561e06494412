"""`kubectl describe`: an object's fields in kubectl's describe layout, with its events.

Follows kubectl's describe package: a PrefixWriter over a tabwriter (padding 2), labels and
annotations printed multi-line, pods, deployments, services and namespaces in their own layouts and
any other kind as metadata followed by its other fields as YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from lab.apiserver.tables import (
    NONE,
    UNKNOWN,
    age,
    dig,
    event_times,
    format_endpoints,
    format_labels,
    parse_time,
    selector_text,
)
from lab.cli.printers.formats import to_yaml
from lab.cli.printers.tabwriter import tabwrite


def _rfc1123z(timestamp: str | None) -> str:
    moment = parse_time(timestamp)
    return moment.strftime("%a, %d %b %Y %H:%M:%S %z") if moment else NONE


@dataclass
class _Describer:
    """kubectl's PrefixWriter over a tabwriter (padding 2); `flush` starts a fresh alignment."""

    blocks: list[list[list[str]]] = field(default_factory=lambda: [[]])

    def write(self, level: int, text: str) -> None:
        self.blocks[-1].append(("  " * level + text).split("\t"))

    def verbatim(self, line: str) -> None:
        """A line kept whole even if it holds tabs (YAML text)."""
        self.blocks[-1].append([line])

    def optional(
        self, level: int, title: str, source: Mapping[str, Any], key: str, show: Callable[[Any], str] = str
    ) -> None:
        """`Title:\tvalue` only when SOURCE has a non-empty KEY: describe skips unset fields."""
        if source.get(key):
            self.write(level, f"{title}:\t{show(source[key])}")

    def flush(self) -> None:
        self.blocks.append([])

    def text(self) -> str:
        return "".join(tabwrite(block, minwidth=0, padding=2) for block in self.blocks)

    def multiline(
        self, title: str, values: Mapping[str, str] | None, separator: str = "=", skip: frozenset[str] = frozenset()
    ) -> None:
        """printLabelsMultiline: `Title:\\tk=v` then `\\tk=v` lines, sorted, or <none>."""
        shown = values or {}
        keys = sorted(k for k in shown if k not in skip)
        if not keys:
            self.write(0, f"{title}:\t{NONE}")
            return
        for i, key in enumerate(keys):
            value = str(shown[key]).rstrip("\n")
            lead = f"{title}:\t" if i == 0 else "\t"
            if separator == ": " and (len(key) + len(value) + 2 > 140 or "\n" in value):
                self.write(0, f"{lead}{key}:")
                indent = title[: len(title) - len(title.lstrip())]
                for part in value.split("\n"):
                    self.write(0, f"{indent}  {part[:138] + '...' if len(part) > 138 else part}")
            else:
                self.write(0, f"{lead}{key}{separator}{value}")

    def annotations(self, title: str, values: Mapping[str, str] | None) -> None:
        self.multiline(title, values, ": ", frozenset({"kubectl.kubernetes.io/last-applied-configuration"}))

    def events(self, events: Sequence[Mapping] | None, now: datetime) -> None:
        """DescribeEvents: oldest first, with `(xN over AGE)` for repeated events."""
        if not events:
            self.write(0, f"Events:\t{NONE}")
            return
        self.flush()
        self.write(0, "Events:")
        self.write(1, "Type\tReason\tAge\tFrom\tMessage")
        self.write(1, "----\t------\t----\t----\t-------")
        for event in sorted(events, key=_event_sort_key):
            last_seen, first_seen, count = event_times(event, now)
            interval = f"{last_seen} (x{count} over {first_seen})" if count > 1 else first_seen
            source = dig(event, "source", "component") or event.get("reportingController", "")
            self.write(
                1,
                f"{event.get('type', '')}\t{event.get('reason', '')}\t{interval}\t"
                f"{source}\t{(event.get('message') or '').strip()}",
            )


def _event_sort_key(event: Mapping) -> datetime:
    stamp = (
        event.get("lastTimestamp")
        or dig(event, "series", "lastObservedTime")
        or event.get("eventTime")
        or event.get("firstTimestamp")
    )
    return parse_time(stamp) or datetime.min.replace(tzinfo=timezone.utc)


def _controller(obj: Mapping) -> str | None:
    for owner in dig(obj, "metadata", "ownerReferences", default=[]):
        if owner.get("controller"):
            return f"{owner.get('kind')}/{owner.get('name')}"
    return None


def _field_ref_value(pod: Mapping, path: str) -> str:
    """What a downward-API env var resolves to, for describe's Environment lines."""
    section, _, name = path.partition(".")
    if section not in ("metadata", "spec", "status") or "." in name:
        return ""
    return str(dig(pod, section, name, default=""))


def _describe_state(d: _Describer, title: str, state: Mapping) -> None:
    if state.get("running") is not None:
        d.write(2, f"{title}:\tRunning")
        d.write(3, f"Started:\t{_rfc1123z(state['running'].get('startedAt'))}")
    elif state.get("terminated") is not None:
        terminated = state["terminated"]
        d.write(2, f"{title}:\tTerminated")
        d.optional(3, "Reason", terminated, "reason")
        d.optional(3, "Message", terminated, "message")
        d.write(3, f"Exit Code:\t{terminated.get('exitCode', 0)}")
        d.optional(3, "Signal", terminated, "signal")
        d.write(3, f"Started:\t{_rfc1123z(terminated.get('startedAt'))}")
        d.write(3, f"Finished:\t{_rfc1123z(terminated.get('finishedAt'))}")
    else:
        d.write(2, f"{title}:\tWaiting")
        reason = dig(state, "waiting", "reason")
        if reason:
            d.write(3, f"Reason:\t{reason}")


def _describe_containers(
    d: _Describer,
    title: str,
    containers: Sequence[Mapping],
    statuses: Sequence[Mapping] | None,
    pod: Mapping | None,
    indent: str = "",
) -> None:
    """describeContainers; STATUSES and POD are None inside a pod template."""
    by_name = {s.get("name"): s for s in statuses or []}
    d.write(0, f"{indent}{title}:" if containers else f"{indent}{title}:\t{NONE}")
    for container in containers:
        status = by_name.get(container.get("name"))
        d.write(1, f"{' ' if indent else ''}{container.get('name', '')}:")
        if status is not None:
            d.write(2, f"Container ID:\t{status.get('containerID', '')}")
        d.write(2, f"Image:\t{container.get('image', '')}")
        if status is not None:
            d.write(2, f"Image ID:\t{status.get('imageID', '')}")
        ports = container.get("ports") or []
        port_text = ", ".join(f"{p.get('containerPort')}/{p.get('protocol') or 'TCP'}" for p in ports)
        host_text = ", ".join(f"{p.get('hostPort', 0)}/{p.get('protocol') or 'TCP'}" for p in ports)
        d.write(2, f"{'Ports' if ',' in port_text else 'Port'}:\t{port_text or NONE}")
        d.write(2, f"{'Host Ports' if ',' in host_text else 'Host Port'}:\t{host_text or NONE}")
        for key, heading in (("command", "Command"), ("args", "Args")):
            if container.get(key):
                d.write(2, f"{heading}:")
                for argument in container[key]:
                    for line in str(argument).split("\n"):
                        d.write(3, line)
        if status is not None:
            _describe_state(d, "State", status.get("state") or {})
            last_state = status.get("lastState") or {}
            if last_state.get("terminated"):
                _describe_state(d, "Last State", last_state)
            d.write(2, f"Ready:\t{'True' if status.get('ready') else 'False'}")
            d.write(2, f"Restart Count:\t{status.get('restartCount', 0)}")
        env = container.get("env") or []
        d.write(2, "Environment:" if env else f"Environment:\t{NONE}")
        for var in env:
            field_ref = dig(var, "valueFrom", "fieldRef")
            if field_ref:
                path = field_ref.get("fieldPath", "")
                value = _field_ref_value(pod, path) if pod is not None else ""
                api_version = field_ref.get("apiVersion") or "v1"
                d.write(3, f"{var.get('name')}:\t{value} ({api_version}:{path})")
            else:
                lines = str(var.get("value", "")).split("\n")
                d.write(3, f"{var.get('name')}:\t{lines[0]}")
                for line in lines[1:]:
                    d.write(3, f"\t{line}")
        mounts = container.get("volumeMounts") or []
        d.write(2, "Mounts:" if mounts else f"Mounts:\t{NONE}")
        for mount in mounts:
            mode = "ro" if mount.get("readOnly") else "rw"
            d.write(3, f"{mount.get('mountPath')} from {mount.get('name')} ({mode})")


def _tolerations(d: _Describer, title: str, tolerations: Sequence[Mapping] | None) -> None:
    if not tolerations:
        d.write(0, f"{title}:\t{NONE}")
        return
    for i, toleration in enumerate(tolerations):
        text = toleration.get("key", "")
        if toleration.get("value"):
            text += "=" + toleration["value"]
        if toleration.get("effect"):
            text += ":" + toleration["effect"]
        if toleration.get("operator") == "Exists" and not toleration.get("value"):
            text += " op=Exists" if text else "op=Exists"
        if toleration.get("tolerationSeconds") is not None:
            text += f" for {toleration['tolerationSeconds']}s"
        d.write(0, (f"{title}:\t" if i == 0 else "\t") + text)


def _qos_class(pod_spec: Mapping) -> str:
    """BestEffort without requests/limits; Guaranteed when limits cover cpu and memory and
    every request equals its limit; Burstable otherwise."""
    resources = [c.get("resources") or {} for c in pod_spec.get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        if not {"cpu", "memory"} <= set(limits):
            return "Burstable"
        if any(limits.get(k) != v for k, v in requests.items()):
            return "Burstable"
    return "Guaranteed"


def _describe_pod(pod: Mapping, events: Sequence[Mapping] | None, now: datetime) -> str:
    d = _Describer()
    meta, spec, status = (dig(pod, part, default={}) for part in ("metadata", "spec", "status"))
    d.write(0, f"Name:\t{meta.get('name', '')}")
    d.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    if spec.get("priority") is not None:
        d.write(0, f"Priority:\t{spec['priority']}")
    d.optional(0, "Service Account", spec, "serviceAccountName")
    node = spec.get("nodeName")
    d.write(0, f"Node:\t{node}/{status.get('hostIP', '')}" if node else f"Node:\t{NONE}")
    d.optional(0, "Start Time", status, "startTime", _rfc1123z)
    d.multiline("Labels", meta.get("labels"))
    d.annotations("Annotations", meta.get("annotations"))
    if meta.get("deletionTimestamp"):
        d.write(0, f"Status:\tTerminating (lasts {age(meta['deletionTimestamp'], now)})")
    else:
        d.write(0, f"Status:\t{status.get('phase', '')}")
    for key, title in (("reason", "Reason"), ("message", "Message")):
        d.optional(0, title, status, key)
    d.write(0, f"IP:\t{status.get('podIP', '')}")
    pod_ips = status.get("podIPs") or []
    d.write(0, "IPs:" if pod_ips else f"IPs:\t{NONE}")
    for entry in pod_ips:
        d.write(1, f"IP:\t{entry.get('ip', '')}")
    if _controller(pod):
        d.write(0, f"Controlled By:\t{_controller(pod)}")
    if spec.get("initContainers"):
        _describe_containers(d, "Init Containers", spec["initContainers"], status.get("initContainerStatuses"), pod)
    _describe_containers(d, "Containers", spec.get("containers") or [], status.get("containerStatuses") or [], pod)
    if status.get("conditions"):
        d.write(0, "Conditions:")
        d.write(1, "Type\tStatus")
        for condition in status["conditions"]:
            d.write(1, f"{condition.get('type')} \t{condition.get('status')} ")
    d.write(0, f"Volumes:\t{NONE}" if not spec.get("volumes") else "Volumes:")
    for volume in spec.get("volumes") or []:
        d.write(1, f"{volume.get('name')}:")
        kinds = [k for k in volume if k != "name"]
        d.write(2, f"Type:\t{kinds[0] if kinds else UNKNOWN}")
    d.write(0, f"QoS Class:\t{_qos_class(spec)}")
    d.multiline("Node-Selectors", spec.get("nodeSelector"))
    _tolerations(d, "Tolerations", spec.get("tolerations"))
    d.events(events, now)
    return d.text()


def _describe_deployment(obj: Mapping, events: Sequence[Mapping] | None, now: datetime) -> str:
    d = _Describer()
    meta, spec, status = (dig(obj, part, default={}) for part in ("metadata", "spec", "status"))
    d.write(0, f"Name:\t{meta.get('name', '')}")
    d.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    d.write(0, f"CreationTimestamp:\t{_rfc1123z(meta.get('creationTimestamp'))}")
    d.multiline("Labels", meta.get("labels"))
    d.annotations("Annotations", meta.get("annotations"))
    d.write(0, f"Selector:\t{selector_text(spec.get('selector'))}")
    counts = (
        spec.get("replicas", 1),
        status.get("updatedReplicas", 0),
        status.get("replicas", 0),
        status.get("availableReplicas", 0),
        status.get("unavailableReplicas", 0),
    )
    d.write(0, "Replicas:\t%d desired | %d updated | %d total | %d available | %d unavailable" % counts)
    strategy = spec.get("strategy") or {}
    strategy_type = strategy.get("type", "RollingUpdate")
    d.write(0, f"StrategyType:\t{strategy_type}")
    d.write(0, f"MinReadySeconds:\t{spec.get('minReadySeconds', 0)}")
    if strategy_type == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") or {}
        d.write(
            0,
            f"RollingUpdateStrategy:\t{rolling.get('maxUnavailable', '25%')} max "
            f"unavailable, {rolling.get('maxSurge', '25%')} max surge",
        )
    template = spec.get("template") or {}
    template_meta, template_spec = template.get("metadata") or {}, template.get("spec") or {}
    d.write(0, "Pod Template:")
    d.multiline("  Labels", template_meta.get("labels"))
    if template_meta.get("annotations"):
        d.annotations("  Annotations", template_meta["annotations"])
    d.optional(1, "Service Account", template_spec, "serviceAccountName")
    if template_spec.get("initContainers"):
        _describe_containers(d, "Init Containers", template_spec["initContainers"], None, None, "  ")
    _describe_containers(d, "Containers", template_spec.get("containers") or [], None, None, "  ")
    d.write(1, f"Volumes:\t{NONE}" if not template_spec.get("volumes") else "Volumes:")
    for volume in template_spec.get("volumes") or []:
        d.write(2, f"{volume.get('name')}:")
    d.multiline("  Node-Selectors", template_spec.get("nodeSelector"))
    _tolerations(d, "  Tolerations", template_spec.get("tolerations"))
    if status.get("conditions"):
        d.write(0, "Conditions:")
        d.write(1, "Type\tStatus\tReason")
        d.write(1, "----\t------\t------")
        for condition in status["conditions"]:
            d.write(1, f"{condition.get('type')} \t{condition.get('status')}\t{condition.get('reason', '')}")
    d.events(events, now)
    return d.text()


def _describe_service(obj: Mapping, events: Sequence[Mapping] | None, now: datetime, endpoints: Mapping | None) -> str:
    d = _Describer()
    meta, spec = dig(obj, "metadata", default={}), dig(obj, "spec", default={})
    d.write(0, f"Name:\t{meta.get('name', '')}")
    d.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    d.multiline("Labels", meta.get("labels"))
    d.annotations("Annotations", meta.get("annotations"))
    d.write(0, f"Selector:\t{format_labels(spec.get('selector'))}")
    service_type = spec.get("type") or "ClusterIP"
    d.write(0, f"Type:\t{service_type}")
    d.optional(0, "IP Family Policy", spec, "ipFamilyPolicy")
    d.write(0, f"IP Families:\t{','.join(spec.get('ipFamilies') or []) or NONE}")
    d.write(0, f"IP:\t{spec.get('clusterIP', '')}")
    d.optional(0, "IPs", spec, "clusterIPs", ",".join)
    d.optional(0, "External IPs", spec, "externalIPs", ",".join)
    if service_type == "ExternalName":
        d.write(0, f"External Name:\t{spec.get('externalName', '')}")
    for port in spec.get("ports") or []:
        name = port.get("name") or "<unset>"
        protocol = port.get("protocol") or "TCP"
        d.write(0, f"Port:\t{name}\t{port.get('port')}/{protocol}")
        target = port.get("targetPort", port.get("port"))
        d.write(0, f"TargetPort:\t{target}/{protocol}")
        if port.get("nodePort"):
            d.write(0, f"NodePort:\t{name}\t{port['nodePort']}/{protocol}")
        d.write(0, f"Endpoints:\t{format_endpoints(endpoints, {port.get('name') or ''})}")
    d.write(0, f"Session Affinity:\t{spec.get('sessionAffinity', 'None')}")
    d.optional(0, "Internal Traffic Policy", spec, "internalTrafficPolicy")
    d.events(events, now)
    return d.text()


def _describe_namespace(obj: Mapping) -> str:
    d = _Describer()
    meta = dig(obj, "metadata", default={})
    d.write(0, f"Name:\t{meta.get('name', '')}")
    d.multiline("Labels", meta.get("labels"))
    d.annotations("Annotations", meta.get("annotations"))
    d.write(0, f"Status:\t{dig(obj, 'status', 'phase', default='Active')}")
    d.write(0, "")
    d.write(0, "No resource quota.")
    d.write(0, "")
    d.write(0, "No LimitRange resource.")
    return d.text()


def _describe_generic(obj: Mapping, events: Sequence[Mapping] | None, now: datetime) -> str:
    """Metadata as kubectl shows it, then each other top-level field as indented YAML."""
    d = _Describer()
    meta = dig(obj, "metadata", default={})
    d.write(0, f"Name:\t{meta.get('name', '')}")
    d.optional(0, "Namespace", meta, "namespace")
    d.multiline("Labels", meta.get("labels"))
    d.annotations("Annotations", meta.get("annotations"))
    d.write(0, f"API Version:\t{obj.get('apiVersion', '')}")
    d.write(0, f"Kind:\t{obj.get('kind', '')}")
    d.write(0, f"CreationTimestamp:\t{_rfc1123z(meta.get('creationTimestamp'))}")
    for key, value in obj.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        d.flush()
        d.write(0, f"{key[:1].upper()}{key[1:]}:")
        for line in to_yaml(value).splitlines():
            d.verbatim("  " + line)
        d.flush()
    d.events(events, now)
    return d.text()


def describe(
    kind: str, obj: Mapping, events: Sequence[Mapping] | None, now: datetime, *, endpoints: Mapping | None = None
) -> str:
    """`kubectl describe KIND NAME`: EVENTS are those whose involvedObject is OBJ;
    ENDPOINTS (the Service's Endpoints object) fills a Service's Endpoints lines."""
    key = kind.lower()
    if key == "pod":
        return _describe_pod(obj, events, now)
    if key == "deployment":
        return _describe_deployment(obj, events, now)
    if key == "service":
        return _describe_service(obj, events, now, endpoints)
    if key == "namespace":
        return _describe_namespace(obj)
    return _describe_generic(obj, events, now)
