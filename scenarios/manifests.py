"""Small manifest builders the scenarios share (JSON is YAML, and needs no quoting care)."""

from __future__ import annotations

import json

CLIENT_IMAGE = "curlimages/curl"
ECHO_IMAGE = "ambient-lab/echo"


def _dump(*objs: dict) -> str:
    return "\n---\n".join(json.dumps(o) for o in objs)


def service_account(ns: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def deployment(
    ns: str,
    name: str,
    containers: list[dict],
    *,
    sa: str | None = None,
    node: str | None = None,
    replicas: int = 1,
    labels: dict | None = None,
) -> dict:
    labels = {"app": name, **(labels or {})}
    spec: dict = {"containers": containers}
    if sa:
        spec["serviceAccountName"] = sa
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def echo(
    ns: str,
    name: str = "echo",
    *,
    node: str | None = None,
    replicas: int = 1,
    sa: str | None = None,
    port: int = 80,
    headless: bool = False,
    service_labels: dict | None = None,
) -> str:
    """An echo Deployment (HTTP on 8080) and its Service NAME:PORT (clusterIP None when HEADLESS)."""
    svc: dict = {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": 8080}]}
    if headless:
        svc["clusterIP"] = "None"
    objs = []
    if sa:
        objs.append(service_account(ns, sa))
    objs.append(
        deployment(
            ns,
            name,
            [{"name": "echo", "image": ECHO_IMAGE, "args": ["--port", "8080"], "ports": [{"containerPort": 8080}]}],
            sa=sa,
            node=node,
            replicas=replicas,
        )
    )
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": dict(service_labels or {})},
            "spec": svc,
        }
    )
    return _dump(*objs)


def client(ns: str, name: str, *, node: str | None = None, sa: str | None = None) -> str:
    """A curl pod that sleeps (commands and load run in it with exec)."""
    objs = [service_account(ns, sa)] if sa else []
    objs.append(
        deployment(
            ns, name, [{"name": "curl", "image": CLIENT_IMAGE, "command": ["/bin/sleep", "3650d"]}], sa=sa, node=node
        )
    )
    return _dump(*objs)


def waypoint(ns: str, name: str = "waypoint", traffic_type: str | None = None) -> str:
    """A waypoint Gateway as `istioctl waypoint generate` prints it (class istio-waypoint)."""
    md: dict = {"name": name, "namespace": ns}
    if traffic_type:
        md["labels"] = {"istio.io/waypoint-for": traffic_type}
    return json.dumps(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": md,
            "spec": {
                "gatewayClassName": "istio-waypoint",
                "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
            },
        }
    )


def workers(nodes: list[dict]) -> list[str]:
    """Names of the nodes apps can land on (no control-plane role), in order."""
    return [
        n["metadata"]["name"]
        for n in nodes
        if "node-role.kubernetes.io/control-plane" not in (n["metadata"].get("labels") or {})
    ]
