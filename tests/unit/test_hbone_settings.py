"""ztunnel's HTTP/2 settings, applied to two h2 connections talking in memory. Pure."""

import h2.events

from mesh.hbone.settings import CLIENT_SETTINGS, SERVER_SETTINGS, KiB, MiB, new_h2_connection, start_connection


def handshake():
    client = new_h2_connection(CLIENT_SETTINGS, client_side=True)
    server = new_h2_connection(SERVER_SETTINGS, client_side=False)
    start_connection(client, CLIENT_SETTINGS)
    start_connection(server, SERVER_SETTINGS)
    server_events = server.receive_data(client.data_to_send())
    client_events = client.receive_data(server.data_to_send())
    server_events += server.receive_data(client.data_to_send())  # SETTINGS ack
    return client, server, client_events, server_events


def test_each_side_sees_the_others_settings():
    client, server, _, _ = handshake()
    seen_by_server = server.remote_settings
    assert seen_by_server.max_frame_size == 1 * MiB
    assert seen_by_server.initial_window_size == 4 * MiB
    assert seen_by_server.max_header_list_size == 16 * KiB
    assert seen_by_server.enable_push == 0
    assert seen_by_server.max_concurrent_streams == 100
    seen_by_client = client.remote_settings
    assert seen_by_client.max_frame_size == 1 * MiB
    assert seen_by_client.initial_window_size == 4 * MiB
    assert seen_by_client.max_header_list_size == 64 * KiB
    assert seen_by_client.max_concurrent_streams == 200


def test_connection_window_is_opened_to_16_mib():
    client, server, client_events, server_events = handshake()
    for events in (client_events, server_events):
        update = next(e for e in events if isinstance(e, h2.events.WindowUpdated) and e.stream_id == 0)
        assert update.delta == 16 * MiB - 65_535
    assert client.outbound_flow_control_window == 16 * MiB
    assert server.outbound_flow_control_window == 16 * MiB


def test_one_mib_frames_are_accepted_and_cheap_to_repr():
    client, server, _, _ = handshake()
    assert server.max_inbound_frame_size == client.max_inbound_frame_size == 1 * MiB
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, [(b":method", b"CONNECT"), (b":authority", b"10.0.0.1:80")])
    client.send_data(stream_id, b"z" * MiB)
    events = server.receive_data(client.data_to_send())
    data = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert sum(len(e.data) for e in data) == MiB
