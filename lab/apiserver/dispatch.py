"""The API calls labd answers: each request's `op` mapped onto the API server, the store, the
token reviewer and the node agent (the kubelet).

Kept apart from `Lab` (the wiring) so that an in-process lab API for tests (lab/testing.py) is the
same code with no kubelet behind it. Plain calls answer one `ok`/`error` line; `watch` and
`logs --follow` stream lines until the client hangs up.
"""

from __future__ import annotations

import copy
from contextlib import aclosing
from typing import Any, AsyncGenerator, Awaitable, Callable, Protocol

import trio

from lab.apiserver import kinds
from lab.apiserver.api import ApiServer
from lab.apiserver.endpoint import STREAMING, Reply
from lab.apiserver.errors import ApiError
from lab.apiserver.tokens import CA_AUDIENCE, InvalidToken, TokenIssuer
from lab.client.protocol import error, ok

WATCH_BUFFER = 50000  # events a watcher may fall behind by before its stream is ended (it re-lists)
LOG_POLL = 0.2  # seconds between looks at a followed log file for what was appended


class NodeAgent(Protocol):
    """What the dispatcher asks of the kubelet (absent in the test API)."""

    def container_env(self, pod: dict, container: dict, pod_ip: str | None) -> dict: ...
    def exec_argv(self, pod: dict, container: dict, netns_name: str) -> list[str]: ...
    async def top(self, pods: list[dict], interval: float) -> dict: ...


class Dispatcher:
    def __init__(
        self,
        api: ApiServer,
        tokens: TokenIssuer,
        node_agent: NodeAgent | None = None,
        extra_ops: dict[str, Callable[..., Any]] | None = None,
    ):
        self.api = api
        self.store = api.store
        self.tokens = tokens
        self.node_agent = node_agent
        self._ops: dict[str, Callable[..., Any]] = {
            "apply": api.apply,
            "get": api.get,
            "delete": api.delete,
            "label": api.label,
            "annotate": lambda **kw: api.label(field="annotations", **kw),
            "scale": api.scale,
            "rollout_restart": api.rollout_restart,
            "logs": self.logs,
            "ping": lambda: "pong",
            "token_review": self.token_review,
            "update_status": self.update_status,
        }
        if node_agent is not None:
            self._ops["exec"] = self._exec
        self._ops.update(extra_ops or {})

    async def handle(self, req: dict, send: Reply) -> Any:
        op = req.get("op")
        params = {k: v for k, v in req.items() if k != "op"}
        try:
            if op == "watch":
                await self.watch(req, send, send.client_gone)
                return STREAMING
            if op == "logs" and req.get("follow"):
                await self.follow_logs(req, send, send.client_gone)
                return STREAMING
            if op == "top" and self.node_agent is not None:  # samples cgroups over an interval
                return ok(await self.top(**params))
            fn = self._ops.get(op)  # type: ignore[arg-type]
            if fn is None:
                return error(f"unknown op {op!r}")
            return ok(copy.deepcopy(fn(**params)))
        except ApiError as e:
            return error(str(e))
        except TypeError as e:
            return error(f"bad request for {op}: {e}")

    # Plain calls --------------------------------------------------------------------------------
    def token_review(self, token: str, audience: str = CA_AUDIENCE) -> dict:
        """Kubernetes' TokenReview: who a ServiceAccount token belongs to, if its pod still exists."""
        try:
            user = self.tokens.verifier().review(token, audience)
        except InvalidToken as e:
            raise ApiError(f"token review failed: {e}") from None
        pod = self.store.get("Pod", user.namespace, user.pod_name)
        if pod is None or pod["metadata"]["uid"] != user.pod_uid:
            raise ApiError(
                f'token review failed: pod "{user.namespace}/{user.pod_name}" with uid {user.pod_uid} no longer exists'
            )
        return {
            "authenticated": True,
            "user": {
                "namespace": user.namespace,
                "serviceAccount": user.service_account,
                "podName": user.pod_name,
                "podUID": user.pod_uid,
                "nodeName": pod["spec"].get("nodeName"),
            },
        }

    def update_status(self, kind: str, namespace: str | None, name: str, status: dict) -> dict:
        k = kinds.resolve(kind)
        obj = self.store.patch_status(k.kind, namespace if k.namespaced else None, name, status)
        if obj is None:
            raise ApiError(f'Error from server (NotFound): {k.plural} "{name}" not found')
        return obj

    def _exec(self, namespace: str, pod: str, container: str | None = None) -> dict:
        agent = self.node_agent
        assert agent is not None
        return self.api.exec_target(
            namespace,
            pod,
            container,
            lambda p, c: agent.container_env(p, c, p.get("status", {}).get("podIP")),
            agent.exec_argv,
        )

    async def top(self, namespace: str | None = None, selector: str | None = None, interval: float = 0.5) -> dict:
        """`lab top`'s figures for the pods in NAMESPACE (None: all) matching SELECTOR."""
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.05 <= interval <= 10:
            raise ApiError(f"error: interval must be between 0.05 and 10 seconds, not {interval!r}")
        assert self.node_agent is not None
        pods = self.api.get("Pod", None, namespace, selector)["items"]
        return await self.node_agent.top(pods, float(interval))

    def logs(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        previous: bool = False,
        tail: int | None = None,
        follow: bool = False,
    ) -> str:
        return _read_log(self.api.log_path(namespace, pod, container, previous), tail)[0].decode(errors="replace")

    # Streams ------------------------------------------------------------------------------------
    async def follow_logs(self, req: dict, send: Callable[[dict], Awaitable[None]], client_gone: trio.Event) -> None:
        """`logs -f`: what is there, then what is appended, following the container across
        restarts, until the pod is gone or the client hangs up."""
        chunks = log_chunks(
            self.api,
            req["namespace"],
            req["pod"],
            req.get("container"),
            tail=req.get("tail"),
            follow=True,
            stop=client_gone,
        )
        async with aclosing(chunks):
            async for chunk in chunks:
                await send({"data": chunk.decode(errors="replace")})

    async def watch(self, req: dict, send: Callable[[dict], Awaitable[None]], client_gone: trio.Event) -> None:
        """Every current object of the kinds asked for (ADDED), SYNCED, then each change as it
        happens; a watcher WATCH_BUFFER events behind has its stream ended and must re-list."""
        kinds_ = set(req.get("kinds") or [])
        ns = req.get("namespace")
        tx, rx = trio.open_memory_channel[dict](WATCH_BUFFER)

        def on_change(type_: str, obj: dict) -> None:
            if obj["kind"] in kinds_ and (ns is None or obj["metadata"].get("namespace") == ns):
                try:
                    tx.send_nowait({"type": type_, "object": obj})
                except trio.WouldBlock:
                    unsubscribe()
                    tx.close()
                except trio.ClosedResourceError:
                    pass

        unsubscribe = self.store.subscribe(on_change)
        try:
            async with trio.open_nursery() as nursery:

                async def stop_when_client_gone() -> None:
                    await client_gone.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_when_client_gone)
                for obj in self.store.all(kinds_):
                    if ns is None or obj["metadata"].get("namespace") == ns:
                        await send({"type": "ADDED", "object": obj})
                await send({"type": "SYNCED", "resourceVersion": str(self.store.resource_version)})
                async with rx:
                    async for ev in rx:
                        await send(ev)
                nursery.cancel_scope.cancel()
        finally:
            unsubscribe()


