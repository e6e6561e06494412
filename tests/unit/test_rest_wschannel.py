"""The exec WebSocket channel protocol, driven by a wsproto client connection (no sockets)."""

import json

import h11
import pytest
from wsproto import WSConnection
from wsproto.connection import Connection, ConnectionType
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, Request, TextMessage

from lab.apiserver.rest.wschannel import (
    V4,
    V5,
    ChannelConnection,
    Closed,
    HandshakeRefused,
    Resize,
    StdinClosed,
    StdinData,
    accept,
    status_payload,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key, accept token below


def headers(protocols="v5.channel.k8s.io", **overrides):
    base = {
        "Host": "127.0.0.1:6443",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": protocols,
    }
    base.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return [(k, v) for k, v in base.items() if v is not None]


# ---- handshake ------------------------------------------------------------------------------------


def test_kubectl_offers_v5_and_gets_the_rfc_accept_token():
    hs = accept(headers())
    assert hs.subprotocol == V5
    assert dict(hs.headers) == {
        b"Upgrade": b"websocket",
        b"Connection": b"Upgrade",
        b"Sec-WebSocket-Accept": b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        b"Sec-WebSocket-Protocol": b"v5.channel.k8s.io",
    }


@pytest.mark.parametrize(
    "offered, chosen",
    [
        ("v4.channel.k8s.io", V4),  # kr8s
        ("v4.channel.k8s.io, v5.channel.k8s.io", V5),  # v5 preferred whatever the order
        ("v5.channel.k8s.io,v4.channel.k8s.io", V5),  # the Python client
        ("v4.base64.channel.k8s.io, v4.channel.k8s.io", V4),
    ],
)
def test_subprotocol_negotiation(offered, chosen):
    assert accept(headers(offered)).subprotocol == chosen


def test_repeated_headers_and_bytes_are_accepted():
    raw = [(name.lower().encode(), value.encode()) for name, value in headers(None)]
    raw += [(b"sec-websocket-protocol", b"channel.k8s.io"), (b"sec-websocket-protocol", b"v4.channel.k8s.io")]
    raw = [(n, b"keep-alive, Upgrade") if n == b"connection" else (n, v) for n, v in raw]
    assert accept(raw, method=b"GET").subprotocol == V4


def refusal(hdrs, method="GET") -> HandshakeRefused:
    with pytest.raises(HandshakeRefused) as info:
        accept(hdrs, method)
    return info.value


def test_no_common_protocol_is_refused():
    err = refusal(headers("v3.channel.k8s.io, channel.k8s.io"))
    assert err.status == 400
    assert err.message == (
        "requested protocol(s) are not supported: [v3.channel.k8s.io channel.k8s.io]; "
        "supports [v5.channel.k8s.io v4.channel.k8s.io]"
    )
    assert "not supported: []" in refusal(headers(None)).message


def test_bad_upgrades_are_refused_with_a_reason():
    spdy = refusal(headers(Upgrade="SPDY/3.1", Sec_WebSocket_Key=None), method="POST")
    assert spdy.status == 400 and "SPDY" in spdy.message and "kubectl >= 1.30" in spdy.message
    assert "Upgrade: websocket" in refusal(headers(Upgrade=None)).message
    assert "Connection: Upgrade" in refusal(headers(Connection="keep-alive")).message
    assert refusal(headers(), method="POST").status == 405
    old = refusal(headers(Sec_WebSocket_Version="8"))
    assert (old.status, old.headers) == (426, [(b"Sec-WebSocket-Version", b"13")])
    assert "Sec-WebSocket-Key" in refusal(headers(Sec_WebSocket_Key="c2hvcnQ=")).message
    assert "Sec-WebSocket-Key" in refusal(headers(Sec_WebSocket_Key="not base64!")).message


def test_a_real_client_handshake_through_h11():
    """wsproto's client asks, h11 parses the request, `accept` answers: the client sees v5 accepted."""
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(
        Request(host="127.0.0.1", target="/api/v1/namespaces/a/pods/p/exec?command=sh", subprotocols=[V4, V5])
    )
    server = h11.Connection(h11.SERVER)
    server.receive_data(request)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    hs = accept(event.headers, event.method)
    client.receive_data(server.send(h11.InformationalResponse(status_code=101, headers=hs.headers)))
    accepted = list(client.events())
    assert len(accepted) == 1 and isinstance(accepted[0], AcceptConnection)
    assert accepted[0].subprotocol == V5
    # the upgraded connection then carries channel frames both ways
    channel = ChannelConnection(hs.subprotocol)
    assert channel.receive_data(client.send(BytesMessage(b"\x00ls\n"))) == [StdinData(b"ls\n")]
    client.receive_data(channel.stdout(b"bin\n"))
    assert [e.data for e in client.events()] == [b"\x01bin\n"]


# ---- the channel connection -----------------------------------------------------------------------


def connect(protocol=V5, **kwargs):
    return ChannelConnection(protocol, **kwargs), Connection(ConnectionType.CLIENT)


def to_server(server, client, *events):
    return server.receive_data(b"".join(client.send(e) for e in events))


def to_client(client, data):
    client.receive_data(data)
    return list(client.events())


def messages(client, data):
    return [bytes(e.data) for e in to_client(client, data) if isinstance(e, BytesMessage)]


def test_stdin_data_and_fragmented_messages():
    server, client = connect()
    assert to_server(server, client, BytesMessage(b"\x00hello")) == [StdinData(b"hello")]
    assert to_server(server, client, BytesMessage(b"\x00wor", message_finished=False)) == []
    assert to_server(server, client, BytesMessage(b"ld", message_finished=True)) == [StdinData(b"world")]
    # a frame split across reads
    frame = client.send(BytesMessage(b"\x00split"))
    assert server.receive_data(frame[:3]) == []
    assert server.receive_data(frame[3:]) == [StdinData(b"split")]


def test_v5_close_signal_half_closes_stdin():
    server, client = connect()
    assert to_server(server, client, BytesMessage(b"\x00last")) == [StdinData(b"last")]
    assert to_server(server, client, BytesMessage(bytes([255, 0]))) == [StdinClosed()]
    assert not server.stdin_open and server.open
    assert to_server(server, client, BytesMessage(bytes([255, 0])), BytesMessage(b"\x00late")) == []
    client.receive_data(server.stdout(b"still here"))
    assert [bytes(e.data) for e in client.events()] == [b"\x01still here"]


def test_v4_has_no_close_signal():
    server, client = connect(V4)
    assert to_server(server, client, BytesMessage(bytes([255, 0])), BytesMessage(b"\x00x")) == [StdinData(b"x")]
    assert server.stdin_open


def test_resize():
    server, client = connect()
    assert to_server(server, client, BytesMessage(b'\x04{"Width":120,"Height":40}')) == [Resize(120, 40)]
    assert to_server(server, client, BytesMessage(b'\x04{"width":80,"height":24}')) == [Resize(80, 24)]
    bad = [b"\x04not json", b'\x04{"Width":-1,"Height":2}', b"\x04[1,2]", b'\x04{"Width":"80"}', b"\x04\xff"]
    assert to_server(server, client, *(BytesMessage(m) for m in bad)) == []


def test_ignored_input():
    server, client = connect()
    ignored = [
        BytesMessage(b""),
        BytesMessage(b"\x01stdout from the client?"),
        BytesMessage(b"\x07x"),
        BytesMessage(b"\x00"),
        BytesMessage(bytes([255, 1])),
        BytesMessage(bytes([255, 0, 0])),
        TextMessage("0aGVsbG8="),
    ]
    assert to_server(server, client, *ignored) == []


def test_ping_is_answered_with_pong():
    server, client = connect()
    assert to_server(server, client, Ping(b"keepalive")) == []
    assert to_client(client, server.data_to_send()) == [Pong(b"keepalive")]
    assert server.data_to_send() == b""


def test_output_channels_and_ready():
    server, client = connect()
    out = server.ready() + server.stdout(b"out") + server.stderr(b"err") + server.stdout(b"")
    assert messages(client, out) == [b"\x01", b"\x01out", b"\x02err"]
    assert messages(client, server.ready(stdout=False)) == [b"\x02"]
    assert messages(client, server.ready(stdout=False, stderr=False)) == [b"\x03"]


def test_status_success_then_close():
    server, client = connect()
    events = to_client(client, server.status(0) + server.close())
    assert bytes(events[0].data) == b'\x03{"metadata":{},"status":"Success"}'
    assert events[1] == CloseConnection(1000, "")
    assert not server.open and server.stdout(b"too late") == b"" and server.close() == b""
    # the client's close reply ends it: nothing more to send
    assert server.receive_data(client.send(events[1].response())) == [Closed(1000, "")]
    assert server.data_to_send() == b""


def test_status_failure_carries_the_exit_code_as_kubectl_reads_it():
    server, client = connect()
    [message] = messages(client, server.status(7))
    assert message[0] == 3
    assert json.loads(message[1:]) == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: exit status 7",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "7"}]},
    }
    assert message[1:].startswith(b'{"metadata":{},"status":"Failure","message":')  # Go's field order
    assert json.loads(status_payload(-9))["details"]["causes"][0]["message"] == "137"
    with pytest.raises(ValueError):
        status_payload(256)


