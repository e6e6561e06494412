"""Service → Endpoints: the pods a Service selects, split into ready and not-ready addresses."""

from __future__ import annotations

from lab.apiserver.selectors import Selector
from lab.apiserver.store import Store
from lab.client.contract import MANAGED_LABEL
from lab.controllers.workloads import is_ready, is_terminating


def _target_port(svc_port: dict, pod: dict) -> int | None:
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in pod["spec"].get("containers", []):
        for p in c.get("ports", []) or []:
            if p.get("name") == target:
                return p.get("containerPort")
    return None


def endpoints_for(svc: dict, pods: list[dict]) -> dict:
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    subsets: dict[tuple, dict] = {}
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if not ip or is_terminating(pod):
            continue
        ports = []
        for sp in svc["spec"].get("ports", []) or []:
            tp = _target_port(sp, pod)
            if tp is None:
                continue
            ports.append(
                {
                    k: v
                    for k, v in (("name", sp.get("name")), ("port", tp), ("protocol", sp.get("protocol", "TCP")))
                    if v is not None
                }
            )
        if not ports and svc["spec"].get("ports"):
            continue
        key = tuple(sorted((p.get("name", ""), p["port"], p["protocol"]) for p in ports))
        subset = subsets.setdefault(key, {"addresses": [], "notReadyAddresses": [], "ports": ports})
        address = {
            "ip": ip,
            "nodeName": pod["spec"].get("nodeName"),
            "targetRef": {
                "kind": "Pod",
                "namespace": ns,
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        }
        if pod["spec"].get("hostname") and pod["spec"].get("subdomain") == name:
            address["hostname"] = pod["spec"]["hostname"]
        subset["addresses" if is_ready(pod) else "notReadyAddresses"].append(address)
    out = []
    for s in subsets.values():
        s["addresses"].sort(key=lambda a: a["ip"])
        s["notReadyAddresses"].sort(key=lambda a: a["ip"])
        out.append({k: v for k, v in s.items() if v})
    labels = dict(svc["metadata"].get("labels") or {})
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "subsets": out,
    }


def reconcile_endpoints(store: Store, selector_for) -> None:
    """`selector_for(matchLabels) -> Selector` is injected to keep this module free of parsing."""
    services = store.list("Service")
    wanted = set()
    for svc in services:
        sel = svc["spec"].get("selector")
        if not sel:
            continue  # Endpoints of selector-less services are managed by hand
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        wanted.add((ns, name))
        selector: Selector = selector_for(sel)
        pods = store.list("Pod", ns, selector)
        ep = endpoints_for(svc, pods)
        cur = store.get("Endpoints", ns, name)
        if cur is None:
            store.create(ep)
        elif cur.get("subsets") != ep["subsets"] or cur["metadata"].get("labels") != ep["metadata"]["labels"]:
            upd = dict(cur, subsets=ep["subsets"])
            upd["metadata"] = dict(cur["metadata"], labels=ep["metadata"]["labels"])
            store.update(upd)
    for ep in store.list("Endpoints"):
        ns, name = ep["metadata"]["namespace"], ep["metadata"]["name"]
        owned = ep["metadata"].get("labels", {}).get(MANAGED_LABEL) != "false"
        if (ns, name) not in wanted and owned and store.get("Service", ns, name) is None:
            store.delete("Endpoints", ns, name)
