"""What `lab get`, `lab describe` and `lab top` print, to the character, as kubectl does.

Everything here is a pure function of the objects and a `now` passed in, so the output can be
tested to the character. What a kind's table holds (columns, cells) is the API server's part, named
by the kind registry (lab/apiserver/kinds.py, lab/apiserver/tables.py); this package only lays it
out as kubectl does: picks the columns for `-o wide`, adds NAMESPACE for `-A`, aligns.
`formats` writes -o yaml/json/name, `describe` the describe layouts, `tabwriter` the alignment.
Printers return their text with a trailing newline; `age` and `no_resources` return one phrase.
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping, Sequence

from lab.apiserver import kinds, tables
from lab.apiserver.tables import NONE, UNKNOWN, age, dig, format_endpoints, format_labels, human_duration, parse_time
from lab.cli.printers.describe import describe
from lab.cli.printers.formats import names, resource_name, to_json, to_yaml
from lab.cli.printers.tabwriter import cell, tabwrite

__all__ = [
    "NONE",
    "UNKNOWN",
    "age",
    "describe",
    "format_endpoints",
    "format_labels",
    "human_duration",
    "names",
    "no_resources",
    "parse_time",
    "resource_name",
    "table",
    "to_json",
    "to_yaml",
    "top_nodes",
    "top_pods",
]


def table(
    kind: str, objects: Sequence[Mapping], *, wide: bool = False, all_namespaces: bool = False, now: datetime
) -> str:
    """`kubectl get KIND` for OBJECTS (all of KIND); empty string for no objects, print
    `no_resources()` then. With all_namespaces, namespaced kinds get a NAMESPACE column."""
    if not objects:
        return ""
    known = kinds.find(kind)
    result = tables.to_table(known.table if known else tables.GENERIC, objects, now)
    shown = [i for i, column in enumerate(result["columnDefinitions"]) if wide or column["priority"] == 0]
    headers = [result["columnDefinitions"][i]["name"] for i in shown]
    rows = [[cell(row["cells"][i]) for i in shown] for row in result["rows"]]
    if all_namespaces and (known is None or known.namespaced):
        headers.insert(0, "NAMESPACE")
        for cells, row in zip(rows, result["rows"]):
            cells.insert(0, dig(row["object"], "metadata", "namespace", default=""))
    return tabwrite([headers, *rows], minwidth=6, padding=3)


def no_resources(namespace: str | None) -> str:
    """kubectl's message for an empty listing; None for all namespaces or cluster-scoped kinds."""
    if namespace is None:
        return "No resources found"
    return f"No resources found in {namespace} namespace."


# --- kubectl top ------------------------------------------------------------------------------


def _top_cpu(millicores: float) -> str:
    return f"{int(round(millicores))}m"


def _top_memory(nbytes: float) -> str:
    return f"{int(nbytes) // (1024 * 1024)}Mi"


def top_pods(
    pods: Sequence[Mapping], *, all_namespaces: bool = False, containers: bool = False, headers: bool = True
) -> str:
    """`kubectl top pod`: NAME CPU(cores) MEMORY(bytes) from the `top` op's pods (NAMESPACE first
    with all_namespaces; POD NAME ... per container with containers)."""
    head = (["POD", "NAME"] if containers else ["NAME"]) + ["CPU(cores)", "MEMORY(bytes)"]
    if all_namespaces:
        head.insert(0, "NAMESPACE")
    rows = []
    for pod in pods:
        entries = (pod.get("containers") or []) if containers else [pod]
        for entry in entries:
            row = [pod.get("name", ""), entry.get("name", "")] if containers else [pod.get("name", "")]
            row += [_top_cpu(entry.get("cpu", 0)), _top_memory(entry.get("memory", 0))]
            if all_namespaces:
                row.insert(0, pod.get("namespace", ""))
            rows.append(row)
    return tabwrite(([head] if headers else []) + rows, minwidth=6, padding=3) if rows or headers else ""


def top_nodes(nodes: Sequence[Mapping], *, headers: bool = True) -> str:
    """`kubectl top node`: NAME CPU(cores) CPU% MEMORY(bytes) MEMORY% (a node: the sum of its pods)."""
    rows = [
        [
            n.get("name", ""),
            _top_cpu(n.get("cpu", 0)),
            f"{int(n.get('cpuPercent', 0))}%",
            _top_memory(n.get("memory", 0)),
            f"{int(n.get('memoryPercent', 0))}%",
        ]
        for n in nodes
    ]
    head = ["NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
    return tabwrite(([head] if headers else []) + rows, minwidth=6, padding=3)
