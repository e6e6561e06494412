"""The shortcuts the performance work took give exactly what the plain code gave."""

import json
import socket

import trio

from mesh.ztunnel import metrics, sockets

VALUES = [
    "plain",
    "spiffe://cluster.local/ns/a/sa/b",
    'has "quotes"',
    "back\\slash",
    "tab\there",
    "nl\n",
    "del\x7f",
    "ünïcode",
    "",
    "10.244.1.2:80",
]


def test_access_log_values_are_quoted_as_json_would():
    for v in VALUES:
        assert metrics._value(v) == json.dumps(v, ensure_ascii=False), v
    assert metrics._value(metrics.Bare("10.0.0.1:80")) == "10.0.0.1:80"
    assert metrics._value(42) == "42"


async def test_proxy_stream_lifts_the_unsent_queue_cap():
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = await trio.open_tcp_stream(*listener.getsockname())
    assert client.getsockopt(socket.IPPROTO_TCP, sockets.TCP_NOTSENT_LOWAT) == 16384  # trio's default
    sockets.proxy_stream(client)
    assert client.getsockopt(socket.IPPROTO_TCP, sockets.TCP_NOTSENT_LOWAT) != 16384
    await client.aclose()
    listener.close()
