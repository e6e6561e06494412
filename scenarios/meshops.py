"""Changes to the mesh itself that scenarios make and always undo: the ztunnel DaemonSet's template
(resources, env), istiod's replicas; and the waits that follow them (every ztunnel of the new
template Ready, every ambient pod enrolled again in its node's new ztunnel).

`patch_ztunnel(ctx, change)` saves the DaemonSet as it is, applies CHANGE (a function that edits
the container dict of `istio-proxy` in place), registers the restore with `ctx.undo` (the saved
spec applied back, then the same waits) the first time it is called, and waits. A template
change restarts every ztunnel (the lab's DaemonSet replaces pods whose template hash differs,
maxSurge 0), and istio-cni then hands each node's ambient pods to the new ztunnel.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any, Callable

from lab.client import LabError
from scenarios.framework import MESH_NAMESPACE, REDIRECTION, Run, ScenarioError, mesh_ready, ready

ZTUNNEL = "ztunnel"
ZTUNNEL_CONTAINER = "istio-proxy"
ISTIOD = "istiod"


def applyable(obj: dict) -> dict:
    """OBJ without what the API server owns (uid, resourceVersion, status ...): fit to apply back."""
    md = obj["metadata"]
    keep = {k: copy.deepcopy(md[k]) for k in ("name", "namespace", "labels", "annotations") if k in md}
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("metadata", "status")}
    out["metadata"] = keep
    return out


def container(template_spec: dict, name: str = ZTUNNEL_CONTAINER) -> dict:
    for c in template_spec.get("containers", []):
        if c.get("name") == name:
            return c
    raise ScenarioError(f"no container {name} in the template")


def set_env(c: dict, name: str, value: str | None) -> None:
    """Sets (VALUE None: removes) the env var NAME of container C."""
    env = [e for e in c.get("env") or [] if e.get("name") != name]
    if value is not None:
        env.append({"name": name, "value": value})
    c["env"] = env


def set_cpu_limit(c: dict, cpu: str | None) -> None:
    """Sets (None: removes) `resources.limits.cpu` of container C (and a request no larger)."""
    res = c.setdefault("resources", {})
    limits = res.setdefault("limits", {})
    requests = res.get("requests") or {}
    if cpu is None:
        limits.pop("cpu", None)
    else:
        limits["cpu"] = cpu
        requests.pop("cpu", None)  # a request above the new limit would be refused
    if requests:
        res["requests"] = requests
    else:
        res.pop("requests", None)
    if not limits:
        res.pop("limits", None)
    if not res:
        c.pop("resources", None)


def template_hash(ds: dict) -> str:
    from lab.controllers.workloads import template_hash as th

    return th(ds["spec"]["template"])


def ztunnels_rolled(ctx: Run, ds: dict) -> bool:
    """Every schedulable node runs one Ready ztunnel of DS's current template, and nothing else."""
    want = template_hash(ds)
    pods = ctx.get("Pod", None, MESH_NAMESPACE, f"app={ZTUNNEL}")["items"]
    nodes = ctx.get("DaemonSet", ZTUNNEL, MESH_NAMESPACE).get("status", {}).get("desiredNumberScheduled", 0)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if any(p["metadata"].get("deletionTimestamp") for p in pods):
        return False
    good = [p for p in live if ready(p) and p["metadata"]["labels"].get("controller-revision-hash") == want]
    return nodes > 0 and len(good) == len(live) == nodes


def enrolled_everywhere(ctx: Run) -> tuple[bool, list[str]]:
    """Whether each node's ztunnel serves every enrolled ambient pod of its node (its config dump
    lists them in `workloadState`); (ok, the pods still missing)."""
    from mesh.istioctl.common import IstioctlError
    from mesh.istioctl.ztunnel_config import fetch_config_dump

    pods = [
        p for p in ctx.pods(None) if (p["metadata"].get("annotations") or {}).get(REDIRECTION) == "enabled" and ready(p)
    ]
    by_node: dict[str, list[dict]] = {}
    for p in pods:
        by_node.setdefault(p["spec"].get("nodeName", ""), []).append(p)
    missing = []
    for node, ps in by_node.items():
        try:
            dump = fetch_config_dump(ctx.client.name, node)
        except (IstioctlError, OSError):
            missing += [f'{p["metadata"]["namespace"]}/{p["metadata"]["name"]}' for p in ps]
            continue
        served = served_pods(dump)
        missing += [
            f'{p["metadata"]["namespace"]}/{p["metadata"]["name"]}'
            for p in ps
            if (p["metadata"]["namespace"], p["metadata"]["name"]) not in served
        ]
    return not missing, missing


