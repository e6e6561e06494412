"""ztunnel: the node's L4 proxy of the ambient mesh (istio/ztunnel, in Python on trio).

The layout follows ztunnel's `src/`, so a reader who knows it finds each part:

- `app`: the process (`python -m mesh.ztunnel`) and the in-process core `Ztunnel`;
- `config`: settings from the pod's environment;
- `resources`: istiod's Workloads and Services as typed objects, converted on arrival (pure; the
  Authorizations are `mesh.policy.authorization`);
- `state`: what istiod sent, indexed, and the lookups on it (pure);
- `xds`: the config stream from istiod into the state (the wire calls are `mesh.istiod.client`);
- `identity`: workload certificates per identity, rotated at half-life;
- `inpod`: ZDS with the CNI agent, and each enrolled pod's proxy set (`PodProxy`);
- `outbound` (15001), `inbound` (15008, HBONE), `inbound_passthrough` (15006): the proxies;
- `proxy`: what they share (inputs, errors, listener, splice end); `rbac`: L4 policy at the destination;
- `sockets`: sockets inside a pod's netns, SO_MARK, SO_ORIGINAL_DST, source spoofing;
- `metrics`: Istio's TCP metrics and the access log; `admin`: config_dump, metrics, readiness;
- `testing`: resources in the contract's shape and a fake control plane, for tests.

HBONE itself (HTTP/2 CONNECT over mTLS, the connection pool, splicing) is `mesh.hbone`.
"""
