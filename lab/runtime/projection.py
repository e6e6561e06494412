"""What the kubelet projects into a pod's containers: their environment (the downward API's
fieldRefs and the lab's own variables, lab/client/contract.py) and the ServiceAccount token file.

Its own module because this is the contract with the programs a pod runs: what they may read
and who may read it.
"""

from __future__ import annotations

import os
import sys

from lab.client import contract
from lab.client.paths import pod_dir
from lab.runtime import images, processes
from lab.runtime.podspec import has_non_root, run_as
from lab.topology import Topology


def container_env(
    topo: Topology, api_socket: str, pod: dict, container: dict, pod_ip: str | None, pod_gid: int | None
) -> dict[str, str]:
    """CONTAINER's environment: the image's, the lab's variables, then the container's `env`."""
    md, spec = pod["metadata"], pod["spec"]
    node = spec.get("nodeName", "")
    nodes = {n.name: n for n in topo.nodes}
    node_ip = str(topo.node_ip(nodes[node])) if node in nodes else ""
    fields = {
        "metadata.name": md["name"],
        "metadata.namespace": md["namespace"],
        "metadata.uid": md["uid"],
        "spec.nodeName": node,
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip or "",
        "status.hostIP": node_ip,
    }
    image = images.lookup(container["image"])
    try:
        who = run_as(spec, container, pod_gid)
    except ValueError:
        who = None
    # The venv's bin first: the images' programs and console scripts (pilot-agent) resolve.
    env = {
        "PATH": os.path.dirname(sys.executable) + ":" + processes.BASE_PATH,
        "HOME": "/root" if who is None or who.uid == 0 else "/",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "HOSTNAME": node if spec.get("hostNetwork") else md["name"],
        contract.ENV_LAB: topo.name,
        contract.ENV_LAB_NAME: topo.name,
        contract.ENV_API_SOCKET: api_socket,
        contract.ENV_POD_NAME: md["name"],
        contract.ENV_POD_NAMESPACE: md["namespace"],
        contract.ENV_NODE_NAME: node,
        contract.ENV_POD_IP: pod_ip or "",
        contract.ENV_POD_UID: md["uid"],
        contract.ENV_SERVICE_ACCOUNT: fields["spec.serviceAccountName"],
        contract.ENV_SA_TOKEN_FILE: os.path.join(
            pod_dir(topo.name, md["namespace"], md["name"], md["uid"]), contract.TOKEN_FILE
        ),
    }
    env.update(dict(image.env))
    for e in container.get("env", []) or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif (ref := (e.get("valueFrom") or {}).get("fieldRef")) is not None:
            env[e["name"]] = fields.get(ref.get("fieldPath"), "")
    return env


def write_token(directory: str, pod: dict, token: str, pod_gid: int, lab_dir: str) -> None:
    """The ServiceAccount token in the pod's DIRECTORY: root's only, or, when a container runs as
    another uid, readable by the pod's own group (and the directory enterable by it alone)."""
    path = os.path.join(directory, contract.TOKEN_FILE)
    shared = has_non_root(pod["spec"])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
        if shared:
            os.fchown(f.fileno(), 0, pod_gid)
            os.fchmod(f.fileno(), 0o640)
    if shared:
        os.chown(directory, 0, pod_gid)
        os.chmod(directory, 0o750)
        _make_traversable(os.path.dirname(directory), lab_dir)


def _make_traversable(d: str, lab_dir: str) -> None:
    """Containers that run as another uid reach their files in the pod's directory: the lab's
    directories on the way (the lab's own is 0700) get the search bit, not the read bit."""
    while True:
        st = os.stat(d)
        if not st.st_mode & 0o001:
            os.chmod(d, (st.st_mode & 0o7777) | 0o011)
        if os.path.normpath(d) == os.path.normpath(lab_dir) or os.path.dirname(d) == d:
            break
        d = os.path.dirname(d)