def served_pods(dump: dict) -> set[tuple[str, str]]:
    """(namespace, name) of the pods a ztunnel config dump says it proxies in-pod."""
    out = set()
    for w in dump.get("workloadState") or []:
        if isinstance(w, dict):
            ns = w.get("namespace") or (w.get("info") or {}).get("namespace")
            name = w.get("name") or (w.get("info") or {}).get("name")
            if ns and name and w.get("state", "Up") == "Up":
                out.add((ns, name))
    return out


def wait_mesh(ctx: Run, timeout: float = 60.0, what: str = "the mesh") -> None:
    """Waits until the ztunnels run the DaemonSet's template, every mesh pod is Ready and every
    ambient pod is enrolled in its node's ztunnel."""
    ds = ctx.get("DaemonSet", ZTUNNEL, MESH_NAMESPACE)
    ctx.wait_until(
        lambda: ztunnels_rolled(ctx, ds), timeout, f"{what}: every ztunnel of the new template Ready", interval=0.05
    )
    ctx.wait_until(lambda: not mesh_ready(ctx.client), timeout, f"{what}: the mesh Ready", interval=0.05)
    ctx.wait_until(lambda: enrolled_everywhere(ctx)[0], timeout, f"{what}: ambient pods enrolled again", interval=0.1)


def patch_ztunnel(ctx: Run, change: Callable[[dict], Any], what: str, timeout: float = 60.0) -> dict:
    """Applies CHANGE to the ztunnel DaemonSet's `istio-proxy` container (see the module doc);
    returns the DaemonSet as it was before this scenario's first change."""
    current = ctx.get("DaemonSet", ZTUNNEL, MESH_NAMESPACE)
    saved = getattr(ctx, "_ztunnel_saved", None)
    if saved is None:
        saved = applyable(current)
        ctx._ztunnel_saved = saved  # type: ignore[attr-defined]

        def restore():
            now = ctx.get("DaemonSet", ZTUNNEL, MESH_NAMESPACE)
            if now["spec"] != saved["spec"]:
                ctx.apply(json.dumps(saved))
            wait_mesh(ctx, timeout, "restoring the ztunnel DaemonSet")

        ctx.undo("restore the ztunnel DaemonSet", restore)
    new = applyable(current)
    change(container(new["spec"]["template"]["spec"]))
    ctx.say(f"ztunnel DaemonSet: {what} (every ztunnel restarts)")
    ctx.apply(json.dumps(new))
    wait_mesh(ctx, timeout, f"ztunnel DaemonSet {what}")
    return saved


def scale_istiod(ctx: Run, replicas: int) -> int:
    """Scales istiod to REPLICAS; the first call registers putting back the replicas it had (and
    waiting for it to be Ready). Returns the replicas istiod had before this scenario."""
    before = getattr(ctx, "_istiod_replicas", None)
    if before is None:
        before = ctx.get("Deployment", ISTIOD, MESH_NAMESPACE)["spec"].get("replicas", 1)
        ctx._istiod_replicas = before  # type: ignore[attr-defined]

        def restore():
            ctx.scale("Deployment", ISTIOD, MESH_NAMESPACE, before)
            ctx.wait_until(lambda: istiod_ready(ctx, before), 60, "istiod Ready again", interval=0.05)

        ctx.undo(f"scale istiod back to {before}", restore)
    ctx.scale("Deployment", ISTIOD, MESH_NAMESPACE, replicas)
    return before


def istiod_ready(ctx: Run, replicas: int) -> bool:
    pods = ctx.get("Pod", None, MESH_NAMESPACE, f"app={ISTIOD}")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if replicas == 0:
        return not pods
    return len([p for p in live if ready(p)]) == replicas == len(live)


def lab_cli(ctx: Run, *args: str, timeout: float = 60.0) -> str:
    """The text `lab ARGS` prints for this lab (what a learner would run)."""
    try:
        r = subprocess.run(
            [sys.executable, "-m", "lab.cli", "--lab", ctx.client.name, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return ""
    return r.stdout if r.returncode == 0 else (r.stdout + r.stderr)


def exec_popen(
    ctx: Run, namespace: str, pod: str, command: list[str], container_name: str | None = None
) -> subprocess.Popen:
    """Starts COMMAND in POD as `lab exec` would, without waiting (stdout and stderr piped)."""
    try:
        target = ctx.client.call("exec", namespace=namespace, pod=pod, container=container_name)
    except LabError as e:
        raise ScenarioError(f"cannot exec in {namespace}/{pod}: {e}") from None
    prefix = target.get("argv", ["ip", "netns", "exec", target["netns"]])
    return subprocess.Popen(
        [*prefix, *command],
        env=target["env"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd="/",
    )
