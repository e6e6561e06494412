"""The node side of a lab: what the kubelet, the container runtime and kube-proxy do.

- `kubelet`: the pods of every node, each run by a `podworker` (sandbox, CNI ADD, init and app
  containers, status); `containers` starts, stops and restarts them, `probes` checks readiness,
  `projection` gives them their environment and ServiceAccount token, `podspec` reads the spec.
- `processes`: a container is a process in its pod's namespaces; `cgroups` enforces its resources.
- `sandbox`, `network`: a pod's network namespace, veth, routes and resolver files; the fabric.
- `cniplugins`: node plugins (istio-cni) asked to ADD a pod before its containers start.
- `kubeproxy`: Services as an nftables table in every node.
- `images`: which local program a container image stands for.
- `journal`: what a lab made, written down before it is made; `init`: PID 1 of a lab.
"""
