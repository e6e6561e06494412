"""Clients of a lab's API socket: a blocking one (CLI, tests) and a trio one (in-lab daemons).

Both speak `lab.client.protocol`. Errors the server reports raise `LabError` with its message.
This package is all of `lab` that the mesh's processes may import:

- `protocol`: the API socket's JSON lines; `paths`: where a lab keeps its socket, journal, pods
  and plugin sockets, and what its network namespaces are called.
- `contract`: the names a lab shares with the processes it runs (annotations, environment).
- `netns`: sockets and commands inside a network namespace; `process`: how a lab process stops
  on SIGTERM; `backoff`: retry pacing; `cli`: what a command-line tool on the API needs.
"""

from __future__ import annotations

import socket
from functools import partial
from typing import Any, AsyncGenerator, Iterator

import trio

from lab.client.paths import LAB_NAME_RE, api_socket_path
from lab.client.protocol import LineDecoder, encode


class LabError(Exception):
    """The lab refused a request; the message says why."""


class LabUnavailable(LabError):
    """No labd answers on the socket."""


def _unwrap(reply: dict[str, Any]) -> Any:
    if reply.get("ok"):
        return reply.get("result")
    raise LabError(reply.get("error", "unknown error"))


def _streamed(message: dict[str, Any]) -> dict[str, Any]:
    """A message of a streaming op; the one that reports an error (it ends the stream) raises."""
    if message.get("ok") is False:
        raise LabError(message.get("error", "unknown error"))
    return message


def _received(s: socket.socket) -> Iterator[dict[str, Any]]:
    """The messages arriving on S until the server hangs up."""
    dec = LineDecoder()
    for data in iter(partial(s.recv, 65536), b""):
        yield from dec.feed(data)


class LabClient:
    """Blocking client: one connection per call (requests are short; watch has its own)."""

    def __init__(self, name: str = "default", socket_path: str | None = None, timeout: float = 120.0):
        if socket_path is None and not LAB_NAME_RE.match(name):
            raise LabError(f"invalid lab name {name!r}: 1-12 lowercase letters or digits, starting with a letter")
        self.name = name
        self.socket_path = socket_path or api_socket_path(name)
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.socket_path)
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            raise LabUnavailable(f'lab "{self.name}" is not running (no API at {self.socket_path})') from None
        return s

    def call(self, op: str, **params: Any) -> Any:
        with self._connect() as s:
            s.sendall(encode({"op": op, **params}))
            for msg in _received(s):
                return _unwrap(msg)
            raise LabError(f"labd closed the connection during {op}")

    def stream(self, op: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Yields messages of a streaming op (watch, logs -f) until the server ends it."""
        with self._connect() as s:
            s.settimeout(None)
            s.sendall(encode({"op": op, **params}))
            for msg in _received(s):
                yield _streamed(msg)

    # Convenience wrappers used by the CLI and tests.
    def apply(self, manifests: str, source: str = "-") -> list[dict[str, Any]]:
        return self.call("apply", manifests=manifests, source=source)

    def get(
        self, kind: str, name: str | None = None, namespace: str | None = "default", selector: str | None = None
    ) -> Any:
        return self.call("get", kind=kind, name=name, namespace=namespace, selector=selector)


class AsyncLabClient:
    """trio client for processes inside the lab (DNS, istiod): calls and a reconnecting watch."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    async def call(self, op: str, **params: Any) -> Any:
        stream = await trio.open_unix_socket(self.socket_path)
        async with stream:
            await stream.send_all(encode({"op": op, **params}))
            dec = LineDecoder()
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    raise LabError(f"labd closed the connection during {op}")
                for msg in dec.feed(data):
                    return _unwrap(msg)

    async def watch(self, kinds: list[str], namespace: str | None = None) -> AsyncGenerator[dict[str, Any], None]:
        """Yields watch events ({"type", "object"} and SYNCED) for one connection.

        The caller reconnects (and so gets a fresh initial list) when this ends or raises.
        """
        stream = await trio.open_unix_socket(self.socket_path)
        async with stream:
            await stream.send_all(encode({"op": "watch", "kinds": kinds, "namespace": namespace}))
            dec = LineDecoder()
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                for msg in dec.feed(data):
                    yield _streamed(msg)
