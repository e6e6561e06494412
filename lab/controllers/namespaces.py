"""Namespaces: a `default` ServiceAccount in each, and deletion of everything in a terminating one."""

from __future__ import annotations

from lab.apiserver import kinds
from lab.apiserver.store import Store, now_rfc3339


def reconcile(store: Store) -> None:
    for ns in store.list("Namespace"):
        name = ns["metadata"]["name"]
        if ns["metadata"].get("deletionTimestamp"):
            _drain(store, name)
            continue
        if ns.get("status", {}).get("phase") != "Active":
            store.patch_status("Namespace", None, name, {"phase": "Active"})
        if store.get("ServiceAccount", name, "default") is None:
            store.create(
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}}
            )


def _drain(store: Store, namespace: str) -> None:
    """Delete the namespace's objects; the namespace goes once its pods are gone."""
    remaining_pods = False
    for k in kinds.KINDS:
        if not k.namespaced:
            continue
        for obj in store.list(k.kind, namespace):
            if k.kind == "Pod":
                remaining_pods = True
                if not obj["metadata"].get("deletionTimestamp"):
                    upd = dict(obj, metadata=dict(obj["metadata"]))
                    upd["metadata"]["deletionTimestamp"] = now_rfc3339()
                    store.update(upd, spec_changed=False)
            else:
                store.delete(k.kind, namespace, obj["metadata"]["name"])
    if not remaining_pods:
        store.delete("Namespace", None, namespace)
