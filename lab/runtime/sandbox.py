"""Pod sandboxes: the network namespace, veth, address and resolver files of one pod.

The kubelet + CNI plugin part of the lab. Synchronous (labd runs these in worker threads). Every
namespace and directory is written to the journal before it is made, so teardown after a crash
finds it by name.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass

from lab.client import netns
from lab.client.paths import ETC_NETNS, netns_prefix
from lab.runtime import network
from lab.runtime.journal import Journal


@dataclass(frozen=True)
class Sandbox:
    netns: str
    ip: str
    host_ifname: str | None  # None for hostNetwork pods (they use the node's namespace)


def pod_netns_name(lab: str, namespace: str, pod: str, uid: str) -> str:
    """`al-<lab>-pod-<namespace>_<pod>`: `_` cannot occur in Kubernetes names, so two pods never
    share a name; very long names are cut and made unique with the pod's uid."""
    name = f"{netns_prefix(lab)}pod-{namespace}_{pod}"
    if len(name) > 200:
        name = f"{name[:180]}-{uid.replace('-', '')[:12]}"
    return name


def fabric_netns_name(lab: str) -> str:
    return f"{netns_prefix(lab)}fabric"


def host_ifname(pod_uid: str) -> str:
    return "v" + pod_uid.replace("-", "")[:12]


def resolv_conf(namespace: str, dns_ip: str) -> str:
    search = (
        f"{namespace}.svc.cluster.local svc.cluster.local cluster.local"
        if namespace
        else "svc.cluster.local cluster.local"
    )
    return f"search {search}\nnameserver {dns_ip}\noptions ndots:5\n"


def hosts_file(ip: str | None, hostname: str) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if ip:
        lines.append(f"{ip}\t{hostname}")
    return "\n".join(lines) + "\n"


def write_resolver_files(journal: Journal, ns_name: str, resolv: str, hosts: str) -> None:
    d = os.path.join(ETC_NETNS, ns_name)
    journal.added("dir", d)
    os.makedirs(d, exist_ok=True)
    for fname, text in (("resolv.conf", resolv), ("hosts", hosts)):
        tmp = os.path.join(d, f".{fname}.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(d, fname))


def remove_dir(journal: Journal, path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    journal.removed("dir", path)


def create_pod_sandbox(
    journal: Journal,
    lab: str,
    node_ns: str,
    namespace: str,
    pod: str,
    uid: str,
    ip: ipaddress.IPv4Address,
    gateway: ipaddress.IPv4Address,
    dns_ip: str,
) -> Sandbox:
    ns_name = pod_netns_name(lab, namespace, pod, uid)
    ifname = host_ifname(uid)
    journal.added("netns", ns_name)
    netns.create(ns_name)  # refuses an existing name: never clean up what we did not make
    try:
        network.add_pod(node_ns, ns_name, ifname, str(ip), str(gateway), owner=f"{lab}:{uid}")
        write_resolver_files(journal, ns_name, resolv_conf(namespace, dns_ip), hosts_file(str(ip), pod))
    except BaseException:
        remove_pod_sandbox(journal, node_ns, Sandbox(ns_name, str(ip), ifname))
        raise
    return Sandbox(ns_name, str(ip), ifname)


def remove_pod_sandbox(journal: Journal, node_ns: str, sandbox: Sandbox) -> None:
    if sandbox.host_ifname is None:
        return
    # Removing the namespace (its processes have exited) takes the veth pair and the node's /32
    # route with it; deleting the link first would only wait ~20 ms in the kernel.
    netns.remove(sandbox.netns)
    journal.removed("netns", sandbox.netns)
    remove_dir(journal, os.path.join(ETC_NETNS, sandbox.netns))
