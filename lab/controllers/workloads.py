"""Deployment → ReplicaSet → Pod, DaemonSet → Pod, and garbage collection of orphans.

Level-triggered: each function looks at the whole store and makes it agree with the specs, so
running it twice is harmless and a missed event is caught on the next pass.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random

from lab.apiserver import kinds
from lab.apiserver.selectors import from_label_selector
from lab.apiserver.store import Store, now_rfc3339

_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' SafeEncodeString alphabet
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _safe(data: bytes, n: int) -> str:
    digest = hashlib.sha256(data).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:n])


def template_hash(template: dict) -> str:
    return _safe(json.dumps(template, sort_keys=True).encode(), 10)


def random_suffix(rng: random.Random, n: int = 5) -> str:
    return "".join(rng.choice(_SAFE) for _ in range(n))


def owner_ref(owner: dict) -> dict:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: dict) -> dict | None:
    for ref in obj["metadata"].get("ownerReferences", []) or []:
        if ref.get("controller"):
            return ref
    return None


def is_terminating(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_ready(pod: dict) -> bool:
    for c in pod.get("status", {}).get("conditions", []) or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def pod_from_template(
    template: dict, namespace: str, name: str, owner: dict, extra_labels: dict | None = None, node: str | None = None
) -> dict:
    meta = copy.deepcopy(template.get("metadata") or {})
    labels = dict(meta.get("labels") or {})
    labels.update(extra_labels or {})
    spec = copy.deepcopy(template.get("spec") or {})
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(meta.get("annotations") or {}),
            "ownerReferences": [owner_ref(owner)],
        },
        "spec": spec,
        "status": {"phase": "Pending"},
    }


def _owned_pods(store: Store, owner: dict) -> list[dict]:
    uid = owner["metadata"]["uid"]
    return [
        p
        for p in store.list("Pod", owner["metadata"]["namespace"])
        if (ref := controller_of(p)) is not None and ref.get("uid") == uid
    ]


def _delete_pod(store: Store, pod: dict) -> None:
    if not is_terminating(pod):
        p = copy.deepcopy(pod)
        p["metadata"]["deletionTimestamp"] = now_rfc3339()
        store.update(p, spec_changed=False)


def reconcile_deployments(store: Store) -> None:
    for d in store.list("Deployment"):
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        tmpl = d["spec"]["template"]
        h = template_hash(tmpl)
        rs_name = f"{name}-{h}"
        replicas = d["spec"].get("replicas", 1)
        owned = [
            rs
            for rs in store.list("ReplicaSet", ns)
            if (ref := controller_of(rs)) is not None and ref.get("uid") == d["metadata"]["uid"]
        ]
        current = next((rs for rs in owned if rs["metadata"]["name"] == rs_name), None)
        if current is None:
            current = store.create(
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": rs_name,
                        "namespace": ns,
                        "labels": dict((tmpl.get("metadata") or {}).get("labels") or {}, **{"pod-template-hash": h}),
                        "ownerReferences": [owner_ref(d)],
                    },
                    "spec": {
                        "replicas": replicas,
                        "selector": {
                            "matchLabels": dict(
                                d["spec"]["selector"].get("matchLabels") or {}, **{"pod-template-hash": h}
                            ),
                            **(
                                {"matchExpressions": d["spec"]["selector"]["matchExpressions"]}
                                if d["spec"]["selector"].get("matchExpressions")
                                else {}
                            ),
                        },
                        "template": tmpl,
                    },
                }
            )
            if current is None:  # cannot happen: admission refuses Pods only
                raise RuntimeError(f'ReplicaSet "{rs_name}" was refused by the store')
        elif current["spec"].get("replicas") != replicas:
            rs = copy.deepcopy(current)
            rs["spec"]["replicas"] = replicas
            current = store.update(rs)
        # Rolling update, simplified: old ReplicaSets go to zero once the new one is fully ready.
        new_ready = current.get("status", {}).get("readyReplicas", 0) >= replicas
        for rs in owned:
            if rs["metadata"]["name"] != rs_name and rs["spec"].get("replicas", 0) != 0 and new_ready:
                old = copy.deepcopy(rs)
                old["spec"]["replicas"] = 0
                store.update(old)
        pods = [p for rs in owned + ([current] if current not in owned else []) for p in _owned_pods(store, rs)]
        live = [p for p in pods if not is_terminating(p)]
        updated = [p for p in live if p["metadata"]["labels"].get("pod-template-hash") == h]
        ready = [p for p in live if is_ready(p)]
        status = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": len(live),
            "updatedReplicas": len(updated),
            "readyReplicas": len(ready),
            "availableReplicas": len(ready),
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if len(ready) >= replicas else "False",
                    "reason": "MinimumReplicasAvailable" if len(ready) >= replicas else "MinimumReplicasUnavailable",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable"
                    if len(updated) == replicas == len(ready)
                    else "ReplicaSetUpdated",
                    "message": f'ReplicaSet "{rs_name}" is progressing.',
                },
            ],
        }
        if not ready:
            status.pop("readyReplicas")
            status.pop("availableReplicas")
        store.patch_status("Deployment", ns, name, status)


def reconcile_replicasets(store: Store, rng: random.Random) -> None:
    for rs in store.list("ReplicaSet"):
        ns = rs["metadata"]["namespace"]
        want = rs["spec"].get("replicas", 1)
        pods = _owned_pods(store, rs)
        live = [p for p in pods if not is_terminating(p)]
        if len(live) < want:
            h = rs["metadata"].get("labels", {}).get("pod-template-hash")
            for _ in range(want - len(live)):
                name = f'{rs["metadata"]["name"]}-{random_suffix(rng)}'
                store.create(
                    pod_from_template(rs["spec"]["template"], ns, name, rs, {"pod-template-hash": h} if h else None)
                )
        elif len(live) > want:
            # Kubernetes deletes the least useful first: unscheduled, then not ready, then newest.
            live.sort(
                key=lambda p: (
                    bool(p["spec"].get("nodeName")),
                    is_ready(p),
                    [-ord(c) for c in p["metadata"]["creationTimestamp"]],
                )
            )
            for p in live[: len(live) - want]:
                _delete_pod(store, p)
        live = [p for p in _owned_pods(store, rs) if not is_terminating(p)]
        ready = sum(1 for p in live if is_ready(p))
        status = {
            "replicas": len(live),
            "fullyLabeledReplicas": len(live),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        if ready:
            status["readyReplicas"] = ready
            status["availableReplicas"] = ready
        store.patch_status("ReplicaSet", ns, rs["metadata"]["name"], status)


def node_admits(node: dict, pod_spec: dict) -> bool:
    """nodeSelector and NoSchedule taints (tolerations honoured)."""
    labels = node["metadata"].get("labels") or {}
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    for taint in node["spec"].get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(_tolerates(t, taint) for t in pod_spec.get("tolerations") or []):
            return False
    return True


def _tolerates(tol: dict, taint: dict) -> bool:
    if tol.get("effect") and tol["effect"] != taint.get("effect"):
        return False
    if tol.get("operator") == "Exists":
        return not tol.get("key") or tol["key"] == taint.get("key")
    return tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", "")


def reconcile_daemonsets(store: Store, rng: random.Random) -> None:
    nodes = store.list("Node")
    for ds in store.list("DaemonSet"):
        ns = ds["metadata"]["namespace"]
        h = template_hash(ds["spec"]["template"])
        owned = _owned_pods(store, ds)
        pods = [p for p in owned if not is_terminating(p)]
        by_node: dict[str, list[dict]] = {}
        for p in pods:
            by_node.setdefault(p["spec"].get("nodeName", ""), []).append(p)
        leaving = {p["spec"].get("nodeName") for p in owned if is_terminating(p)}
        eligible = [n for n in nodes if node_admits(n, ds["spec"]["template"].get("spec") or {})]
        for n in eligible:
            nname = n["metadata"]["name"]
            current = by_node.get(nname, [])
            stale = [p for p in current if p["metadata"]["labels"].get("controller-revision-hash") != h]
            for p in stale:  # rollout restart / template change: replace
                _delete_pod(store, p)
            # maxSurge 0, as Kubernetes' default: the replacement starts once the old pod is gone,
            # so two host-network pods never hold the node's ports and sockets at once.
            if len(current) - len(stale) == 0 and not stale and nname not in leaving:
                name = f'{ds["metadata"]["name"]}-{random_suffix(rng)}'
                store.create(
                    pod_from_template(ds["spec"]["template"], ns, name, ds, {"controller-revision-hash": h}, node=nname)
                )
        eligible_names = {n["metadata"]["name"] for n in eligible}
        for nname, ps in by_node.items():
            if nname not in eligible_names:
                for p in ps:
                    _delete_pod(store, p)
        live = [p for p in _owned_pods(store, ds) if not is_terminating(p)]
        ready = sum(1 for p in live if is_ready(p))
        updated = sum(1 for p in live if p["metadata"]["labels"].get("controller-revision-hash") == h)
        store.patch_status(
            "DaemonSet",
            ns,
            ds["metadata"]["name"],
            {
                "desiredNumberScheduled": len(eligible),
                "currentNumberScheduled": len(live),
                "numberReady": ready,
                "updatedNumberScheduled": updated,
                "numberAvailable": ready,
                "numberMisscheduled": 0,
                "observedGeneration": ds["metadata"].get("generation", 1),
            },
        )


def collect_garbage(store: Store) -> None:
    """Objects whose controlling owner is gone are deleted (pods gracefully), whatever their kinds:
    a ReplicaSet of a deleted Deployment, a waypoint's objects of a deleted Gateway.

    Owners are matched by uid, as Kubernetes' collector does (a re-created owner of the same name
    does not adopt the old dependents). A reference to a kind the lab does not serve is left alone.
    One pass finds the dependents, then one uid set is made over the kinds they name.
    """
    dependents = [(obj, ref) for obj in store.all() if (ref := controller_of(obj)) is not None]
    if not dependents:
        return
    owner_kinds = set()
    for _, ref in dependents:
        try:
            owner_kinds.add(kinds.by_kind(ref.get("kind") or "").kind)
        except kinds.UnknownKind:
            pass
    uids = {o["metadata"]["uid"] for o in store.all(owner_kinds)}
    for obj, ref in dependents:
        if ref.get("kind") not in owner_kinds or ref.get("uid") in uids:
            continue
        if obj["kind"] == "Pod":
            _delete_pod(store, obj)
        elif store.get(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]) is not None:
            store.delete(obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])


def selector_of(obj: dict):
    return from_label_selector(obj["spec"].get("selector") or {})
