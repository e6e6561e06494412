"""Istio security policy: parsing (model) and validation (schema: the API server's structural
checks; validation: istiod's webhook), istiod's translation for ztunnel (ztunnel, peerauth), the
Authorization resource ztunnel receives, typed (authorization), ztunnel's L4 evaluator (rbac) and
the L7 evaluator of waypoints and sidecars (http). Everything here is pure: dicts and dataclasses
in, decisions out."""
