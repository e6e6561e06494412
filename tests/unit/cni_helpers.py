"""What the istio-cni tests share: the node they run on and the pods they hand the agent."""

from __future__ import annotations

from typing import Any

NODE = "worker1"
AMBIENT = {"istio.io/dataplane-mode": "ambient"}


def pod(
    name: str = "web",
    ns: str = "demo",
    *,
    node: str = NODE,
    labels: dict | None = None,
    annotations: dict | None = None,
    host_network: bool = False,
    ip: str | None = "10.244.1.5",
    phase: str = "Running",
    sa: str | None = "web-sa",
) -> dict[str, Any]:
    """A pod scheduled on a node (this one by default), with its netns named as the lab names it."""
    netns = {"lab.ambient/netns": f"al-x-pod-{ns}-{name}"}
    spec: dict[str, Any] = {"nodeName": node, "hostNetwork": host_network}
    if sa:
        spec["serviceAccountName"] = sa
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{ns}-{name}",
            "labels": labels or {},
            "annotations": {**netns, **(annotations or {})},
        },
        "spec": spec,
        "status": {"phase": phase, **({"podIP": ip} if ip else {})},
    }
