"""Real TLS 1.3 handshakes (OpenSSL through stdlib ssl) between trio streams over a socket pair."""

import hashlib
import os
import re
import ssl
import tempfile
from datetime import datetime, timedelta, timezone

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mesh import tls
from mesh.identity.ca import RootCA, make_csr
from mesh.identity.spiffe import Identity

SLEEP = Identity("cluster.local", "default", "sleep")
HTTPBIN = Identity("cluster.local", "default", "httpbin")


class Workload:
    def __init__(self, root, identity, **sign):
        self.identity = identity
        self.key_pem, csr = make_csr(identity)
        self.chain = root.sign_csr(csr, [identity], **sign)
        self.root_pem = root.cert_pem

    def client(self):
        return tls.client_context(self.chain, self.key_pem, self.root_pem)

    def server(self):
        return tls.server_context(self.chain, self.key_pem, self.root_pem)

    @property
    def leaf_der(self):
        return x509.load_pem_x509_certificate(self.chain[0].encode()).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def root():
    return RootCA.generate()


@pytest.fixture(scope="module")
def sleep(root):
    return Workload(root, SLEEP)


@pytest.fixture(scope="module")
def httpbin(root):
    return Workload(root, HTTPBIN)


@pytest.fixture(scope="module")
def server_ctx(httpbin):
    return httpbin.server()


class Result:
    def __init__(self, client, server, errors):
        self.client, self.server, self.errors = client, server, errors


async def handshake(client_ctx, server_ctx):
    """Both sides handshake then exchange one message; each side's failure is recorded.

    In TLS 1.3 the client finishes its handshake before the server has checked the client's
    certificate, so a refused client learns of it on its first read: hence the exchange.
    """
    a, b = trio.socket.socketpair()
    client = trio.SSLStream(trio.SocketStream(a), client_ctx, server_hostname=None)
    server = trio.SSLStream(trio.SocketStream(b), server_ctx, server_side=True)
    errors = {}

    async def run(name, stream, send, expect):
        try:
            await stream.do_handshake()
            if send:
                await stream.send_all(send)
            data = await stream.receive_some()
            if data != expect:
                raise ConnectionError(f"expected {expect!r}, got {data!r}")
            if not send:
                await stream.send_all(b"pong")
        except (trio.BrokenResourceError, ConnectionError, ssl.SSLError) as e:
            errors[name] = e
            await stream.transport_stream.aclose()  # unblock the peer

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "client", client, b"ping", b"pong")
            nursery.start_soon(run, "server", server, None, b"ping")
    await client.transport_stream.aclose()
    await server.transport_stream.aclose()
    return Result(client, server, errors)


def ssl_reason(error):
    """The OpenSSL reason behind a trio error, for asserting why a handshake failed."""
    while error is not None and not isinstance(error, ssl.SSLError):
        error = error.__cause__ or error.__context__
    return getattr(error, "reason", None) or str(error)


# --- contexts -------------------------------------------------------------------------------------


def test_contexts_are_tls13_only_with_h2(sleep, server_ctx):
    client = sleep.client()
    for ctx in (client, server_ctx):
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname is False
    assert server_ctx.num_tickets == 0


def test_a_key_that_does_not_match_is_refused(sleep, httpbin):
    with pytest.raises(ssl.SSLError):
        tls.server_context(sleep.chain, httpbin.key_pem, sleep.root_pem)


def test_the_chain_must_hold_more_than_the_root(sleep):
    with pytest.raises(ValueError):
        tls.client_context([sleep.root_pem], sleep.key_pem, sleep.root_pem)


def test_without_memfd_the_key_goes_through_a_private_temp_file_that_is_removed(sleep, monkeypatch):
    monkeypatch.delattr(os, "memfd_create")
    before = set(os.listdir(tempfile.gettempdir()))
    assert isinstance(sleep.client(), ssl.SSLContext)
    assert {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("mesh-tls-")} == set()


# --- handshakes -----------------------------------------------------------------------------------


async def test_mutual_tls13_handshake_negotiates_h2_and_both_identities(sleep, server_ctx):
    r = await handshake(sleep.client(), server_ctx)
    assert r.errors == {}
    assert r.client.selected_alpn_protocol() == r.server.selected_alpn_protocol() == "h2"
    assert r.client.version() == "TLSv1.3"
    assert tls.peer_identities(r.client) == [HTTPBIN]
    assert tls.peer_identities(r.server) == [SLEEP]
    assert tls.check_peer(r.client, {HTTPBIN, Identity("cluster.local", "default", "other")}) == HTTPBIN
    assert tls.trust_domain_ok(r.server, "cluster.local")
    tls.check_trust_domain(r.server, "cluster.local")
    assert tls.peer_leaf_der(r.server) == sleep.leaf_der


async def test_mesh_certs_pass_openssl_strict_checks(sleep, httpbin):
    # Python 3.13 turns VERIFY_X509_STRICT on by default: the CA template must already satisfy it
    client, server = sleep.client(), httpbin.server()
    for ctx in (client, server):
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    assert (await handshake(client, server)).errors == {}


