"""Istio security policy: parsing and validation (model), istiod's translation for ztunnel
(ztunnel, peerauth), ztunnel's L4 evaluator (rbac) and the L7 evaluator of waypoints and
sidecars (http). Everything here is pure: dicts and dataclasses in, decisions out."""
