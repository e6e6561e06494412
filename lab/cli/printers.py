"""What `lab get` and `lab describe` print: kubectl's tables, ages, YAML/JSON, names, describe.

Everything here is a pure function of the objects and a `now` passed in, so the output can be
tested to the character. The column choices and cell rules follow kubectl's printers
(k8s.io/kubernetes/pkg/printers/internalversion and kubectl's describe package), and alignment
follows Go's text/tabwriter as kubectl configures it: tables pad every column but the last to
max(6, widest cell + 3); describe pads to widest cell + 2 within blocks of consecutive lines.
Printers return their text with a trailing newline; `age` and `no_resources` return one phrase.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import yaml

from lab.apiserver import selectors

NONE = "<none>"
UNKNOWN = "<unknown>"

# --- time -------------------------------------------------------------------------------------


def parse_time(timestamp: str | None) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime (UTC when it names no zone), or None."""
    if not timestamp:
        return None
    parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def human_duration(seconds: float) -> str:
    """duration.HumanDuration: about 2-3 significant figures, `2m5s`, `3h10m`, `3d4h`, `400d`."""
    whole = int(seconds)                   # truncates toward zero, as Go's int(d.Seconds())
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        return f"{minutes}m" if whole % 60 == 0 else f"{minutes}m{whole % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, hours // 24 % 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None, now: datetime) -> str:
    """How long ago TIMESTAMP was, as kubectl's AGE column shows it; `<unknown>` without one."""
    moment = parse_time(timestamp)
    if moment is None:
        return UNKNOWN
    return human_duration((_aware(now) - moment).total_seconds())


def _rfc1123z(timestamp: str | None) -> str:
    moment = parse_time(timestamp)
    return moment.strftime("%a, %d %b %Y %H:%M:%S %z") if moment else NONE


# --- alignment --------------------------------------------------------------------------------


def _tabwrite(lines: Sequence[Sequence[str]], *, minwidth: int, padding: int) -> str:
    """Go's text/tabwriter: each line is a list of cells, all but the last tab-terminated.
    A column's width is set per block of consecutive lines that have a cell in it."""
    widths = [[0] * max(len(cells) - 1, 0) for cells in lines]

    def measure(first: int, last: int, column: int) -> None:
        row = first
        while row < last:
            if column >= len(lines[row]) - 1:
                row += 1
                continue
            start, width = row, minwidth
            while row < last and column < len(lines[row]) - 1:
                width = max(width, len(lines[row][column]) + padding)
                row += 1
            for k in range(start, row):
                widths[k][column] = width
            measure(start, row, column + 1)

    measure(0, len(lines), 0)
    out = []
    for cells, cell_widths in zip(lines, widths):
        padded = [cell.ljust(width) for cell, width in zip(cells, cell_widths)]
        out.append("".join(padded) + (cells[-1] if cells else "") + "\n")
    return "".join(out)


def _cell(value: Any) -> str:
    """A table cell: kubectl cuts a value at its first line break and marks the cut."""
    text = "" if value is None else str(value)
    for i, char in enumerate(text):
        if char in "\r\n\f":
            return text[:i] + "..."
    return text


# --- shared cell helpers ----------------------------------------------------------------------


def _get(obj: Mapping | None, *path: str | int, default: Any = None) -> Any:
    """obj[path[0]][path[1]]... or DEFAULT when any step is missing."""
    current: Any = obj
    for key in path:
        if isinstance(current, Mapping) and key in current:
            current = current[key]
        elif isinstance(current, list) and isinstance(key, int) and 0 <= key < len(current):
            current = current[key]
        else:
            return default
    return default if current is None else current


def format_labels(labels: Mapping[str, str] | None) -> str:
    """labels.FormatLabels: sorted `k=v` pairs joined by commas, `<none>` when empty."""
    if not labels:
        return NONE
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _selector_text(label_selector: Mapping | None) -> str:
    try:
        text = str(selectors.from_label_selector(label_selector))
    except ValueError:
        return UNKNOWN
    return text or NONE


