"""Who is asking istiod for a certificate: the pod a reviewed ServiceAccount token is bound to.

istiod learns it from the lab's token review (Kubernetes' TokenReview) and hands it to the CA's node
authorization. `node` is the token's own node claim when present (Kubernetes ≥ 1.30 adds one);
the node authorization does not trust it and looks the pod's node up instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN, Identity

CA_AUDIENCE = "istio-ca"  # the audience ztunnel's token is projected for, and istiod requires


@dataclass(frozen=True)
class Caller:
    pod_name: str
    pod_uid: str
    namespace: str
    service_account: str
    node: str | None = None

    def identity(self, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> Identity:
        """The identity a certificate for the caller itself carries."""
        return Identity(trust_domain, self.namespace, self.service_account)
