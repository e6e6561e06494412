"""HBONE over mutual TLS 1.3 with ALPN h2, and the bulk-reading TlsStream, with throwaway certificates."""

import hashlib
import os

import pytest
import trio
import trio.testing
from cryptography import x509

from mesh.hbone import hbone_headers, open_hbone_connection, serve_hbone
from mesh.hbone._bench import hbone_context, self_signed
from mesh.hbone.tlsstream import TlsStream

from .test_hbone_stream import socket_pair

HEADERS = hbone_headers(source="10.244.0.5:40312")
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    server, client, rogue = (self_signed(directory, n) for n in ("httpbin", "sleep", "rogue"))
    return {
        "client": hbone_context("client", client, server[0]),
        "server": hbone_context("server", server, client[0]),
        "rogue": hbone_context("client", rogue, server[0]),
    }


async def tls_pair(contexts, client_cls=TlsStream, server_cls=TlsStream):
    client_sock, server_sock = socket_pair()
    client = client_cls(client_sock, contexts["client"], server_hostname=None)
    server = server_cls(server_sock, contexts["server"], server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    return client, server


async def echo(request, respond, stream):
    await respond(200)
    while data := await stream.receive_some():
        await stream.send_all(data)
    await stream.send_eof()


async def hbone_round_trip(client_tls, server_tls, payload: bytes) -> bytes:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_hbone, server_tls, echo)
        async with open_hbone_connection(client_tls) as client:
            stream = await client.open_stream("10.0.0.1:80", HEADERS)

            async def send():
                await stream.send_all(payload)
                await stream.send_eof()

            nursery.start_soon(send)
            chunks = []
            while data := await stream.receive_some():
                chunks.append(data)
    return b"".join(chunks)


async def test_tls_stream_passes_trios_stream_checks(contexts):
    async def stream_maker():
        return await tls_pair(contexts)

    await trio.testing.check_two_way_stream(stream_maker, None)


@pytest.mark.parametrize(
    "client_cls, server_cls",
    [(TlsStream, trio.SSLStream), (trio.SSLStream, TlsStream)],
    ids=["TlsStream client, SSLStream server", "SSLStream client, TlsStream server"],
)
async def test_tls_stream_interoperates_with_trios_sslstream(contexts, client_cls, server_cls):
    client, server = await tls_pair(contexts, client_cls, server_cls)
    assert client.selected_alpn_protocol() == server.selected_alpn_protocol() == "h2"
    assert client.version() == "TLSv1.3"
    peer = x509.load_der_x509_certificate(server.getpeercert(binary_form=True))
    uris = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert uris == ["spiffe://cluster.local/ns/ns1/sa/sleep"]
    payload = os.urandom(3 * MiB)
    echoed = await hbone_round_trip(client, server, payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


async def test_tls_stream_decrypts_many_records_per_read(contexts):
    client, server = await tls_pair(contexts)
    sizes = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"r" * (4 * MiB))
        while sum(sizes) < 4 * MiB:
            await trio.sleep(0.001)  # let several records pile up
            sizes.append(len(await server.receive_some()))
    assert max(sizes) > 16 * 1024  # more than one TLS record in one receive_some
    await client.aclose()
    await server.aclose()


async def test_hbone_over_tls_stream(contexts):
    client, server = await tls_pair(contexts)
    payload = os.urandom(20 * MiB)
    echoed = await hbone_round_trip(client, server, payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


async def test_hbone_over_trios_sslstream(contexts):
    client, server = await tls_pair(contexts, trio.SSLStream, trio.SSLStream)
    assert await hbone_round_trip(client, server, b"hello over SSLStream") == b"hello over SSLStream"


async def test_untrusted_client_certificate_is_refused(contexts):
    client_sock, server_sock = socket_pair()
    client = TlsStream(client_sock, contexts["rogue"])
    server = TlsStream(server_sock, contexts["server"], server_side=True)

    async def server_side():
        with pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()
        await server.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        with pytest.raises(trio.BrokenResourceError):
            await client.do_handshake()  # TLS 1.3: the client may finish first...
            await client.receive_some()  # ...and hear the alert on its first read
    await client.aclose()


async def test_send_nowait_writes_without_yielding_and_keeps_order(contexts):
    client, server = await tls_pair(contexts)
    assert client.send_nowait(b"first ") is True
    await client.send_all(b"second")
    got = b""
    while len(got) < len(b"first second"):
        got += await server.receive_some()
    assert got == b"first second"
    # More than the socket buffer takes at once: the rest goes out, in order, with the next send_all.
    big = bytes(range(256)) * 40000
    client.send_nowait(big)  # True or False: either way nothing is lost or reordered
    async with trio.open_nursery() as nursery:

        async def drain():
            buf = bytearray()
            while len(buf) < len(big) + 4:
                buf += await server.receive_some()
            assert bytes(buf) == big + b"tail"

        nursery.start_soon(drain)
        await client.send_all(b"tail")
    await client.aclose()
    with pytest.raises(trio.WouldBlock):
        client.send_nowait(b"after close")


async def test_send_nowait_before_the_handshake_would_block(contexts):
    a, _ = socket_pair()
    stream = TlsStream(a, contexts["client"], server_hostname=None)
    with pytest.raises(trio.WouldBlock):
        stream.send_nowait(b"x")