def _containers_and_images(pod_spec: Mapping) -> list[str]:
    containers = _get(pod_spec, "containers", default=[])
    return [",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers)]


def _first_condition_status(obj: Mapping, condition_type: str) -> str | None:
    for condition in _get(obj, "status", "conditions", default=[]):
        if condition.get("type") == condition_type:
            return condition.get("status")
    return None


def _json_cell(value: Any) -> str | None:
    """A CRD printer column: strings as they are, lists and maps as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


# --- rows per kind ----------------------------------------------------------------------------


def _later(current: datetime | None, timestamp: str | None) -> datetime | None:
    moment = parse_time(timestamp)
    if moment is None:
        return current
    return moment if current is None or moment > current else current


def _terminated_reason(terminated: Mapping, prefix: str = "") -> str:
    if terminated.get("reason"):
        return prefix + terminated["reason"]
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def _pod_row(pod: Mapping, now: datetime, wide: bool) -> list[str]:
    """printPod: READY counts running+ready containers, STATUS is the most telling reason."""
    spec, status = _get(pod, "spec", default={}), _get(pod, "status", default={})
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}

    def is_sidecar(name: str) -> bool:
        return _get(init_specs, name, "restartPolicy") == "Always"

    total = len(spec.get("containers") or []) + sum(1 for n in init_specs if is_sidecar(n))
    ready = restarts = sidecar_restarts = 0
    last_restart = last_sidecar_restart = None
    reason = status.get("reason") or status.get("phase") or ""

    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        finished = _get(cs, "lastState", "terminated", "finishedAt")
        restarts += cs.get("restartCount", 0)
        last_restart = _later(last_restart, finished)
        if is_sidecar(cs.get("name")):
            sidecar_restarts += cs.get("restartCount", 0)
            last_sidecar_restart = _later(last_sidecar_restart, finished)
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode", 0) == 0:
            continue
        if is_sidecar(cs.get("name")) and cs.get("started"):
            ready += 1 if cs.get("ready") else 0
            continue
        if terminated:
            reason = _terminated_reason(terminated, "Init:")
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _first_condition_status(pod, "Initialized") == "True":
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            last_restart = _later(last_restart, _get(cs, "lastState", "terminated", "finishedAt"))
            state = cs.get("state") or {}
            terminated, waiting = state.get("terminated"), state.get("waiting")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated:
                reason = _terminated_reason(terminated)
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _first_condition_status(pod, "Ready") == "True" else "NotReady"

    if _get(pod, "metadata", "deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        ago = human_duration((_aware(now) - last_restart).total_seconds())
        restarts_text = f"{restarts} ({ago} ago)"
    row = [_get(pod, "metadata", "name", default=""), f"{ready}/{total}", reason, restarts_text,
           age(_get(pod, "metadata", "creationTimestamp"), now)]
    if wide:
        ip = _get(status, "podIPs", 0, "ip") or status.get("podIP") or NONE
        gates = spec.get("readinessGates") or []
        gates_text = NONE
        if gates:
            passing = sum(1 for g in gates
                          if _first_condition_status(pod, g.get("conditionType")) == "True")
            gates_text = f"{passing}/{len(gates)}"
        row += [ip, spec.get("nodeName") or NONE, status.get("nominatedNodeName") or NONE,
                gates_text]
    return row


def _name_and_age(obj: Mapping, now: datetime) -> tuple[str, str]:
    return (_get(obj, "metadata", "name", default=""),
            age(_get(obj, "metadata", "creationTimestamp"), now))


def _deployment_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    name, created = _name_and_age(obj, now)
    status = _get(obj, "status", default={})
    desired = _get(obj, "spec", "replicas", default=1)
    row = [name, f"{status.get('readyReplicas', 0)}/{desired}",
           str(status.get("updatedReplicas", 0)), str(status.get("availableReplicas", 0)),
           created]
    if wide:
        row += _containers_and_images(_get(obj, "spec", "template", "spec", default={}))
        row.append(_selector_text(_get(obj, "spec", "selector")))
    return row


def _replicaset_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    name, created = _name_and_age(obj, now)
    status = _get(obj, "status", default={})
    row = [name, str(_get(obj, "spec", "replicas", default=1)), str(status.get("replicas", 0)),
           str(status.get("readyReplicas", 0)), created]
    if wide:
        row += _containers_and_images(_get(obj, "spec", "template", "spec", default={}))
        row.append(_selector_text(_get(obj, "spec", "selector")))
    return row


def _daemonset_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    name, created = _name_and_age(obj, now)
    status = _get(obj, "status", default={})
    counts = [status.get(k, 0) for k in ("desiredNumberScheduled", "currentNumberScheduled",
                                         "numberReady", "updatedNumberScheduled",
                                         "numberAvailable")]
    node_selector = format_labels(_get(obj, "spec", "template", "spec", "nodeSelector"))
    row = [name, *map(str, counts), node_selector, created]
    if wide:
        row += _containers_and_images(_get(obj, "spec", "template", "spec", default={}))
        row.append(_selector_text(_get(obj, "spec", "selector")))
    return row


def _service_external_ip(service: Mapping) -> str:
    spec = _get(service, "spec", default={})
    external = ",".join(spec.get("externalIPs") or [])
    kind = spec.get("type") or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return external or NONE
    if kind == "LoadBalancer":
        ingress = _get(service, "status", "loadBalancer", "ingress", default=[])
        balancers = ",".join(i.get("ip") or i.get("hostname") or "" for i in ingress)
        return external or balancers or "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    return UNKNOWN


def _service_ports(ports: Sequence[Mapping]) -> str:
    pieces = []
    for port in ports:
        protocol = port.get("protocol") or "TCP"
        if port.get("nodePort"):
            pieces.append(f"{port.get('port')}:{port['nodePort']}/{protocol}")
        else:
            pieces.append(f"{port.get('port')}/{protocol}")
    return ",".join(pieces) or NONE


def _service_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    name, created = _name_and_age(obj, now)
    spec = _get(obj, "spec", default={})
    cluster_ip = _get(spec, "clusterIPs", 0) or spec.get("clusterIP") or NONE
    row = [name, spec.get("type") or "ClusterIP", cluster_ip, _service_external_ip(obj),
           _service_ports(spec.get("ports") or []), created]
    if wide:
        row.append(format_labels(spec.get("selector")))
    return row


def format_endpoints(endpoints: Mapping | None, port_names: set[str] | None = None) -> str:
    """formatEndpoints: up to three ready `ip:port` pairs, then `+ N more...`."""
    subsets = _get(endpoints, "subsets", default=[])
    if not subsets:
        return NONE
    shown, count, limit = [], 0, 3
    for subset in subsets:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        targets = ([addresses] if not ports else
                   [[_join_host_port(ip, p.get("port")) for ip in addresses] for p in ports
                    if port_names is None or (p.get("name") or "") in port_names])
        for group in targets:
            count += len(group)
            shown += group[:max(limit - len(shown), 0)]
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if count > limit else text


def _join_host_port(ip: str, port: Any) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _endpoints_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    name, created = _name_and_age(obj, now)
    return [name, format_endpoints(obj), created]


def _namespace_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    name, created = _name_and_age(obj, now)
    return [name, _get(obj, "status", "phase", default="Active"), created]


def _serviceaccount_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    name, created = _name_and_age(obj, now)
    return [name, str(len(obj.get("secrets") or [])), created]


def _configmap_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    name, created = _name_and_age(obj, now)
    return [name, str(len(obj.get("data") or {}) + len(obj.get("binaryData") or {})), created]


def _node_address(node: Mapping, kind: str) -> str:
    for address in _get(node, "status", "addresses", default=[]):
        if address.get("type") == kind:
            return address.get("address", "")
    return NONE


def _node_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    name, created = _name_and_age(obj, now)
    ready = _first_condition_status(obj, "Ready")
    states = ["Unknown" if ready is None else "Ready" if ready == "True" else "NotReady"]
    if _get(obj, "spec", "unschedulable"):
        states.append("SchedulingDisabled")
    labels = _get(obj, "metadata", "labels", default={})
    roles = {key.split("/", 1)[1] for key in labels
             if key.startswith("node-role.kubernetes.io/") and key.count("/") == 1}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    info = _get(obj, "status", "nodeInfo", default={})
    row = [name, ",".join(states), ",".join(sorted(r for r in roles if r)) or NONE, created,
           info.get("kubeletVersion", "")]
    if wide:
        row += [_node_address(obj, "InternalIP"), _node_address(obj, "ExternalIP"),
                info.get("osImage") or UNKNOWN, info.get("kernelVersion") or UNKNOWN,
                info.get("containerRuntimeVersion") or UNKNOWN]
    return row


def _event_times(event: Mapping, now: datetime) -> tuple[str, str, int]:
    """(last seen, first seen, count) as printEvent computes them."""
    first = event.get("firstTimestamp") or event.get("eventTime")
    first_seen = age(first, now)
    last_seen = age(event.get("lastTimestamp"), now) if event.get("lastTimestamp") else first_seen
    count = event.get("count") or 1
    series = event.get("series")
    if series:
        last_seen = age(series.get("lastObservedTime"), now)
        count = series.get("count", count)
    return last_seen, first_seen, count


def _event_source(event: Mapping) -> str:
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingController") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return f"{component}, {host}" if host else component


def _event_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    last_seen, first_seen, count = _event_times(obj, now)
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    target = (involved.get("kind") or "").lower()
    if involved.get("name"):
        target += "/" + involved["name"]
    message = (obj.get("message") or obj.get("note") or "").strip()
    if wide:
        return [last_seen, obj.get("type", ""), obj.get("reason", ""), target,
                involved.get("fieldPath", ""), _event_source(obj), message, first_seen,
                str(count), _get(obj, "metadata", "name", default="")]
    return [last_seen, obj.get("type", ""), obj.get("reason", ""), target, message]


def _crd_row(*paths: Callable[[Mapping], Any]) -> Callable[[Mapping, datetime, bool], list[str]]:
    """A row of NAME, the CRD's printer columns, AGE; missing values print empty."""
    def row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
        name, created = _name_and_age(obj, now)
        return [name, *(_json_cell(path(obj)) or "" for path in paths), created]
    return row


def _gateway_address(obj: Mapping) -> Any:
    return _get(obj, "status", "addresses", 0, "value")


def _generic_row(obj: Mapping, now: datetime, wide: bool) -> list[str]:
    return list(_name_and_age(obj, now))


@dataclass(frozen=True)
class _Table:
    headers: tuple[str, ...]
    row: Callable[[Mapping, datetime, bool], list[str]]
    wide_headers: tuple[str, ...] = ()          # appended to headers with wide=True
    wide_replaces: bool = False                  # events: the wide header list is complete


_CONTAINERS_IMAGES_SELECTOR = ("CONTAINERS", "IMAGES", "SELECTOR")

_TABLES: dict[str, _Table] = {
    "pod": _Table(("NAME", "READY", "STATUS", "RESTARTS", "AGE"), _pod_row,
                  ("IP", "NODE", "NOMINATED NODE", "READINESS GATES")),
    "deployment": _Table(("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"), _deployment_row,
                         _CONTAINERS_IMAGES_SELECTOR),
    "replicaset": _Table(("NAME", "DESIRED", "CURRENT", "READY", "AGE"), _replicaset_row,
                         _CONTAINERS_IMAGES_SELECTOR),
    "daemonset": _Table(("NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE",
                         "NODE SELECTOR", "AGE"), _daemonset_row, _CONTAINERS_IMAGES_SELECTOR),
    "service": _Table(("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"),
                      _service_row, ("SELECTOR",)),
    "endpoints": _Table(("NAME", "ENDPOINTS", "AGE"), _endpoints_row),
    "namespace": _Table(("NAME", "STATUS", "AGE"), _namespace_row),
    "serviceaccount": _Table(("NAME", "SECRETS", "AGE"), _serviceaccount_row),
    "configmap": _Table(("NAME", "DATA", "AGE"), _configmap_row),
    "node": _Table(("NAME", "STATUS", "ROLES", "AGE", "VERSION"), _node_row,
                   ("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION",
                    "CONTAINER-RUNTIME")),
    "event": _Table(("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"), _event_row,
                    ("LAST SEEN", "TYPE", "REASON", "OBJECT", "SUBOBJECT", "SOURCE", "MESSAGE",
                     "FIRST SEEN", "COUNT", "NAME"), wide_replaces=True),
    "authorizationpolicy": _Table(("NAME", "ACTION", "AGE"),
                                  _crd_row(lambda o: _get(o, "spec", "action"))),
    "peerauthentication": _Table(("NAME", "MODE", "AGE"),
                                 _crd_row(lambda o: _get(o, "spec", "mtls", "mode"))),
    "requestauthentication": _Table(("NAME", "AGE"), _generic_row),
    "gateway": _Table(("NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"),
                      _crd_row(lambda o: _get(o, "spec", "gatewayClassName"), _gateway_address,
                               lambda o: _first_condition_status(o, "Programmed"))),
    "httproute": _Table(("NAME", "HOSTNAMES", "AGE"),
                        _crd_row(lambda o: _get(o, "spec", "hostnames"))),
    "virtualservice": _Table(("NAME", "GATEWAYS", "HOSTS", "AGE"),
                             _crd_row(lambda o: _get(o, "spec", "gateways"),
                                      lambda o: _get(o, "spec", "hosts"))),
    "destinationrule": _Table(("NAME", "HOST", "AGE"),
                              _crd_row(lambda o: _get(o, "spec", "host"))),
    "serviceentry": _Table(("NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"),
                           _crd_row(lambda o: _get(o, "spec", "hosts"),
                                    lambda o: _get(o, "spec", "location"),
                                    lambda o: _get(o, "spec", "resolution"))),
    "mutatingwebhookconfiguration": _Table(("NAME", "WEBHOOKS", "AGE"),
                                           _crd_row(lambda o: len(o.get("webhooks") or []))),
}
_GENERIC = _Table(("NAME", "AGE"), _generic_row)

CLUSTER_SCOPED = frozenset({"namespace", "node", "mutatingwebhookconfiguration"})


def table(kind: str, objects: Sequence[Mapping], *, wide: bool = False,
          all_namespaces: bool = False, now: datetime) -> str:
    """`kubectl get KIND` for OBJECTS (all of KIND); empty string for no objects, print
    `no_resources()` then. With all_namespaces, namespaced kinds get a NAMESPACE column."""
    if not objects:
        return ""
    key = kind.lower()
    spec = _TABLES.get(key, _GENERIC)
    headers = list(spec.headers)
    if wide:
        wide_headers = list(spec.wide_headers)
        headers = wide_headers if spec.wide_replaces else headers + wide_headers
    rows = [[_cell(c) for c in spec.row(obj, now, wide)] for obj in objects]
    if all_namespaces and key not in CLUSTER_SCOPED:
        headers.insert(0, "NAMESPACE")
        for row, obj in zip(rows, objects):
            row.insert(0, _get(obj, "metadata", "namespace", default=""))
    return _tabwrite([headers, *rows], minwidth=6, padding=3)


def no_resources(namespace: str | None) -> str:
    """kubectl's message for an empty listing; None for all namespaces or cluster-scoped kinds."""
    if namespace is None:
        return "No resources found"
    return f"No resources found in {namespace} namespace."


# --- -o yaml, -o json, -o name ----------------------------------------------------------------


class _BlockDumper(yaml.SafeDumper):
    """Block style like kubectl's YAML; multi-line strings as `|` literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _represent_str)


def to_yaml(obj: Any) -> str:
    """Block-style YAML, keys in insertion order, long strings never folded."""
    return yaml.dump(obj, Dumper=_BlockDumper, default_flow_style=False, sort_keys=False,
                     allow_unicode=True, width=2**31 - 1)


def to_json(obj: Any) -> str:
    """JSON indented by 4, as `kubectl get -o json` prints it."""
    return json.dumps(obj, indent=4, ensure_ascii=False) + "\n"


_DEFAULT_GROUPS = {
    "deployment": "apps", "replicaset": "apps", "daemonset": "apps", "statefulset": "apps",
    "authorizationpolicy": "security.istio.io", "peerauthentication": "security.istio.io",
    "requestauthentication": "security.istio.io", "gateway": "gateway.networking.k8s.io",
    "httproute": "gateway.networking.k8s.io", "virtualservice": "networking.istio.io",
    "destinationrule": "networking.istio.io", "serviceentry": "networking.istio.io",
    "mutatingwebhookconfiguration": "admissionregistration.k8s.io",
}


def resource_name(kind: str, api_version: str | None = None) -> str:
    """kubectl's `kind.group` prefix for `-o name`: `pod`, `deployment.apps`, ..."""
    singular = kind.lower()
    group = api_version.rpartition("/")[0] if api_version else _DEFAULT_GROUPS.get(singular, "")
    return f"{singular}.{group}" if group else singular


def names(kind: str, objects: Sequence[Mapping]) -> str:
    """`-o name`: one `resource/name` line per object."""
    return "".join(f"{resource_name(obj.get('kind') or kind, obj.get('apiVersion'))}/"
                   f"{_get(obj, 'metadata', 'name', default='')}\n" for obj in objects)


# --- describe ---------------------------------------------------------------------------------


@dataclass
class _Describer:
    """kubectl's PrefixWriter over a tabwriter (padding 2); `flush` starts a fresh alignment."""

    blocks: list[list[list[str]]] = field(default_factory=lambda: [[]])

    def write(self, level: int, text: str) -> None:
        self.blocks[-1].append(("  " * level + text).split("\t"))

    def verbatim(self, line: str) -> None:
        """A line kept whole even if it holds tabs (YAML text)."""
        self.blocks[-1].append([line])

    def flush(self) -> None:
        self.blocks.append([])

    def text(self) -> str:
        return "".join(_tabwrite(block, minwidth=0, padding=2) for block in self.blocks)

    def multiline(self, title: str, values: Mapping[str, str] | None, separator: str = "=",
                  skip: frozenset[str] = frozenset()) -> None:
        """printLabelsMultiline: `Title:\\tk=v` then `\\tk=v` lines, sorted, or <none>."""
        keys = sorted(k for k in (values or {}) if k not in skip)
        if not keys:
            self.write(0, f"{title}:\t{NONE}")
            return
        for i, key in enumerate(keys):
            value = str(values[key]).rstrip("\n")
            lead = f"{title}:\t" if i == 0 else "\t"
            if separator == ": " and (len(key) + len(value) + 2 > 140 or "\n" in value):
                self.write(0, f"{lead}{key}:")
                indent = title[:len(title) - len(title.lstrip())]
                for part in value.split("\n"):
                    self.write(0, f"{indent}  {part[:138] + '...' if len(part) > 138 else part}")
            else:
                self.write(0, f"{lead}{key}{separator}{value}")

    def annotations(self, title: str, values: Mapping[str, str] | None) -> None:
        self.multiline(title, values, ": ",
                       frozenset({"kubectl.kubernetes.io/last-applied-configuration"}))

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
            last_seen, first_seen, count = _event_times(event, now)
            interval = f"{last_seen} (x{count} over {first_seen})" if count > 1 else first_seen
            source = _get(event, "source", "component") or event.get("reportingController", "")
            self.write(1, f"{event.get('type', '')}\t{event.get('reason', '')}\t{interval}\t"
                          f"{source}\t{(event.get('message') or '').strip()}")


def _event_sort_key(event: Mapping) -> datetime:
    stamp = (event.get("lastTimestamp") or _get(event, "series", "lastObservedTime")
             or event.get("eventTime") or event.get("firstTimestamp"))
    return parse_time(stamp) or datetime.min.replace(tzinfo=timezone.utc)


def _controller(obj: Mapping) -> str | None:
    for owner in _get(obj, "metadata", "ownerReferences", default=[]):
        if owner.get("controller"):
            return f"{owner.get('kind')}/{owner.get('name')}"
    return None


def _field_ref_value(pod: Mapping, path: str) -> str:
    """What a downward-API env var resolves to, for describe's Environment lines."""
    section, _, name = path.partition(".")
    if section not in ("metadata", "spec", "status") or "." in name:
        return ""
    return str(_get(pod, section, name, default=""))


def _describe_state(d: _Describer, title: str, state: Mapping) -> None:
    if state.get("running") is not None:
        d.write(2, f"{title}:\tRunning")
        d.write(3, f"Started:\t{_rfc1123z(state['running'].get('startedAt'))}")
    elif state.get("terminated") is not None:
        terminated = state["terminated"]
        d.write(2, f"{title}:\tTerminated")
        if terminated.get("reason"):
            d.write(3, f"Reason:\t{terminated['reason']}")
        if terminated.get("message"):
            d.write(3, f"Message:\t{terminated['message']}")
        d.write(3, f"Exit Code:\t{terminated.get('exitCode', 0)}")
        if terminated.get("signal"):
            d.write(3, f"Signal:\t{terminated['signal']}")
        d.write(3, f"Started:\t{_rfc1123z(terminated.get('startedAt'))}")
        d.write(3, f"Finished:\t{_rfc1123z(terminated.get('finishedAt'))}")
    else:
        d.write(2, f"{title}:\tWaiting")
        reason = _get(state, "waiting", "reason")
        if reason:
            d.write(3, f"Reason:\t{reason}")


def _describe_containers(d: _Describer, title: str, containers: Sequence[Mapping],
                         statuses: Sequence[Mapping] | None, pod: Mapping | None,
                         indent: str = "") -> None:
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
        port_text = ", ".join(f"{p.get('containerPort')}/{p.get('protocol') or 'TCP'}"
                              for p in ports)
        host_text = ", ".join(f"{p.get('hostPort', 0)}/{p.get('protocol') or 'TCP'}"
                              for p in ports)
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
            field_ref = _get(var, "valueFrom", "fieldRef")
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
    meta, spec, status = (_get(pod, part, default={}) for part in ("metadata", "spec", "status"))
    d.write(0, f"Name:\t{meta.get('name', '')}")
    d.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    if spec.get("priority") is not None:
        d.write(0, f"Priority:\t{spec['priority']}")
    if spec.get("serviceAccountName"):
        d.write(0, f"Service Account:\t{spec['serviceAccountName']}")
    node = spec.get("nodeName")
    d.write(0, f"Node:\t{node}/{status.get('hostIP', '')}" if node else f"Node:\t{NONE}")
    if status.get("startTime"):
        d.write(0, f"Start Time:\t{_rfc1123z(status['startTime'])}")
    d.multiline("Labels", meta.get("labels"))
    d.annotations("Annotations", meta.get("annotations"))
    if meta.get("deletionTimestamp"):
        d.write(0, f"Status:\tTerminating (lasts {age(meta['deletionTimestamp'], now)})")
    else:
        d.write(0, f"Status:\t{status.get('phase', '')}")
    for key, title in (("reason", "Reason"), ("message", "Message")):
        if status.get(key):
            d.write(0, f"{title}:\t{status[key]}")
    d.write(0, f"IP:\t{status.get('podIP', '')}")
    pod_ips = status.get("podIPs") or []
    d.write(0, "IPs:" if pod_ips else f"IPs:\t{NONE}")
    for entry in pod_ips:
        d.write(1, f"IP:\t{entry.get('ip', '')}")
    if _controller(pod):
        d.write(0, f"Controlled By:\t{_controller(pod)}")
    if spec.get("initContainers"):
        _describe_containers(d, "Init Containers", spec["initContainers"],
                             status.get("initContainerStatuses"), pod)
    _describe_containers(d, "Containers", spec.get("containers") or [],
                         status.get("containerStatuses") or [], pod)
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
    meta, spec, status = (_get(obj, part, default={}) for part in ("metadata", "spec", "status"))
    d.write(0, f"Name:\t{meta.get('name', '')}")
    d.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    d.write(0, f"CreationTimestamp:\t{_rfc1123z(meta.get('creationTimestamp'))}")
    d.multiline("Labels", meta.get("labels"))
    d.annotations("Annotations", meta.get("annotations"))
    d.write(0, f"Selector:\t{_selector_text(spec.get('selector'))}")
    counts = (spec.get("replicas", 1), status.get("updatedReplicas", 0),
              status.get("replicas", 0), status.get("availableReplicas", 0),
              status.get("unavailableReplicas", 0))
    d.write(0, "Replicas:\t%d desired | %d updated | %d total | %d available | %d unavailable"
            % counts)
    strategy = spec.get("strategy") or {}
    strategy_type = strategy.get("type", "RollingUpdate")
    d.write(0, f"StrategyType:\t{strategy_type}")
    d.write(0, f"MinReadySeconds:\t{spec.get('minReadySeconds', 0)}")
    if strategy_type == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") or {}
        d.write(0, f"RollingUpdateStrategy:\t{rolling.get('maxUnavailable', '25%')} max "
                   f"unavailable, {rolling.get('maxSurge', '25%')} max surge")
    template = spec.get("template") or {}
    template_meta, template_spec = template.get("metadata") or {}, template.get("spec") or {}
    d.write(0, "Pod Template:")
    d.multiline("  Labels", template_meta.get("labels"))
    if template_meta.get("annotations"):
        d.annotations("  Annotations", template_meta["annotations"])
    if template_spec.get("serviceAccountName"):
        d.write(1, f"Service Account:\t{template_spec['serviceAccountName']}")
    if template_spec.get("initContainers"):
        _describe_containers(d, "Init Containers", template_spec["initContainers"], None, None,
                             "  ")
    _describe_containers(d, "Containers", template_spec.get("containers") or [], None, None,
                         "  ")
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
            d.write(1, f"{condition.get('type')} \t{condition.get('status')}\t"
                       f"{condition.get('reason', '')}")
    d.events(events, now)
    return d.text()


def _describe_service(obj: Mapping, events: Sequence[Mapping] | None, now: datetime,
                      endpoints: Mapping | None) -> str:
    d = _Describer()
    meta, spec = _get(obj, "metadata", default={}), _get(obj, "spec", default={})
    d.write(0, f"Name:\t{meta.get('name', '')}")
    d.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    d.multiline("Labels", meta.get("labels"))
    d.annotations("Annotations", meta.get("annotations"))
    d.write(0, f"Selector:\t{format_labels(spec.get('selector'))}")
    service_type = spec.get("type") or "ClusterIP"
    d.write(0, f"Type:\t{service_type}")
    if spec.get("ipFamilyPolicy"):
        d.write(0, f"IP Family Policy:\t{spec['ipFamilyPolicy']}")
    d.write(0, f"IP Families:\t{','.join(spec.get('ipFamilies') or []) or NONE}")
    d.write(0, f"IP:\t{spec.get('clusterIP', '')}")
    if spec.get("clusterIPs"):
        d.write(0, f"IPs:\t{','.join(spec['clusterIPs'])}")
    if spec.get("externalIPs"):
        d.write(0, f"External IPs:\t{','.join(spec['externalIPs'])}")
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
    if spec.get("internalTrafficPolicy"):
        d.write(0, f"Internal Traffic Policy:\t{spec['internalTrafficPolicy']}")
    d.events(events, now)
    return d.text()


def _describe_namespace(obj: Mapping) -> str:
    d = _Describer()
    meta = _get(obj, "metadata", default={})
    d.write(0, f"Name:\t{meta.get('name', '')}")
    d.multiline("Labels", meta.get("labels"))
    d.annotations("Annotations", meta.get("annotations"))
    d.write(0, f"Status:\t{_get(obj, 'status', 'phase', default='Active')}")
    d.write(0, "")
    d.write(0, "No resource quota.")
    d.write(0, "")
    d.write(0, "No LimitRange resource.")
    return d.text()


def _describe_generic(obj: Mapping, events: Sequence[Mapping] | None, now: datetime) -> str:
    """Metadata as kubectl shows it, then each other top-level field as indented YAML."""
    d = _Describer()
    meta = _get(obj, "metadata", default={})
    d.write(0, f"Name:\t{meta.get('name', '')}")
    if meta.get("namespace"):
        d.write(0, f"Namespace:\t{meta['namespace']}")
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


def describe(kind: str, obj: Mapping, events: Sequence[Mapping] | None, now: datetime, *,
             endpoints: Mapping | None = None) -> str:
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


# --- kubectl top ------------------------------------------------------------------------------


def _top_cpu(millicores: float) -> str:
    return f"{int(round(millicores))}m"


def _top_memory(nbytes: float) -> str:
    return f"{int(nbytes) // (1024 * 1024)}Mi"


def top_pods(pods: Sequence[Mapping], *, all_namespaces: bool = False, containers: bool = False,
             headers: bool = True) -> str:
    """`kubectl top pod`: NAME CPU(cores) MEMORY(bytes) from the `top` op's pods (NAMESPACE first
    with all_namespaces; POD NAME ... per container with containers)."""
    head = (["POD", "NAME"] if containers else ["NAME"]) + ["CPU(cores)", "MEMORY(bytes)"]
    if all_namespaces:
        head.insert(0, "NAMESPACE")
    rows = []
    for pod in pods:
        entries = (pod.get("containers") or []) if containers else [pod]
        for entry in entries:
            row = ([pod.get("name", ""), entry.get("name", "")] if containers else [pod.get("name", "")])
            row += [_top_cpu(entry.get("cpu", 0)), _top_memory(entry.get("memory", 0))]
            if all_namespaces:
                row.insert(0, pod.get("namespace", ""))
            rows.append(row)
    return _tabwrite(([head] if headers else []) + rows, minwidth=6, padding=3) if rows or headers else ""


def top_nodes(nodes: Sequence[Mapping], *, headers: bool = True) -> str:
    """`kubectl top node`: NAME CPU(cores) CPU% MEMORY(bytes) MEMORY% (a node: the sum of its pods)."""
    rows = [[n.get("name", ""), _top_cpu(n.get("cpu", 0)), f"{int(n.get('cpuPercent', 0))}%",
             _top_memory(n.get("memory", 0)), f"{int(n.get('memoryPercent', 0))}%"] for n in nodes]
    head = ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
    return _tabwrite(([head] if headers else []) + rows, minwidth=6, padding=3)
