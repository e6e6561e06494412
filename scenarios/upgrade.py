"""upgrade: `istioctl install --set tag=1.25.0` upgrades istiod, istio-cni and the ztunnels in
place; ambient app pods keep running untouched, a sidecar keeps its old proxy (a version skew in
proxy-status) until its pod is re-created."""

from __future__ import annotations

import io
import json
import re

from mesh.istioctl import install
from scenarios import manifests as m
from scenarios import meshops
from scenarios.framework import MESH_NAMESPACE, Run, Scenario, ScenarioError, pod_state, ready, untouched

ISTIO = "Istio's docs: in-place upgrade with istioctl; ambient upgrade (ztunnel, istio-cni)"
ARTICLE = "the article"
TARGET = "1.25.0"
MESH_OBJECTS = (
    ("Deployment", "istiod", MESH_NAMESPACE),
    ("DaemonSet", "ztunnel", MESH_NAMESPACE),
    ("DaemonSet", "istio-cni-node", MESH_NAMESPACE),
    ("MutatingWebhookConfiguration", "istio-sidecar-injector", None),
)


def image_tags(pods: list[dict], container: str | None = None) -> dict[str, str]:
    """{pod name: image tag} of CONTAINER (default: the first container) of each pod."""
    out = {}
    for p in pods:
        cs = p["spec"].get("containers") or []
        c = next((c for c in cs if container is None or c.get("name") == container), None)
        if c is not None:
            out[p["metadata"]["name"]] = install.image_tag(c.get("image", "")) or ""
    return out


