"""The waypoint: the L7 engine (`mesh.proxy`) placed in a pod of its own, in front of the
workloads and services it serves (docs/waypoints.md).

- `app`: the pod's process: the agent (root, certificate, config), the HBONE listener on 15008
  whose tunnels go through `mesh.proxy.engine.Engine`, readiness on 15021, metrics on 15020 and
  the admin `config_dump` on 127.0.0.1:15000.
"""
