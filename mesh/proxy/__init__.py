"""The lab's L7 proxy engine (Envoy's role): one engine, placed in waypoint pods and as sidecars.

- `http`, `http1`, `http2`, `codec`: buffered messages, the HTTP/1.1 (h11) and h2c (h2) loops over
  one trio stream, and protocol sniffing.
- `config`: what istiod sent (Listeners, Clusters, Routes, Secrets) read into a `ProxyConfig`.
- `jwt_authn` (with `jwt_keys`, `jwt_token`): RequestAuthentication, Envoy's jwt_authn filter (pure).
- `authz`: the RBAC filter over the L7 policy evaluator (`mesh.policy.http`).
- `engine`: a request through jwt_authn → rbac → router; `upstream`: pooled HBONE and TCP upstreams.
- `agent`: pilot-agent (root, certificate, config stream); `agent_cli`: `pilot-agent wait`.
- `pod`: what a waypoint and a sidecar pod share (listeners, readiness, drain).
- `access_log`, `metrics`: one line per request or connection, and Istio's standard metrics.
"""
