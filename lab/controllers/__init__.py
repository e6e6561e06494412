"""The controllers: each a pure reconcile over the store, run in turn by labd on every change.

- `workloads`: Deployment → ReplicaSet → Pod, DaemonSet → Pod, garbage collection by owner.
- `endpoints`: Service → Endpoints from ready pods.
- `namespaces`: namespace deletion and the `kubernetes.io/metadata.name` label.
- `scheduler`: binds pending pods to nodes (taints, nodeSelector, spreading).
"""
