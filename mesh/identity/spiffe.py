"""SPIFFE identities as Istio uses them: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.

The one `Identity` of the mesh: istiod's CA, ztunnel's certificates and its L4 policy evaluation
all parse with it. The parser accepts exactly what ztunnel's `Identity::from_str` accepts (prefix
`spiffe://`, five path segments, literal `ns` and `sa`), empty segments included: ztunnel does not
refuse them, and an evaluator stricter than ztunnel would decide some connections differently.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEME = "spiffe://"
DEFAULT_TRUST_DOMAIN = "cluster.local"


class InvalidIdentity(ValueError):
    """Not a `spiffe://TD/ns/NS/sa/SA` URI (the message quotes what was given)."""


@dataclass(frozen=True, order=True)
class Identity:
    """A workload's identity: the service account it runs as. Certificates carry it as a URI SAN."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        # Refuse parts that would not survive a round trip through the URI form.
        for field, value in (
            ("trust domain", self.trust_domain),
            ("namespace", self.namespace),
            ("service account", self.service_account),
        ):
            if "/" in value:
                raise InvalidIdentity(f"{field} {value!r} must contain no '/'")

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """`spiffe://td/ns/NS/sa/SA` → Identity; anything else raises InvalidIdentity."""
        if not uri.startswith(SCHEME):
            raise InvalidIdentity(f"invalid SPIFFE identity {uri!r}: must start with {SCHEME!r}")
        parts = uri[len(SCHEME) :].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise InvalidIdentity(
                f"invalid SPIFFE identity {uri!r}: expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>"
            )
        return cls(parts[0], parts[2], parts[4])  # split on "/", so no part can hold one

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy `principals` use: the URI without `spiffe://`."""
        return str(self)[len(SCHEME) :]

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"
