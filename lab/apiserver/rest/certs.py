"""The lab's own certificate authority for its Kubernetes endpoint, and the kubeconfig that uses it.

kubectl cannot speak over a Unix socket and sends no credentials over plain HTTP, so the REST
endpoint is HTTPS with client certificates, as a kubeadm cluster's is: one CA per lab (EC P-256),
a serving certificate for 127.0.0.1/localhost and a client certificate for `lab-admin` in the
group `system:masters` (the CN is the user, each O a group: Kubernetes' x509 authenticator).
Everything is made once per lab and kept in `<lab dir>/pki/` (keys 0600), so a labd restart
keeps the kubeconfig users already hold.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ADMIN_USER = "lab-admin"
ADMIN_GROUP = "system:masters"
_FILES = ("ca.crt", "ca.key", "apiserver.crt", "apiserver.key", "admin.crt", "admin.key")


@dataclass(frozen=True)
class Pki:
    """The PEM files of one lab's endpoint, and where they are."""

    directory: str
    ca_cert: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # an existing file keeps its mode through O_CREAT


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    days: int,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def generate(directory: str, lab: str) -> Pki:
    """A new CA, serving and client certificate for LAB, written to DIRECTORY."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"lab-{lab}-ca")])
    ca = _cert(ca_name, ca_name, ca_key, ca_key, 3650, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        ca_name,
        server_key,
        ca_key,
        825,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
            ]
        ),
        ca_name,
        client_key,
        ca_key,
        825,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    pki = Pki(directory, _pem(ca), _pem(server), _key_pem(server_key), _pem(client), _key_pem(client_key))
    _write(pki.path("ca.key"), _key_pem(ca_key), 0o600)
    for name, data in (("ca.crt", pki.ca_cert), ("apiserver.crt", pki.server_cert), ("admin.crt", pki.client_cert)):
        _write(pki.path(name), data, 0o644)
    _write(pki.path("apiserver.key"), pki.server_key, 0o600)
    _write(pki.path("admin.key"), pki.client_key, 0o600)
    return pki


def load(directory: str) -> Pki | None:
    """The PKI kept in DIRECTORY, or None when a file is missing or a certificate has expired."""
    try:
        data = {}
        for name in _FILES:
            with open(os.path.join(directory, name), "rb") as f:
                data[name] = f.read()
        now = dt.datetime.now(dt.timezone.utc)
        for name in ("ca.crt", "apiserver.crt", "admin.crt"):
            if x509.load_pem_x509_certificate(data[name]).not_valid_after_utc <= now:
                return None
    except (OSError, ValueError):
        return None
    return Pki(
        directory, data["ca.crt"], data["apiserver.crt"], data["apiserver.key"], data["admin.crt"], data["admin.key"]
    )


def ensure(directory: str, lab: str) -> Pki:
    """The lab's PKI: the one kept in DIRECTORY, else a new one."""
    return load(directory) or generate(directory, lab)


def server_context(pki: Pki) -> ssl.SSLContext:
    """TLS for the endpoint: ALPN http/1.1, client certificates optional but verified against the
    lab's CA (a request without one is answered 401, as kube-apiserver does)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.path("apiserver.crt"), pki.path("apiserver.key"))
    ctx.load_verify_locations(cadata=pki.ca_cert.decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_context(pki: Pki, with_cert: bool = True) -> ssl.SSLContext:
    """What a client of the endpoint uses (tests, `lab` itself): the lab's CA, the admin cert."""
    ctx = ssl.create_default_context(cadata=pki.ca_cert.decode())
    if with_cert:
        ctx.load_cert_chain(pki.path("admin.crt"), pki.path("admin.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def peer_identity(cert: dict | None) -> tuple[str, tuple[str, ...]] | None:
    """(user, groups) of a verified client certificate as `SSLSocket.getpeercert()` gives it."""
    if not cert:
        return None
    user, groups = None, []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                user = value
            elif key == "organizationName":
                groups.append(value)
    return (user, tuple(groups)) if user else None


def kubeconfig(pki: Pki, lab: str, port: int) -> str:
    """A kubeconfig for LAB: cluster `lab-<lab>`, user `lab-<lab>-admin`, context `<lab>` (current)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    cluster, user = f"lab-{lab}", f"lab-{lab}-admin"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": cluster,
                "cluster": {"certificate-authority-data": b64(pki.ca_cert), "server": f"https://127.0.0.1:{port}"},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(pki.client_cert), "client-key-data": b64(pki.client_key)},
            }
        ],
        "contexts": [{"name": lab, "context": {"cluster": cluster, "user": user}}],
        "current-context": lab,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfig(path: str, text: str) -> None:
    """The kubeconfig carries the admin key: 0600, replaced atomically (a reader never sees half)."""
    tmp = f"{path}.tmp"
    _write(tmp, text.encode(), 0o600)
    os.replace(tmp, path)
