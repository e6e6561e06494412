"""SO_ORIGINAL_DST parsing and the fallback to the local address."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from mesh.ztunnel.sockets import format_addr, original_dst, parse_sockaddr_in


def sockaddr_in(ip: str, port: int) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(ip) + b"\0" * 8


def test_parse_sockaddr_in():
    assert parse_sockaddr_in(sockaddr_in("10.244.1.7", 8080)) == ("10.244.1.7", 8080)
    assert parse_sockaddr_in(sockaddr_in("10.96.0.10", 53)[:8]) == ("10.96.0.10", 53)


@pytest.mark.parametrize("raw", [b"", b"\x02\x00", struct.pack("=H", socket.AF_INET6) + b"\0" * 14])
def test_parse_sockaddr_in_refuses_garbage(raw):
    with pytest.raises(ValueError):
        parse_sockaddr_in(raw)


def test_format_addr():
    assert format_addr(("10.0.0.1", 80)) == "10.0.0.1:80"
    assert format_addr(("fd00::1", 80)) == "[fd00::1]:80"


async def test_original_dst_falls_back_to_the_local_address():
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = trio.socket.socket()
    with listener, client:
        await client.connect(listener.getsockname())
        accepted, _ = await listener.accept()
        with accepted:  # no REDIRECT happened: no conntrack original destination
            assert original_dst(accepted) == listener.getsockname()


async def test_close_now_closes_sockets_and_streams_without_waiting():
    import trio.testing

    from mesh.ztunnel.sockets import close_now

    a, b = trio.socket.socketpair()
    stream = trio.SocketStream(a)
    await close_now(stream)
    assert stream.socket.fileno() == -1
    b.close()
    send, receive = trio.testing.memory_stream_pair()
    await close_now(send)
    with pytest.raises(trio.ClosedResourceError):
        await send.send_all(b"x")
    stapled = trio.StapledStream(*trio.testing.memory_stream_one_way_pair())  # no close(): aclose_forcefully
    await close_now(stapled)
    with pytest.raises(trio.ClosedResourceError):
        await stapled.send_all(b"x")
