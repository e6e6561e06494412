"""`lab istioctl proxy-status` from istiod's /debug/syncz (rows, ztunnel's WDS column, version
skew), and `lab istioctl install --set tag=X` (what it applies, what it reports, no-op reinstall)."""

from __future__ import annotations

import copy
import io
import json

import pytest
import yaml

from lab.cli import build_parser
from lab.cli.common import CliError
from lab.client import LabError
from mesh.istioctl import common, install, proxy_status
from mesh.istioctl.cli import cmd_istioctl

ENVOY = ("Listener", "Cluster", "RouteConfiguration")


def sub(pod: str, types: dict[str, str], version: str | None = "1.24.0", proxy: str | None = None) -> dict:
    return {
        "pod": pod,
        "proxy": proxy,
        "version": version,
        "node": "worker1",
        "types": {
            t: {"state": s, "sent": "a", "current": "a" if s == "SYNCED" else "b", "resources": 1}
            for t, s in types.items()
        },
    }


SYNCZ = {
    "istiod": {"pod": "istio-system/istiod-5f4c-9xq2z", "version": "1.24.0"},
    "subscribers": [
        sub("istio-system/ztunnel-abcde", {"Authorization": "SYNCED", "Address": "SYNCED"}),
        sub("istio-system/ztunnel-fghij", {"Authorization": "SYNCED", "Address": "STALE"}),
        sub("ambient-apps/waypoint-7d9f-xk2lp", dict.fromkeys(ENVOY, "SYNCED"), proxy="ambient-apps/waypoint"),
        sub(
            "sidecar-apps/sleep-6b8-p9q",
            {"Listener": "STALE", "Cluster": "SYNCED", "RouteConfiguration": "NOT SENT"},
            proxy="sidecar-apps/sleep-6b8-p9q",
        ),
    ],
}
SOURCES = [("istiod-5f4c-9xq2z", "1.24.0", SYNCZ)]


