"""Workload identity for the mesh: what istiod's CA and ztunnel's identity manager do.

- `spiffe`: the `spiffe://TD/ns/NS/sa/SA` identity and its parser.
- `ca`: the mesh root, CSR creation (ztunnel's side) and signing (istiod's side), chain checks.
- `node_authz`: istiod's rule that a node proxy only gets certs for SAs running on its node.
- `caller`: who asks for a certificate (the pod a reviewed ServiceAccount token is bound to).
"""
