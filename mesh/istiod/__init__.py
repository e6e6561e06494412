"""istiod: the mesh control plane (`python -m mesh.istiod`), one process in a lab pod.

- `translate`: the lab's objects → ztunnel's Address/Authorization resources and policy statuses (pure).
- `state`: the cluster watch, debounced re-translation, status writes.
- `waypoints`: which waypoint serves what, and what to deploy for one (pure);
  `waypoint_controller`: deploys it and writes the Gateway's status.
- `ca`: CreateCertificate with token review and node authorization.
- `xds`: Subscribe, the config stream (full state, SYNCED, deltas).
- `trust`: the mesh root in the lab API and istiod's own serving certificate.
- `channel`: port 15012's TLS + JSON-lines transport; `server`: the process assembled.
- `client`: what ztunnel (and others) call: `create_certificate`, `subscribe`, `keep_streaming`
  (the reconnect loop), `ConfigCache`.
"""
