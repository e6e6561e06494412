"""Lab verbs: `up`, `down`, `status`, and the lab user's tools `capture` and `graph`."""

from __future__ import annotations

import json
import os
import re
import sys
import time

from lab.cli.common import CliError, columns
from lab.client.contract import NETNS_ANNOTATION
from lab.client.paths import kubeconfig_path

DEFAULT_TOPOLOGY = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "topologies", "default.yaml"
)


def cmd_up(args, client) -> int:
    from lab.cli import launcher

    topo = args.topology or DEFAULT_TOPOLOGY
    t0 = time.monotonic()
    try:
        st = launcher.up(topo, args.name, progress=lambda p: print(f"  {p} ...", file=sys.stderr, flush=True))
    except launcher.LaunchError as e:
        raise CliError(f"error: {e}")
    print(
        f'lab "{st["name"]}" is ready in {time.monotonic() - t0:.1f}s: {len(st["nodes"])} nodes, '
        f'{st["ready_pods"]} system pods ready'
    )
    print(f"  use it: lab get pods -A{'' if st['name'] == 'default' else ' --lab ' + st['name']}")
    print(f"  or with kubectl: export KUBECONFIG={kubeconfig_path(st['name'])}")
    return 0


def cmd_kubeconfig(args, client) -> int:
    """The kubeconfig of the lab's Kubernetes endpoint (labd writes it at start), or its path."""
    path = kubeconfig_path(args.lab)
    if args.path:
        print(path)
        return 0
    try:
        with open(path) as f:
            sys.stdout.write(f.read())
    except FileNotFoundError:
        raise CliError(f'error: lab "{args.lab}" has no kubeconfig ({path}): is it running? (lab up)')
    return 0


def cmd_down(args, client) -> int:
    from lab.cli import launcher

    name = args.name or args.lab
    t0 = time.monotonic()
    try:
        removed = launcher.down(name, progress=lambda p: print(f"  {p}", file=sys.stderr))
    except launcher.LaunchError as e:
        raise CliError(f"error: {e}")
    what = "stopped" if removed["graceful"] else ("killed" if removed["killed"] else "was not running")
    leftovers = ""
    if removed["netns"] or removed["dirs"]:
        leftovers = (
            f'; removed {len(removed["netns"])} leftover namespaces and '
            f'{len(removed["dirs"])} leftover directories it had recorded'
        )
    print(f'lab "{name}" {what}{leftovers} ({time.monotonic() - t0:.1f}s)')
    return 0


def cmd_status(args, client) -> int:
    st = client.call("status")
    if args.output == "json":
        print(json.dumps(st, indent=2))
        return 0
    print(
        f'lab {st["name"]}: {st["phase"]}, labd pid {st["pid"]}, up {st["uptime"]:.0f}s, '
        f'{st["pods"]} pods ({st["ready_pods"]} ready), {st["services"]} services'
    )
    rows = [["NODE", "ROLE", "IP", "POD CIDR", "PODS", "NETNS"]]
    for n in st["nodes"]:
        rows.append([n["name"], n["role"], n["ip"], n["podCIDR"], str(n["pods"]), n["netns"]])
    print(columns(rows))
    return 0


def cmd_capture(args, client) -> int:
    """tcpdump on a pod's eth0 (or a node's, with node/NAME): the wire as the kernel sees it."""
    if args.target.startswith(("node/", "no/")):
        node = args.target.split("/", 1)[1]
        netns = f"al-{args.lab}-node-{node}"
        client.call("get", kind="Node", name=node, namespace=None)
    else:
        pod = client.call("get", kind="Pod", name=args.target, namespace=args.namespace)
        netns = pod["metadata"].get("annotations", {}).get(NETNS_ANNOTATION)
        if not netns:
            raise CliError(f"error: pod {args.target} has no network namespace yet")
    argv = ["ip", "netns", "exec", netns, "tcpdump", "-U", "-n", "-i", args.interface]
    if args.write:
        argv += ["-w", args.write]
    if args.count:
        argv += ["-c", str(args.count)]
    argv += args.filter
    sys.stdout.flush()
    os.execvp("ip", argv)
    return 126  # not reached


def cmd_graph(args, client) -> int:
    """The lab as a Mermaid graph (renders on GitHub): nodes, their pods, Services."""
    st = client.call("status")
    pods = client.call("get", kind="Pod", namespace=None)["items"]
    lines = ["graph LR", '  fabric(("fabric br0"))']
    for n in st["nodes"]:
        nid = "n_" + re.sub(r"\W", "_", n["name"])
        lines.append(f'  {nid}["{n["name"]}<br/>{n["ip"]}<br/>{n["podCIDR"]}"] --- fabric')
        for p in pods:
            if p["spec"].get("nodeName") != n["name"] or p["spec"].get("hostNetwork"):
                continue
            pid = "p_" + re.sub(r"\W", "_", p["metadata"]["namespace"] + "_" + p["metadata"]["name"])
            ip = p.get("status", {}).get("podIP", "")
            lines.append(f'  {pid}("{p["metadata"]["namespace"]}/{p["metadata"]["name"]}<br/>{ip}") --- {nid}')
    print("\n".join(lines))
    return 0
