"""`mesh.hbone.tuned_h2`: h2 without its copies must still be h2, byte for byte. Pure."""

import random

import h2.config
import h2.connection
import h2.events
import pytest
from h2.exceptions import ProtocolError
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame

from mesh.hbone.settings import (
    CLIENT_SETTINGS,
    SERVER_SETTINGS,
    MiB,
    apply_settings,
    new_h2_connection,
    start_connection,
)
from mesh.hbone.tuned_h2 import HboneH2Connection, PlainEncoder, TunnelFrameBuffer

CONNECT = [(b":method", b"CONNECT"), (b":authority", b"10.0.0.1:80"), (b"x-seq", b"1")]


def plain_h2(*, client_side: bool) -> h2.connection.H2Connection:
    """Stock h2 with the same settings and encoder: the reference output."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side, header_encoding=None))
    conn.encoder = PlainEncoder()
    apply_settings(conn, CLIENT_SETTINGS if client_side else SERVER_SETTINGS)
    return conn


def script(conn: h2.connection.H2Connection) -> bytes:
    """The same client-side operations on any connection; everything it would send, in order."""
    out = []
    start_connection(conn, CLIENT_SETTINGS)
    out.append(conn.data_to_send())
    for stream_id in (1, 3):
        conn.send_headers(stream_id, CONNECT)
        conn.send_data(stream_id, b"a" * 1000)
        conn.send_data(stream_id, memoryview(b"b" * 16_000)[5:])
        conn.send_data(stream_id, b"", end_stream=stream_id == 1)
    conn.ping(b"12345678")
    conn.send_data(3, b"c" * 10, pad_length=7)  # a padded frame goes through hyperframe as is
    out.append(conn.data_to_send(50))  # a partial take, then the rest
    out.append(conn.data_to_send())
    conn.reset_stream(3)
    out.append(conn.data_to_send())
    return b"".join(out)


def test_output_is_byte_identical_to_stock_h2():
    tuned = new_h2_connection(CLIENT_SETTINGS, client_side=True)
    assert tuned._tuned
    assert script(tuned) == script(plain_h2(client_side=True))


def handshake():
    client = new_h2_connection(CLIENT_SETTINGS, client_side=True)
    server = new_h2_connection(SERVER_SETTINGS, client_side=False)
    start_connection(client, CLIENT_SETTINGS)
    start_connection(server, SERVER_SETTINGS)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


@pytest.mark.parametrize("seed", range(5))
def test_any_split_of_the_byte_stream_reads_the_same(seed):
    rng = random.Random(seed)
    steps = [1, 2, 5, 9, 10, 100, 16_384, 70_000]
    client = new_h2_connection(CLIENT_SETTINGS, client_side=True)
    server = new_h2_connection(SERVER_SETTINGS, client_side=False)
    start_connection(client, CLIENT_SETTINGS)
    start_connection(server, SERVER_SETTINGS)
    preface = client.data_to_send()  # the preface too may arrive a byte at a time
    for i in range(0, len(preface), 3):
        server.receive_data(preface[i : i + 3])
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())

    payloads = {1: b"".join(bytes([i % 251]) * 997 for i in range(300)), 3: b"short"}
    for stream_id, payload in payloads.items():
        client.send_headers(stream_id, CONNECT)
        client.send_data(stream_id, payload, end_stream=True)
    wire = client.data_to_send()
    received: dict[int, bytearray] = {1: bytearray(), 3: bytearray()}
    ended = set()
    pos = 0
    while pos < len(wire):  # pieces from 1 byte (splitting frame headers) to several frames
        step = rng.choice(steps)
        for event in server.receive_data(wire[pos : pos + step]):
            if isinstance(event, h2.events.DataReceived):
                received[event.stream_id] += event.data
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
        pos += step
    assert received == {k: bytearray(v) for k, v in payloads.items()}
    assert ended == {1, 3}


def test_a_data_frame_within_one_read_is_a_view_not_a_copy():
    client, server = handshake()
    client.send_headers(1, CONNECT)
    client.send_data(1, b"z" * MiB)
    wire = client.data_to_send()
    events = server.receive_data(wire)
    (data,) = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert isinstance(data.data, memoryview) and data.data.obj is wire
    assert len(repr(data)) < 200  # and h2's per-frame repr does not hex-dump a MiB


def test_headers_with_continuation_and_padding_are_parsed_as_h2_does():
    buffer = TunnelFrameBuffer()
    buffer.max_frame_size = MiB
    head = HeadersFrame(1, data=b"ab", flags=())
    buffer.add_data(head.serialize() + ContinuationFrame(1, data=b"cd", flags=["END_HEADERS"]).serialize())
    padded = DataFrame(1, data=b"xyz", flags=["PADDED"], pad_length=4)
    buffer.add_data(padded.serialize())
    frames = list(buffer)
    assert [type(f).__name__ for f in frames] == ["HeadersFrame", "QuietDataFrame"]
    assert frames[0].data == b"abcd" and bytes(frames[1].data) == b"xyz"
    assert frames[1].flow_controlled_length == 3 + 4 + 1


def test_a_bad_preface_and_an_oversized_frame_are_protocol_errors():
    buffer = TunnelFrameBuffer(server=True)
    with pytest.raises(ProtocolError):
        buffer.add_data(b"GET / HTTP/1.1\r\n")
    buffer = TunnelFrameBuffer()
    buffer.max_frame_size = 16_384
    buffer.add_data(DataFrame(1, data=b"z" * 20_000).serialize())
    with pytest.raises(ProtocolError):
        next(buffer)


def test_tuned_connection_is_an_h2_connection():
    assert isinstance(new_h2_connection(SERVER_SETTINGS, client_side=False), HboneH2Connection)
    assert isinstance(new_h2_connection(SERVER_SETTINGS, client_side=False).incoming_buffer, TunnelFrameBuffer)