def cells(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_rows_for_waypoints_sidecars_and_ztunnels():
    out = proxy_status.format_proxy_status(SOURCES)
    rows = cells(out)
    assert rows[0] == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION", "WDS"]
    assert rows[1:] == [
        [
            "sleep-6b8-p9q.sidecar-apps",
            "Kubernetes",
            "SYNCED",
            "STALE",
            "SYNCED",
            "NOT",
            "SENT",
            "IGNORED",
            "istiod-5f4c-9xq2z",
            "1.24.0",
            "-",
        ],
        [
            "waypoint-7d9f-xk2lp.ambient-apps",
            "Kubernetes",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "SYNCED",
            "IGNORED",
            "istiod-5f4c-9xq2z",
            "1.24.0",
            "-",
        ],
        ["ztunnel-abcde.istio-system", "Kubernetes", *["IGNORED"] * 5, "istiod-5f4c-9xq2z", "1.24.0", "SYNCED"],
        [
            "ztunnel-fghij.istio-system",
            "Kubernetes",
            *["IGNORED"] * 5,
            "istiod-5f4c-9xq2z",
            "1.24.0",
            "Address",
            "STALE,",
            "Authorization",
            "SYNCED",
        ],
    ]
    assert "skew" not in out


def test_eds_follows_cds():
    rows = proxy_status.proxy_status_rows(
        [
            (
                "istiod-1",
                "1.24.0",
                {
                    "subscribers": [
                        sub("a/p", {"Listener": "SYNCED", "Cluster": "STALE", "RouteConfiguration": "SYNCED"})
                    ]
                },
            )
        ]
    )
    assert rows[0][2:7] == ["STALE", "SYNCED", "STALE", "SYNCED", "IGNORED"]


def test_version_skew_is_printed_as_is_with_a_footnote():
    doc = copy.deepcopy(SYNCZ)
    doc["subscribers"][3]["version"] = "1.24.0"
    doc["subscribers"][0]["version"] = "1.25.0"
    doc["subscribers"][1]["version"] = "1.25.0"
    doc["subscribers"][2]["version"] = None  # an old proxy that does not say
    out = proxy_status.format_proxy_status([("istiod-77c-abcde", "1.25.0", doc)])
    rows = {r[0]: r for r in cells(out)[1:5]}
    assert rows["sleep-6b8-p9q.sidecar-apps"][-2] == "1.24.0"
    assert rows["ztunnel-abcde.istio-system"][-2] == "1.25.0"
    assert rows["waypoint-7d9f-xk2lp.ambient-apps"][-2] == "unknown"
    footnote = out.split("\n\n", 1)[1]
    assert footnote.startswith(
        "Version skew: 2 of 4 proxies run 1.24.0, unknown, not the version of their istiod "
        "(istiod-77c-abcde runs 1.25.0)"
    )
    assert "sleep-6b8-p9q.sidecar-apps" in footnote and "ztunnel-abcde" not in footnote


def test_two_istiods_during_a_rollout_each_name_their_own_and_no_one_connected_is_just_the_header():
    new = {
        "istiod": {"version": "1.25.0"},
        "subscribers": [sub("istio-system/ztunnel-abcde", {"Address": "SYNCED"}, version="1.25.0")],
    }
    old = {"subscribers": [sub("a/sleep-1", dict.fromkeys(ENVOY, "SYNCED"), proxy="a/sleep-1")]}
    rows = cells(proxy_status.format_proxy_status([("istiod-new", None, new), ("istiod-old", "1.24.0", old)]))
    assert [(r[0], r[7]) for r in rows[1:]] == [
        ("sleep-1.a", "istiod-old"),
        ("ztunnel-abcde.istio-system", "istiod-new"),
    ]
    assert proxy_status.format_proxy_status([("istiod-1", "1.24.0", {"subscribers": []})]).splitlines() == [
        "NAME   CLUSTER   CDS   LDS   EDS   RDS   ECDS   ISTIOD   VERSION   WDS"
    ]


# ---- the command ------------------------------------------------------------------------------------


class FakeLab:
    """A lab API holding objects; `apply` merges as labd does (created / configured / unchanged)."""

    def __init__(self, *objects: dict) -> None:
        self.objects = {self.key(o): copy.deepcopy(o) for o in objects}
        self.applied: list[str] = []

    @staticmethod
    def key(o: dict) -> tuple:
        return o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]

    def call(self, op, kind=None, name=None, namespace=None, selector=None, **kw):
        if op == "get" and name is None:
            items = [o for (k, ns, _), o in self.objects.items() if k == kind and ns == namespace]
            if selector:
                key, value = selector.split("=")
                items = [o for o in items if (o["metadata"].get("labels") or {}).get(key) == value]
            return {"items": items}
        if op == "get":
            if (kind, namespace, name) not in self.objects:
                raise LabError("not found")
            return copy.deepcopy(self.objects[(kind, namespace, name)])
        if op == "apply":
            self.applied.append(kw["manifests"])
            results = []
            for obj in (o for o in yaml.safe_load_all(kw["manifests"]) if o):
                cur = self.objects.get(self.key(obj))
                if cur is None:
                    action, new = "created", copy.deepcopy(obj)
                    new["status"] = ready_status(obj)
                else:
                    new = copy.deepcopy(cur)
                    new.update({k: copy.deepcopy(v) for k, v in obj.items() if k not in ("metadata", "status")})
                    new["metadata"]["annotations"] = {
                        **(cur["metadata"].get("annotations") or {}),
                        **(obj["metadata"].get("annotations") or {}),
                    }
                    if not new["metadata"]["annotations"]:
                        new["metadata"].pop("annotations")
                    action = "unchanged" if new == cur else "configured"
                self.objects[self.key(obj)] = new
                results.append(
                    {
                        "kind": obj["kind"],
                        "namespace": obj["metadata"].get("namespace"),
                        "name": obj["metadata"]["name"],
                        "action": action,
                    }
                )
            return results
        raise AssertionError(op)


def ready_status(obj: dict) -> dict:
    if obj["kind"] == "Deployment":
        return {"readyReplicas": 1, "updatedReplicas": 1, "replicas": 1}
    if obj["kind"] == "DaemonSet":
        return {"desiredNumberScheduled": 2, "numberReady": 2, "updatedNumberScheduled": 2}
    return {}


