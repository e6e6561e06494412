"""The scheduler: binds pending pods to nodes.

Filters by `nodeName`, `nodeSelector` and taints; scores by spreading — first the fewest pods of the
same owner on the node (so replicas land on different nodes), then the fewest pods overall (so the
article's client and servers land apart), then topology order.
"""

from __future__ import annotations

import copy

from lab.apiserver.store import Store
from lab.client.contract import NODE_INDEX_LABEL
from lab.controllers.workloads import controller_of, is_terminating, node_admits


def schedule_pending(store: Store) -> list[tuple[str, str, str]]:
    """Binds every unscheduled pod it can; returns (namespace, pod, node) bindings."""
    nodes = store.list("Node")
    order = {
        n["metadata"]["name"]: i
        for i, n in enumerate(
            sorted(nodes, key=lambda n: n["metadata"].get("labels", {}).get(NODE_INDEX_LABEL, "0").zfill(4))
        )
    }
    pods = store.list("Pod")
    load: dict[str, int] = {n["metadata"]["name"]: 0 for n in nodes}
    owner_load: dict[tuple[str, str], int] = {}
    for p in pods:
        node = p["spec"].get("nodeName")
        if node and not is_terminating(p):
            if not p["spec"].get("hostNetwork"):
                load[node] = load.get(node, 0) + 1
            ref = controller_of(p)
            if ref:
                owner_load[(ref["uid"], node)] = owner_load.get((ref["uid"], node), 0) + 1
    bindings = []
    for p in pods:
        if p["spec"].get("nodeName") or is_terminating(p):
            continue
        candidates = [n for n in nodes if node_admits(n, p["spec"])]
        if not candidates:
            continue  # stays Pending; the runtime reports why
        ref = controller_of(p)
        owner = ref["uid"] if ref else None

        def score(n: dict) -> tuple[int, int, int]:
            name = n["metadata"]["name"]
            return (owner_load.get((owner, name), 0) if owner else 0, load.get(name, 0), order.get(name, 0))

        best = min(candidates, key=score)["metadata"]["name"]
        bound = copy.deepcopy(p)
        bound["spec"]["nodeName"] = best
        store.update(bound, spec_changed=False)
        load[best] = load.get(best, 0) + 1
        if owner:
            owner_load[(owner, best)] = owner_load.get((owner, best), 0) + 1
        bindings.append((p["metadata"]["namespace"], p["metadata"]["name"], best))
    return bindings
