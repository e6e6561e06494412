"""splice: both directions, half-close propagation, byte counts, errors."""

import functools

import pytest
import trio
import trio.testing

from mesh.hbone import SpliceStats, hbone_headers, open_hbone_connection, serve_hbone, splice
from tests.conftest import read_all


async def test_both_directions_and_half_close_propagate():
    app_client, downstream = trio.testing.memory_stream_pair()
    upstream, app_server = trio.testing.memory_stream_pair()
    stats = SpliceStats()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(splice, downstream, upstream, stats)
        await app_client.send_all(b"hello")
        await app_client.send_eof()
        assert await read_all(app_server) == b"hello"  # the FIN went through
        await app_server.send_all(b"world!")
        await app_server.send_eof()
        assert await read_all(app_client) == b"world!"
    assert (stats.bytes_sent, stats.bytes_recv) == (5, 6)


async def test_a_broken_side_stops_both_directions_and_raises_plainly():
    app_client, downstream = trio.testing.memory_stream_pair()
    upstream, app_server = trio.testing.memory_stream_pair()
    stats = SpliceStats()

    async def upstream_app_dies():
        await app_server.send_all(b"partial")
        assert await app_client.receive_some() == b"partial"  # it went through the splice
        await app_server.aclose()

    async def client_keeps_talking():
        while True:
            await app_client.send_all(b"x")
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(upstream_app_dies)
        nursery.start_soon(client_keeps_talking)
        with pytest.raises(trio.BrokenResourceError), trio.fail_after(1):  # plain, not an ExceptionGroup
            await splice(downstream, upstream, stats)
        nursery.cancel_scope.cancel()
    assert stats.bytes_recv == len(b"partial")


async def test_tcp_app_through_hbone_to_tcp_app():
    """app → splice → HBONE → splice → echo app, on real loopback sockets."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    client_stats, server_stats = SpliceStats(), SpliceStats()

    async def echo_app(stream):
        while data := await stream.receive_some():
            await stream.send_all(data)
        await stream.send_eof()

    async def inbound(request, respond, tunnel):
        upstream = await trio.open_tcp_stream(str(request.authority.ip), request.authority.port)
        await respond(200)  # only once the upstream connect succeeded, as ztunnel does
        async with upstream:
            await splice(tunnel, upstream, server_stats)

    async def hbone_server(transport):
        await serve_hbone(transport, inbound)

    async def app_sends(app):
        await app.send_all(payload)
        await app.send_eof()

    async with trio.open_nursery() as nursery:
        echo = await nursery.start(functools.partial(trio.serve_tcp, echo_app, 0, host="127.0.0.1"))
        hbone = await nursery.start(functools.partial(trio.serve_tcp, hbone_server, 0, host="127.0.0.1"))
        echo_port = echo[0].socket.getsockname()[1]
        hbone_port = hbone[0].socket.getsockname()[1]
        app, captured = (trio.SocketStream(s) for s in trio.socket.socketpair())
        transport = await trio.open_tcp_stream("127.0.0.1", hbone_port)
        async with open_hbone_connection(transport) as conn:
            tunnel = await conn.open_stream(f"127.0.0.1:{echo_port}", hbone_headers(source="127.0.0.1:1"))
            nursery.start_soon(splice, captured, tunnel, client_stats)
            nursery.start_soon(app_sends, app)
            echoed = await read_all(app)
        nursery.cancel_scope.cancel()
    assert echoed == payload
    assert (client_stats.bytes_sent, client_stats.bytes_recv) == (len(payload), len(payload))
    assert (server_stats.bytes_sent, server_stats.bytes_recv) == (len(payload), len(payload))


async def test_a_failing_request_direction_cancels_the_response_direction():
    """The response direction runs in splice's own task: when the other direction fails it
    is cancelled all the same, and the error is raised plainly."""
    app_client, downstream = trio.testing.memory_stream_pair()
    upstream, app_server = trio.testing.memory_stream_pair()

    async def break_downstream():
        await trio.sleep(0.01)
        await downstream.aclose()  # the request direction's receive fails; the response one waits

    async with trio.open_nursery() as nursery:
        nursery.start_soon(break_downstream)
        with pytest.raises(trio.ClosedResourceError), trio.fail_after(1):
            await splice(downstream, upstream, SpliceStats())
