"""`lab kubectl ARGS...`: real kubectl (the venv's pinned one) against a lab's Kubernetes endpoint.

The arguments go to kubectl as they are (flags, `--`, a command after it); kubectl gets the
terminal, stdin and signals, since this process becomes it (exec), so its exit code is the
verb's. KUBECONFIG is the lab's (labd writes it at start) and the discovery cache is the lab's
own (`kubectl-cache` in the lab's directory, removed with the lab): a lab that serves other kinds
after a restart is never seen through another lab's cached discovery. A `--kubeconfig` or
`--cache-dir` among the arguments wins, as kubectl takes the last of a repeated flag.
"""

from __future__ import annotations

import os
import sys

from lab.cli.common import CliError
from lab.client.paths import kubeconfig_path, lab_dir
from lab.cluster import kubectl_binary

VERB = "kubectl"


def cache_dir(lab: str) -> str:
    return os.path.join(lab_dir(lab), "kubectl-cache")


def command(lab: str, args: list[str], environ: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, env) that run kubectl ARGS against lab LAB."""
    env = dict(os.environ if environ is None else environ)
    env["KUBECONFIG"] = kubeconfig_path(lab)
    return [kubectl_binary(), "--cache-dir", cache_dir(lab), *args], env


def split_argv(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """`lab [--lab N] kubectl ARGS...` -> (the `lab` part up to `kubectl`, ARGS verbatim), else None.

    Done before argparse sees ARGS, which would otherwise eat `--` and kubectl's own flags."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--lab":
            i += 2
            continue
        if word.startswith("--lab="):
            i += 1
            continue
        if word.startswith("-"):
            return None  # -h and the like: argparse's business
        return (argv[: i + 1], argv[i + 1 :]) if word == VERB else None
    return None


def cmd_kubectl(args, client) -> int:
    path = kubeconfig_path(args.lab)
    if not os.path.exists(path):
        raise CliError(f'error: lab "{args.lab}" has no kubeconfig ({path}): is it running? (lab up)')
    try:
        argv, env = command(args.lab, list(args.kubectl_args))
    except FileNotFoundError as e:
        raise CliError(f"error: {e}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(argv[0], argv, env)
    except OSError as e:
        raise CliError(f"error: cannot run {argv[0]}: {e.strerror or e}")
    return 126  # not reached