async def test_no_session_ticket_and_no_sni(sleep, httpbin):
    server = httpbin.server()
    seen = []
    server.sni_callback = lambda _obj, name, _ctx: seen.append(name)
    r = await handshake(sleep.client(), server)
    assert r.errors == {}
    assert seen == [None]
    assert not r.client.session.has_ticket


async def test_a_client_cert_from_another_ca_is_refused(root, server_ctx):
    stranger = Workload(RootCA.generate(), SLEEP)
    # it trusts the mesh root (so it accepts the server) but holds a cert from its own CA
    client = tls.client_context(stranger.chain, stranger.key_pem, root.cert_pem)
    r = await handshake(client, server_ctx)
    assert "CERTIFICATE_VERIFY_FAILED" in ssl_reason(r.errors["server"])
    assert "client" in r.errors


async def test_a_client_without_a_cert_is_refused(sleep, server_ctx):
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.minimum_version = ssl.TLSVersion.TLSv1_3
    anonymous.set_alpn_protocols(["h2"])
    anonymous.load_verify_locations(cadata=sleep.root_pem)
    r = await handshake(anonymous, server_ctx)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in ssl_reason(r.errors["server"])
    assert "client" in r.errors


async def test_a_tls12_only_client_is_refused(sleep, server_ctx):
    old = sleep.client()
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_2
    r = await handshake(old, server_ctx)
    assert "UNSUPPORTED_PROTOCOL" in ssl_reason(r.errors["server"])
    assert "client" in r.errors


async def test_an_expired_client_cert_is_refused(root, server_ctx):
    expired = Workload(root, SLEEP, now=datetime.now(timezone.utc) - timedelta(days=2))
    r = await handshake(expired.client(), server_ctx)
    assert "CERTIFICATE_VERIFY_FAILED" in ssl_reason(r.errors["server"])


async def test_the_client_refuses_a_server_from_another_ca(sleep):
    impostor = Workload(RootCA.generate(), HTTPBIN)
    r = await handshake(sleep.client(), impostor.server())
    assert "CERTIFICATE_VERIFY_FAILED" in ssl_reason(r.errors["client"])


async def test_check_peer_names_both_sides_on_mismatch(sleep, server_ctx):
    r = await handshake(sleep.client(), server_ctx)
    wanted = Identity("cluster.local", "default", "reviews")
    with pytest.raises(tls.IdentityMismatch) as e:
        tls.check_peer(r.client, {wanted})
    assert str(e.value) == (
        "identity verification error: peer did not present the expected SAN "
        "(spiffe://cluster.local/ns/default/sa/reviews), "
        "got spiffe://cluster.local/ns/default/sa/httpbin"
    )
    assert e.value.expected == [wanted] and e.value.got == [HTTPBIN]


async def test_a_client_from_another_trust_domain_is_caught_after_the_handshake(root, server_ctx):
    # same root, so OpenSSL accepts it; ztunnel's TrustDomainVerifier would not
    foreign = Workload(root, Identity("example.org", "default", "sleep"))
    r = await handshake(foreign.client(), server_ctx)
    assert r.errors == {}
    assert not tls.trust_domain_ok(r.server, "cluster.local")
    with pytest.raises(
        tls.TrustDomainMismatch,
        match=r"expected trustdomain \(cluster.local\), "
        r"got spiffe://example.org/ns/default/sa/sleep",
    ):
        tls.check_trust_domain(r.server, "cluster.local")


def test_no_peer_cert_means_no_identities():
    class NoCert:
        def getpeercert(self, binary_form=False):
            return None

    assert tls.peer_identities(NoCert()) == []
    with pytest.raises(tls.IdentityMismatch, match="got <no SPIFFE identity>"):
        tls.check_peer(NoCert(), {HTTPBIN})


# --- X-Forwarded-Client-Cert ----------------------------------------------------------------------


def test_xfcc_element_as_envoy_writes_it(sleep):
    value = tls.xfcc(HTTPBIN, sleep.leaf_der)
    digest = hashlib.sha256(sleep.leaf_der).hexdigest()
    assert value == (
        f"By=spiffe://cluster.local/ns/default/sa/httpbin;Hash={digest};"
        f'Subject="";URI=spiffe://cluster.local/ns/default/sa/sleep'
    )
    assert re.fullmatch(r'By=spiffe://[^;]+;Hash=[0-9a-f]{64};Subject="";URI=spiffe://[^;]+', value)


def test_xfcc_appends_to_an_existing_header(sleep):
    first = "By=spiffe://cluster.local/ns/a/sa/a;Hash=00;Subject=\"\";URI=spiffe://cluster.local/ns/b/sa/b"
    assert tls.xfcc(HTTPBIN, sleep.leaf_der, existing=first) == f"{first},{tls.xfcc(HTTPBIN, sleep.leaf_der)}"


def test_xfcc_with_a_subject_and_dns_names(root):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "acme")]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(9)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("a.example"), x509.DNSName("b.example")]), critical=False
        )
        .sign(root.key, hashes.SHA256())
    )
    value = tls.xfcc(HTTPBIN, cert.public_bytes(serialization.Encoding.DER))
    assert value.endswith(';Subject="O=acme";URI=;DNS=a.example;DNS=b.example')
