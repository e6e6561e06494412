"""One lab's Kubernetes endpoint as labd runs it: PKI, a free port, the kubeconfig, the server.

`await nursery.start(serve, api, dispatcher, lab_name, lab_dir)` makes (or reuses) the lab's CA
and certificates under `<lab dir>/pki`, listens on a free port of 127.0.0.1, writes the port and
the kubeconfig (lab/client/paths.py names both) and reports the port; cancelling it stops the
server and every connection.
"""

from __future__ import annotations

import os

import trio

from lab.apiserver.api import ApiServer
from lab.apiserver.dispatch import Dispatcher
from lab.apiserver.rest import certs
from lab.apiserver.rest.app import RestApp
from lab.apiserver.rest.server import RestServer
from lab.apiserver.rest.target import Context
from lab.client.paths import kube_api_port_path, kubeconfig_path


async def serve(
    api: ApiServer,
    dispatcher: Dispatcher | None,
    lab_name: str,
    lab_dir: str,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    *,
    port: int = 0,
) -> None:
    pki = certs.ensure(os.path.join(lab_dir, "pki"), lab_name)
    ctx = Context(api, dispatcher)
    server = RestServer(RestApp(ctx), certs.server_context(pki), port=port)
    async with trio.open_nursery() as nursery:
        bound: int = await nursery.start(server.serve)
        ctx.server_address = f"127.0.0.1:{bound}"
        # Paths as `lab` finds them (lab/client/paths.py) when LAB_DIR is the lab's own directory.
        port_file, config_file = kube_api_port_path(lab_name), kubeconfig_path(lab_name)
        if os.path.dirname(port_file) != os.path.normpath(lab_dir):
            port_file, config_file = os.path.join(lab_dir, "kube-api.port"), os.path.join(lab_dir, "kubeconfig")
        with open(port_file, "w") as f:
            f.write(f"{bound}\n")
        certs.write_kubeconfig(config_file, certs.kubeconfig(pki, lab_name, bound))
        task_status.started(bound)
