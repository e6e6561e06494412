"""`lab`: the kubectl-shaped command line of ambient-lab.

Lab verbs (`up`, `down`, `status`) manage labs; the kubectl verbs talk to a running lab's API.
The lab is chosen with `--lab NAME` (or `AMBIENT_LAB`), default `default`. Errors print one line
and exit 1, as kubectl does.
"""
from __future__ import annotations

import argparse
import os
import sys

from lab import kinds
from lab.cli.common import CliError
from lab.cli.istioctl import cmd_istioctl
from lab.cli.kubectl import (cmd_apply, cmd_create, cmd_delete, cmd_describe, cmd_events, cmd_exec, cmd_get,
                             cmd_label, cmd_logs, cmd_rollout, cmd_scale, cmd_wait)
from lab.cli.lifecycle import cmd_capture, cmd_down, cmd_graph, cmd_status, cmd_up
from lab.client import LabClient, LabError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lab", description="ambient-lab: an Istio ambient mesh lab in network namespaces")
    p.add_argument("--lab", default=os.environ.get("AMBIENT_LAB", "default"), help="which lab to talk to")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    def ns_flags(sp, all_ns=True):
        sp.add_argument("-n", "--namespace", default=None)
        if all_ns:
            sp.add_argument("-A", "--all-namespaces", action="store_true")

    sp = sub.add_parser("up", help="start a lab and wait until it is ready")
    sp.add_argument("topology", nargs="?")
    sp.add_argument("--name")
    sp.set_defaults(fn=cmd_up, needs_lab=False)
    sp = sub.add_parser("down", help="tear a lab down (also after a crash)")
    sp.add_argument("--name")
    sp.set_defaults(fn=cmd_down, needs_lab=False)
    sp = sub.add_parser("status", help="the lab's nodes and state")
    sp.add_argument("-o", "--output")
    sp.set_defaults(fn=cmd_status)

    sp = sub.add_parser("apply", help="apply Kubernetes/Istio YAML (all-or-nothing)")
    sp.add_argument("-f", "--filename", action="append", default=[])
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_apply)
    sp = sub.add_parser("delete")
    sp.add_argument("args", nargs="*")
    sp.add_argument("-f", "--filename", action="append", default=[])
    sp.add_argument("-l", "--selector")
    sp.add_argument("--all", action="store_true")
    sp.add_argument("--ignore-not-found", action="store_true")
    sp.add_argument("--wait", default=True, type=lambda s: s.lower() != "false")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_delete)
    sp = sub.add_parser("create")
    sp.add_argument("what")
    sp.add_argument("name", nargs="?")
    sp.add_argument("-f", "--filename", action="append", default=[])
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_create)
    for verb, field in (("label", "labels"), ("annotate", "annotations")):
        sp = sub.add_parser(verb)
        sp.add_argument("args", nargs="+")
        sp.add_argument("--overwrite", action="store_true")
        ns_flags(sp, False)
        sp.set_defaults(fn=(lambda f: lambda a, c: cmd_label(a, c, f))(field))
    sp = sub.add_parser("get")
    sp.add_argument("args", nargs="*")
    sp.add_argument("-l", "--selector")
    sp.add_argument("-o", "--output")
    sp.add_argument("-w", "--watch", action="store_true")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_get)
    sp = sub.add_parser("describe")
    sp.add_argument("args", nargs="+")
    sp.add_argument("-l", "--selector")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_describe)
    sp = sub.add_parser("exec")
    sp.add_argument("-i", "--stdin", action="store_true")
    sp.add_argument("-t", "--tty", action="store_true")
    sp.add_argument("-c", "--container")
    ns_flags(sp, False)
    sp.add_argument("pod")
    sp.add_argument("command", nargs="*")
    sp.set_defaults(fn=cmd_exec)
    sp = sub.add_parser("logs")
    sp.add_argument("target", nargs="?")
    sp.add_argument("-c", "--container")
    sp.add_argument("-l", "--selector")
    sp.add_argument("-f", "--follow", action="store_true")
    sp.add_argument("-p", "--previous", action="store_true")
    sp.add_argument("--tail", type=int)
    sp.add_argument("--prefix", action="store_true")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_logs)
    sp = sub.add_parser("scale")
    sp.add_argument("args", nargs="+")
    sp.add_argument("--replicas", type=int)
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_scale)
    sp = sub.add_parser("rollout")
    sp.add_argument("action", choices=["restart", "status"])
    sp.add_argument("args", nargs="+")
    sp.add_argument("--timeout", default="120s")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_rollout)
    sp = sub.add_parser("wait")
    sp.add_argument("args", nargs="*")
    sp.add_argument("--for", dest="for_")
    sp.add_argument("-l", "--selector")
    sp.add_argument("--timeout", default="30s")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_wait)
    sp = sub.add_parser("istioctl", help="istioctl verbs: install, ztunnel-config, x describe, waypoint")
    isub = sp.add_subparsers(dest="istio_verb", metavar="COMMAND")
    ip = isub.add_parser("install", help="install the ambient profile")
    ip.add_argument("--set", action="append")
    ip.add_argument("-y", "--skip-confirmation", dest="yes", action="store_true")
    for verb in ("ztunnel-config", "zc"):
        zp = isub.add_parser(verb, help="what a ztunnel knows: workloads, services, policies, certificates, connections")
        zp.add_argument("view")
        zp.add_argument("pod", nargs="?", help="a ztunnel pod (default: the first)")
        zp.add_argument("--node", help="the ztunnel of this node")
        zp.add_argument("-o", "--output")
        zp.add_argument("-n", "--namespace", dest="namespace_filter", help="only this namespace")
        zp.add_argument("-A", "--all-namespaces", action="store_true")
    sp.set_defaults(fn=cmd_istioctl)

    sp = sub.add_parser("capture", help="tcpdump in a pod's (or node/NAME's) network namespace")
    sp.add_argument("target")
    sp.add_argument("-i", "--interface", default="eth0")
    sp.add_argument("-w", "--write")
    sp.add_argument("-c", "--count", type=int, help="stop after this many packets")
    sp.add_argument("filter", nargs="*")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_capture)
    sp = sub.add_parser("graph", help="the lab as a Mermaid graph")
    sp.set_defaults(fn=cmd_graph)

    sp = sub.add_parser("events")
    sp.add_argument("-l", "--selector")
    sp.add_argument("-w", "--watch", action="store_true")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_events)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `exec POD [flags] -- CMD...`: everything after `--` is the command, flags included.
    # `capture POD [flags] -- FILTER...` likewise passes the tcpdump filter through.
    rest = None
    for verb in ("exec", "capture"):
        if verb in argv and "--" in argv[argv.index(verb):]:
            cut = argv.index("--", argv.index(verb))
            argv, rest = argv[:cut], argv[cut + 1:]
            break
    args = parser.parse_args(argv)
    if rest is not None:
        if args.verb == "exec":
            args.command = list(args.command) + rest
        else:
            args.filter = list(args.filter) + rest
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    if hasattr(args, "namespace"):
        args.namespace_set = args.namespace is not None
        if args.namespace is None:
            args.namespace = "default"
    try:
        client = LabClient(args.lab)
        code = args.fn(args, client)
    except CliError as e:
        print(str(e), file=sys.stderr)
        return 1
    except LabError as e:
        msg = str(e)
        print(msg if msg.startswith(("error", "Error")) else f"error: {msg}", file=sys.stderr)
        return 1
    except (kinds.UnknownKind, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (TimeoutError, ConnectionError) as e:
        print(f"error: the lab API did not answer: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return code or 0
