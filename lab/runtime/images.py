"""The image catalog: which local program a container image stands for.

A container's argv is built as Kubernetes does: `command` replaces the image's ENTRYPOINT and
`args` replaces its CMD. Images are matched by repository without registry defaults or tag
(`kennethreitz/httpbin`, `docker.io/kennethreitz/httpbin:latest` and `...@sha256:..` are the same).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Image:
    repository: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    description: str = ""
    aliases: tuple[str, ...] = field(default=())


def _py(*module_args: str) -> tuple[str, ...]:
    return (sys.executable, *module_args)


def _python_module(repository: str, module: str, description: str) -> Image:
    """An image whose program is one of the lab's Python modules (`python -m MODULE`)."""
    return Image(repository, entrypoint=_py("-m", module), description=description)


def _venv_bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def _httpbin(repository: str, port: int, description: str) -> Image:
    """The real httpbin app under gunicorn on PORT (the two httpbin images differ only in port)."""
    return Image(
        repository,
        entrypoint=(_venv_bin("gunicorn"),),
        cmd=("-b", f"0.0.0.0:{port}", "--threads", "4", "--access-logfile", "-", "httpbin:app"),
        description=description,
    )


CATALOG: tuple[Image, ...] = (
    _httpbin("kennethreitz/httpbin", 80, "the real httpbin (Flask) app under gunicorn on :80, as the image runs it"),
    _httpbin("mccutchen/go-httpbin", 8080, "the same httpbin app on :8080, where go-httpbin listens"),
    Image(
        "curlimages/curl",
        entrypoint=("curl",),
        description="the machine's curl; the pod's command runs with curl on PATH",
    ),
    Image(
        "ambient-lab/echo",
        entrypoint=_py("-m", "lab.apps.echo"),
        cmd=("--port", "8080"),
        description="echo server in the spirit of Istio's test app: answers with what it received",
        aliases=("gcr.io/istio-testing/app",),
    ),
    Image(
        "networkstatic/iperf3", entrypoint=("iperf3",), description="the machine's iperf3 (the pod's args, e.g. [-s])"
    ),
    Image(
        "registry.k8s.io/pause",
        entrypoint=("/bin/sleep", "infinity"),
        description="does nothing, cheaply",
        aliases=("busybox", "alpine"),
    ),
    _python_module("istio/pilot", "mesh.istiod", "istiod: the mesh CA and config push"),
    _python_module(
        "istio/install-cni", "mesh.cni", "the istio-cni node agent: in-pod traffic redirection for ambient pods"
    ),
    _python_module("istio/ztunnel", "mesh.ztunnel", "ztunnel: the per-node L4 proxy (HBONE, mTLS, L4 policy)"),
    _python_module("istio/proxyv2", "mesh.proxy", "the L7 proxy (Envoy's role): `proxy waypoint` runs a waypoint"),
    _python_module(
        "registry.k8s.io/coredns/coredns",
        "lab.dns.server",
        "the cluster DNS (kube-dns): Kubernetes names from the lab API",
    ),
)


def _normalize(image: str) -> str:
    ref = image.strip()
    if "@" in ref:
        ref = ref.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref = ref[: len(ref) - len(last)] + last.split(":", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix) :]
            break
    return ref


_BY_NAME = {}
for _img in CATALOG:
    for _n in (_img.repository, *_img.aliases):
        _BY_NAME[_normalize(_n)] = _img


class UnknownImage(ValueError):
    pass


def known_images() -> list[str]:
    return sorted(img.repository for img in CATALOG)


def lookup(image: str) -> Image:
    """The catalog entry for IMAGE, or UnknownImage naming the known ones."""
    img = _BY_NAME.get(_normalize(image))
    if img is None:
        raise UnknownImage(f'unknown image "{image}"; known images: {", ".join(known_images())}')
    return img


def container_argv(image: Image, command: list[str] | None, args: list[str] | None) -> list[str]:
    """Kubernetes' rule: command overrides ENTRYPOINT, args override CMD."""
    if command:
        return list(command) + list(args or [])
    return list(image.entrypoint) + (list(args) if args is not None else list(image.cmd))