def istiod_pod(name="istiod-5f4c-9xq2z", tag="1.24.0", phase="Running", netns=True) -> dict:
    annotations = {"lab.ambient/netns": f"al-t-pod-istio-system_{name}"} if netns else {}
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "istio-system",
            "labels": {"app": "istiod"},
            "annotations": annotations,
        },
        "spec": {"containers": [{"name": "discovery", "image": f"docker.io/istio/pilot:{tag}"}]},
        "status": {"phase": phase},
    }


def run(lab, argv):
    args = build_parser().parse_args(["istioctl", *argv])
    return cmd_istioctl(args, lab)


def test_proxy_status_reads_each_running_istiod_from_its_own_network_namespace(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(proxy_status, "fetch_syncz", lambda netns, pod: seen.append(netns) or SYNCZ)
    lab = FakeLab(istiod_pod(tag="1.25.0"), istiod_pod("istiod-old", phase="Pending"))
    assert run(lab, ["proxy-status"]) == 0
    assert seen == ["al-t-pod-istio-system_istiod-5f4c-9xq2z"]
    out = capsys.readouterr().out
    assert out.startswith("NAME") and "Version skew: 4 of 4 proxies run 1.24.0" in out  # istiod's image: 1.25.0
    run(lab, ["ps", "-o", "json"])
    assert json.loads(capsys.readouterr().out) == {"istiod-5f4c-9xq2z": SYNCZ}


def test_proxy_status_errors(monkeypatch, capsys):
    with pytest.raises(CliError, match="no running istiod"):
        run(FakeLab(), ["proxy-status"])

    def refuse(netns, pod):
        raise common.IstioctlError(f"Error: cannot reach the admin port of istiod pod {pod}")

    monkeypatch.setattr(proxy_status, "fetch_syncz", refuse)
    with pytest.raises(CliError, match="cannot reach"):
        run(FakeLab(istiod_pod()), ["proxy-status"])
    monkeypatch.setattr(proxy_status, "fetch_syncz", lambda netns, pod: SYNCZ)
    assert run(FakeLab(istiod_pod(), istiod_pod("istiod-new", netns=False)), ["proxy-status"]) == 0
    assert "warning: istiod pod istiod-new has no network namespace yet" in capsys.readouterr().err


# ---- install --set tag=X ----------------------------------------------------------------------------

INJECTOR = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "MutatingWebhookConfiguration",
    "metadata": {"name": "istio-sidecar-injector", "annotations": {"lab.ambient/proxy-tag": "1.24.0"}},
    "webhooks": [{"name": "namespace.sidecar-injector.istio.io"}],
}


@pytest.fixture
def manifest_with_injector(monkeypatch):
    """The profile as it will be once it carries the injector webhook object."""
    text = install.ambient_manifest()
    if "istio-sidecar-injector" not in text:
        text += "---\n" + yaml.safe_dump(INJECTOR)
        monkeypatch.setattr(install, "ambient_manifest", lambda: text)
    return text


def images(objs) -> dict[str, str]:
    return {o["metadata"]["name"]: c["image"] for o in objs for c in install._templates(o)}


def test_settings():
    assert install.parse_install_settings(["profile=ambient"]) == ("ambient", None)
    assert install.parse_install_settings(["profile=ambient", "tag=1.25.0"]) == ("ambient", "1.25.0")
    for bad, message in (
        (["profile=demo"], "not available"),
        (["tag=1.25.0"], 'profile "default" is not'),
        (["tag=1.25/0"], "not an image tag"),
        (["revision=x"], "unsupported setting --set revision"),
        (["tag"], "expected key=value"),
    ):
        with pytest.raises(common.IstioctlError, match=message):
            install.parse_install_settings(
                bad if "profile=demo" in bad or bad == ["tag=1.25.0"] else ["profile=ambient", *bad]
            )


