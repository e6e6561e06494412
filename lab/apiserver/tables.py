"""The table `get` shows for each kind: its columns and each object's cells, server-side.

The kube-apiserver answers `get` with a meta.k8s.io/v1 `Table` (column definitions, then one row
of cells per object) and kubectl only lays it out; the lab computes the same here, so the kind
registry (lab/apiserver/kinds.py) can name each kind's `TableDef` and `to_table` can build the
object. Column choices and cell rules follow kubectl's printers
(k8s.io/kubernetes/pkg/printers/internalversion); priority-1 columns are shown with `-o wide`.
Every cell is a pure function of the object and a `now` passed in, so it can be tested exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from lab.apiserver import selectors

Row = Callable[[Mapping[str, Any], datetime], list[str]]  # an object's cells, one per column

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
    whole = int(seconds)  # truncates toward zero, as Go's int(d.Seconds())
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


# --- shared cell helpers ----------------------------------------------------------------------


def dig(obj: Mapping[str, Any] | None, *path: str | int, default: Any = None) -> Any:
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


def selector_text(label_selector: Mapping[str, Any] | None) -> str:
    try:
        text = str(selectors.from_label_selector(label_selector))
    except ValueError:
        return UNKNOWN
    return text or NONE


def condition_status(obj: Mapping[str, Any], condition_type: str) -> str | None:
    for condition in dig(obj, "status", "conditions", default=[]):
        if condition.get("type") == condition_type:
            status: str | None = condition.get("status")
            return status
    return None


def json_cell(value: Any) -> str | None:
    """A CRD printer column: strings as they are, lists and maps as compact JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


# --- rows per kind: every cell, wide ones included (kubectl picks by priority) ---------------


def _later(current: datetime | None, timestamp: str | None) -> datetime | None:
    moment = parse_time(timestamp)
    if moment is None:
        return current
    return moment if current is None or moment > current else current


def _terminated_reason(terminated: Mapping[str, Any], prefix: str = "") -> str:
    if terminated.get("reason"):
        return f"{prefix}{terminated['reason']}"
    if terminated.get("signal"):
        return f"{prefix}Signal:{terminated['signal']}"
    return f"{prefix}ExitCode:{terminated.get('exitCode', 0)}"


