"""Where the mesh's processes meet on a node: per-node Unix sockets under the lab's directory.

In Istio these are host paths (/var/run/ztunnel/ztunnel.sock); here several nodes share one host
filesystem, so each node gets its own directory.
"""

from __future__ import annotations

import os

from lab.client.contract import ENV_LAB_NAME, ENV_NODE_NAME
from lab.client.paths import lab_dir


def node_dir(lab: str, node: str) -> str:
    return os.path.join(lab_dir(lab), "nodes", node)


def zds_socket_path(lab: str, node: str) -> str:
    """The istio-cni agent listens here; the node's ztunnel connects (ZDS)."""
    return os.path.join(node_dir(lab, node), "ztunnel.sock")


def from_env() -> tuple[str, str]:
    """(lab name, node name) of the process, from the env the lab's kubelet sets."""
    return os.environ[ENV_LAB_NAME], os.environ[ENV_NODE_NAME]
