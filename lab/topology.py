"""Topology files: what a lab is made of (nodes, address plan, what is installed at start).

Pure: `load(text, source)` parses and validates YAML into a `Topology`, and `Topology` derives every
address the lab uses, so the address plan lives in one place.

    name: default
    nodes:
      - {name: control-plane, role: control-plane}
      - {name: worker1}
    network: {nodeCIDR: 172.18.0.0/16, podCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/16}
    install: [dns]          # later: ambient (istioctl install --set profile=ambient)
    manifests: []           # files applied once the lab is ready (relative to the topology file)
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field

import yaml

from lab import addons
from lab.client.paths import LAB_NAME_RE

NODE_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,13}[a-z0-9])?$")  # fabric-side veth name ≤ 15
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


class TopologyError(ValueError):
    """The topology file is invalid; the message names the field."""


@dataclass(frozen=True)
class Node:
    name: str
    index: int
    role: str  # "control-plane" or "worker"
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: tuple[Node, ...]
    node_cidr: ipaddress.IPv4Network
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    install: tuple[str, ...] = ("dns",)
    manifests: tuple[str, ...] = field(default=())
    source: str = "<topology>"

    # The address plan (docs/internals.md "Network plan").
    def node_ip(self, node: Node) -> ipaddress.IPv4Address:
        return self.node_cidr.network_address + 10 + node.index

    def node_pod_cidr(self, node: Node) -> ipaddress.IPv4Network:
        return list(self.pod_cidr.subnets(new_prefix=24))[node.index]

    def pod_gateway(self, node: Node) -> ipaddress.IPv4Address:
        return self.node_pod_cidr(node).network_address + 1

    def cluster_dns_ip(self) -> ipaddress.IPv4Address:
        return self.service_cidr.network_address + 10

    def kubernetes_service_ip(self) -> ipaddress.IPv4Address:
        return self.service_cidr.network_address + 1

    def with_name(self, name: str) -> "Topology":
        check_lab_name(name, "name")
        return Topology(
            name,
            self.nodes,
            self.node_cidr,
            self.pod_cidr,
            self.service_cidr,
            self.install,
            self.manifests,
            self.source,
        )


def check_lab_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not LAB_NAME_RE.match(name):
        raise TopologyError(
            f"{where}: lab name {name!r} must be 1-12 lowercase letters or digits, starting with a letter"
        )
    return name


def _net(value: object, where: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError as e:
        raise TopologyError(f"{where}: invalid IPv4 CIDR {value!r} ({e})") from None


def load(text: str, source: str = "<topology>") -> Topology:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TopologyError(f"{source}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise TopologyError(f"{source}: a topology is a mapping with name and nodes")
    unknown = set(doc) - {"name", "nodes", "network", "install", "manifests"}
    if unknown:
        raise TopologyError(f"{source}: unknown field {sorted(unknown)[0]!r}")
    name = check_lab_name(doc.get("name", "default"), f"{source}: name")

    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise TopologyError(f"{source}: nodes: at least one node is required")
    nodes: list[Node] = []
    seen: set[str] = set()
    for i, n in enumerate(raw_nodes):
        where = f"{source}: nodes[{i}]"
        if isinstance(n, str):
            n = {"name": n}
        if not isinstance(n, dict):
            raise TopologyError(f"{where}: a node is a mapping with a name")
        nname = n.get("name")
        if not isinstance(nname, str) or not NODE_NAME_RE.match(nname):
            raise TopologyError(f"{where}.name: {nname!r} must be a DNS label of at most 15 characters")
        if nname in seen:
            raise TopologyError(f"{where}.name: duplicate node {nname!r}")
        seen.add(nname)
        role = n.get("role", "worker")
        if role not in ("worker", "control-plane"):
            raise TopologyError(f"{where}.role: {role!r} is not worker or control-plane")
        labels = n.get("labels") or {}
        if not isinstance(labels, dict):
            raise TopologyError(f"{where}.labels: must be a mapping")
        nodes.append(Node(nname, i, role, tuple(sorted((str(k), str(v)) for k, v in labels.items()))))
    if not any(n.role == "worker" for n in nodes):
        raise TopologyError(f"{source}: nodes: at least one worker node is required")

    net = doc.get("network") or {}
    if not isinstance(net, dict):
        raise TopologyError(f"{source}: network: must be a mapping")
    node_cidr = _net(net.get("nodeCIDR", "172.18.0.0/16"), f"{source}: network.nodeCIDR")
    pod_cidr = _net(net.get("podCIDR", "10.244.0.0/16"), f"{source}: network.podCIDR")
    service_cidr = _net(net.get("serviceCIDR", "10.96.0.0/16"), f"{source}: network.serviceCIDR")
    cidrs = {"nodeCIDR": node_cidr, "podCIDR": pod_cidr, "serviceCIDR": service_cidr}
    keys = list(cidrs)
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            if cidrs[keys[a]].overlaps(cidrs[keys[b]]):
                raise TopologyError(
                    f"{source}: network.{keys[a]} {cidrs[keys[a]]} overlaps network.{keys[b]} {cidrs[keys[b]]}"
                )
    if pod_cidr.prefixlen > 24 or 2 ** (24 - pod_cidr.prefixlen) < len(nodes):
        raise TopologyError(f"{source}: network.podCIDR {pod_cidr} has no /24 for each of {len(nodes)} nodes")
    if node_cidr.num_addresses < len(nodes) + 12:
        raise TopologyError(f"{source}: network.nodeCIDR {node_cidr} is too small for {len(nodes)} nodes")
    if service_cidr.num_addresses < 16:
        raise TopologyError(f"{source}: network.serviceCIDR {service_cidr} is too small")

    install = doc.get("install", ["dns"])
    known = addons.names()
    if not isinstance(install, list) or any(a not in known for a in install):
        raise TopologyError(f"{source}: install: {install!r}: known add-ons are {', '.join(known)}")
    manifests = doc.get("manifests") or []
    if not isinstance(manifests, list) or not all(isinstance(m, str) for m in manifests):
        raise TopologyError(f"{source}: manifests: must be a list of file names")
    base = os.path.dirname(os.path.abspath(source)) if os.path.exists(source) else os.getcwd()
    manifests = [m if os.path.isabs(m) else os.path.join(base, m) for m in manifests]
    return Topology(name, tuple(nodes), node_cidr, pod_cidr, service_cidr, tuple(install), tuple(manifests), source)


def load_file(path: str) -> Topology:
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise TopologyError(f"{path}: cannot read topology: {e.strerror}") from None
    return load(text, path)
