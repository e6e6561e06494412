"""The istio-cni node agent: puts this node's ambient pods in the mesh (docs/ambient-facts.md §3).

- `rules`: Istio's in-pod nft rules (pure).
- `inpod`: writes and removes them, plus the policy route, inside a pod's netns.
- `enrollment`: which pods should be captured, from the lab API's objects (pure).
- `ztunnelserver`: the ZDS socket the node's ztunnel connects to.
- `agent`: the process (`python -m mesh.cni`): watch, reconcile, snapshot and add/del over ZDS.
"""
