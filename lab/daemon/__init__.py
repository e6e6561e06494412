"""labd: one lab's control plane and node agents in one trio process.

- `lab.py`: `Lab`, the wiring: store, API server, controllers, kubelet, kube-proxy, network.
- `bootstrap.py`: what a new lab starts with (nodes, namespaces, DNS, add-ons, topology manifests).
- `addons.py`: the add-ons other packages register (the mesh: its API validators, install manifest,
  CLI verbs), found by entry point so the lab never imports them.
"""
