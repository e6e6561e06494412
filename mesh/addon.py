"""The mesh as a lab add-on (entry point `ambient_lab.addons: ambient`, see lab/addons.py).

It gives the lab what installing Istio gives a cluster: the ambient profile's manifests, the
validation istiod's webhook does on Istio security policies, and the `istioctl` verbs.
"""

from __future__ import annotations

from mesh.istioctl.cli import add_cli_verbs
from mesh.istioctl.install import ambient_manifest
from mesh.policy import model as _model
from mesh.policy import validation as _validation

NAME = "ambient"
_POLICY_KINDS = ("AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication")
VALIDATORS = {kind: _model.validate for kind in _POLICY_KINDS}
WARNERS = {kind: _validation.warnings for kind in _POLICY_KINDS}


def install_manifest() -> str:
    return ambient_manifest()


__all__ = ["NAME", "VALIDATORS", "WARNERS", "add_cli_verbs", "install_manifest"]
