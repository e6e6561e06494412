"""ambient-lab's harness: a Kubernetes-like cluster built from network namespaces.

- `client/`: how anything talks to a lab (API client and protocol, paths, names shared with the
  processes a lab runs, entering network namespaces). The only part of `lab` the mesh imports.
- `apiserver/`: the kube-apiserver: kind registry, store, validation, admission, tokens, the API
  calls and the socket that carries them.
- `controllers/`: Deployments, ReplicaSets, DaemonSets, garbage collection, Endpoints, namespaces,
  the scheduler.
- `runtime/`: the node side: kubelet (pod workers, containers, probes, cgroups), sandboxes and the
  network, kube-proxy's nftables, the image catalog, PID 1 of a lab and the ownership journal.
- `dns/`: the cluster DNS (CoreDNS's role).
- `daemon/`: labd, the process that wires one lab together.
- `cli/`: the `lab` command: lab verbs, kubectl verbs and their printers.
- `apps/`, `load/`: an echo app and an in-pod load generator.
- `addons.py`: what other packages (the mesh, the scenarios) add, found by entry point.
- `topology.py`: what a lab is made of; `testing.py`, `pytest_plugin.py`: a lab for pytest.
"""
