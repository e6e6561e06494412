"""`pods/log` for the REST endpoint over the dispatcher's one follow loop: tail, previous,
timestamps, limitBytes, follow across a restart and to the pod's end, and the `logs` op still
following the same way. Log files are written by the test; time is trio's autojump clock."""

from __future__ import annotations

import os
import re
from contextlib import aclosing
from typing import Any

import pytest
import trio

from lab.apiserver.dispatch import Dispatcher
from lab.apiserver.errors import ApiError
from lab.apiserver.rest import logs
from lab.client import paths
from lab.testing import InProcessLabApi


@pytest.fixture
def lab(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> InProcessLabApi:
    monkeypatch.setattr(paths, "RUN_ROOT", str(tmp_path))
    api = InProcessLabApi(str(tmp_path))
    api.store.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "c", "restartCount": 0, "state": {"running": {}}}],
            },
        }
    )
    return api


def log_file(lab: InProcessLabApi, run: int) -> str:
    pod = lab.store.get("Pod", "default", "p")
    assert pod is not None
    d = paths.pod_dir(lab.api.topo.name, "default", "p", pod["metadata"]["uid"])
    os.makedirs(d, exist_ok=True)
    return paths.container_log_path(d, "c", run)


def write(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def restart(lab: InProcessLabApi) -> None:
    lab.store.patch_status(
        "Pod",
        "default",
        "p",
        {"phase": "Running", "containerStatuses": [{"name": "c", "restartCount": 1, "state": {"running": {}}}]},
    )


async def collect(lab: InProcessLabApi, params: dict[str, str]) -> bytes:
    async with aclosing(logs.stream(lab.dispatcher, "default", "p", params)) as chunks:
        return b"".join([c async for c in chunks])


async def test_tail_limit_and_timestamps(lab: InProcessLabApi) -> None:
    write(log_file(lab, 0), b"one\ntwo\nthree\npartial")
    assert await collect(lab, {}) == b"one\ntwo\nthree\npartial"
    assert await collect(lab, {"tailLines": "2"}) == b"three\npartial"
    assert await collect(lab, {"tailLines": "0"}) == b""
    assert await collect(lab, {"limitBytes": "5"}) == b"one\nt"
    stamped = (await collect(lab, {"timestamps": "true", "tailLines": "2"})).decode()
    assert re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z \S+\n?){2}", stamped), stamped
    async with aclosing(logs.stream(lab.api, "default", "p", {"container": "c"})) as chunks:  # an ApiServer will do
        assert [c async for c in chunks] == [b"one\ntwo\nthree\npartial"]


async def test_previous_and_bad_parameters(lab: InProcessLabApi) -> None:
    with pytest.raises(ApiError, match="previous terminated container"):
        await collect(lab, {"previous": "true"})
    write(log_file(lab, 0), b"first run\n")
    restart(lab)
    write(log_file(lab, 1), b"second run\n")
    assert await collect(lab, {"previous": "true", "follow": "true"}) == b"first run\n"
    for params, code in [
        ({"tailLines": "x"}, 400),
        ({"tailLines": "-1"}, 422),
        ({"follow": "maybe"}, 400),
        ({"limitBytes": "0"}, 422),
    ]:
        with pytest.raises(logs.LogOptionsError) as err:
            await collect(lab, params)
        assert err.value.status()["code"] == code


async def test_follow_across_a_restart_until_the_pod_is_gone(lab: InProcessLabApi, autojump_clock: Any) -> None:
    write(log_file(lab, 0), b"a\n")
    got: list[bytes] = []
    async with aclosing(logs.stream(lab.dispatcher, "default", "p", {"follow": "true"})) as chunks:
        async for chunk in chunks:
            got.append(chunk)
            if chunk == b"a\n":
                write(log_file(lab, 0), b"b\n")
            elif chunk == b"b\n":
                restart(lab)
                write(log_file(lab, 1), b"c\n")
            elif chunk == b"c\n":
                lab.store.delete("Pod", "default", "p")
    assert got == [b"a\n", b"b\n", b"c\n"]


async def test_the_logs_op_follows_through_the_same_loop(lab: InProcessLabApi, autojump_clock: Any) -> None:
    write(log_file(lab, 0), b"x\n")
    sent: list[dict] = []
    gone = trio.Event()

    async def send(message: dict) -> None:
        sent.append(message)
        if len(sent) == 1:
            write(log_file(lab, 0), b"y\n")
        else:
            gone.set()  # the client hangs up

    dispatcher: Dispatcher = lab.dispatcher
    with trio.fail_after(10):
        await dispatcher.follow_logs({"namespace": "default", "pod": "p"}, send, gone)
    assert sent == [{"data": "x\n"}, {"data": "y\n"}]