def test_internal_failure_status():
    server, client = connect()
    [message] = messages(client, server.failure('container "x" not found'))
    assert json.loads(message[1:]) == {
        "metadata": {},
        "status": "Failure",
        "message": 'Internal error occurred: container "x" not found',
        "reason": "InternalError",
        "details": {"causes": [{"message": 'container "x" not found'}]},
        "code": 500,
    }


def test_client_close_is_echoed():
    server, client = connect()
    assert to_server(server, client, CloseConnection(1000, "bye")) == [Closed(1000, "bye")]
    assert to_client(client, server.data_to_send()) == [CloseConnection(1000, "bye")]
    assert not server.open and server.stdout(b"x") == b"" and server.close() == b""
    assert server.receive_data(b"anything after the end") == []


def test_close_without_a_status_code_is_answered_with_1000():
    server, client = connect()
    empty_close = bytes([0x88, 0x80, 1, 2, 3, 4])  # FIN+close, masked, no payload
    assert server.receive_data(empty_close) == [Closed(1005, "")]
    assert to_client(client, server.data_to_send()) == [CloseConnection(1000, "")]


def test_transport_eof_closes_without_a_reply():
    server, client = connect()
    assert server.receive_data(b"") == [Closed(1006, "")]
    assert server.data_to_send() == b"" and not server.open
    assert server.receive_data(None) == []


def test_protocol_errors_close_the_connection():
    server, _ = connect()
    unmasked = Connection(ConnectionType.SERVER).send(BytesMessage(b"\x00x"))  # clients must mask
    [closed] = server.receive_data(unmasked)
    assert isinstance(closed, Closed) and closed.code == 1002
    client = Connection(ConnectionType.CLIENT)
    assert to_client(client, server.data_to_send())[0].code == 1002


def test_oversized_messages_close_with_1009():
    server, client = connect(max_message=8)
    assert to_server(server, client, BytesMessage(b"\x00" + b"x" * 7)) == [StdinData(b"x" * 7)]
    events = to_server(server, client, BytesMessage(b"\x00" + b"x" * 5, message_finished=False), BytesMessage(b"y" * 5))
    assert events == [Closed(1009, "message larger than 8 bytes")]
    assert to_client(client, server.data_to_send())[0].code == 1009


def test_unknown_subprotocol_is_a_programming_error():
    with pytest.raises(ValueError, match="unsupported channel subprotocol"):
        ChannelConnection("v3.channel.k8s.io")
