"""What a new lab starts with: nodes, system namespaces, the cluster DNS, the topology's manifests.

System add-ons are applied as ordinary manifests through the same API path users take.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from lab import addons
from lab.apiserver.errors import ApiError
from lab.client.contract import NODE_INDEX_LABEL
from lab.controllers.workloads import is_ready
from lab.topology import CONTROL_PLANE_TAINT

if TYPE_CHECKING:
    from lab.daemon.lab import Lab

log = logging.getLogger("labd.bootstrap")
MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "manifests")
KUBELET_VERSION = "v1.30.0-lab"


def admission_hooks() -> dict:
    """Validators the add-ons give the API (the mesh's policy checks: istiod's webhook)."""
    return {"extra_validators": addons.validators(), "extra_warners": addons.warners()}


def seed(lab: "Lab") -> None:
    t, store = lab.topo, lab.store
    for node in t.nodes:
        labels = {
            "kubernetes.io/hostname": node.name,
            "kubernetes.io/os": "linux",
            NODE_INDEX_LABEL: str(node.index),
            **dict(node.labels),
        }
        spec: dict = {"podCIDR": str(t.node_pod_cidr(node))}
        if node.role == "control-plane":
            labels["node-role.kubernetes.io/control-plane"] = ""
            spec["taints"] = [dict(CONTROL_PLANE_TAINT)]
        store.create(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node.name, "labels": labels},
                "spec": spec,
                "status": {
                    "addresses": [
                        {"type": "InternalIP", "address": str(t.node_ip(node))},
                        {"type": "Hostname", "address": node.name},
                    ],
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "nodeInfo": {"kubeletVersion": KUBELET_VERSION, "operatingSystem": "linux"},
                },
            }
        )
    for ns in ("default", "kube-system", "kube-public"):
        store.create(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
            }
        )
    store.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": str(t.kubernetes_service_ip()),
                "clusterIPs": [str(t.kubernetes_service_ip())],
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            },
        }
    )
    if "dns" in t.install:
        with open(os.path.join(MANIFESTS, "coredns.yaml")) as f:
            text = f.read().replace("__CLUSTER_DNS_IP__", str(t.cluster_dns_ip()))
        if not any(n.role == "control-plane" for n in t.nodes):
            text = text.replace('      nodeSelector:\n        node-role.kubernetes.io/control-plane: ""\n', "")
        lab.api.apply(text, "coredns.yaml")
    for name in t.install:
        if name not in addons.BUILTIN:
            lab.api.apply(addons.install_manifest(name), f"profile={name}")


SYSTEM_NAMESPACES = ("kube-system", "istio-system")


def system_ready(lab: "Lab") -> bool:
    """Every system Deployment and DaemonSet is fully ready."""
    for ns in SYSTEM_NAMESPACES:
        for d in lab.store.list("Deployment", ns):
            if d.get("status", {}).get("readyReplicas", 0) < d["spec"].get("replicas", 1):
                return False
        for ds in lab.store.list("DaemonSet", ns):
            st = ds.get("status", {})
            if not st.get("desiredNumberScheduled") or st.get("numberReady", 0) < st["desiredNumberScheduled"]:
                return False
        if not all(is_ready(p) for p in lab.store.list("Pod", ns)):
            return False
    return True


async def apply_topology_manifests(lab: "Lab") -> None:
    for path in lab.topo.manifests:
        try:
            with open(path) as f:
                lab.api.apply(f.read(), os.path.basename(path))
        except (OSError, ApiError) as e:
            log.error("topology manifest %s not applied: %s", path, e)
