"""`pods/NAME/exec` over WebSocket: the kubelet's side of `kubectl exec`, run by labd itself.

The REST core checks the request and resolves where the command runs (ApiServer.exec_target: the
`ip netns exec` / `setpriv` prefix and the container's env, as `lab exec` uses them); this module
answers the upgrade (wschannel.py picks v5 or v4), runs the command and relays the channels:
stdin (0), stdout (1), stderr (2), the exit status (3), resize (4) and v5's stdin close, as
KEP-4006 (WebSocket streaming) and the kubelet's remotecommand server do.

Without a TTY the command gets pipes (stdin only if asked); with one it gets a pty as stdin, stdout
and stderr (so stderr comes on channel 1) and, through `setsid --ctty`, a session whose controlling
terminal it is. Either way it leads its own process group: a client that goes away before the
command ends has the whole group killed and reaped, and no task outlives `serve`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import termios
from http import HTTPStatus
from typing import Iterable, Mapping

import trio

from lab.apiserver.rest import status, wschannel

READ_SIZE = 65536
DRAIN_AFTER_EXIT = 1.0  # seconds to read output still buffered after the command exits
CLOSE_WAIT = 1.0  # seconds to wait for the client's close frame after ours
SETSID = "setsid"  # util-linux: new session, the pty as controlling terminal (--ctty)

HeadersIn = Iterable[tuple[bytes, bytes]] | Mapping[str, str]


async def serve(
    stream: trio.abc.Stream,
    leftover: bytes,
    request_headers: HeadersIn,
    target: dict,
    command: list[str],
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> None:
    """Answer the upgrade on STREAM, run `target["argv"] + command` with `target["env"]`, relay
    the channels until the command ends (status, close 1000) or the client goes (killed)."""
    headers = list(request_headers.items()) if isinstance(request_headers, Mapping) else list(request_headers)
    try:
        handshake = wschannel.accept(headers)
    except wschannel.HandshakeRefused as e:
        await _refuse(stream, e)
        return
    await stream.send_all(_switching(handshake.headers))
    session = _Session(stream, wschannel.ChannelConnection(handshake.subprotocol), stdin, stdout, stderr, tty)
    await session.run(list(target.get("argv") or []), command, dict(target.get("env") or {}), leftover)


def missing_command(command: list[str], env: Mapping[str, str]) -> str | None:
    """Why COMMAND cannot start (runc's wording), or None. Checked before the netns prefix runs
    it, so that a typo gives this message rather than `ip netns exec`'s."""
    name = command[0] if command else ""
    if not name:
        return 'exec: "": executable file not found in $PATH'
    if "/" in name:
        if not os.path.exists(name):
            return f'exec: "{name}": stat {name}: no such file or directory'
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            return f'exec: "{name}": permission denied'
        return None
    if shutil.which(name, path=env.get("PATH", os.defpath)) is None:
        return f'exec: "{name}": executable file not found in $PATH'
    return None


def _switching(headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 101 Switching Protocols"] + [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _refuse(stream: trio.abc.Stream, e: wschannel.HandshakeRefused) -> None:
    """The refusal as a Status the client prints, then the connection is closed."""
    body = json.dumps(status.failure(e.status, "BadRequest", e.message)).encode()
    try:
        phrase = HTTPStatus(e.status).phrase
    except ValueError:
        phrase = "Error"
    head = [
        f"HTTP/1.1 {e.status} {phrase}".encode(),
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        b"Connection: close",
        *(name + b": " + value for name, value in e.headers),
    ]
    try:
        await stream.send_all(b"\r\n".join(head) + b"\r\n\r\n" + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


class _Session:
    """One exec: the channel connection, the process and the tasks that relay between them.

    `scope` spans the whole exec: the client going away (close frame, EOF, a failed write)
    cancels it, and `cleanup` then kills the command's process group."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        conn: wschannel.ChannelConnection,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ):
        self.stream, self.conn = stream, conn
        self.want_stdin, self.want_stdout, self.want_stderr, self.tty = stdin, stdout, stderr, tty
        self.scope = trio.CancelScope()
        self.send_lock = trio.Lock()
        self.finished = False  # our status and close frame are out
        self.client_closed = trio.Event()
        self.proc: trio.Process | None = None
        self.stdin_stream: trio.abc.SendStream | None = None
        self.outputs: list[tuple[trio.abc.ReceiveStream, int]] = []  # (stream, channel)
        self.master: int | None = None  # the pty's master side (TTY)

    def client_gone(self) -> None:
        self.client_closed.set()
        if not self.finished:
            self.scope.cancel()

    async def send(self, data: bytes) -> None:
        """Write to the client, one writer at a time; a failed write means it is gone."""
        if not data:
            return
        async with self.send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.client_gone()
                await trio.lowlevel.checkpoint()  # the cancellation lands here

    async def run(self, prefix: list[str], command: list[str], env: dict[str, str], leftover: bytes) -> None:
        try:
            with self.scope:
                await self.send(self.conn.ready(self.want_stdout or self.tty, self.want_stderr))
                why = missing_command(command, env)
                if why is None:
                    try:
                        await self.start(prefix + command, env)
                    except OSError as e:
                        why = f'exec: "{command[0]}": {e.strerror or e}'
                if why is not None:
                    await self.send(self.conn.failure(why) + self.conn.close())
                    self.finished = True
                    with trio.move_on_after(CLOSE_WAIT):
                        await self.read_client(leftover)
                    return
                await self.relay(leftover)
        finally:
            with trio.CancelScope(shield=True):
                await self.cleanup()

    # -- the process ----------------------------------------------------------------------------

    async def start(self, argv: list[str], env: dict[str, str]) -> None:
        """Start ARGV in its own process group: pipes, or a pty it has as controlling terminal."""
        if self.tty:
            master, slave = os.openpty()
            try:
                self.proc = await _popen([SETSID, "--ctty", *argv], env, slave, slave, slave, new_session=False)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            self.master = master
            pty = trio.lowlevel.FdStream(master)
            self.stdin_stream = pty if self.want_stdin else None
            self.outputs = [(pty, wschannel.STDOUT)]
            return
        pipe, null = subprocess.PIPE, subprocess.DEVNULL
        self.proc = await _popen(
            argv,
            env,
            pipe if self.want_stdin else null,
            pipe if self.want_stdout else null,
            pipe if self.want_stderr else null,
            new_session=True,
        )
        self.stdin_stream = self.proc.stdin
        self.outputs = [
            (s, ch)
            for s, ch in ((self.proc.stdout, wschannel.STDOUT), (self.proc.stderr, wschannel.STDERR))
            if s is not None
        ]

    async def relay(self, leftover: bytes) -> None:
        """Client input to the process, its output to the client, then the exit status."""
        proc = self.proc
        assert proc is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.read_client, leftover)
            async with trio.open_nursery() as pumps:
                for out, channel in self.outputs:
                    pumps.start_soon(self.pump, out, channel)
                code = await proc.wait()
                # Output still in the pipes comes next; a background child holding them open
                # does not keep the exec going for more than DRAIN_AFTER_EXIT.
                pumps.cancel_scope.deadline = trio.current_time() + DRAIN_AFTER_EXIT
            await self.send(self.conn.status(code) + self.conn.close())
            self.finished = True
            with trio.move_on_after(CLOSE_WAIT):
                await self.client_closed.wait()
            nursery.cancel_scope.cancel()

    async def pump(self, out: trio.abc.ReceiveStream, channel: int) -> None:
        while True:
            try:
                data = bytes(await out.receive_some(READ_SIZE))
            except OSError as e:  # a pty's master reads EIO once the last slave fd is closed
                if e.errno != errno.EIO:
                    raise
                return
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return
            if not data:
                return
            await self.send(self.conn.stdout(data) if channel == wschannel.STDOUT else self.conn.stderr(data))

    # -- the client -----------------------------------------------------------------------------

    async def read_client(self, leftover: bytes) -> None:
        """Client messages until its close: stdin, v5's stdin close, resizes. A close (or EOF)
        before the command ended cancels everything."""
        if leftover:
            await self.feed(leftover)
        while not self.client_closed.is_set():
            try:
                data = bytes(await self.stream.receive_some(READ_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            await self.feed(data)  # b"": EOF, which the connection reports as Closed(1006)
            if not data:
                self.client_gone()

    async def feed(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, wschannel.StdinData):
                await self.write_stdin(event.data)
            elif isinstance(event, wschannel.StdinClosed):
                await self.close_stdin()
            elif isinstance(event, wschannel.Resize):
                self.resize(event.width, event.height)
            elif isinstance(event, wschannel.Closed):
                self.client_gone()
        await self.send(self.conn.data_to_send())

    async def write_stdin(self, data: bytes) -> None:
        if self.stdin_stream is None:
            return
        try:
            await self.stdin_stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.stdin_stream = None  # the command closed its stdin or ended: drop the rest

    async def close_stdin(self) -> None:
        """v5's stdin close: EOF for the command (with a TTY, the terminal's EOF character)."""
        if self.stdin_stream is None:
            return
        if self.tty:
            await self.write_stdin(b"\x04")
            return
        stream, self.stdin_stream = self.stdin_stream, None
        await stream.aclose()

    def resize(self, width: int, height: int) -> None:
        if self.master is None:
            return
        try:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        except OSError:
            pass  # the pty is already closed

    # -- the end --------------------------------------------------------------------------------

    async def cleanup(self) -> None:
        """The process group killed if the command still runs or the client left first, the
        command reaped, every pipe and the pty closed."""
        proc = self.proc
        if proc is not None:
            if proc.returncode is None or not self.finished:
                _kill_group(proc)
            await proc.wait()
        streams: list[trio.abc.AsyncResource] = [s for s, _ in self.outputs]
        if proc is not None and proc.stdin is not None:
            streams.append(proc.stdin)
        for s in {id(s): s for s in streams}.values():
            await s.aclose()
        self.master = None


async def _popen(
    argv: list[str], env: dict[str, str], stdin: int, stdout: int, stderr: int, new_session: bool
) -> trio.Process:
    return await trio.lowlevel.open_process(
        argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, start_new_session=new_session
    )


def _kill_group(proc: trio.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is gone, or (pty, before `setsid` ran) not made yet
        try:
            proc.kill()
        except ProcessLookupError:
            pass
