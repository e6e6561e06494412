"""WebSocket exec (lab/apiserver/rest/exec.py) driven by a wsproto client over a socketpair, as
kubectl's v5 client speaks it: output channels, exit codes, v5 stdin close, TTY, resize, and a
client that goes away taking its command (and the command's process group) with it.

The target has no netns prefix: the commands run here, with this process's environment.
"""

from __future__ import annotations

import base64
import json
import os
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio
import trio.testing
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection

from lab.apiserver.rest import exec as rest_exec

V5 = "v5.channel.k8s.io"
TARGET = {"argv": [], "env": dict(os.environ)}


class Client:
    """kubectl's side: the upgrade already parsed by the server, then channel frames."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.channels: dict[int, bytes] = {}
        self.close_code: int | None = None
        self.head = b""

    @staticmethod
    def headers(protocols: str = V5) -> list[tuple[bytes, bytes]]:
        key = base64.b64encode(os.urandom(16))
        return [
            (b"host", b"127.0.0.1"),
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-key", key),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-protocol", protocols.encode()),
        ]

    async def handshake(self) -> bytes:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await self.stream.receive_some(65536)
            assert data, f"connection closed during the handshake: {buf!r}"
            buf += data
        self.head, rest = buf.split(b"\r\n\r\n", 1)
        if self.head.startswith(b"HTTP/1.1 101"):
            self.ws.receive_data(rest)
        else:
            self.head += b"\r\n\r\n" + rest
        return self.head

    async def send(self, channel: int, data: bytes) -> None:
        await self.stream.send_all(self.ws.send(BytesMessage(bytes([channel]) + data)))

    async def close(self) -> None:
        await self.stream.send_all(self.ws.send(CloseConnection(1000)))

    def _take_events(self) -> list:
        out = []
        for ev in self.ws.events():
            if isinstance(ev, BytesMessage) and ev.data:
                ch, payload = ev.data[0], bytes(ev.data[1:])
                self.channels[ch] = self.channels.get(ch, b"") + payload
            elif isinstance(ev, CloseConnection):
                self.close_code = ev.code
            out.append(ev)
        return out

    async def until(self, check, timeout: float = 10) -> None:
        """Reads frames until CHECK(self) holds."""
        with trio.fail_after(timeout):
            self._take_events()
            while not check(self):
                data = await self.stream.receive_some(65536)
                self.ws.receive_data(data or None)
                self._take_events()

    async def run_to_end(self, timeout: float = 10) -> dict:
        """Everything up to the server's close frame (answered); the channel-3 status."""
        await self.until(lambda c: c.close_code is not None, timeout)
        await self.stream.send_all(self.ws.send(CloseConnection(1000)))
        return json.loads(self.channels[3])


@asynccontextmanager
async def session(
    command: list[str], *, stdin: bool = False, tty: bool = False, protocols: str = V5, stderr: bool = True
) -> AsyncIterator[tuple[Client, trio.Event]]:
    """A client connected to `serve` running COMMAND; the event is set when `serve` returns,
    which it must by the end of the block."""
    a, b = trio.socket.socketpair()
    server, client = trio.SocketStream(a), trio.SocketStream(b)
    done = trio.Event()

    async def run() -> None:
        try:
            async with server:
                await rest_exec.serve(
                    server, b"", Client.headers(protocols), TARGET, command, stdin, True, stderr and not tty, tty
                )
        finally:
            done.set()

    async with trio.open_nursery() as nursery, client:
        nursery.start_soon(run)
        c = Client(client)
        await c.handshake()
        yield c, done
        with trio.fail_after(5):
            await done.wait()


async def test_echo_gives_stdout_and_success() -> None:
    async with session(["echo", "hi"]) as (c, done):
        assert f"Sec-WebSocket-Protocol: {V5}".encode() in c.head
        status = await c.run_to_end()
        assert c.channels.get(1) == b"hi\n" and status == {"metadata": {}, "status": "Success"}
        assert c.close_code == 1000
        with trio.fail_after(5):
            await done.wait()


async def test_exit_code_and_stderr() -> None:
    async with session(["sh", "-c", "echo oops >&2; exit 7"], protocols="v4.channel.k8s.io") as (c, done):
        status = await c.run_to_end()
        assert c.channels.get(2) == b"oops\n"
        assert status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


async def test_piped_stdin_ends_with_the_v5_close() -> None:
    async with session(["cat"], stdin=True) as (c, done):
        await c.send(0, b"hello\n")
        await c.send(0, b"world\n")
        await c.send(255, b"\x00")  # v5: stdin is done; without it cat would wait forever
        status = await c.run_to_end()
        assert c.channels.get(1) == b"hello\nworld\n" and status["status"] == "Success"


async def test_a_missing_command_is_a_clear_failure() -> None:
    async with session(["no-such-command-here"]) as (c, done):
        status = await c.run_to_end()
        assert status["status"] == "Failure"
        assert 'exec: "no-such-command-here": executable file not found in $PATH' in status["message"]


async def test_tty_session_with_resize() -> None:
    async with session(["sh", "-c", "tty; echo to-stderr >&2; read x; stty size"], stdin=True, tty=True) as (c, done):
        await c.until(lambda c: b"to-stderr" in c.channels.get(1, b""))
        assert b"/dev/pts/" in c.channels[1]  # a terminal, and stderr merged into stdout
        await c.send(4, json.dumps({"Width": 101, "Height": 42}).encode())
        await c.send(0, b"go\n")  # after the resize, in order
        status = await c.run_to_end()
        assert b"42 101" in c.channels[1] and 2 not in c.channels
        assert status["status"] == "Success"


def _gone(pid: int) -> bool:
    """PID has exited (not there, or a zombie awaiting its new parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def _wait_gone(*pids: int) -> None:
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if not _gone(p)]}"
        await trio.sleep(0.02)


async def test_a_client_that_hangs_up_takes_the_process_group_with_it() -> None:
    async with session(["sh", "-c", "sleep 1000 & echo $$ $!; wait"]) as (c, done):
        await c.until(lambda c: c.channels.get(1, b"").endswith(b"\n"))
        shell, child = (int(p) for p in c.channels[1].split())
        await c.stream.aclose()  # no close frame: the connection just ends
        with trio.fail_after(5):
            await done.wait()  # serve returned: no task left behind
        await _wait_gone(shell, child)


async def test_a_close_frame_mid_command_kills_it_too() -> None:
    async with session(["sh", "-c", "echo $$; exec sleep 1000"], tty=True) as (c, done):
        await c.until(lambda c: c.channels.get(1, b"").endswith(b"\n"))
        pid = int(c.channels[1].split()[0])
        await c.close()
        with trio.fail_after(5):
            await done.wait()
        await _wait_gone(pid)


async def test_no_common_subprotocol_is_refused() -> None:
    async with session(["true"], protocols="channel.k8s.io") as (c, done):
        assert c.head.startswith(b"HTTP/1.1 400")
        assert b"not supported" in c.head
        with trio.fail_after(5):
            await done.wait()
