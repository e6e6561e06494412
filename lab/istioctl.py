"""`lab istioctl ...`: the istioctl verbs the article and a mesh user need.

`install --set profile=ambient -y` applies the ambient profile's manifests through the lab API and
waits for each component as istioctl does.
"""
from __future__ import annotations

import os
import sys
import time

from lab.client import LabClient, LabError

MESH_MANIFESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mesh", "manifests")
PROFILES = ("ambient",)


class IstioctlError(Exception):
    pass


def ambient_manifest() -> str:
    with open(os.path.join(MESH_MANIFESTS, "ambient.yaml")) as f:
        return f.read()


def _ready(client: LabClient, kind: str, name: str) -> bool:
    try:
        obj = client.call("get", kind=kind, name=name, namespace="istio-system")
    except LabError:
        return False
    st = obj.get("status", {})
    if kind == "Deployment":
        return st.get("readyReplicas", 0) >= obj["spec"].get("replicas", 1)
    want = st.get("desiredNumberScheduled", 0)
    return want > 0 and st.get("numberReady", 0) == want and st.get("updatedNumberScheduled", 0) == want


def install(client: LabClient, settings: list[str], timeout: float = 120.0, out=sys.stdout) -> None:
    values = dict(s.split("=", 1) for s in settings if "=" in s)
    bad = [s for s in settings if "=" not in s]
    if bad:
        raise IstioctlError(f'Error: --set {bad[0]}: expected key=value')
    profile = values.pop("profile", "default")
    if profile not in PROFILES:
        raise IstioctlError(f'Error: profile "{profile}" is not available in this lab; '
                            f'available: {", ".join(PROFILES)}')
    if values:
        raise IstioctlError(f"Error: unsupported setting --set {next(iter(values))}")
    client.call("apply", manifests=ambient_manifest(), source="profile=ambient")
    print("\u2714 Istio core installed \u26f5\ufe0f", file=out, flush=True)
    deadline = time.monotonic() + timeout
    for kind, name, label in (("Deployment", "istiod", "Istiod installed \U0001f9e0"),
                              ("DaemonSet", "istio-cni-node", "CNI installed \U0001fa62"),
                              ("DaemonSet", "ztunnel", "Ztunnel installed \U0001f512")):
        while not _ready(client, kind, name):
            if time.monotonic() > deadline:
                raise IstioctlError(f"Error: {kind.lower()} istio-system/{name} was not ready after {timeout:.0f}s; "
                                    f"see `lab logs -n istio-system {kind.lower()}/{name}`")
            time.sleep(0.05)
        print(f"\u2714 {label}", file=out, flush=True)
    print("\u2714 Installation complete", file=out, flush=True)
