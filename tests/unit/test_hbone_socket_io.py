"""The socket helpers of the HBONE data path: reads that wait first, writes that try first."""

import socket

import pytest
import trio

from mesh.hbone.splice import receive_from_socket, receive_into_from_socket, send_to_socket

from .test_hbone_stream import socket_pair


async def test_a_read_waits_for_data_and_returns_what_is_there():
    a, b = socket_pair()
    async with trio.open_nursery() as nursery:

        async def later():
            await trio.sleep(0.05)
            await b.send_all(b"hello")

        nursery.start_soon(later)
        with trio.fail_after(2):
            assert await receive_from_socket(a, 1024) == b"hello"
    await b.send_eof()
    assert await receive_from_socket(a, 1024) == b""  # EOF


async def test_a_read_into_a_buffer_counts_bytes():
    a, b = socket_pair()
    buffer = memoryview(bytearray(16))
    await send_to_socket(b, b"abc")
    assert await receive_into_from_socket(a, buffer) == 3
    assert bytes(buffer[:3]) == b"abc"
    b.socket.close()
    assert await receive_into_from_socket(a, buffer) == 0


async def test_a_read_is_cancellable_while_it_waits():
    a, _b = socket_pair()
    with trio.move_on_after(0.05) as scope:
        await receive_from_socket(a, 1024)
    assert scope.cancelled_caught


async def test_errors_are_trio_stream_errors():
    a, b = socket_pair()
    a.socket.close()
    with pytest.raises(trio.ClosedResourceError):
        await receive_from_socket(a, 10)

    # A peer that resets the connection: the read reports a broken stream.
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = trio.socket.socket()
    await client.connect(listener.getsockname())
    server, _ = await listener.accept()
    await client.send(b"x")  # unread data makes the close a reset
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    stream = trio.SocketStream(server)
    with pytest.raises(trio.BrokenResourceError):
        while await receive_from_socket(stream, 1):
            pass
    listener.close()


async def test_a_write_larger_than_the_socket_buffer_completes():
    a, b = socket_pair()
    payload = b"z" * (4 * 1024 * 1024)
    received = bytearray()

    async def drain():
        while len(received) < len(payload):
            received.extend(await receive_from_socket(b, 65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await send_to_socket(a, payload)
    assert bytes(received) == payload
