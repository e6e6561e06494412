"""istiod: the mesh control plane (`python -m mesh.istiod`), one process in a lab pod.

- `translate`: the lab's objects → ztunnel's Address/Authorization resources and policy statuses (pure).
- `state`: the cluster watch, debounced re-translation, status writes.
- `ca`: CreateCertificate with token review and node authorization.
- `xds`: Subscribe, the config stream (full state, SYNCED, deltas).
- `trust`: the mesh root in the lab API and istiod's own serving certificate.
- `channel`: port 15012's TLS + JSON-lines transport; `server`: the process assembled.
- `client`: what ztunnel (and others) call: `create_certificate`, `subscribe`, `ConfigCache`.
"""
