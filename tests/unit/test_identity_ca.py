from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.identity.ca import (
    CAError,
    CertExpired,
    CertInfo,
    CertNotYetValid,
    CSRError,
    NoSpiffeIdentity,
    RootCA,
    TTLError,
    UntrustedChain,
    cert_info,
    identities_of,
    load_certs,
    make_csr,
    refresh_at,
    verify_chain,
)
from mesh.identity.spiffe import Identity

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
SLEEP = Identity("cluster.local", "default", "sleep")
HTTPBIN = Identity("cluster.local", "default", "httpbin")


@pytest.fixture(scope="module")
def root():
    return RootCA.generate(now=NOW - timedelta(days=1))


@pytest.fixture(scope="module")
def other_root():
    return RootCA.generate(now=NOW - timedelta(days=1))


@pytest.fixture(scope="module")
def csr():
    return make_csr(SLEEP)


@pytest.fixture(scope="module")
def chain(root, csr):
    return root.sign_csr(csr[1], [SLEEP], now=NOW)


@pytest.fixture(scope="module")
def leaf(chain):
    return x509.load_pem_x509_certificate(chain[0].encode())


def ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def cert_signed_by(root, sans, now=NOW):
    """A leaf the CA would never issue (arbitrary SANs), for verify_chain's negative cases."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=True)
    return builder.sign(root.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


# --- the root -------------------------------------------------------------------------------------


def test_root_is_self_signed_like_istiods(root):
    c = root.cert
    org = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    assert c.subject == org and c.issuer == org
    c.verify_directly_issued_by(c)
    bc = ext(c, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(c, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and not ku.value.digital_signature
    assert c.not_valid_after_utc - c.not_valid_before_utc == timedelta(days=3650)
    assert isinstance(c.public_key(), ec.EllipticCurvePublicKey) and c.public_key().curve.name == "secp256r1"
    assert root.trust_domain == "cluster.local"


def test_root_for_another_trust_domain():
    r = RootCA.generate("example.org", ttl=timedelta(days=1))
    assert r.trust_domain == "example.org"
    assert r.cert.subject.rfc4514_string() == "O=example.org"


def test_root_round_trips_through_pem(root, csr):
    cert_pem, key_pem = root.to_pem()
    assert key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    restored = RootCA.from_pem(cert_pem, key_pem)
    assert restored.cert == root.cert
    # a cert signed by the restored CA verifies against the original root
    assert verify_chain(restored.sign_csr(csr[1], [SLEEP], now=NOW), root.cert_pem, now=NOW) == [SLEEP]


def test_from_pem_refuses_a_foreign_key(root, other_root):
    with pytest.raises(CAError, match="does not belong"):
        RootCA.from_pem(root.cert_pem, other_root.to_pem().key_pem)


def test_from_pem_refuses_a_leaf(chain, csr):
    with pytest.raises(CAError, match="not a CA"):
        RootCA.from_pem(chain[0], csr[0])


def test_from_pem_accepts_an_rsa_root_like_istiods_default():
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # small: test speed only
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    rsa_root = RootCA.from_pem(cert.public_bytes(serialization.Encoding.PEM), key_pem)
    _, csr_pem = make_csr(SLEEP)
    chain = rsa_root.sign_csr(csr_pem, [SLEEP], now=NOW)
    assert verify_chain(chain, rsa_root.cert_pem, now=NOW) == [SLEEP]


# --- the CSR ztunnel makes ------------------------------------------------------------------------


def test_csr_is_shaped_like_ztunnels(csr):
    key_pem, csr_pem = csr
    req = x509.load_pem_x509_csr(csr_pem.encode())
    assert req.is_signature_valid
    assert isinstance(req.signature_hash_algorithm, hashes.SHA256)
    assert req.subject == x509.Name([])
    san = ext(req, x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier(str(SLEEP))]
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == req.public_key()


# --- istiod's signing template --------------------------------------------------------------------


def test_chain_is_leaf_then_root(chain, root, leaf):
    assert len(chain) == 2
    assert chain[1] == root.cert_pem
    assert all(p.startswith("-----BEGIN CERTIFICATE-----") and p.endswith("\n") for p in chain)
    assert leaf.issuer == root.cert.subject
    leaf.verify_directly_issued_by(root.cert)


def test_validity_is_backdated_two_minutes_and_lasts_24h(leaf):
    assert leaf.not_valid_before_utc == NOW - timedelta(minutes=2)
    assert leaf.not_valid_after_utc == NOW + timedelta(hours=24)


def test_key_usages(leaf):
    ku = ext(leaf, x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature and ku.value.key_encipherment
    assert not (
        ku.value.key_cert_sign
        or ku.value.crl_sign
        or ku.value.content_commitment
        or ku.value.data_encipherment
        or ku.value.key_agreement
    )
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert ext(leaf, x509.BasicConstraints).value.ca is False


def test_san_is_critical_subject_is_empty(leaf):
    san = ext(leaf, x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [str(SLEEP)]
    assert san.value.get_values_for_type(x509.DNSName) == []
    assert leaf.subject == x509.Name([])


def test_leaf_carries_the_csr_key_and_the_root_key_id(leaf, csr, root):
    assert leaf.public_key() == x509.load_pem_x509_csr(csr[1].encode()).public_key()
    aki = ext(leaf, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(root.cert, x509.SubjectKeyIdentifier).value.digest


def test_serials_are_random_and_positive(root, csr, leaf):
    again = load_certs(root.sign_csr(csr[1], [SLEEP], now=NOW))[0]
    assert again.serial_number != leaf.serial_number
    assert 0 < leaf.serial_number < 2**128


def test_sans_come_from_the_authorized_identities_not_the_csr(root, csr):
    leaf = load_certs(root.sign_csr(csr[1], [HTTPBIN], now=NOW))[0]  # CSR asks for sleep
    assert identities_of(leaf) == [HTTPBIN]


def test_several_identities_all_go_into_the_san(root, csr):
    leaf = load_certs(root.sign_csr(csr[1], [SLEEP, HTTPBIN], now=NOW))[0]
    assert identities_of(leaf) == [SLEEP, HTTPBIN]


def test_a_csr_with_a_bad_signature_is_refused(root, csr):
    der = bytearray(x509.load_pem_x509_csr(csr[1].encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CSRError, match="signature"):
        root.sign_csr(tampered, [SLEEP], now=NOW)


def test_garbage_is_not_a_csr(root):
    with pytest.raises(CSRError):
        root.sign_csr(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", [SLEEP], now=NOW
        )


def test_not_after_is_clamped_to_the_root(csr):
    short_root = RootCA.generate(ttl=timedelta(days=1), now=NOW)
    leaf = load_certs(short_root.sign_csr(csr[1], [SLEEP], now=NOW + timedelta(hours=12)))[0]
    assert leaf.not_valid_after_utc == short_root.cert.not_valid_after_utc == NOW + timedelta(days=1)


def test_an_expired_root_signs_nothing(csr):
    old_root = RootCA.generate(ttl=timedelta(days=1), now=NOW - timedelta(days=2))
    with pytest.raises(CAError, match="expired"):
        old_root.sign_csr(csr[1], [SLEEP], now=NOW)


def test_ttl_rules(root, csr):
    with pytest.raises(TTLError):
        root.sign_csr(csr[1], [SLEEP], ttl=timedelta(days=91), now=NOW)
    longest = load_certs(root.sign_csr(csr[1], [SLEEP], ttl=timedelta(days=90), now=NOW))[0]
    assert longest.not_valid_after_utc == NOW + timedelta(days=90)
    default = load_certs(root.sign_csr(csr[1], [SLEEP], ttl=timedelta(0), now=NOW))[0]
    assert default.not_valid_after_utc == NOW + timedelta(hours=24)


def test_no_identities_no_certificate(root, csr):
    with pytest.raises(CAError):
        root.sign_csr(csr[1], [], now=NOW)


# --- reading certificates -------------------------------------------------------------------------


def test_cert_info_of_a_leaf(chain, leaf):
    info = cert_info(chain[0])
    assert info == CertInfo(
        serial_hex=format(leaf.serial_number, "x"),
        not_before=NOW - timedelta(minutes=2),
        not_after=NOW + timedelta(hours=24),
        identities=(SLEEP,),
        is_ca=False,
        issuer="O=cluster.local",
    )
    assert info.serial_hex == info.serial_hex.lower() and not info.serial_hex.startswith("0")
    assert info.valid_at(NOW) and not info.valid_at(NOW + timedelta(days=2))


def test_cert_info_of_the_root(root):
    info = cert_info(root.cert_pem)
    assert info.is_ca and info.identities == () and info.issuer == "O=cluster.local"


def test_refresh_at_half_life(chain):
    # 24h cert backdated 2 min: renew 11h59m after issuance, as ztunnel does
    assert refresh_at(chain[0]) == NOW + timedelta(hours=11, minutes=59)
    assert refresh_at(cert_info(chain[0])) == refresh_at(chain[0])


def test_identities_of_skips_non_spiffe_uris(root):
    pem = cert_signed_by(
        root,
        [
            x509.UniformResourceIdentifier("https://example.com/x"),
            x509.UniformResourceIdentifier(str(HTTPBIN)),
            x509.DNSName("httpbin.default"),
        ],
    )
    assert identities_of(load_certs(pem)[0]) == [HTTPBIN]


# --- verifying a CA answer ------------------------------------------------------------------------


def test_verify_chain_returns_the_leaf_identities(chain, root):
    assert verify_chain(chain, root.cert_pem, now=NOW) == [SLEEP]
    assert verify_chain(chain[:1], root.cert_pem, now=NOW) == [SLEEP]  # root left out
    assert verify_chain("".join(chain), root.cert_pem, now=NOW) == [SLEEP]  # one PEM string


def test_verify_chain_accepts_a_bundle_of_roots(chain, root, other_root):
    assert verify_chain(chain, other_root.cert_pem + root.cert_pem, now=NOW) == [SLEEP]


def test_a_cert_from_another_ca_is_refused(chain, other_root):
    # both roots are named O=cluster.local: only the signature tells them apart
    with pytest.raises(UntrustedChain, match="another CA") as e:
        verify_chain(chain, other_root.cert_pem, now=NOW)
    assert str(SLEEP) in str(e.value)


def test_an_expired_cert_is_refused(chain, root):
    with pytest.raises(CertExpired, match="expired at 2030-01-02T12:00:00Z"):
        verify_chain(chain, root.cert_pem, now=NOW + timedelta(hours=25))


def test_a_cert_not_yet_valid_is_refused(chain, root):
    with pytest.raises(CertNotYetValid):
        verify_chain(chain, root.cert_pem, now=NOW - timedelta(hours=1))


def test_a_cert_without_spiffe_san_is_refused(root):
    dns_only = cert_signed_by(root, [x509.DNSName("httpbin.default.svc.cluster.local")])
    with pytest.raises(NoSpiffeIdentity):
        verify_chain([dns_only, root.cert_pem], root.cert_pem, now=NOW)
    with pytest.raises(NoSpiffeIdentity):
        verify_chain(cert_signed_by(root, None), root.cert_pem, now=NOW)


def test_a_leaf_cannot_vouch_for_another_leaf(root, chain):
    other_leaf = cert_signed_by(root, [x509.UniformResourceIdentifier(str(HTTPBIN))])
    with pytest.raises(UntrustedChain, match="not a CA"):
        verify_chain([chain[0], other_leaf, root.cert_pem], root.cert_pem, now=NOW)
