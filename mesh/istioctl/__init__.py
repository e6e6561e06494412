"""istioctl for the lab: the verbs the article and a mesh user need, one module each.

- `cli.py`: the `lab istioctl` verb (parser and dispatch), added by the mesh add-on.
- `install.py`: `install --set profile=ambient [--set tag=X]`.
- `proxy_status.py`, `ztunnel_config.py`, `proxy_config.py`: what istiod, a ztunnel and an L7
  proxy report from their debug and admin ports.
- `waypoint.py`: `waypoint list|status|generate|apply|delete`.
- `describe_pod.py`: `x describe pod`: what the mesh does with a pod, and why; from
  `describe_mode.py` (how the pod is captured), `describe_waypoint.py` (the waypoint serving it)
  and `describe_policies.py` (which policies apply, where they are enforced).
- `common.py`: the error type, the admin-port GET, the table.
"""