def _pod_row(pod: Mapping[str, Any], now: datetime) -> list[str]:
    """printPod: READY counts running+ready containers, STATUS is the most telling reason."""
    spec, status = dig(pod, "spec", default={}), dig(pod, "status", default={})
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}

    def is_sidecar(name: str) -> bool:
        return bool(dig(init_specs, name, "restartPolicy") == "Always")

    total = len(spec.get("containers") or []) + sum(1 for n in init_specs if is_sidecar(n))
    ready = restarts = sidecar_restarts = 0
    last_restart = last_sidecar_restart = None
    reason = status.get("reason") or status.get("phase") or ""

    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        finished = dig(cs, "lastState", "terminated", "finishedAt")
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

    if not initializing or condition_status(pod, "Initialized") == "True":
        restarts, last_restart = sidecar_restarts, last_sidecar_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            last_restart = _later(last_restart, dig(cs, "lastState", "terminated", "finishedAt"))
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
            reason = "Running" if condition_status(pod, "Ready") == "True" else "NotReady"

    if dig(pod, "metadata", "deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        ago = human_duration((_aware(now) - last_restart).total_seconds())
        restarts_text = f"{restarts} ({ago} ago)"
    ip = dig(status, "podIPs", 0, "ip") or status.get("podIP") or NONE
    gates = spec.get("readinessGates") or []
    gates_text = NONE
    if gates:
        passing = sum(1 for g in gates if condition_status(pod, dig(g, "conditionType")) == "True")
        gates_text = f"{passing}/{len(gates)}"
    return [
        dig(pod, "metadata", "name", default=""),
        f"{ready}/{total}",
        reason,
        restarts_text,
        age(dig(pod, "metadata", "creationTimestamp"), now),
        ip,
        spec.get("nodeName") or NONE,
        status.get("nominatedNodeName") or NONE,
        gates_text,
    ]


def _name_and_age(obj: Mapping[str, Any], now: datetime) -> tuple[str, str]:
    return (dig(obj, "metadata", "name", default=""), age(dig(obj, "metadata", "creationTimestamp"), now))


def _template_cells(obj: Mapping[str, Any]) -> list[str]:
    """CONTAINERS, IMAGES and SELECTOR: the wide columns every workload kind adds."""
    pod_spec = dig(obj, "spec", "template", "spec", default={})
    containers = dig(pod_spec, "containers", default=[])
    return [
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        selector_text(dig(obj, "spec", "selector")),
    ]


def _workload_row(obj: Mapping[str, Any], now: datetime, *cells: Any) -> list[str]:
    """NAME, the kind's CELLS, AGE, then the wide template columns."""
    name, created = _name_and_age(obj, now)
    return [name, *map(str, cells), created, *_template_cells(obj)]


def _status_counts(obj: Mapping[str, Any], *fields: str) -> list[int]:
    status = dig(obj, "status", default={})
    return [status.get(f, 0) for f in fields]


def _deployment_row(obj: Mapping[str, Any], now: datetime) -> list[str]:
    ready, updated, available = _status_counts(obj, "readyReplicas", "updatedReplicas", "availableReplicas")
    return _workload_row(obj, now, f"{ready}/{dig(obj, 'spec', 'replicas', default=1)}", updated, available)


def _replicaset_row(obj: Mapping[str, Any], now: datetime) -> list[str]:
    desired = dig(obj, "spec", "replicas", default=1)
    return _workload_row(obj, now, desired, *_status_counts(obj, "replicas", "readyReplicas"))


# DESIRED, CURRENT, READY, UP-TO-DATE, AVAILABLE
_DAEMONSET_COUNTS = (
    "desiredNumberScheduled",
    "currentNumberScheduled",
    "numberReady",
    "updatedNumberScheduled",
    "numberAvailable",
)


def _daemonset_row(obj: Mapping[str, Any], now: datetime) -> list[str]:
    node_selector = format_labels(dig(obj, "spec", "template", "spec", "nodeSelector"))
    return _workload_row(obj, now, *_status_counts(obj, *_DAEMONSET_COUNTS), node_selector)


def _service_external_ip(service: Mapping[str, Any]) -> str:
    spec = dig(service, "spec", default={})
    external = ",".join(spec.get("externalIPs") or [])
    kind = spec.get("type") or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return external or NONE
    if kind == "LoadBalancer":
        ingress = dig(service, "status", "loadBalancer", "ingress", default=[])
        balancers = ",".join(i.get("ip") or i.get("hostname") or "" for i in ingress)
        return external or balancers or "<pending>"
    if kind == "ExternalName":
        name: str = spec.get("externalName", "")
        return name
    return UNKNOWN


def _service_ports(ports: Sequence[Mapping[str, Any]]) -> str:
    pieces = []
    for port in ports:
        protocol = port.get("protocol") or "TCP"
        if port.get("nodePort"):
            pieces.append(f"{port.get('port')}:{port['nodePort']}/{protocol}")
        else:
            pieces.append(f"{port.get('port')}/{protocol}")
    return ",".join(pieces) or NONE


def _service_row(obj: Mapping[str, Any], now: datetime) -> list[str]:
    name, created = _name_and_age(obj, now)
    spec = dig(obj, "spec", default={})
    cluster_ip = dig(spec, "clusterIPs", 0) or spec.get("clusterIP") or NONE
    return [
        name,
        spec.get("type") or "ClusterIP",
        cluster_ip,
        _service_external_ip(obj),
        _service_ports(spec.get("ports") or []),
        created,
        format_labels(spec.get("selector")),
    ]


def format_endpoints(endpoints: Mapping[str, Any] | None, port_names: set[str] | None = None) -> str:
    """formatEndpoints: up to three ready `ip:port` pairs, then `+ N more...`."""
    subsets = dig(endpoints, "subsets", default=[])
    if not subsets:
        return NONE
    shown: list[str] = []
    count, limit = 0, 3
    for subset in subsets:
        addresses = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        targets = (
            [addresses]
            if not ports
            else [
                [_join_host_port(ip, p.get("port")) for ip in addresses]
                for p in ports
                if port_names is None or (p.get("name") or "") in port_names
            ]
        )
        for group in targets:
            count += len(group)
            shown += group[: max(limit - len(shown), 0)]
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if count > limit else text


def _join_host_port(ip: str, port: Any) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _named(cell: Callable[[Mapping[str, Any]], Any]) -> Row:
    """A row of NAME, one cell, AGE: the shape of most small kinds' tables."""

    def row(obj: Mapping[str, Any], now: datetime) -> list[str]:
        name, created = _name_and_age(obj, now)
        return [name, cell(obj), created]

    return row


def _node_address(node: Mapping[str, Any], kind: str) -> str:
    for address in dig(node, "status", "addresses", default=[]):
        if address.get("type") == kind:
            value: str = address.get("address", "")
            return value
    return NONE


def _node_row(obj: Mapping[str, Any], now: datetime) -> list[str]:
    name, created = _name_and_age(obj, now)
    ready = condition_status(obj, "Ready")
    states = ["Unknown" if ready is None else "Ready" if ready == "True" else "NotReady"]
    if dig(obj, "spec", "unschedulable"):
        states.append("SchedulingDisabled")
    labels = dig(obj, "metadata", "labels", default={})
    roles = {
        key.split("/", 1)[1] for key in labels if key.startswith("node-role.kubernetes.io/") and key.count("/") == 1
    }
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    info = dig(obj, "status", "nodeInfo", default={})
    return [
        name,
        ",".join(states),
        ",".join(sorted(r for r in roles if r)) or NONE,
        created,
        info.get("kubeletVersion", ""),
        _node_address(obj, "InternalIP"),
        _node_address(obj, "ExternalIP"),
        info.get("osImage") or UNKNOWN,
        info.get("kernelVersion") or UNKNOWN,
        info.get("containerRuntimeVersion") or UNKNOWN,
    ]


def event_times(event: Mapping[str, Any], now: datetime) -> tuple[str, str, int]:
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


def _event_source(event: Mapping[str, Any]) -> str:
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingController") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return f"{component}, {host}" if host else component


def _event_row(obj: Mapping[str, Any], now: datetime) -> list[str]:
    last_seen, first_seen, count = event_times(obj, now)
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    target = (involved.get("kind") or "").lower()
    if involved.get("name"):
        target += "/" + involved["name"]
    message = (obj.get("message") or obj.get("note") or "").strip()
    return [
        last_seen,
        obj.get("type", ""),
        obj.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        _event_source(obj),
        message,
        first_seen,
        str(count),
        dig(obj, "metadata", "name", default=""),
    ]


def _crd_row(*paths: Callable[[Mapping[str, Any]], Any]) -> Row:
    """A row of NAME, the CRD's printer columns, AGE; missing values print empty."""

    def row(obj: Mapping[str, Any], now: datetime) -> list[str]:
        name, created = _name_and_age(obj, now)
        return [name, *(json_cell(path(obj)) or "" for path in paths), created]

    return row


def _spec(*path: str | int) -> Callable[[Mapping[str, Any]], Any]:
    """A CRD printer column's JSON path under `.spec`."""
    return lambda obj: dig(obj, "spec", *path)


def _generic_row(obj: Mapping[str, Any], now: datetime) -> list[str]:
    return list(_name_and_age(obj, now))


# --- the tables --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column definition: its header and priority (0: always shown, 1: only with -o wide)."""

    name: str
    priority: int = 0


@dataclass(frozen=True)
class TableDef:
    """A kind's columns and the function giving an object's cells, one per column."""

    columns: tuple[Column, ...]
    row: Row


def _columns(*names: str, wide: Sequence[str] = ()) -> tuple[Column, ...]:
    return tuple(Column(n) for n in names) + tuple(Column(n, 1) for n in wide)


_TEMPLATE_COLUMNS = ("CONTAINERS", "IMAGES", "SELECTOR")

POD = TableDef(
    _columns("NAME", "READY", "STATUS", "RESTARTS", "AGE", wide=("IP", "NODE", "NOMINATED NODE", "READINESS GATES")),
    _pod_row,
)
DEPLOYMENT = TableDef(
    _columns("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", wide=_TEMPLATE_COLUMNS), _deployment_row
)
REPLICASET = TableDef(_columns("NAME", "DESIRED", "CURRENT", "READY", "AGE", wide=_TEMPLATE_COLUMNS), _replicaset_row)
DAEMONSET = TableDef(
    _columns(
        "NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE", wide=_TEMPLATE_COLUMNS
    ),
    _daemonset_row,
)
SERVICE = TableDef(
    _columns("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", wide=("SELECTOR",)), _service_row
)
ENDPOINTS = TableDef(_columns("NAME", "ENDPOINTS", "AGE"), _named(format_endpoints))
NAMESPACE = TableDef(_columns("NAME", "STATUS", "AGE"), _named(lambda o: dig(o, "status", "phase", default="Active")))
SERVICEACCOUNT = TableDef(_columns("NAME", "SECRETS", "AGE"), _named(lambda o: str(len(o.get("secrets") or []))))
CONFIGMAP = TableDef(
    _columns("NAME", "DATA", "AGE"), _named(lambda o: str(len(o.get("data") or {}) + len(o.get("binaryData") or {})))
)
NODE = TableDef(
    _columns(
        "NAME",
        "STATUS",
        "ROLES",
        "AGE",
        "VERSION",
        wide=("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"),
    ),
    _node_row,
)
EVENT = TableDef(
    (
        Column("LAST SEEN"),
        Column("TYPE"),
        Column("REASON"),
        Column("OBJECT"),
        Column("SUBOBJECT", 1),
        Column("SOURCE", 1),
        Column("MESSAGE"),
        Column("FIRST SEEN", 1),
        Column("COUNT", 1),
        Column("NAME", 1),
    ),
    _event_row,
)
AUTHORIZATIONPOLICY = TableDef(_columns("NAME", "ACTION", "AGE"), _crd_row(_spec("action")))
PEERAUTHENTICATION = TableDef(_columns("NAME", "MODE", "AGE"), _crd_row(_spec("mtls", "mode")))
GATEWAY = TableDef(
    _columns("NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"),
    _crd_row(
        _spec("gatewayClassName"),
        lambda o: dig(o, "status", "addresses", 0, "value"),
        lambda o: condition_status(o, "Programmed"),
    ),
)
HTTPROUTE = TableDef(_columns("NAME", "HOSTNAMES", "AGE"), _crd_row(_spec("hostnames")))
VIRTUALSERVICE = TableDef(_columns("NAME", "GATEWAYS", "HOSTS", "AGE"), _crd_row(_spec("gateways"), _spec("hosts")))
DESTINATIONRULE = TableDef(_columns("NAME", "HOST", "AGE"), _crd_row(_spec("host")))
SERVICEENTRY = TableDef(
    _columns("NAME", "HOSTS", "LOCATION", "RESOLUTION", "AGE"),
    _crd_row(_spec("hosts"), _spec("location"), _spec("resolution")),
)
MUTATINGWEBHOOKCONFIGURATION = TableDef(
    _columns("NAME", "WEBHOOKS", "AGE"), _crd_row(lambda o: len(o.get("webhooks") or []))
)
GENERIC = TableDef(_columns("NAME", "AGE"), _generic_row)  # kinds without columns of their own


def to_table(table: TableDef, objects: Sequence[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """OBJECTS as a meta.k8s.io/v1 Table: every column (kubectl drops priority 1 unless wide)
    and a row per object with its cells and its metadata (PartialObjectMetadata)."""
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "Table",
        "columnDefinitions": [
            {"name": c.name, "type": "string", "format": "", "description": "", "priority": c.priority}
            for c in table.columns
        ],
        "rows": [
            {
                "cells": table.row(obj, now),
                "object": {
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadata",
                    "metadata": dig(obj, "metadata", default={}),
                },
            }
            for obj in objects
        ],
    }
