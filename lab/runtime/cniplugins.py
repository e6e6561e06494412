"""Node CNI plugins: processes that must see a pod's network before any of its containers runs.

In Kubernetes the container runtime runs the node's CNI plugin chain (CNI ADD) while it creates a
pod's sandbox, so a plugin such as istio-cni has set the pod's network up before the first
container starts, and a plugin that fails fails the sandbox: the kubelet records
`FailedCreatePodSandBox`, the pod stays ContainerCreating and sandbox creation is retried with
backoff. The lab has no plugin binaries; a node's plugins are Unix sockets in
`lab.client.paths.cni_plugin_dir(lab, node)` (`<name>.sock`), made by whatever serves them, so a lab
without such a process is unaffected.

Per plugin and command, one connection carrying one JSON line each way:

    → {"command": "ADD" | "DEL", "pod": {"namespace", "name", "uid", "labels", "annotations",
       "serviceAccount"}, "netns": "<netns name>", "podIP": "<ip>"}
    ← {"ok": true}  or  {"ok": false, "error": "<one line>"}

ADD goes to every plugin, in name order, after the pod's netns, veth and address exist and before
its init containers; it is answered within ADD_TIMEOUT or counts as failed. DEL goes to every
plugin, in reverse order, when the pod is torn down (containers stopped, netns still there),
best-effort. hostNetwork pods have no sandbox network and no plugin call. `lab` never imports the
plugins' code: this module only knows the protocol.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import stat
from collections.abc import Callable, Mapping
from typing import Any

import trio

from lab.client.backoff import Backoff
from lab.client.contract import CNI_PLUGIN_SUFFIX
from lab.client.protocol import LineDecoder, ProtocolError, encode

log = logging.getLogger("labd.cni")

ADD_TIMEOUT = 10.0
DEL_TIMEOUT = 3.0
RETRY_INITIAL = 0.5
RETRY_MAX = 5.0
MAX_ANSWER = 64 * 1024
SUFFIX = CNI_PLUGIN_SUFFIX


class PluginGone(Exception):
    """The plugin's socket disappeared between listing and connecting: it is no plugin now."""


def plugin_sockets(directory: str) -> list[str]:
    """The node's plugin sockets, in name order (nothing when the directory does not exist)."""
    found = []
    for path in sorted(glob.glob(os.path.join(glob.escape(directory), "*" + SUFFIX))):
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                found.append(path)
        except OSError:
            continue
    return found


def plugin_name(path: str) -> str:
    base = os.path.basename(path)
    return base[: -len(SUFFIX)] if base.endswith(SUFFIX) else base


def request(command: str, pod: Mapping[str, Any], netns: str, pod_ip: str | None) -> dict[str, Any]:
    """The message for COMMAND ("ADD" or "DEL") about POD, whose sandbox is NETNS with POD_IP."""
    if command not in ("ADD", "DEL"):
        raise ValueError(f"unknown CNI command {command!r}")
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    return {
        "command": command,
        "pod": {
            "namespace": md.get("namespace") or "default",
            "name": md.get("name", ""),
            "uid": md.get("uid", ""),
            "labels": dict(md.get("labels") or {}),
            "annotations": dict(md.get("annotations") or {}),
            "serviceAccount": spec.get("serviceAccountName") or "default",
        },
        "netns": netns,
        "podIP": pod_ip or "",
    }


def parse_result(message: Any) -> str | None:
    """None when the plugin said ok, else its error (or what is wrong with its answer)."""
    if not isinstance(message, dict):
        return "malformed answer: not a JSON object"
    if message.get("ok") is True:
        return None
    if message.get("ok") is False:
        error = str(message.get("error") or "").strip()
        return " ".join(error.split()) or "failed without a message"
    return "malformed answer: no \"ok\" field"


def failure_message(pod: Mapping[str, Any], plugin: str, command: str, error: str) -> str:
    """The FailedCreatePodSandBox event text, worded as the kubelet words a CNI failure."""
    md = pod.get("metadata") or {}
    return (
        f"Failed to create pod sandbox: failed to set up network for sandbox of pod "
        f"\"{md.get('namespace') or 'default'}/{md.get('name', '')}\": plugin type=\"{plugin}\" "
        f"failed ({command.lower()}): {error}"
    )


async def call(path: str, message: Mapping[str, Any], timeout: float) -> str | None:
    """Send MESSAGE to the plugin at PATH; None if it said ok, else the error.

    Raises PluginGone when the socket no longer exists."""
    try:
        with trio.fail_after(timeout):
            try:
                stream = await trio.open_unix_socket(path)
            except FileNotFoundError:
                raise PluginGone(path) from None
            except OSError as e:
                return f"cannot reach the plugin at {path}: {os.strerror(e.errno) if e.errno else e}"
            async with stream:
                await stream.send_all(encode(dict(message)))
                decoder, received = LineDecoder(), 0
                while True:
                    data = await stream.receive_some(4096)
                    if not data:
                        return "the plugin closed the connection without an answer"
                    received += len(data)
                    if received > MAX_ANSWER:
                        return "malformed answer: too long"
                    for answer in decoder.feed(data):
                        return parse_result(answer)
    except trio.TooSlowError:
        return f"no answer within {timeout:g}s"
    except ProtocolError as e:
        return f"malformed answer: {e}"
    except (OSError, trio.BrokenResourceError) as e:
        if isinstance(e, OSError) and e.errno == errno.ENOENT:
            raise PluginGone(path) from None
        return f"talking to the plugin at {path} failed: {e}"


async def add(
    directory: str,
    pod: Mapping[str, Any],
    netns: str,
    pod_ip: str | None,
    on_failure: Callable[[str], None],
    timeout: float = ADD_TIMEOUT,
) -> None:
    """ADD the pod to every plugin of the node, retrying with backoff until all have said ok.

    Each failed attempt is reported with ON_FAILURE (the event text). Returns at once when the node
    has no plugin; only cancellation (the pod deleted) ends it otherwise."""
    backoff = Backoff(RETRY_INITIAL, RETRY_MAX)
    message = request("ADD", pod, netns, pod_ip)
    while True:
        failure = None
        for path in plugin_sockets(directory):
            try:
                error = await call(path, message, timeout)
            except PluginGone:
                continue
            if error is not None:
                failure = failure_message(pod, plugin_name(path), "ADD", error)
                break
        if failure is None:
            return
        on_failure(failure)
        await trio.sleep(backoff.next())


async def delete(
    directory: str, pod: Mapping[str, Any], netns: str, pod_ip: str | None, timeout: float = DEL_TIMEOUT
) -> None:
    """DEL the pod from every plugin of the node, last first; failures are only logged."""
    message = request("DEL", pod, netns, pod_ip)
    md = pod.get("metadata") or {}
    for path in reversed(plugin_sockets(directory)):
        try:
            error = await call(path, message, timeout)
        except PluginGone:
            continue
        if error is not None:
            log.warning(
                "CNI DEL of pod %s/%s by plugin %s failed: %s",
                md.get("namespace"),
                md.get("name"),
                plugin_name(path),
                error,
            )
