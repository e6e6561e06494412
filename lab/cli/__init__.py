"""`lab`: the kubectl-shaped command line of ambient-lab.

Lab verbs (`up`, `down`, `status`) manage labs; the kubectl verbs talk to a running lab's API.
The lab is chosen with `--lab NAME` (or `AMBIENT_LAB`), default `default`. Errors print one line
and exit 1, as kubectl does.
"""

from __future__ import annotations

import argparse
import os
import sys

from lab import addons
from lab.apiserver import kinds
from lab.cli.common import CliError
from lab.cli.kube import cmd_kubectl, split_argv
from lab.cli.kubectl import (
    cmd_apply,
    cmd_create,
    cmd_delete,
    cmd_describe,
    cmd_events,
    cmd_exec,
    cmd_get,
    cmd_label,
    cmd_logs,
    cmd_rollout,
    cmd_scale,
    cmd_wait,
)
from lab.cli.lifecycle import cmd_capture, cmd_down, cmd_graph, cmd_kubeconfig, cmd_status, cmd_up
from lab.cli.load import cmd_load
from lab.cli.top import cmd_top
from lab.client import LabClient, LabError
from lab.client.contract import ENV_LAB


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Verb lists with room for `ztunnel-config (zc)` on one line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=36, width=110)


def _sub(sub, name: str, help: str, **kw):
    return sub.add_parser(
        name, help=help, description=help[0].upper() + help[1:] + ".", formatter_class=_Formatter, **kw
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lab",
        description="ambient-lab: an Istio ambient mesh lab in network namespaces",
        formatter_class=_Formatter,
        epilog="`lab VERB --help` describes a verb. The lab is chosen with --lab NAME or "
        "AMBIENT_LAB (default: default).",
    )
    p.add_argument("--lab", default=os.environ.get(ENV_LAB, "default"), help="which lab to talk to")
    sub = p.add_subparsers(dest="verb", metavar="VERB", title="verbs")

    def ns_flags(sp, all_ns=True):
        sp.add_argument("-n", "--namespace", default=None)
        if all_ns:
            sp.add_argument("-A", "--all-namespaces", action="store_true")

    def list_flags(sp):  # `get` and `events`: which objects, and whether to keep watching them
        sp.add_argument("-l", "--selector")
        sp.add_argument("-w", "--watch", action="store_true")
        ns_flags(sp)

    sp = _sub(sub, "up", "start a lab and wait until it is ready")
    sp.add_argument("topology", nargs="?")
    sp.add_argument("--name")
    sp.set_defaults(fn=cmd_up, needs_lab=False)
    sp = _sub(sub, "down", "tear a lab down (also after a crash)")
    sp.add_argument("--name")
    sp.set_defaults(fn=cmd_down, needs_lab=False)
    sp = _sub(sub, "status", "the lab's nodes and state")
    sp.add_argument("-o", "--output")
    sp.set_defaults(fn=cmd_status)
    sp = _sub(sub, "kubeconfig", "print the kubeconfig for kubectl and Kubernetes clients (--path: its file)")
    sp.add_argument("--path", action="store_true", help="print the file's path (export KUBECONFIG=$(...))")
    sp.set_defaults(fn=cmd_kubeconfig, needs_lab=False)
    sp = _sub(sub, "kubectl", "run the venv's kubectl against the lab: lab kubectl ARGS... (passed on as they are)")
    sp.add_argument("kubectl_args", nargs=argparse.REMAINDER, metavar="ARGS")
    sp.set_defaults(fn=cmd_kubectl)

    sp = _sub(sub, "apply", "apply Kubernetes/Istio YAML (all-or-nothing)")
    sp.add_argument("-f", "--filename", action="append", default=[])
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_apply)
    sp = _sub(sub, "delete", "delete objects by file, by kind and name, or by label selector")
    sp.add_argument("args", nargs="*")
    sp.add_argument("-f", "--filename", action="append", default=[])
    sp.add_argument("-l", "--selector")
    sp.add_argument("--all", action="store_true")
    sp.add_argument("--ignore-not-found", action="store_true")
    sp.add_argument("--wait", default=True, type=lambda s: s.lower() != "false")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_delete)
    sp = _sub(sub, "create", "create a namespace (create ns NAME) or objects from files (-f)")
    sp.add_argument("what")
    sp.add_argument("name", nargs="?")
    sp.add_argument("-f", "--filename", action="append", default=[])
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_create)
    for verb, field, what in (
        ("label", "labels", "set or remove (key-) labels of an object"),
        ("annotate", "annotations", "set or remove (key-) annotations of an object"),
    ):
        sp = _sub(sub, verb, what)
        sp.add_argument("args", nargs="+")
        sp.add_argument("--overwrite", action="store_true")
        ns_flags(sp, False)
        sp.set_defaults(fn=(lambda f: lambda a, c: cmd_label(a, c, f))(field))
    sp = _sub(sub, "get", "list objects as kubectl's tables, or -o wide|yaml|json|name|jsonpath=...")
    sp.add_argument("args", nargs="*")
    sp.add_argument("-o", "--output")
    list_flags(sp)
    sp.set_defaults(fn=cmd_get)
    sp = _sub(sub, "describe", "show an object in detail, with its events")
    sp.add_argument("args", nargs="+")
    sp.add_argument("-l", "--selector")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_describe)
    sp = _sub(sub, "exec", "run a command in a pod's container: exec POD [-c C] -- CMD")
    sp.add_argument("-i", "--stdin", action="store_true")
    sp.add_argument("-t", "--tty", action="store_true")
    sp.add_argument("-c", "--container")
    ns_flags(sp, False)
    sp.add_argument("pod")
    sp.add_argument("command", nargs="*")
    sp.set_defaults(fn=cmd_exec)
    sp = _sub(sub, "logs", "a container's log (POD, deploy/NAME, ds/NAME or -l SELECTOR; -f follows)")
    sp.add_argument("target", nargs="?")
    sp.add_argument("-c", "--container")
    sp.add_argument("-l", "--selector")
    sp.add_argument("-f", "--follow", action="store_true")
    sp.add_argument("-p", "--previous", action="store_true")
    sp.add_argument("--tail", type=int)
    sp.add_argument("--prefix", action="store_true")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_logs)
    sp = _sub(sub, "scale", "set the replicas of a Deployment or ReplicaSet")
    sp.add_argument("args", nargs="+")
    sp.add_argument("--replicas", type=int)
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_scale)
    sp = _sub(sub, "rollout", "restart a Deployment/DaemonSet, or wait for its rollout (status)")
    sp.add_argument("action", choices=["restart", "status"])
    sp.add_argument("args", nargs="+")
    sp.add_argument("--timeout", default="120s")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_rollout)
    sp = _sub(sub, "wait", "wait for a condition (--for=condition=Ready) or deletion (--for=delete)")
    sp.add_argument("args", nargs="*")
    sp.add_argument("--for", dest="for_")
    sp.add_argument("-l", "--selector")
    sp.add_argument("--timeout", default="30s")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_wait)
    sp = _sub(sub, "events", "list events, as `get events`")
    list_flags(sp)
    sp.set_defaults(fn=cmd_events)

    sp = _sub(sub, "top", "CPU and memory of pods or nodes, from the lab's cgroups: top pod|node [NAME]")
    sp.add_argument("resource", metavar="pod|node")
    sp.add_argument("name", nargs="?")
    sp.add_argument("-l", "--selector")
    sp.add_argument("--containers", action="store_true", help="pods: a line per container")
    sp.add_argument("--sort-by", choices=["cpu", "memory"])
    sp.add_argument("--no-headers", action="store_true")
    sp.add_argument("--interval", type=float, default=0.5, help="CPU sampling interval in seconds (default 0.5)")
    sp.add_argument("-o", "--output", choices=["json"], help="json: the figures as labd reports them")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_top)

    sp = _sub(sub, "capture", "tcpdump in a pod's (or node/NAME's) network namespace")
    sp.add_argument("target")
    sp.add_argument("-i", "--interface", default="eth0")
    sp.add_argument("-w", "--write")
    sp.add_argument("-c", "--count", type=int, help="stop after this many packets")
    sp.add_argument("filter", nargs="*")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_capture)
    sp = _sub(sub, "graph", "the lab as a Mermaid graph")
    sp.set_defaults(fn=cmd_graph)
    addons.add_cli_verbs(sub, _sub)
    sp = _sub(sub, "load", "HTTP load at a fixed rate from inside a pod: --from POD URL --qps Q --duration D")
    sp.add_argument("url", metavar="URL", help="http:// URL; its host must be a lab address (pod or Service)")
    sp.add_argument(
        "--from",
        dest="from_",
        required=True,
        metavar="POD",
        help="the client pod (or deploy/NAME); the load runs in its network namespace as its user",
    )
    sp.add_argument("-c", "--container", help="the client pod's container (default: its default container)")
    sp.add_argument(
        "--qps",
        type=float,
        required=True,
        help="requests per second, scheduled open-loop (0: as fast as the connections go)",
    )
    sp.add_argument("--duration", required=True, help="how long, e.g. 10s, 500ms, 1m (at most 10m)")
    sp.add_argument("--connections", type=int, default=4, help="keep-alive connections (default: 4)")
    sp.add_argument("--timeout", default="2s", help="per request (default: 2s)")
    sp.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help="a request header (repeatable)"
    )
    sp.add_argument("-X", "--method", default="GET", help="the HTTP method (default: GET)")
    sp.add_argument("-o", "--output", help="json: the full report (default: a short table)")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_load)
    return p


def verbs(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """{verb: one-line help (None if none)} of a parser's subcommands, aliases folded into their verb."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help for choice in action._choices_actions}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `kubectl ARGS...`: ARGS go to kubectl untouched (`--`, its flags, `exec ... -- CMD`).
    kubectl = split_argv(argv)
    if kubectl is not None:
        argv, kubectl_args = kubectl
    # `exec POD [flags] -- CMD...`: everything after `--` is the command, flags included.
    # `capture POD [flags] -- FILTER...` likewise passes the tcpdump filter through.
    rest = None
    for verb in ("exec", "capture"):
        if kubectl is None and verb in argv and "--" in argv[argv.index(verb) :]:
            cut = argv.index("--", argv.index(verb))
            argv, rest = argv[:cut], argv[cut + 1 :]
            break
    args = parser.parse_args(argv)
    if kubectl is not None:
        args.kubectl_args = kubectl_args
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
