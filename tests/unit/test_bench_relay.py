"""The reference relays `make bench` sets the mesh against must really relay, both ways, with half-close."""

import os
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def echo_server():
    """A one-connection-at-a-time echo server that half-closes after the client did."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    yield server
    server.close()


@pytest.mark.parametrize("mode", ["trio", "threads"])
def test_relay_copies_both_ways_and_passes_the_fin_on(mode, echo_server):
    port = free_port()
    dest = echo_server.getsockname()
    relay = subprocess.Popen(
        [sys.executable, "-m", "bench.relay", "--mode", mode, f"127.0.0.1:{port}", f"{dest[0]}:{dest[1]}"], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with client:
            upstream, _ = echo_server.accept()
            with upstream:
                client.sendall(b"ping" * 1000)
                client.shutdown(socket.SHUT_WR)
                got = b""
                while data := upstream.recv(65536):  # ends: the relay passed the client's FIN on
                    got += data
                assert got == b"ping" * 1000
                upstream.sendall(b"pong")
                upstream.shutdown(socket.SHUT_WR)
                back = b""
                while data := client.recv(65536):
                    back += data
                assert back == b"pong"
    finally:
        relay.kill()
        relay.wait()
