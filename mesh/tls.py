"""TLS for HBONE: mutual TLS 1.3 with SPIFFE certificates, configured as ztunnel configures rustls.

Both sides: TLS 1.3 only, ALPN `h2`, peers verified against the mesh root. The server requires a
client certificate; the client sends no SNI and checks no hostname (ztunnel passes a dummy name).

stdlib `ssl` cannot run a custom verifier inside the handshake, so the two identity checks ztunnel's
verifiers make during the handshake are made right after it here:
- client side, `check_peer`: the server's URI SANs include one of the expected identities
  (ztunnel's IdentityVerifier: the destination workload plus the service's SANs);
- server side, `check_trust_domain`: the client's trust domain is the server's (TrustDomainVerifier).
Run them before any application byte is sent or read, and close the connection when they raise.

Limits of stdlib ssl, for the record: the TLS 1.3 cipher suites cannot be narrowed to ztunnel's two
AES-GCM suites (OpenSSL also offers CHACHA20-POLY1305), and key-exchange groups are OpenSSL's defaults.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from typing import Iterable, Protocol, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mesh.identity.ca import identities_of, load_certs
from mesh.identity.spiffe import Identity

ALPN_H2 = "h2"

ChainInput = Union[str, bytes, Sequence[str]]


class PeerCertificateSource(Protocol):
    """ssl.SSLObject, ssl.SSLSocket and trio.SSLStream all provide this."""

    def getpeercert(self, binary_form: bool = ...) -> object: ...


class PeerRejected(Exception):
    """The handshake succeeded but the peer's identity is not acceptable."""


class IdentityMismatch(PeerRejected):
    """The server is none of the identities the client expected."""

    def __init__(self, expected: Iterable[Identity], got: Iterable[Identity]):
        self.expected = sorted(expected)
        self.got = list(got)
        super().__init__(
            "identity verification error: peer did not present the expected SAN "
            f"({_join(self.expected)}), got {_join(self.got) or '<no SPIFFE identity>'}"
        )


class TrustDomainMismatch(PeerRejected):
    """The client's certificate is from another trust domain than the server's."""

    def __init__(self, trust_domain: str, got: Iterable[Identity]):
        self.trust_domain = trust_domain
        self.got = list(got)
        super().__init__(
            "identity verification error: peer did not present the expected trustdomain "
            f"({trust_domain}), got {_join(self.got) or '<no SPIFFE identity>'}"
        )


def server_context(cert_chain_pem: ChainInput, key_pem: str | bytes, root_pem: str | bytes) -> ssl.SSLContext:
    """The HBONE listener's context (15008): client certificate required, chained to the mesh root."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, root_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.num_tickets = 0  # no TLS 1.3 session tickets, hence no resumption
    _load_identity(ctx, cert_chain_pem, key_pem, root_pem)
    return ctx


def client_context(cert_chain_pem: ChainInput, key_pem: str | bytes, root_pem: str | bytes) -> ssl.SSLContext:
    """The HBONE dialer's context. Wrap with `server_hostname=None`: no SNI, as ztunnel.

    Python only resumes a session it is handed (`session=`); never pass one, to match ztunnel's
    disabled resumption.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, root_pem)
    ctx.check_hostname = False  # the server is identified by its URI SAN: see check_peer
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_identity(ctx, cert_chain_pem, key_pem, root_pem)
    return ctx


def peer_leaf_der(conn: PeerCertificateSource) -> bytes | None:
    """The peer's leaf certificate (DER), or None if it sent none."""
    der = conn.getpeercert(binary_form=True)  # DER bytes, or None without a certificate
    return der if isinstance(der, bytes) and der else None


def peer_identities(conn: PeerCertificateSource) -> list[Identity]:
    """The SPIFFE identities in the peer leaf's URI SANs (the only place ztunnel takes them from)."""
    der = peer_leaf_der(conn)
    return identities_of(x509.load_der_x509_certificate(der)) if der else []


def check_peer(conn: PeerCertificateSource, expected: Iterable[Identity]) -> Identity:
    """Client side: the server's identity that was expected; IdentityMismatch otherwise."""
    expected = set(expected)
    got = peer_identities(conn)
    for identity in got:
        if identity in expected:
            return identity
    raise IdentityMismatch(expected, got)


def trust_domain_ok(conn: PeerCertificateSource, trust_domain: str) -> bool:
    """Server side: does the client hold an identity in our trust domain?"""
    return any(i.trust_domain == trust_domain for i in peer_identities(conn))


def check_trust_domain(conn: PeerCertificateSource, trust_domain: str) -> None:
    """Server side: TrustDomainMismatch unless trust_domain_ok."""
    if not trust_domain_ok(conn, trust_domain):
        raise TrustDomainMismatch(trust_domain, peer_identities(conn))


def xfcc(local: Identity, peer_leaf: bytes, existing: str | None = None) -> str:
    """Envoy's X-Forwarded-Client-Cert element as Istio configures it (APPEND_FORWARD; subject, URI, DNS).

    `By=<local URI>;Hash=<sha256 of the peer leaf DER>;Subject="<peer subject>";URI=<peer URI>`, then
    `;DNS=` per DNS SAN. An existing header gets the element appended after a comma.
    """
    cert = x509.load_der_x509_certificate(peer_leaf)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns_names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        uris, dns_names = [], []
    parts = [
        f"By={local}",
        f"Hash={hashlib.sha256(peer_leaf).hexdigest()}",
        f'Subject="{cert.subject.rfc4514_string()}"',
    ]
    parts += [f"URI={u}" for u in uris] or ["URI="]  # Envoy keeps the key even when empty
    parts += [f"DNS={d}" for d in dns_names]
    element = ";".join(parts)
    return f"{existing},{element}" if existing else element


def _base_context(protocol: int, root_pem: str | bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols([ALPN_H2])
    ctx.load_verify_locations(cadata=root_pem.decode() if isinstance(root_pem, bytes) else root_pem)
    return ctx


def _load_identity(
    ctx: ssl.SSLContext, cert_chain_pem: ChainInput, key_pem: str | bytes, root_pem: str | bytes
) -> None:
    """Load leaf + intermediates and key. The root is left out, as ztunnel sends it: the peer has it."""
    roots = load_certs(root_pem)
    chain = [c for c in load_certs(cert_chain_pem) if c not in roots]
    if not chain:
        raise ValueError("the certificate chain holds no certificate besides the root")
    pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in chain)
    key = key_pem.decode() if isinstance(key_pem, bytes) else key_pem
    _load_cert_chain_from_memory(ctx, (pem + key).encode())


def _load_cert_chain_from_memory(ctx: ssl.SSLContext, data: bytes) -> None:
    """stdlib ssl reads a private key only from a path. Give it an anonymous memory file (memfd):
    it never reaches a filesystem and is gone once closed. Without memfd, use a 0600 file in a
    private 0700 temp dir that is removed right after loading."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("mesh-tls-identity", os.MFD_CLOEXEC)
        try:
            _write_all(fd, data)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="mesh-tls-") as private_dir:
        path = os.path.join(private_dir, "identity.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        ctx.load_cert_chain(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _join(identities: Iterable[Identity]) -> str:
    return ",".join(str(i) for i in identities)
