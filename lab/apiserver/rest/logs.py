"""`GET .../pods/NAME/log` for the REST endpoint: the kubelet's log options over the dispatcher's
one follow loop (lab.apiserver.dispatch.log_chunks), so `lab logs -f` and `kubectl logs -f` follow
a container, across its restarts, the same way.

PodLogOptions served: `container`, `tailLines`, `follow`, `previous`, `timestamps`, `limitBytes`.
The lab's log files carry no per-line times (containers write them directly), so `timestamps`
stamps what was there when asked with the file's last write and what follows with the moment labd
read it, and `sinceSeconds`/`sinceTime` are accepted and ignored.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from contextlib import aclosing
from dataclasses import dataclass
from typing import AsyncGenerator, Mapping

from lab.apiserver.api import ApiServer
from lab.apiserver.dispatch import Dispatcher, log_chunks
from lab.apiserver.errors import ApiError
from lab.apiserver.rest.status import failure

_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("", "0", "f", "F", "false", "FALSE", "False")


class LogOptionsError(Exception):
    """A PodLogOptions parameter the kube-apiserver refuses; `status()` is its Status body."""

    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason = code, reason

    def status(self) -> dict:
        return failure(self.code, self.reason, str(self))


@dataclass(frozen=True)
class LogOptions:
    container: str | None
    tail: int | None
    follow: bool
    previous: bool
    timestamps: bool
    limit_bytes: int | None


def _flag(params: Mapping[str, str], name: str) -> bool:
    raw = params.get(name) or ""
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise LogOptionsError(400, "BadRequest", f'invalid value for {name}: "{raw}"')


def _count(params: Mapping[str, str], name: str, minimum: int) -> int | None:
    raw = params.get(name) or ""
    if raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise LogOptionsError(400, "BadRequest", f'invalid value for {name}: "{raw}"') from None
    if value < minimum:
        raise LogOptionsError(
            422,
            "Invalid",
            f'PodLogOptions "" is invalid: {name}: Invalid value: {value}: '
            f"must be greater than {'or equal to ' if minimum == 0 else ''}0",
        )
    return value


def options(params: Mapping[str, str]) -> LogOptions:
    """The query checked as the kube-apiserver does (raises LogOptionsError)."""
    return LogOptions(
        container=params.get("container") or None,
        tail=_count(params, "tailLines", 0),
        follow=_flag(params, "follow"),
        previous=_flag(params, "previous"),
        timestamps=_flag(params, "timestamps"),
        limit_bytes=_count(params, "limitBytes", 1),
    )


def rfc3339nano(seconds: float) -> str:
    """The kubelet's `--timestamps` prefix: UTC, always nine fractional digits."""
    whole = int(seconds)
    nanos = int(round((seconds - whole) * 1e9)) % 1_000_000_000
    return dt.datetime.fromtimestamp(whole, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


class _Stamper:
    """Puts a timestamp before every line, also lines split across chunks."""

    def __init__(self) -> None:
        self.at_line_start = True

    def __call__(self, data: bytes, when: float) -> bytes:
        stamp = rfc3339nano(when).encode() + b" "
        out = bytearray()
        parts = data.split(b"\n")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last and not part:
                break
            if self.at_line_start:
                out += stamp
            out += part
            if not last:
                out += b"\n"
            self.at_line_start = not last
        return bytes(out)


def _api(dispatcher_or_api: Dispatcher | ApiServer) -> ApiServer:
    return dispatcher_or_api.api if isinstance(dispatcher_or_api, Dispatcher) else dispatcher_or_api


def _written_at(api: ApiServer, namespace: str, pod: str, opts: LogOptions) -> float:
    try:
        return os.path.getmtime(api.log_path(namespace, pod, opts.container, opts.previous))
    except (ApiError, OSError):
        return time.time()


async def stream(
    dispatcher_or_api: Dispatcher | ApiServer, namespace: str, pod: str, params: Mapping[str, str]
) -> AsyncGenerator[bytes, None]:
    """The log as text/plain chunks: first (at once, maybe b"") what is there, then with
    `follow=true` what is appended, until the pod is gone, limitBytes is reached or the consumer
    closes the stream (use `aclosing`).

    Before the first chunk it raises LogOptionsError (a bad parameter) or ApiError (no such pod
    or container, no previous run: the dispatcher's messages), so the REST core can take the first
    chunk before it commits to a 200."""
    opts = options(params)
    api = _api(dispatcher_or_api)
    stamper = _Stamper() if opts.timestamps else None
    left = opts.limit_bytes
    first = True
    chunks = log_chunks(api, namespace, pod, opts.container, tail=opts.tail, previous=opts.previous, follow=opts.follow)
    async with aclosing(chunks):
        async for chunk in chunks:
            if stamper is not None and chunk:
                chunk = stamper(chunk, _written_at(api, namespace, pod, opts) if first else time.time())
            if left is not None:
                chunk, left = chunk[:left], left - len(chunk[:left])
            if chunk or first:
                yield chunk
            first = False
            if left == 0:
                return
