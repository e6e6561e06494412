"""HBONE client and server over a real loopback TCP connection (no TLS)."""

import dataclasses
import functools
import hashlib
import os
from contextlib import asynccontextmanager

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio
from h2.errors import ErrorCodes

from mesh.hbone import (
    CLIENT_SETTINGS,
    SERVER_SETTINGS,
    HboneError,
    StreamReset,
    hbone_headers,
    open_hbone_connection,
    serve_hbone,
)
from mesh.hbone.settings import KiB, MiB
from tests.conftest import read_all

HEADERS = hbone_headers(source="10.244.0.5:40312", baggage="k8s.namespace.name=ns1")


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    await listener.aclose()
    return client, server


@asynccontextmanager
async def hbone_pair(handler, *, server_settings=SERVER_SETTINGS, client_settings=CLIENT_SETTINGS):
    """A running client HboneConnection and the server connection it talks to."""
    client_tcp, server_tcp = await tcp_pair()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_hbone, server_tcp, handler, settings=server_settings))
        async with open_hbone_connection(client_tcp, settings=client_settings) as client:
            yield client, server
        await server.wait_closed()


async def echo(request, respond, stream):
    """The upstream app: answers policy by port, then echoes until EOF."""
    port = request.authority.port
    if port in (401, 503):
        await respond(port)
        return
    await respond(200)
    while data := await stream.receive_some():
        await stream.send_all(data)
    await stream.send_eof()


async def test_several_streams_at_once():
    echoed = {}
    async with hbone_pair(echo) as (client, _):

        async def one(i):
            payload = f"stream {i} ".encode() * (1000 * i)
            stream = await client.open_stream(f"10.0.0.{i}:80", HEADERS)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_then_eof, stream, payload)
                echoed[i] = (payload, await read_all(stream))
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for i in range(1, 11):
                nursery.start_soon(one, i)
        assert client.active_streams == 0
    assert len(echoed) == 10
    assert all(payload == back for payload, back in echoed.values())


async def send_then_eof(stream, payload):
    await stream.send_all(payload)
    await stream.send_eof()


async def test_twenty_megabytes_through_one_stream():
    payload = os.urandom(20 * MiB)
    async with hbone_pair(echo) as (client, _):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)

        async def send():
            view = memoryview(payload)
            for start in range(0, len(payload), 300 * KiB):  # not a frame-size multiple
                await stream.send_all(view[start : start + 300 * KiB])
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            echoed = await read_all(stream)
    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


async def test_half_close_client_first():
    async def server_speaks_after_eof(request, respond, stream):
        await respond(200)
        heard = await read_all(stream)  # ends at the client's END_STREAM
        await stream.send_all(b"you said: " + heard)
        await stream.send_eof()

    async with hbone_pair(server_speaks_after_eof) as (client, _):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)
        await stream.send_all(b"hello")
        await stream.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"more")
        assert await read_all(stream) == b"you said: hello"
        assert client.active_streams == 0  # ended both ways


async def test_half_close_server_first():
    async def server_greets_then_listens(request, respond, stream):
        await respond(200)
        await stream.send_all(b"greetings")
        await stream.send_eof()
        assert await read_all(stream) == b"still talking"
        server_done.set()

    server_done = trio.Event()
    async with hbone_pair(server_greets_then_listens) as (client, _):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)
        assert await read_all(stream) == b"greetings"
        await stream.send_all(b"still ")
        await stream.send_all(b"talking")
        await stream.send_eof()
        await server_done.wait()


async def test_refusals_are_errors_and_the_connection_stays_usable():
    async with hbone_pair(echo) as (client, _):
        with pytest.raises(HboneError) as denied:
            await client.open_stream("10.0.0.1:401", HEADERS)
        assert denied.value.status == 401
        assert str(denied.value) == "http status: 401 Unauthorized"
        with pytest.raises(HboneError) as failed:
            await client.open_stream("10.0.0.1:503", HEADERS)
        assert failed.value.status == 503
        stream = await client.open_stream("10.0.0.1:80", HEADERS)
        await stream.send_all(b"ping")
        assert await stream.receive_some() == b"ping"
        await stream.aclose()
        assert client.is_usable


