"""ambient-lab's mesh: Istio's ambient mode (and its sidecars), as processes in a lab.

- `istiod/`: the control plane: CA, translation, config push, the waypoint controller.
- `cni/`: the istio-cni node agent (in-pod redirection, ZDS to ztunnel); `zds/` its protocol.
- `ztunnel/`: the node L4 proxy; `hbone/`: its HTTP/2 CONNECT over mTLS tunnels.
- `proxy/`: the one L7 engine (Envoy's role), placed by `waypoint/` and by `sidecar/`.
- `policy/`: security policy: parsing, validation, translation, L4 and L7 evaluation (pure).
- `identity/`: SPIFFE identities, certificates, node authorization; `tls.py`: mTLS contexts.
- `istioctl/`: the `lab istioctl` verbs. `addon.py`: what the mesh adds to a lab.
- `contract.py`: the names mesh processes share (type URLs, ports, marks, labels).
- `nft.py`: the nft script an iptables redirection becomes (istio-cni's in-pod one, istio-init's).
"""