def test_a_tag_sets_istios_images_and_the_injectors_proxy_tag(manifest_with_injector):
    assert install.default_tag() == "1.24.0"
    assert install.profile_objects() == [o for o in yaml.safe_load_all(manifest_with_injector) if o]
    objs = install.profile_objects("1.25.0")
    assert images(objs) == {
        "istiod": "docker.io/istio/pilot:1.25.0",
        "istio-cni-node": "docker.io/istio/install-cni:1.25.0",
        "ztunnel": "docker.io/istio/ztunnel:1.25.0",
    }
    injector = next(o for o in objs if o["kind"] == "MutatingWebhookConfiguration")
    assert injector["metadata"]["annotations"]["lab.ambient/proxy-tag"] == "1.25.0"
    assert install.image_tag("docker.io/istio/pilot:1.25.0") == "1.25.0"
    assert install._with_tag("localhost:5000/istio/pilot:1.24.0", "1.25.0") == "localhost:5000/istio/pilot:1.25.0"


def test_install_upgrades_then_reinstalling_the_same_values_changes_nothing(manifest_with_injector):
    lab = FakeLab(*(o for o in yaml.safe_load_all(manifest_with_injector) if o))
    for o in lab.objects.values():
        o["status"] = ready_status(o)

    out = io.StringIO()
    install.install(lab, ["profile=ambient"], out=out, timeout=1)
    assert "nothing changed: Istio 1.24.0 (profile ambient) is already installed" in out.getvalue()
    assert lab.applied == [manifest_with_injector]  # the default install is the profile as it is

    out = io.StringIO()
    install.install(lab, ["profile=ambient", "tag=1.25.0"], out=out, timeout=1)
    text = out.getvalue()
    assert (
        "  Deployment/istiod: image docker.io/istio/pilot:1.24.0 -> docker.io/istio/pilot:1.25.0" in text.splitlines()
    )
    assert "  DaemonSet/ztunnel: image docker.io/istio/ztunnel:1.24.0 -> docker.io/istio/ztunnel:1.25.0" in text
    assert "  DaemonSet/istio-cni-node: image" in text
    assert (
        "  MutatingWebhookConfiguration/istio-sidecar-injector: lab.ambient/proxy-tag 1.24.0 -> 1.25.0 "
        "(new pods get proxies of 1.25.0" in text
    )
    assert "Service/" not in text and text.endswith("\u2714 Installation complete\n")
    assert images(lab.objects.values())["ztunnel"] == "docker.io/istio/ztunnel:1.25.0"

    out = io.StringIO()
    install.install(lab, ["tag=1.25.0", "profile=ambient"], out=out, timeout=1)
    assert "nothing changed: Istio 1.25.0" in out.getvalue() and "->" not in out.getvalue()

    out = io.StringIO()
    install.install(lab, ["profile=ambient"], out=out, timeout=1)  # back to the profile's own tag
    assert "docker.io/istio/pilot:1.25.0 -> docker.io/istio/pilot:1.24.0" in out.getvalue()


def test_install_waits_for_the_rollout(manifest_with_injector):
    lab = FakeLab(*(o for o in yaml.safe_load_all(manifest_with_injector) if o))
    for o in lab.objects.values():
        o["status"] = ready_status(o)
    istiod = lab.objects[("Deployment", "istio-system", "istiod")]
    istiod["status"] = {"readyReplicas": 2, "updatedReplicas": 1, "replicas": 2}  # the old pod still runs
    with pytest.raises(common.IstioctlError, match="deployment istio-system/istiod was not ready"):
        install.install(lab, ["profile=ambient"], out=io.StringIO(), timeout=0)
    istiod["status"] = {"readyReplicas": 1, "updatedReplicas": 1, "replicas": 1, "observedGeneration": 1}
    istiod["metadata"]["generation"] = 2  # the controller has not seen the new template yet
    with pytest.raises(common.IstioctlError):
        install.install(lab, ["profile=ambient"], out=io.StringIO(), timeout=0)


def test_install_needs_yes():
    with pytest.raises(CliError, match="-y"):
        run(FakeLab(), ["install", "--set", "tag=1.25.0"])