async def test_handler_that_raises_gives_503():
    async def broken(request, respond, stream):
        raise RuntimeError("upstream exploded")

    async with hbone_pair(broken) as (client, _):
        with pytest.raises(HboneError) as info:
            await client.open_stream("10.0.0.1:80", HEADERS)
        assert info.value.status == 503


async def test_reset_by_server_reaches_client():
    async def resets(request, respond, stream):
        await respond(200)
        await stream.send_all(b"partial")
        stream.reset(ErrorCodes.INTERNAL_ERROR)

    async with hbone_pair(resets) as (client, _):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)
        with pytest.raises(StreamReset) as info:
            while True:
                await stream.receive_some()
        assert info.value.error_code == ErrorCodes.INTERNAL_ERROR and info.value.remote
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x")


async def test_client_close_mid_stream_resets_the_server_side():
    outcome = []
    done = trio.Event()

    async def listens(request, respond, stream):
        await respond(200)
        outcome.append(await read_all(stream))  # RST_STREAM(CANCEL) reads as EOF, as in ztunnel
        try:
            await stream.send_all(b"late reply")
        except StreamReset as exc:
            outcome.append(exc.error_code)
        done.set()

    async with hbone_pair(listens) as (client, _):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)
        await stream.send_all(b"abc")
        await stream.aclose()
        await done.wait()
    assert outcome == [b"abc", ErrorCodes.CANCEL]


async def test_slow_reader_holds_back_its_sender():
    release = trio.Event()

    async def slow(request, respond, stream):
        await respond(200)
        await release.wait()
        await stream.send_all(str(len(await read_all(stream))).encode())
        await stream.send_eof()

    async with hbone_pair(slow) as (client, _):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)
        sent = 0
        with trio.move_on_after(0.2):
            while True:
                await stream.send_all(b"x" * (256 * KiB))
                sent += 256 * KiB
        # The 4 MiB stream window (plus what the writer already took) stops the sender.
        assert 4 * MiB <= sent <= 4 * MiB + 2 * CLIENT_SETTINGS.max_send_buffer
        release.set()
        stream2 = await client.open_stream("10.0.0.2:80", HEADERS)  # the connection is not stuck
        await stream2.aclose()
        await stream.send_eof()
        assert int(await read_all(stream)) >= 4 * MiB


async def test_connection_loss_breaks_streams():
    async def hang(request, respond, stream):
        await respond(200)
        await trio.sleep_forever()

    client_tcp, server_tcp = await tcp_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_hbone, server_tcp, hang)
        async with open_hbone_connection(client_tcp) as client:
            stream = await client.open_stream("10.0.0.1:80", HEADERS)
            await server_tcp.aclose()
            with pytest.raises(trio.BrokenResourceError):
                await stream.receive_some()
            await client.wait_closed()
            assert not client.is_usable
            with pytest.raises(trio.BrokenResourceError):
                await client.open_stream("10.0.0.1:80", HEADERS)


async def test_settings_visible_on_the_peer():
    async with hbone_pair(echo) as (client, server):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)  # both SETTINGS have arrived
        assert client.remote_settings.max_concurrent_streams == 200
        assert client.remote_settings.max_header_list_size == 64 * KiB
        assert client.remote_settings.initial_window_size == 4 * MiB
        assert client.remote_settings.max_frame_size == 1 * MiB
        assert server.remote_settings.max_header_list_size == 16 * KiB
        assert server.remote_settings.enable_push == 0
        assert server.remote_settings.initial_window_size == 4 * MiB
        assert client.max_streams == 100  # min(ours, the server's 200)
        await stream.aclose()


async def raw_h2_request(headers) -> tuple[int, list]:
    """Send one request with plain h2 to serve_hbone; return the status and all events."""
    client_tcp, server_tcp = await tcp_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_hbone, server_tcp, echo)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.send_headers(1, headers)
        await client_tcp.send_all(conn.data_to_send())
        events = []
        status = None
        while status is None:
            for event in conn.receive_data(await client_tcp.receive_some()):
                events.append(event)
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
            await client_tcp.send_all(conn.data_to_send())
        await client_tcp.aclose()
    return status, events


async def test_non_connect_is_400():
    status, _ = await raw_h2_request(
        [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "10.0.0.1:80")]
    )
    assert status == 400


