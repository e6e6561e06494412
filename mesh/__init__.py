"""ambient-lab's mesh: istiod, istio-cni, ztunnel, waypoints and sidecars."""
