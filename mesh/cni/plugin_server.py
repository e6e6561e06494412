"""The agent's CNI plugin socket: the node's kubelet asks here before a pod's containers start.

Istio's CNI plugin (run by the container runtime while it creates a pod's sandbox) asks the node
agent over a Unix socket to set the pod up, and returns only once the agent has answered, so an
ambient pod never runs a process before its traffic is captured (docs/mesh-internals.md, "CNI
plugin"). The lab's kubelet plays the runtime and the plugin binary: it talks to every socket in
`lab.client.paths.cni_plugin_dir(lab, node)` (`lab.runtime.cniplugins` has the protocol: one JSON line
each way, ADD or DEL). This module serves that socket and turns each line into a `PluginRequest`
for the agent's handler, whose answer (None for ok, else an error) goes back as
`{"ok": true}` / `{"ok": false, "error": ...}`.

The socket is made by the agent (mode 0600, root's only) and removed when it stops; it lives in
the lab's directory, so the lab's teardown removes it too after a crash.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from lab.client.protocol import LineDecoder, ProtocolError, encode

log = logging.getLogger("mesh.cni")

READ_TIMEOUT = 5.0
MAX_REQUEST = 1024 * 1024
COMMANDS = ("ADD", "DEL")


@dataclass(frozen=True)
class PluginRequest:
    command: str
    uid: str
    name: str
    namespace: str
    service_account: str
    netns: str
    pod_ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_request(message: Mapping[str, Any]) -> PluginRequest:
    """The request in MESSAGE; ValueError naming what is missing or wrong."""
    command = message.get("command")
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r} (want ADD or DEL)")
    pod = message.get("pod")
    if not isinstance(pod, Mapping):
        raise ValueError("no pod in the request")
    for key in ("uid", "name", "namespace"):
        if not isinstance(pod.get(key), str) or not pod.get(key):
            raise ValueError(f"pod.{key} missing")
    netns = message.get("netns")
    if not isinstance(netns, str) or not netns:
        raise ValueError("netns missing")
    return PluginRequest(
        command=command,
        uid=pod["uid"],
        name=pod["name"],
        namespace=pod["namespace"],
        service_account=str(pod.get("serviceAccount") or "default"),
        netns=netns,
        pod_ip=str(message.get("podIP") or ""),
        labels=dict(pod.get("labels") or {}),
        annotations=dict(pod.get("annotations") or {}),
    )


def answer(error: str | None) -> dict[str, Any]:
    return {"ok": True} if error is None else {"ok": False, "error": error}


Handler = Callable[[PluginRequest], Awaitable["str | None"]]


class PluginServer:
    """Serves PATH; each connection is one request for HANDLER and one answer."""

    def __init__(self, path: str, handler: Handler):
        self.path = path
        self._handler = handler

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept requests until cancelled; the socket file is removed on the way out."""
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock = None
        inode = None
        try:
            try:
                os.unlink(self.path)  # a predecessor that was killed left it
            except FileNotFoundError:
                pass
            old_umask = os.umask(0o177)  # 0600 from the start (no await while it is set)
            try:
                raw.bind(self.path)
            finally:
                os.umask(old_umask)
            inode = os.stat(self.path).st_ino
            raw.listen(64)
            sock = trio.socket.from_stdlib_socket(raw)
            listener = trio.SocketListener(sock)
            log.info("serving the CNI plugin on %s", self.path)
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._handle, stream)
        finally:
            (sock or raw).close()
            try:
                if inode is not None and os.stat(self.path).st_ino == inode:
                    os.unlink(self.path)
            except OSError:
                pass

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                message = await self._read(stream)
            except (ProtocolError, ValueError, trio.TooSlowError, OSError, trio.BrokenResourceError) as e:
                log.warning("bad CNI plugin request: %s", e or type(e).__name__)
                await self._send(stream, answer(f"bad request: {e or type(e).__name__}"))
                return
            if message is None:
                return
            try:
                request = parse_request(message)
            except ValueError as e:
                await self._send(stream, answer(f"bad request: {e}"))
                return
            try:
                error = await self._handler(request)
            except Exception as e:  # noqa: BLE001 - the kubelet must get an answer, never a hang
                log.exception("CNI %s of pod %s failed", request.command, request)
                error = f"istio-cni agent error: {type(e).__name__}: {e}"
            await self._send(stream, answer(error))

    async def _read(self, stream: trio.SocketStream) -> dict[str, Any] | None:
        decoder, received = LineDecoder(), 0
        with trio.fail_after(READ_TIMEOUT):
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return None
                received += len(data)
                if received > MAX_REQUEST:
                    raise ValueError("request too long")
                for message in decoder.feed(data):
                    return message

    async def _send(self, stream: trio.SocketStream, message: dict[str, Any]) -> None:
        try:
            await stream.send_all(encode(message))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the kubelet gave up waiting; it retries ADD