async def test_bad_authority_is_400():
    status, _ = await raw_h2_request([(":method", "CONNECT"), (":authority", "not a target")])
    assert status == 400


async def test_server_window_and_settings_seen_by_a_raw_peer():
    _, events = await raw_h2_request([(":method", "CONNECT"), (":authority", "10.0.0.1:503")])
    settings = next(e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)).changed_settings
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 200
    assert settings[h2.settings.SettingCodes.MAX_FRAME_SIZE].new_value == 1 * MiB
    window = next(e for e in events if isinstance(e, h2.events.WindowUpdated) and e.stream_id == 0)
    assert window.delta == 16 * MiB - 65_535


async def test_hbone_streams_pass_trios_half_closeable_stream_checks():
    from trio.testing import check_half_closeable_stream

    send_server_side, receive_server_side = trio.open_memory_channel(0)

    async def hand_over(request, respond, stream):
        await respond(200)
        await send_server_side.send(stream)
        await trio.sleep_forever()  # the checks close the stream themselves

    async with hbone_pair(hand_over) as (client, _):

        async def stream_maker():
            client_side = await client.open_stream("10.0.0.1:80", HEADERS)
            return client_side, await receive_server_side.receive()

        await check_half_closeable_stream(stream_maker, None)


async def test_unread_data_of_closed_streams_is_given_back_to_the_connection_window():
    async def floods(request, respond, stream):
        await respond(200)
        try:
            await stream.send_all(b"f" * (3 * MiB))
        except trio.BrokenResourceError:
            pass

    def unread(stream):
        return sum(map(len, stream._chunks)) - stream._offset

    async with hbone_pair(floods) as (client, _):
        with trio.fail_after(3):
            # 24 MiB in all, well past the 16 MiB connection window: a leak would stall stream 6.
            for i in range(8):
                stream = await client.open_stream(f"10.0.0.{i}:80", HEADERS)
                assert await stream.receive_some(10) == b"ffffffffff"
                while unread(stream) < 3 * MiB - 10:
                    await trio.sleep(0.001)
                await stream.aclose()


async def test_keepalive_drops_a_silent_peer():
    silent = dataclasses.replace(CLIENT_SETTINGS, keepalive_interval=0.05, keepalive_timeout=0.1)
    client_tcp, server_tcp = await tcp_pair()
    async with server_tcp, open_hbone_connection(client_tcp, settings=silent) as client:
        with trio.fail_after(2):
            await client.wait_closed()
        assert "ping timeout" in str(client.error)


async def test_keepalive_keeps_a_live_connection():
    chatty = dataclasses.replace(CLIENT_SETTINGS, keepalive_interval=0.02, keepalive_timeout=0.1)
    async with hbone_pair(echo, client_settings=chatty) as (client, _):
        await trio.sleep(0.2)
        assert client.is_usable


async def test_garbage_from_a_peer_ends_only_that_connection():
    client_tcp, server_tcp = await tcp_pair()
    async with client_tcp:
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(serve_hbone, server_tcp, echo)
                await client_tcp.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            # serve_hbone returned without raising, and closed the socket
            assert server.closed and server.error is not None
            while await client_tcp.receive_some():
                pass


# --- deliver_to: the reader writes straight into the app's socket -----------------------------


def socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def test_deliver_to_writes_into_the_socket_in_order_and_half_closes_it():
    payload = os.urandom(3 * MiB)

    async def send(request, respond, stream):
        await respond(200)
        for i in range(0, len(payload), 100_000):
            await stream.send_all(payload[i : i + 100_000])
        await stream.send_eof()
        assert await read_all(stream) == b""

    counted = []
    async with hbone_pair(send) as (client, _):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)
        sink, app = socket_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.deliver_to, sink, counted.append)
            got = await read_all(app)  # ends with the FIN deliver_to sent on EOF
        await stream.send_eof()
        await stream.aclose()
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert sum(counted) == len(payload)


