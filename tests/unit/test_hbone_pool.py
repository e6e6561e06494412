"""The outbound HBONE pool: reuse, the per-connection stream limit, dead and idle connections."""

import dataclasses
import functools
from contextlib import asynccontextmanager

import pytest
import trio

from mesh.hbone import (
    CLIENT_SETTINGS,
    SERVER_SETTINGS,
    HboneError,
    WorkloadKey,
    hbone_headers,
    open_hbone_pool,
    serve_hbone,
)

KEY = WorkloadKey(
    src_id="spiffe://cluster.local/ns/ns1/sa/sleep",
    src="10.244.0.5",
    dst_ids=("spiffe://cluster.local/ns/ns1/sa/httpbin",),
    dst="10.244.1.7:15008",
)
HEADERS = hbone_headers(source="10.244.0.5:40312")


async def answer(request, respond, stream):
    """Deny port 401; otherwise hold the tunnel open until the client ends it."""
    if request.authority.port == 401:
        await respond(401)
        return
    await respond(200)
    while await stream.receive_some():
        pass


class Upstreams:
    """The far side: every connect is a real socketpair with serve_hbone on its other end."""

    def __init__(self, nursery, settings=SERVER_SETTINGS):
        self._nursery = nursery
        self._settings = settings
        self.connects = []
        self.servers = []
        self.server_sockets = []
        self.fail_next = False

    async def connect(self, key):
        self.connects.append(key)
        if self.fail_next:
            self.fail_next = False
            raise ConnectionRefusedError("nothing listens on 15008")
        ours, theirs = trio.socket.socketpair()
        server_socket = trio.SocketStream(theirs)
        server = await self._nursery.start(
            functools.partial(serve_hbone, server_socket, answer, settings=self._settings)
        )
        self.servers.append(server)
        self.server_sockets.append(server_socket)
        return trio.SocketStream(ours)


@asynccontextmanager
async def pool_and_upstreams(server_settings=SERVER_SETTINGS, **pool_options):
    """An HBONE pool whose every connect reaches a fresh `Upstreams` server: yields (pool, upstreams)."""
    async with trio.open_nursery() as nursery:
        upstreams = Upstreams(nursery, settings=server_settings)
        async with open_hbone_pool(upstreams.connect, **pool_options) as pool:
            yield pool, upstreams


async def test_key_normalizes_expected_identities():
    assert WorkloadKey("a", "1.1.1.1", ("y", "x", "x"), "2.2.2.2:15008") == WorkloadKey(
        "a", "1.1.1.1", ("x", "y"), "2.2.2.2:15008"
    )


async def test_connection_is_reused_per_key():
    async with pool_and_upstreams() as (pool, upstreams):
        first = await pool.open_stream(KEY, "10.244.1.7:80", HEADERS)
        second = await pool.open_stream(KEY, "10.244.1.7:80", HEADERS)
        await first.aclose()
        third = await pool.open_stream(KEY, "10.244.1.7:8080", HEADERS)
        assert upstreams.connects == [KEY]
        other = WorkloadKey("spiffe://cluster.local/ns/ns1/sa/other", KEY.src, KEY.dst_ids, KEY.dst)
        fourth = await pool.open_stream(other, "10.244.1.7:80", HEADERS)
        assert upstreams.connects == [KEY, other]
        for stream in (second, third, fourth):
            await stream.aclose()


async def test_concurrent_first_streams_share_one_connect():
    async with pool_and_upstreams() as (pool, upstreams):
        streams = []

        async def open_one():
            streams.append(await pool.open_stream(KEY, "10.244.1.7:80", HEADERS))

        async with trio.open_nursery() as openers:
            for _ in range(10):
                openers.start_soon(open_one)
        assert len(streams) == 10 and len(upstreams.connects) == 1
        for stream in streams:
            await stream.aclose()


@pytest.mark.parametrize("client_limit, server_limit", [(100, 2), (2, 200)], ids=["peer advertises 2", "our cap is 2"])
async def test_a_full_connection_makes_the_pool_open_another(client_limit, server_limit):
    client = dataclasses.replace(CLIENT_SETTINGS, max_concurrent_streams=client_limit)
    server = dataclasses.replace(SERVER_SETTINGS, max_concurrent_streams=server_limit)
    async with pool_and_upstreams(server_settings=server, settings=client) as (pool, upstreams):
        streams = [await pool.open_stream(KEY, "10.244.1.7:80", HEADERS) for _ in range(3)]
        assert len(upstreams.connects) == 2
        assert sorted(c.active_streams for c in pool.connections(KEY)) == [1, 2]
        await streams[0].aclose()
        streams.append(await pool.open_stream(KEY, "10.244.1.7:80", HEADERS))
        assert len(upstreams.connects) == 2  # a freed slot is used again
        for stream in streams:
            await stream.aclose()


async def test_refused_stream_keeps_the_pooled_connection():
    async with pool_and_upstreams() as (pool, upstreams):
        with pytest.raises(HboneError):
            await pool.open_stream(KEY, "10.244.1.7:401", HEADERS)
        stream = await pool.open_stream(KEY, "10.244.1.7:80", HEADERS)
        assert len(upstreams.connects) == 1
        await stream.aclose()


@pytest.mark.parametrize("how", ["goaway", "socket closed"])
async def test_dead_connection_is_replaced(how):
    async with pool_and_upstreams() as (pool, upstreams):
        stream = await pool.open_stream(KEY, "10.244.1.7:80", HEADERS)
        (conn,) = pool.connections(KEY)
        if how == "goaway":
            await upstreams.servers[0].aclose()
        else:
            await upstreams.server_sockets[0].aclose()
        await conn.wait_closed()
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some()
        assert pool.connections(KEY) == []
        fresh = await pool.open_stream(KEY, "10.244.1.7:80", HEADERS)
        assert len(upstreams.connects) == 2
        await fresh.send_all(b"works")
        await fresh.aclose()


async def test_idle_connection_is_released():
    async with pool_and_upstreams(idle_timeout=0.05) as (pool, upstreams):
        stream = await pool.open_stream(KEY, "10.244.1.7:80", HEADERS)
        (conn,) = pool.connections(KEY)
        await trio.sleep(0.1)
        assert conn.is_usable  # busy connections are never idle
        await stream.aclose()
        with trio.fail_after(1):
            await conn.wait_closed()
            await upstreams.servers[0].wait_closed()
        assert pool.connections(KEY) == []
        await (await pool.open_stream(KEY, "10.244.1.7:80", HEADERS)).aclose()
        assert len(upstreams.connects) == 2


async def test_connect_failure_reaches_the_caller_and_the_next_call_retries():
    async with pool_and_upstreams() as (pool, upstreams):
        upstreams.fail_next = True
        with pytest.raises(ConnectionRefusedError):
            await pool.open_stream(KEY, "10.244.1.7:80", HEADERS)
        stream = await pool.open_stream(KEY, "10.244.1.7:80", HEADERS)
        assert len(upstreams.connects) == 2
        await stream.aclose()
