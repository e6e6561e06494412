"""The sidecar's process (`python -m mesh.proxy proxy sidecar`, the injected `istio-proxy` container).

The same `mesh.proxy.pod.ProxyPod` as a waypoint, placed in the app's own pod and named after
it, running as UID 1337 so istio-init's redirection lets its own traffic through. Besides HBONE on
15008 it listens where istio-init sends the app's traffic:

- 15006, inbound plaintext (`Engine.serve_plaintext`): the pod's policies with no peer identity,
  refused under STRICT mTLS;
- 15001, outbound (`Engine.serve_outbound`): the original destination (SO_ORIGINAL_DST); a Service
  or an HBONE-capable pod is reached over HBONE as the pod's identity, anything else as plain TCP.

It reaches its own app from 127.0.0.6 (the source istio-init's rules let through) and reports
metrics on 15020 and 15090 (Envoy's port).
"""

from __future__ import annotations

import functools
import logging

import trio

from lab.client.contract import ENV_POD_NAME
from mesh.contract import ENVOY_PROMETHEUS_PORT, INBOUND_CAPTURE_PORT, METRICS_PORT, OUTBOUND_CAPTURE_PORT, PROXY_PORTS
from mesh.proxy.pod import PodSettings, ProxyPod, environment, run_until_signalled
from mesh.sidecar.iptables import INBOUND_PASSTHROUGH_IP
from mesh.ztunnel.sockets import abort, format_addr, original_dst, serve_guarded

log = logging.getLogger("mesh.sidecar")


async def _serve_captured(port: int, direction: str, pod: ProxyPod, nursery: trio.Nursery) -> None:
    engine = pod.engine
    assert engine is not None  # ProxyPod.run creates the engine before it starts extra listeners
    serve = engine.serve_outbound if direction == "outbound" else engine.serve_plaintext

    async def handle(stream: trio.SocketStream) -> None:
        try:
            src = stream.socket.getpeername()[:2]
            target = original_dst(stream.socket)
        except OSError as exc:
            log.warning("%s: cannot read the original destination: %s", direction, exc)
            abort(stream)
            return
        if target[1] in PROXY_PORTS and target[0] == pod.settings.pod_ip:
            log.warning("%s: refused a connection to the proxy itself (%s)", direction, format_addr(target))
            abort(stream)
            return
        await serve(stream, src, target)

    listener = (await trio.open_tcp_listeners(port, host="0.0.0.0"))[0]
    pod.ports[direction] = listener.socket.getsockname()[1]
    await nursery.start(functools.partial(serve_guarded, listener, handle, direction, log))


def sidecar(env: dict[str, str]) -> ProxyPod:
    settings = PodSettings.from_env(
        env,
        component="sidecar",
        name=env.get(ENV_POD_NAME, ""),
        metrics_addrs=(("0.0.0.0", METRICS_PORT), ("0.0.0.0", ENVOY_PROMETHEUS_PORT)),
        local_source=INBOUND_PASSTHROUGH_IP,
    )
    return ProxyPod(
        settings,
        extra_listeners=(
            functools.partial(_serve_captured, OUTBOUND_CAPTURE_PORT, "outbound"),
            functools.partial(_serve_captured, INBOUND_CAPTURE_PORT, "inbound"),
        ),
    )


async def amain(env: dict[str, str] | None = None) -> None:
    env = environment() if env is None else env
    await run_until_signalled(sidecar(env), env)
