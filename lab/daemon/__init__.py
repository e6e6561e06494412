"""labd: one lab's control plane and node agents in one trio process.

- `lab.py`: `Lab`, the wiring: store, API server and dispatcher, controllers, kubelet, kube-proxy,
  network, and the order in which they start and stop.
- `bootstrap.py`: what a new lab starts with (nodes, namespaces, DNS, add-ons, topology manifests).
"""