async def test_deliver_to_a_full_socket_holds_back_the_sender():
    """A sink that takes nothing: its socket buffers fill, then the stream window stops the
    sender; once the app reads, everything arrives in order."""
    sent = 0
    release = trio.Event()

    async def flood(request, respond, stream):
        nonlocal sent
        await respond(200)
        with trio.move_on_after(0.3):
            while True:
                await stream.send_all(b"y" * (256 * KiB))
                sent += 256 * KiB
        release.set()
        await stream.send_eof()

    async with hbone_pair(flood) as (client, _):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)
        sink, app = socket_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.deliver_to, sink, lambda n: None)
            await release.wait()
            # Socket buffers plus the 4 MiB stream window bound what the sender got rid of.
            assert 4 * MiB <= sent <= 4 * MiB + 2 * SERVER_SETTINGS.max_send_buffer + 8 * MiB
            got = await read_all(app)
        await stream.aclose()
    assert len(got) == sent and got == b"y" * sent


async def test_deliver_to_a_closed_socket_raises_and_gives_the_window_back():
    """An app that went away mid-download: the write fails, and the data it would have taken
    is returned to the connection's window, so twenty of them (20 MiB against a 16 MiB
    connection window) leave the pooled connection as usable as before."""

    async def download(request, respond, stream):
        await respond(200)
        try:
            await stream.send_all(b"z" * MiB)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass

    async with hbone_pair(download) as (client, _):
        for i in range(20):
            stream = await client.open_stream(f"10.0.0.{i}:80", HEADERS)
            sink, app = socket_pair()
            await app.aclose()  # the app is gone: the next write fails (EPIPE / ECONNRESET)
            with trio.fail_after(2), pytest.raises(trio.BrokenResourceError):
                await stream.deliver_to(sink, lambda n: None)
            stream.close()
        stream = await client.open_stream("10.0.0.99:80", HEADERS)
        with trio.fail_after(5):
            assert len(await read_all(stream)) == MiB


async def test_small_queued_data_does_not_keep_whole_reads_alive():
    """A stream nobody reads queues its data; a few bytes of it must not pin the big reads
    they arrived in while another stream moves megabytes on the same connection."""

    async def handler(request, respond, stream):
        await respond(200)
        if request.authority.port == 1:  # a trickle nobody reads
            with trio.move_on_after(3):
                while True:
                    await stream.send_all(b"a" * 10)
                    await trio.sleep(0)
        else:
            for _ in range(64):
                await stream.send_all(b"b" * MiB)
            await stream.send_eof()

    async with hbone_pair(handler) as (client, _):
        slow = await client.open_stream("10.0.0.1:1", HEADERS)
        bulk = await client.open_stream("10.0.0.1:2", HEADERS)
        assert len(await read_all(bulk)) == 64 * MiB
        queued = sum(map(len, slow._chunks))
        pinned = sum(len(c.obj) for c in {id(c.obj): c for c in slow._chunks if isinstance(c, memoryview)}.values())
        assert queued > 0
        assert pinned <= 2 * queued + MiB
        slow.close()
        bulk.close()


@pytest.mark.parametrize("how", ["send_all", "send_within_window"])
async def test_a_sender_may_reuse_its_buffer_once_the_send_returned(how):
    async def echo_all(request, respond, stream):
        await respond(200)
        await stream.send_all(await read_all(stream))
        await stream.send_eof()

    async with hbone_pair(echo_all) as (client, _):
        for i in range(10):
            stream = await client.open_stream("10.0.0.1:80", HEADERS)
            buffer = bytearray(b"A" * 1000)
            if how == "send_all":
                await stream.send_all(buffer)
            else:
                assert stream.send_within_window(buffer) == 1000
            buffer[:] = b"B" * 1000  # trio's contract: the buffer is the caller's again
            await stream.send_eof()
            assert await read_all(stream) == b"A" * 1000
            await stream.aclose()


async def test_deliver_to_raises_on_a_reset():
    async def reset(request, respond, stream):
        await respond(200)
        await stream.send_all(b"before the reset")
        await trio.sleep(0.05)
        stream.reset(ErrorCodes.INTERNAL_ERROR)

    async with hbone_pair(reset) as (client, _):
        stream = await client.open_stream("10.0.0.1:80", HEADERS)
        sink, app = socket_pair()
        with trio.fail_after(2), pytest.raises(StreamReset):
            await stream.deliver_to(sink, lambda n: None)
        assert await app.receive_some() == b"before the reset"
        stream.close()