def proxy_versions(table: str) -> dict[str, str]:
    """{NAME: VERSION} from `istioctl proxy-status` text."""
    lines = [ln for ln in table.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("NAME"):
        return {}
    head = lines[0].split()
    if "VERSION" not in head:
        return {}
    col = head.index("VERSION")
    out = {}
    for ln in lines[1:]:
        if ln.startswith("Version skew"):
            break
        cells = ln.split()
        if len(cells) == len(head):
            out[cells[0]] = cells[col]
    return out


def skew_note(table: str) -> str:
    m_ = re.search(r"^Version skew:.*$", table, re.M)
    return m_.group(0) if m_ else ""


class Upgrade(Scenario):
    name = "upgrade"
    summary = f"istioctl install --set tag={TARGET}: control plane and ztunnels upgraded, app pods untouched"
    claims = [
        (
            f"an in-place upgrade (install --set tag={TARGET}) replaces istiod, istio-cni and the ztunnels; "
            f"ambient app pods are not restarted",
            ISTIO,
        ),
        ("a sidecar keeps its old proxy until its pod is re-created: proxy-status shows the skew", ISTIO),
        (f"after `rollout restart` the sidecar runs the new proxy ({TARGET})", ISTIO),
    ]

    def run(self, ctx: Run) -> None:
        old = install.default_tag()
        saved = {}
        for kind, name, ns in MESH_OBJECTS:
            try:
                saved[(kind, name, ns)] = meshops.applyable(ctx.get(kind, name, ns))
            except Exception as e:  # noqa: BLE001 - the mesh must be fully there
                raise ScenarioError(f"cannot read {kind} {name}: {e}") from None
        amb = ctx.namespace("ambient")
        side = ctx.namespace("sidecar", ambient=False, labels={"istio-injection": "enabled"})
        ctx.apply(m.echo(amb))
        ctx.apply(m.client(amb, "client"))
        ctx.apply(m.echo(side))
        ctx.wait_ready(amb, "app=echo", enrolled=True)
        client = ctx.wait_ready(amb, "app=client", enrolled=True)[0]["metadata"]["name"]
        side_before = ctx.wait_ready(side, "app=echo")[0]
        url = f"http://echo.{amb}/"
        ctx.wait_until(lambda: ctx.curl(client, amb, url)[0] == 200, 30, "a first answer in ambient", 0.2)
        before = pod_state(ctx.pods(amb))
        side_tag_before = image_tags([side_before], "istio-proxy")[side_before["metadata"]["name"]]

        def restore():
            install.install(ctx.client, ["profile=ambient"], out=io.StringIO())
            for key, obj in saved.items():
                if meshops.applyable(ctx.get(*key)) != obj:
                    ctx.apply(json.dumps(obj))
            meshops.wait_mesh(ctx, 90, "restoring Istio " + old)

        ctx.undo(f"install Istio {old} again", restore)
        ctx.say(f"lab istioctl install --set profile=ambient --set tag={TARGET} -y")
        out = io.StringIO()
        t = ctx.event(f"install --set tag={TARGET}")
        install.install(ctx.client, ["profile=ambient", f"tag={TARGET}"], out=out)
        meshops.wait_mesh(ctx, 90, f"upgrade to {TARGET}")
        took = round(ctx.now() - t, 2)
        ctx.wait_until(lambda: ctx.curl(client, amb, url)[0] == 200, 30, "an answer in ambient after the upgrade", 0.2)
        after = pod_state(ctx.pods(amb))
        mesh_tags = {
            "istiod": sorted(set(image_tags(ctx.pods(MESH_NAMESPACE, "app=istiod")).values())),
            "ztunnel": sorted(set(image_tags(ctx.pods(MESH_NAMESPACE, "app=ztunnel")).values())),
            "istio-cni": sorted(set(image_tags(ctx.pods(MESH_NAMESPACE, "k8s-app=istio-cni-node")).values())),
        }
        side_now = ctx.pods(side, "app=echo")
        side_tag_after = image_tags(side_now, "istio-proxy")
        same_sidecar = [p["metadata"]["uid"] for p in side_now] == [side_before["metadata"]["uid"]]
        ps_skew = ctx.wait_until(
            lambda: (t_ := meshops.lab_cli(ctx, "istioctl", "proxy-status")) and proxy_versions(t_) and t_,
            30,
            "proxy-status",
            interval=0.3,
        )
        sidecar_name = f"{side_before['metadata']['name']}.{side}"
        versions = proxy_versions(ps_skew)

        ctx.say("lab rollout restart deployment/echo in the sidecar namespace")
        ctx.client.call("rollout_restart", kind="Deployment", name="echo", namespace=side)
        new = ctx.wait_until(
            lambda: [
                p
                for p in ctx.pods(side, "app=echo")
                if p["metadata"]["uid"] != side_before["metadata"]["uid"]
                and ready(p)
                and len(ctx.pods(side, "app=echo")) == 1
            ],
            60,
            "the restarted sidecar pod",
        )[0]
        new_tag = image_tags([new], "istio-proxy")[new["metadata"]["name"]]
        new_name = f"{new['metadata']['name']}.{side}"
        ps_after = ctx.wait_until(
            lambda: (t_ := meshops.lab_cli(ctx, "istioctl", "proxy-status")) and new_name in proxy_versions(t_) and t_,
            30,
            "proxy-status with the new pod",
            interval=0.3,
        )

        same, how = untouched(before, after)
        ctx.figure("from", old)
        ctx.figure("to", TARGET)
        ctx.figure("install_output", out.getvalue().splitlines())
        ctx.figure("upgrade_s", took)
        ctx.figure("mesh_tags", mesh_tags)
        ctx.figure("ambient_pods_before", before)
        ctx.figure("ambient_pods_after", after)
        ctx.figure(
            "sidecar_proxy_tag",
            {
                "before": side_tag_before,
                "after_upgrade": side_tag_after,
                "same_pod": same_sidecar,
                "after_restart": new_tag,
            },
        )
        ctx.figure("proxy_status_versions", {"after_upgrade": versions, "after_restart": proxy_versions(ps_after)})
        ctx.figure("proxy_status_skew", skew_note(ps_skew))

        upgraded = all(v == [TARGET] for v in mesh_tags.values())
        ctx.verdict(
            self.claims[0],
            f"{took:.1f}s to install {TARGET} and have every ztunnel Ready with the pods re-enrolled: istiod "
            f"{'/'.join(mesh_tags['istiod'])}, ztunnels {'/'.join(mesh_tags['ztunnel'])}, istio-cni "
            f"{'/'.join(mesh_tags['istio-cni'])}; ambient app pods: {how}",
            upgraded and same,
            f"{'upgraded' if upgraded else 'not upgraded'}, {how.split(',')[0]}",
        )
        ctx.verdict(
            self.claims[1],
            f"the sidecar pod (same uid: {same_sidecar}) still runs proxyv2:{','.join(side_tag_after.values())}; "
            f"proxy-status VERSION {versions.get(sidecar_name, '?')} for it"
            + (f" — {skew_note(ps_skew)[:120]}..." if skew_note(ps_skew) else " (no skew note)"),
            same_sidecar
            and list(side_tag_after.values()) == [old]
            and versions.get(sidecar_name) == old
            and bool(skew_note(ps_skew)),
            f"{versions.get(sidecar_name, '?')} beside istiod {TARGET}",
        )
        ctx.verdict(
            self.claims[2],
            f"new pod {new['metadata']['name']}: proxyv2:{new_tag}; proxy-status VERSION "
            f"{proxy_versions(ps_after).get(new_name, '?')}",
            new_tag == TARGET and proxy_versions(ps_after).get(new_name) == TARGET,
            new_tag,
        )
        ctx.note(
            f"the scenario puts Istio {old} back (`lab istioctl install --set profile=ambient -y`), which "
            f"replaces the control plane and the ztunnels again; the app pods it made are deleted with "
            f"their namespaces."
        )
