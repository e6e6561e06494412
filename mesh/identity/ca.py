"""The mesh CA (istiod's self-signed root) and the workload side of a certificate request (ztunnel).

Everything here is sans-IO: PEM text in, PEM text out. The gRPC-shaped shell (authenticate the
caller, authorize impersonation, then `sign_csr`) lives with istiod; the client shell (make a CSR,
send it, `verify_chain` the answer, refresh at `refresh_at`) lives with ztunnel.

Key choice: the root and workload keys are ECDSA P-256 with SHA-256. ztunnel's CSRs are P-256
already, so the whole chain uses one algorithm; P-256 keys are generated in well under a
millisecond (RSA-2048 takes tens to hundreds), and ECDSA handshakes are cheaper, which matters for a
lab that starts many identities and measures handshake rates. istiod's own self-signed root is
RSA-2048 by default: `RootCA.from_pem` accepts an RSA root too, so a root made by istiod (or a
plugged-in `cacerts`) can be loaded.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Sequence, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN, Identity, InvalidIdentity

ROOT_TTL = timedelta(days=3650)  # istiod's self-signed root lifetime
DEFAULT_CERT_TTL = timedelta(hours=24)  # DEFAULT_WORKLOAD_CERT_TTL, and ztunnel's SECRET_TTL
MAX_CERT_TTL = timedelta(days=90)  # MAX_WORKLOAD_CERT_TTL: longer requests are refused
CLOCK_SKEW_GRACE = timedelta(minutes=2)  # istiod backdates NotBefore so skewed peers accept new certs

PemInput = Union[str, bytes, Sequence[str]]


class CAError(Exception):
    """A signing request the CA refuses (istiod answers these with a gRPC error)."""


class CSRError(CAError):
    """The CSR cannot be parsed, its signature does not verify, or its key type is unusable."""


class TTLError(CAError):
    """The requested lifetime exceeds MAX_CERT_TTL."""


class ChainError(ValueError):
    """A certificate chain that must not be trusted; the message names the certificate and why."""


class UntrustedChain(ChainError):
    """A certificate was not issued by the next one in the chain, nor by a trusted root."""


class CertExpired(ChainError):
    """A certificate's NotAfter is in the past."""


class CertNotYetValid(ChainError):
    """A certificate's NotBefore is in the future."""


class NoSpiffeIdentity(ChainError):
    """The leaf carries no URI SAN that parses as a SPIFFE identity."""


class RootPem(NamedTuple):
    cert_pem: str
    key_pem: str


@dataclass(frozen=True)
class CertInfo:
    """What `istioctl ztunnel-config certificates` shows of one certificate."""

    serial_hex: str  # lowercase, no leading zeros, as istioctl prints it
    not_before: datetime
    not_after: datetime
    identities: tuple[Identity, ...]
    is_ca: bool
    issuer: str  # RFC 4514, e.g. "O=cluster.local"

    def valid_at(self, now: datetime | None = None) -> bool:
        """The VALID CERT column."""
        now = _utc(now)
        return self.not_before <= now <= self.not_after


@dataclass(frozen=True)
class RootCA:
    """The self-signed root istiod signs workload certificates with (no intermediate)."""

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def generate(
        cls, trust_domain: str = DEFAULT_TRUST_DOMAIN, ttl: timedelta = ROOT_TTL, now: datetime | None = None
    ) -> RootCA:
        """A new root shaped like istiod's self-signed one: subject O=<trust domain>, CA, CertSign."""
        now = _utc(now)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(_random_serial())
            .not_valid_before(now)
            .not_valid_after(now + ttl)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(key_cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @classmethod
    def from_pem(cls, cert_pem: str | bytes, key_pem: str | bytes) -> RootCA:
        """Load a persisted root (the `istio-ca-secret` pair); refuses a non-CA cert or a foreign key."""
        cert = x509.load_pem_x509_certificate(_bytes(cert_pem))
        key = serialization.load_pem_private_key(_bytes(key_pem), password=None)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise CAError(f"unsupported CA key type {type(key).__name__}")
        if not _is_ca(cert):
            raise CAError("the certificate is not a CA certificate (BasicConstraints CA:FALSE or absent)")
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise CAError("the private key does not belong to the CA certificate")
        return cls(key, cert)

    def to_pem(self) -> RootPem:
        """(cert, key) as PEM; the key is unencrypted PKCS#8, so store it with mode 0600."""
        key_pem = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return RootPem(self.cert_pem, key_pem)

    @property
    def cert_pem(self) -> str:
        """The trust bundle workloads verify peers against (ztunnel's root-cert.pem)."""
        return _pem(self.cert)

    @property
    def trust_domain(self) -> str:
        orgs = self.cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(orgs[0].value) if orgs else DEFAULT_TRUST_DOMAIN

    def sign_csr(
        self,
        csr_pem: str | bytes,
        identities: Sequence[Identity],
        ttl: timedelta = DEFAULT_CERT_TTL,
        now: datetime | None = None,
    ) -> list[str]:
        """Sign a workload CSR with istiod's template; returns the chain, leaf first and root last.

        The SANs come from `identities` (what the caller was authorized for), never from the CSR:
        the CSR only proves possession of the key. A non-positive ttl means the default, as istiod.
        """
        if not identities:
            raise CAError("no identities to certify")
        csr = _load_csr(csr_pem)
        if ttl <= timedelta(0):
            ttl = DEFAULT_CERT_TTL
        if ttl > MAX_CERT_TTL:
            raise TTLError(f"requested TTL {ttl} is greater than the max allowed TTL {MAX_CERT_TTL}")
        now = _utc(now)
        root_expiry = self.cert.not_valid_after_utc
        if now >= root_expiry:
            raise CAError(f"the root certificate expired at {_rfc3339(root_expiry)}")
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(csr.public_key())
            .serial_number(_random_serial())
            .not_valid_before(now - CLOCK_SKEW_GRACE)
            .not_valid_after(min(now + ttl, root_expiry))
            .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(self._authority_key_id(), critical=False)
            # RFC 5280 4.2.1.6: with an empty subject the SAN extension must be critical.
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(i)) for i in identities]), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )
        return [_pem(leaf), self.cert_pem]

    def _authority_key_id(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key())


