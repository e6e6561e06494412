"""`istioctl install`: the ambient profile, applied through the lab API and waited for.

`install --set profile=ambient -y` applies the ambient profile's manifests and waits for each
component as istioctl does; `--set tag=X` installs (or upgrades to) Istio X: the images of istiod,
istio-cni and ztunnel get tag X, so their controllers roll them, and the sidecar injector's
`lab.ambient/proxy-tag` becomes X, so new pods get X proxies (running pods keep theirs).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from lab.client import LabClient, LabError
from lab.client.contract import PROXY_TAG_ANNOTATION
from mesh.istioctl.common import IstioctlError

MESH_MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "manifests")
PROFILES = ("ambient",)
INSTALL_SETTINGS = ("profile", "tag")
ISTIO_REPOSITORY = "docker.io/istio/"
INJECTOR_WEBHOOK = "istio-sidecar-injector"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def ambient_manifest() -> str:
    with open(os.path.join(MESH_MANIFESTS, "ambient.yaml")) as f:
        return f.read()


def image_tag(image: str) -> str | None:
    """The tag of an image reference, None without one."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return (last.split(":", 1)[1] or None) if ":" in last else None


def _with_tag(image: str, tag: str) -> str:
    ref = image.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}:{tag}" if head else f"{last.split(':', 1)[0]}:{tag}"


def _templates(obj: dict) -> list[dict]:
    """The containers of a Deployment's or DaemonSet's pod template."""
    if obj.get("kind") not in ("Deployment", "DaemonSet"):
        return []
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def profile_objects(tag: str | None = None) -> list[dict]:
    """The ambient profile's objects; with `tag`, Istio's images (istiod, istio-cni, ztunnel) and
    the sidecar injector's proxy tag set to it."""
    import yaml

    objs = [o for o in yaml.safe_load_all(ambient_manifest()) if o]
    if tag is None:
        return objs
    for obj in objs:
        for c in _templates(obj):
            if str(c.get("image", "")).startswith(ISTIO_REPOSITORY):
                c["image"] = _with_tag(c["image"], tag)
        md = obj.get("metadata") or {}
        if obj.get("kind") == "MutatingWebhookConfiguration" and md.get("name") == INJECTOR_WEBHOOK:
            md.setdefault("annotations", {})[PROXY_TAG_ANNOTATION] = tag
    return objs


def default_tag() -> str:
    """The tag of the profile's istiod image (the Istio version the lab installs by default)."""
    for obj in profile_objects():
        for c in _templates(obj):
            if str(c.get("image", "")).startswith(ISTIO_REPOSITORY) and (tag := image_tag(c["image"])):
                return tag
    return "1.24.0"


def install_changes(current: dict | None, desired: dict) -> list[str]:
    """What applying `desired` over `current` changes that install reports: image tags and the
    injector's proxy tag ([] for a new object or none of those)."""
    if current is None:
        return []
    out = []
    old = {c.get("name"): c.get("image") for c in _templates(current)}
    for c in _templates(desired):
        before = old.get(c.get("name"))
        if before is not None and before != c.get("image"):
            out.append(f"image {before} -> {c.get('image')}")
    if desired.get("kind") == "MutatingWebhookConfiguration":
        before = ((current.get("metadata") or {}).get("annotations") or {}).get(PROXY_TAG_ANNOTATION)
        after = ((desired.get("metadata") or {}).get("annotations") or {}).get(PROXY_TAG_ANNOTATION)
        if after is not None and before != after:
            out.append(
                f"{PROXY_TAG_ANNOTATION} {before or '(unset)'} -> {after} (new pods get proxies of {after}; "
                "running pods keep theirs until they are re-created)"
            )
    return out


def parse_install_settings(settings: list[str]) -> tuple[str, str | None]:
    """(profile, tag) from `--set key=value` settings; IstioctlError for anything else."""
    bad = [s for s in settings if "=" not in s]
    if bad:
        raise IstioctlError(f'Error: --set {bad[0]}: expected key=value')
    values = dict(s.split("=", 1) for s in settings)
    profile = values.pop("profile", "default")
    if profile not in PROFILES:
        raise IstioctlError(
            f'Error: profile "{profile}" is not available in this lab; available: {", ".join(PROFILES)}'
        )
    tag = values.pop("tag", None)
    if tag is not None and not _TAG.fullmatch(tag):
        raise IstioctlError(f'Error: --set tag={tag}: not an image tag')
    if values:
        raise IstioctlError(
            f"Error: unsupported setting --set {next(iter(values))}; supported: {', '.join(INSTALL_SETTINGS)}"
        )
    return profile, tag


def _ready(client: LabClient, kind: str, name: str) -> bool:
    """Ready and rolled out: every replica of the current template, none of an older one."""
    try:
        obj = client.call("get", kind=kind, name=name, namespace="istio-system")
    except LabError:
        return False
    st = obj.get("status", {})
    if st.get("observedGeneration", 0) < obj["metadata"].get("generation", 0):
        return False
    if kind == "Deployment":
        want = obj["spec"].get("replicas", 1)
        return (
            st.get("readyReplicas", 0) >= want
            and st.get("updatedReplicas", want) >= want
            and st.get("replicas", want) <= want
        )
    want = st.get("desiredNumberScheduled", 0)
    return want > 0 and st.get("numberReady", 0) == want and st.get("updatedNumberScheduled", 0) == want


def install(client: LabClient, settings: list[str], timeout: float = 120.0, out=sys.stdout) -> None:
    _, tag = parse_install_settings(settings)
    if tag is None or tag == default_tag():
        tag = None
    objs = profile_objects(tag)
    current = {}
    for obj in objs:
        md = obj["metadata"]
        try:
            current[(obj["kind"], md.get("namespace"), md["name"])] = client.call(
                "get", kind=obj["kind"], name=md["name"], namespace=md.get("namespace")
            )
        except LabError:
            current[(obj["kind"], md.get("namespace"), md["name"])] = None
    manifests = ambient_manifest() if tag is None else "\n---\n".join(json.dumps(o) for o in objs)
    results = client.call("apply", manifests=manifests, source="profile=ambient")
    print("\u2714 Istio core installed \u26f5\ufe0f", file=out, flush=True)
    changed = [r for r in results if r.get("action") != "unchanged"]
    if not changed:
        print(
            f"  nothing changed: Istio {tag or default_tag()} (profile ambient) is already installed with these values",
            file=out,
            flush=True,
        )
    for r in changed:
        key = (r["kind"], r.get("namespace"), r["name"])
        desired = next(o for o in objs if (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) == key)
        if current.get(key) is None:
            continue  # a new object: a first install says nothing more
        what = install_changes(current[key], desired) or ["configured"]
        for line in what:
            print(f"  {r['kind']}/{r['name']}: {line}", file=out, flush=True)
    deadline = time.monotonic() + timeout
    for kind, name, label in (
        ("Deployment", "istiod", "Istiod installed \U0001f9e0"),
        ("DaemonSet", "istio-cni-node", "CNI installed \U0001fa62"),
        ("DaemonSet", "ztunnel", "Ztunnel installed \U0001f512"),
    ):
        while not _ready(client, kind, name):
            if time.monotonic() > deadline:
                raise IstioctlError(
                    f"Error: {kind.lower()} istio-system/{name} was not ready after {timeout:.0f}s; "
                    f"see `lab logs -n istio-system {kind.lower()}/{name}`"
                )
            time.sleep(0.05)
        print(f"\u2714 {label}", file=out, flush=True)
    print("\u2714 Installation complete", file=out, flush=True)
