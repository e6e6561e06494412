"""A pod's containers as `lab exec` and `lab logs` reach them: the network namespace and argv
prefix a command runs with, the file a container's log is in. ApiServer has these from the
ContainerAccess mix-in, kept apart from api.py because they read the pod's runtime state
(netns annotation, container statuses, the pod directory) rather than write objects."""

from __future__ import annotations

import os
from typing import Callable

from lab.apiserver.errors import ApiError
from lab.apiserver.store import Store
from lab.client.contract import NETNS_ANNOTATION
from lab.client.paths import container_log_path, pod_dir
from lab.topology import Topology


class ContainerAccess:
    """Exec and log lookups over STORE, for the lab TOPO (its name places the pod directories)."""

    store: Store
    topo: Topology

    def _pod_container(self, namespace: str, pod: str, container: str | None) -> tuple[dict, dict]:
        obj = self.store.get("Pod", namespace, pod)
        if obj is None:
            raise ApiError(f'Error from server (NotFound): pods "{pod}" not found')
        specs = obj["spec"]["containers"]
        if container is None:
            return obj, specs[0]
        for c in specs + (obj["spec"].get("initContainers") or []):
            if c["name"] == container:
                return obj, c
        raise ApiError(f"error: container {container} is not valid for pod {pod}")

    def exec_target(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        env_for: Callable[[dict, dict], dict],
        argv_for: Callable[[dict, dict, str], list[str]] | None = None,
    ) -> dict:
        """Where `lab exec` runs a command: `argv` is the prefix to put before it (the netns and,
        for a container with runAsUser/runAsGroup, the switch to its uid and gid)."""
        obj, c = self._pod_container(namespace, pod, container)
        netns = obj["metadata"].get("annotations", {}).get(NETNS_ANNOTATION)
        running = any(
            cs.get("name") == c["name"] and "running" in cs.get("state", {})
            for cs in obj.get("status", {}).get("containerStatuses", []) or []
        )
        if not netns or not running:
            raise ApiError(
                f"error: unable to upgrade connection: container not found (\"{c['name']}\")"
                if netns
                else f"error: pod {pod} is not running yet"
            )
        try:
            argv = argv_for(obj, c, netns) if argv_for else ["ip", "netns", "exec", netns]
        except ValueError as e:
            raise ApiError(f"error: container {c['name']}: {e}") from None
        return {"netns": netns, "env": env_for(obj, c), "container": c["name"], "argv": argv}

    def log_path(self, namespace: str, pod: str, container: str | None, previous: bool = False) -> str:
        obj, c = self._pod_container(namespace, pod, container)
        d = pod_dir(self.topo.name, namespace, pod, obj["metadata"]["uid"])
        restarts = 0
        for cs in (obj.get("status", {}).get("containerStatuses", []) or []) + (
            obj.get("status", {}).get("initContainerStatuses", []) or []
        ):
            if cs["name"] == c["name"]:
                restarts = cs.get("restartCount", 0)
        n = restarts - 1 if previous else restarts
        if n < 0:
            raise ApiError(f'error: previous terminated container "{c["name"]}" in pod "{pod}" not found')
        path = container_log_path(d, c["name"], n)
        if not os.path.exists(path) and not previous and restarts:
            path = container_log_path(d, c["name"], restarts - 1)
        return path
