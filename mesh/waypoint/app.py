"""The waypoint pod's process (`python -m mesh.proxy proxy waypoint`, the `istio-proxy` container).

A `mesh.proxy.pod.ProxyPod` named after its Gateway: it terminates HBONE on 15008 and sends each
tunnel through the engine's chains for the Services and pods it serves, then on over HBONE, as
itself, to the chosen endpoint. Ready (15021) once its certificate is issued and istiod's config
has arrived; until then ztunnels do not send it traffic (its endpoint is not Healthy), and a
waypoint without a ready endpoint fails closed at the source ztunnel.
"""

from __future__ import annotations

from lab.client.contract import ENV_SERVICE_ACCOUNT
from mesh.contract import ENV_GATEWAY_NAME
from mesh.proxy.pod import PodSettings, ProxyPod, environment, run_until_signalled


def waypoint(env: dict[str, str]) -> ProxyPod:
    name = env.get(ENV_GATEWAY_NAME) or env.get(ENV_SERVICE_ACCOUNT) or "waypoint"
    return ProxyPod(PodSettings.from_env(env, component="waypoint", name=name))


async def amain(env: dict[str, str] | None = None) -> None:
    env = environment() if env is None else env
    await run_until_signalled(waypoint(env), env)
