"""SPIFFE identities as Istio uses them: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.

The parser accepts exactly the shape ztunnel's `Identity::from_str` accepts (prefix `spiffe://`, five
path segments, literal `ns` and `sa`), so an identity the lab accepts is one ztunnel would accept.
It is stricter in one way: empty segments are refused, because an identity with an empty namespace
cannot name anything and would only surface later as a confusing policy mismatch.
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
        for field, value in (("trust domain", self.trust_domain), ("namespace", self.namespace),
                             ("service account", self.service_account)):
            if not value or "/" in value:
                raise InvalidIdentity(f"{field} {value!r} must be non-empty and contain no '/'")

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """`spiffe://td/ns/NS/sa/SA` → Identity; anything else raises InvalidIdentity."""
        if not uri.startswith(SCHEME):
            raise InvalidIdentity(f"invalid SPIFFE identity {uri!r}: must start with {SCHEME!r}")
        parts = uri[len(SCHEME):].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise InvalidIdentity(f"invalid SPIFFE identity {uri!r}: "
                                  "expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>")
        try:
            return cls(parts[0], parts[2], parts[4])
        except InvalidIdentity as e:
            raise InvalidIdentity(f"invalid SPIFFE identity {uri!r}: {e}") from None

    @property
    def principal(self) -> str:
        """The form AuthorizationPolicy `principals` use: the URI without `spiffe://`."""
        return str(self)[len(SCHEME):]

    def __str__(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"