def make_csr(identity: Identity) -> tuple[str, str]:
    """(private key PEM, CSR PEM) as ztunnel makes them: P-256, SHA-256, empty subject, one URI SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(identity))]), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def load_certs(pems: PemInput) -> list[x509.Certificate]:
    """Every certificate in a PEM string, or in a list of them (a CA response), in order."""
    data = _bytes(pems) if isinstance(pems, (str, bytes)) else "".join(pems).encode()
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ChainError(f"no parseable certificate in PEM input: {e}") from None


def identities_of(cert: x509.Certificate) -> list[Identity]:
    """The SPIFFE identities in a cert's URI SANs; other SANs are ignored, as ztunnel does."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    found = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            found.append(Identity.parse(uri))
        except InvalidIdentity:
            continue
    return found


def cert_info(cert: str | bytes | x509.Certificate) -> CertInfo:
    """The fields a certificate listing shows (first certificate of the PEM)."""
    c = cert if isinstance(cert, x509.Certificate) else load_certs(cert)[0]
    return CertInfo(
        serial_hex=format(c.serial_number, "x"),
        not_before=c.not_valid_before_utc,
        not_after=c.not_valid_after_utc,
        identities=tuple(identities_of(c)),
        is_ca=_is_ca(c),
        issuer=c.issuer.rfc4514_string(),
    )


def refresh_at(cert: str | bytes | x509.Certificate | CertInfo) -> datetime:
    """When ztunnel renews a cert: at half-life, so a CA outage has half the lifetime to heal."""
    info = cert if isinstance(cert, CertInfo) else cert_info(cert)
    return info.not_before + (info.not_after - info.not_before) / 2


def verify_chain(chain_pems: PemInput, root_pem: str | bytes, now: datetime | None = None) -> list[Identity]:
    """Check a CA response (leaf first, root last optional) against the trusted root(s).

    Returns the leaf's SPIFFE identities. `root_pem` may hold several roots, as ztunnel allows
    during a root rotation. Raises a ChainError subclass naming the certificate at fault.
    """
    now = _utc(now)
    chain = load_certs(chain_pems)
    roots = load_certs(root_pem)
    while len(chain) > 1 and chain[-1] in roots:  # the response repeats the root; it adds nothing
        chain.pop()
    for cert, issuer in zip(chain, chain[1:]):
        if not _is_ca(issuer):
            raise UntrustedChain(f"{_describe(cert)} is followed by {_describe(issuer)}, which is not a CA")
        if not _issued_by(cert, issuer):
            raise UntrustedChain(
                f"{_describe(cert)} was not issued by the next certificate in the chain, {_describe(issuer)}"
            )
    top = chain[-1]
    root = next((r for r in roots if _issued_by(top, r)), None)
    if root is None:
        # Every Istio root is named O=<trust domain>, so only the signature tells two CAs apart.
        via = "" if top is chain[0] else f" (its chain ends at {_describe(top)})"
        raise UntrustedChain(f"{_describe(chain[0])}{via} was not issued by the trusted root: it comes from another CA")
    for cert in [*chain, root]:
        _check_validity(cert, now)
    identities = identities_of(chain[0])
    if not identities:
        raise NoSpiffeIdentity(f"{_describe(chain[0])} has no SPIFFE URI SAN")
    return identities


def _check_validity(cert: x509.Certificate, now: datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise CertExpired(f"{_describe(cert)} expired at {_rfc3339(cert.not_valid_after_utc)} (now {_rfc3339(now)})")
    if now < cert.not_valid_before_utc:
        raise CertNotYetValid(
            f"{_describe(cert)} is not valid before {_rfc3339(cert.not_valid_before_utc)} (now {_rfc3339(now)})"
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)  # issuer name, then signature
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _describe(cert: x509.Certificate) -> str:
    ids = identities_of(cert)
    name = ",".join(str(i) for i in ids) or cert.subject.rfc4514_string() or "<empty subject>"
    return f"certificate {name} (serial {cert.serial_number:x})"


def _load_csr(csr_pem: str | bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(_bytes(csr_pem))
    except ValueError as e:
        raise CSRError(f"cannot parse the CSR: {e}") from None
    try:
        valid = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError) as e:
        raise CSRError(f"cannot check the CSR signature: {e}") from None
    if not valid:
        raise CSRError("the CSR signature does not verify (the requester does not hold the key)")
    if not isinstance(csr.public_key(), (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise CSRError(f"unsupported CSR key type {type(csr.public_key()).__name__}")
    return csr


def _key_usage(
    digital_signature: bool = False, key_encipherment: bool = False, key_cert_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _random_serial() -> int:
    """A positive random serial below 2**128, as istiod draws them."""
    return secrets.randbelow(2**128 - 1) + 1


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


def _rfc3339(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
