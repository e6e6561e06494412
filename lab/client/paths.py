"""Where a lab keeps its files. Everything a lab writes lives under its own directory, except the
per-pod resolver files that `ip netns exec` needs under /etc/netns/<netns>/ (recorded in the
lab's journal and removed by name)."""

from __future__ import annotations

import os
import re

RUN_ROOT = os.environ.get("AMBIENT_LAB_RUN_ROOT", "/run/ambient-lab")
ETC_NETNS = "/etc/netns"

LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")


def lab_dir(name: str) -> str:
    return os.path.join(RUN_ROOT, name)


def api_socket_path(name: str) -> str:
    return os.path.join(lab_dir(name), "labd.sock")


def journal_path(name: str) -> str:
    return os.path.join(lab_dir(name), "journal.jsonl")


def kubeconfig_path(name: str) -> str:
    """The kubeconfig labd writes for its Kubernetes endpoint (`export KUBECONFIG=...`)."""
    return os.path.join(lab_dir(name), "kubeconfig")


def kube_api_port_path(name: str) -> str:
    """The port of labd's Kubernetes endpoint on 127.0.0.1 (chosen free at start), as text."""
    return os.path.join(lab_dir(name), "kube-api.port")


def pod_dir(name: str, namespace: str, pod: str, uid: str) -> str:
    return os.path.join(lab_dir(name), "pods", f"{namespace}_{pod}_{uid[:8]}")


def container_log_path(pod_directory: str, container: str, run: int) -> str:
    """The output of CONTAINER's RUN-th start (0 first) in its pod's directory: the kubelet writes
    it, `lab logs` (and `--previous`) reads it."""
    return os.path.join(pod_directory, f"{container}.{run}.log")


def netns_prefix(name: str) -> str:
    """Every network namespace of lab NAME is called `al-NAME-...`."""
    return f"al-{name}-"


def node_netns_name(lab: str, node: str) -> str:
    """A node's network namespace (its ztunnel's admin port listens on its 127.0.0.1)."""
    return f"{netns_prefix(lab)}node-{node}"


def cni_plugin_dir(name: str, node: str) -> str:
    """Node NODE's CNI plugin sockets (`*.sock`): the kubelet asks each one to ADD a new pod before
    its containers start (lab/runtime/cniplugins.py). Inside the lab's directory, so removed with it."""
    return os.path.join(lab_dir(name), "cni", node)
