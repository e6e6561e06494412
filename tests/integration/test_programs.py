"""The lab's and the mesh's API clients as the processes labd starts (`python -m ...`), against the
lab API in this process: each serves, then exits 0 promptly on SIGTERM (as the kubelet stops it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import trio

from lab.testing import InProcessLabApi

HOST = "127.0.0.1"
PROGRAMS = {  # module: what it logs once it serves
    "lab.dns.server": b"serving DNS on",
    "mesh.istiod": b" info server: serving CA and config on 127.0.0.1:",
}


@pytest.mark.parametrize("module", sorted(PROGRAMS))
async def test_program_serves_then_exits_promptly_on_sigterm(lab_api: InProcessLabApi, module: str) -> None:
    lab_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})  # istiod's CA
    env = {**os.environ, "LAB_API_SOCKET": lab_api.path}
    argv = [sys.executable, "-m", module, "--host", HOST, "--port", "0"]
    process = await trio.lowlevel.open_process(argv, env=env, stderr=subprocess.PIPE)
    assert process.stderr is not None
    async with process.stderr:
        try:
            log = b""
            with trio.fail_after(5):
                while PROGRAMS[module] not in log:
                    chunk = await process.stderr.receive_some(4096)
                    assert chunk, log
                    log += chunk
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(2):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
