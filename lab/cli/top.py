"""`lab top pod` and `lab top node`, as `kubectl top`: CPU and memory from the lab's cgroups.

The figures come from labd's `top` op (CPU sampled twice over --interval, memory the working set);
a node's figures are the sums of its pods', its percentages of the machine's cores and MemTotal.
"""

from __future__ import annotations

import json
import sys

from lab.cli import printers
from lab.cli.common import CliError, ns

POD_WORDS = ("pod", "pods", "po")
NODE_WORDS = ("node", "nodes", "no")


def _sort(entries: list[dict], by: str | None) -> list[dict]:
    if not by:
        return entries
    if by not in ("cpu", "memory"):
        raise CliError(f'error: --sort-by accepts only cpu or memory, not "{by}"')
    return sorted(entries, key=lambda e: e.get(by, 0), reverse=True)


def _named(entries: list[dict], name: str | None, what: str) -> list[dict]:
    """The entries called NAME (all of them without a NAME); NotFound for WHAT when none is."""
    found = [e for e in entries if not name or e["name"] == name]
    if name and not found:
        raise CliError(f"Error from server (NotFound): {what} not found")
    return found


def cmd_top(args, client) -> int:
    what = args.resource
    if what not in POD_WORDS + NODE_WORDS:
        raise CliError(f'error: unknown command "{what}" for "lab top": use `lab top pod` or `lab top node`')
    if what in NODE_WORDS:
        namespace = None
        data = client.call("top", namespace=None, interval=args.interval)
        entries = _named(data["nodes"], args.name, f'nodes "{args.name}"')
    else:
        namespace = ns(args)
        data = client.call("top", namespace=namespace, selector=args.selector, interval=args.interval)
        if data.get("cgroupVersion") is None:
            raise CliError("error: Metrics API not available (the machine has no usable cgroups)")
        entries = _named(data["pods"], args.name, f'podmetrics.metrics.k8s.io "{namespace}/{args.name}"')
    if args.output == "json":
        print(json.dumps(entries, indent=2))
    elif what in NODE_WORDS:
        sys.stdout.write(printers.top_nodes(_sort(entries, args.sort_by), headers=not args.no_headers))
    elif not entries:
        print(printers.no_resources(namespace), file=sys.stderr)
    else:
        sys.stdout.write(
            printers.top_pods(
                _sort(entries, args.sort_by),
                all_namespaces=namespace is None,
                containers=args.containers,
                headers=not args.no_headers,
            )
        )
    return 0
