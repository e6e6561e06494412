"""Istio's sidecar mode in the lab, next to ambient (docs/sidecars.md).

- `injection`: the sidecar injector, istiod's mutating webhook for Pods: whether a pod gets a
  sidecar and the pod it becomes (pure; labd calls `injection:admit`).
- `injection_settings`: what the injector resolves for a pod first: its annotations and
  ProxyConfig over the mesh defaults, the proxy image, istio-init's arguments (pure).
- `iptables`: istio-init's interception rules, istio-iptables' flags to an nft table (pure).
- `init`: the `istio-init` container (`python -m mesh.proxy istio-iptables ...`): applies them.
- `app`: the sidecar proxy (`python -m mesh.proxy proxy sidecar`).

`pilot-agent wait` (`mesh.proxy.agent_cli`) is the proxy container's postStart hook when the app
must wait for the proxy (holdApplicationUntilProxyStarts).
"""
