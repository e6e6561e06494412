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


def cmd_top(args, client) -> int:
    what = args.resource
    if what not in POD_WORDS + NODE_WORDS:
        raise CliError(f'error: unknown command "{what}" for "lab top": use `lab top pod` or `lab top node`')
    if what in NODE_WORDS:
        data = client.call("top", namespace=None, interval=args.interval)
        nodes = [n for n in data["nodes"] if not args.name or n["name"] == args.name]
        if args.name and not nodes:
            raise CliError(f'Error from server (NotFound): nodes "{args.name}" not found')
        if args.output == "json":
            print(json.dumps(nodes, indent=2))
            return 0
        sys.stdout.write(printers.top_nodes(_sort(nodes, args.sort_by), headers=not args.no_headers))
        return 0
    namespace = ns(args)
    data = client.call("top", namespace=namespace, selector=args.selector, interval=args.interval)
    if data.get("cgroupVersion") is None:
        raise CliError("error: Metrics API not available (the machine has no usable cgroups)")
    pods = [p for p in data["pods"] if not args.name or p["name"] == args.name]
    if args.name and not pods:
        raise CliError(f'Error from server (NotFound): podmetrics.metrics.k8s.io "{namespace}/{args.name}" not found')
    if args.output == "json":
        print(json.dumps(pods, indent=2))
        return 0
    if not pods:
        print(printers.no_resources(namespace), file=sys.stderr)
        return 0
    sys.stdout.write(
        printers.top_pods(
            _sort(pods, args.sort_by),
            all_namespaces=namespace is None,
            containers=args.containers,
            headers=not args.no_headers,
        )
    )
    return 0