def _read_log(path: str, tail: int | None = None) -> tuple[bytes, int]:
    """A log file's content (its last TAIL lines if TAIL is set) and the file's size as read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return b"", 0
    size = len(data)
    if tail is not None and tail >= 0:
        data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
    return data, size


async def log_chunks(
    api: ApiServer,
    namespace: str,
    pod: str,
    container: str | None = None,
    *,
    tail: int | None = None,
    previous: bool = False,
    follow: bool = False,
    stop: trio.Event | None = None,
) -> AsyncGenerator[bytes, None]:
    """A container's log: first what is there (one chunk, maybe empty), then with FOLLOW what is
    appended, following the container across restarts, until the pod is gone or STOP is set.

    The one follow loop for the `logs` op and the REST `pods/log` (lab/apiserver/rest/logs.py).
    Raises ApiError (no such pod or container, no previous run) before the first chunk. It runs
    no task and yields outside any cancel scope, so the consumer may stop at any point."""
    path = api.log_path(namespace, pod, container, previous)
    data, pos = _read_log(path, tail)
    yield data
    if not follow or previous:
        return
    while api.store.get("Pod", namespace, pod) is not None:
        if stop is None:
            await trio.sleep(LOG_POLL)
        else:
            with trio.move_on_after(LOG_POLL):
                await stop.wait()
            if stop.is_set():
                return
        try:
            current = api.log_path(namespace, pod, container)
        except ApiError:
            return
        if current != path:  # the container restarted: a new log file
            path, pos = current, 0
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
        except FileNotFoundError:
            continue
        if chunk:
            pos += len(chunk)
            yield chunk
