"""The Kubernetes REST URL space, parsed: which endpoint a path names. Pure functions.

Follows the kube-apiserver's RequestInfoFactory (k8s.io/apiserver/pkg/endpoints/request/
requestinfo.go): `/api/v1` is the core group, `/apis/<group>/<version>` the others; then
`[watch/][namespaces/<ns>/]<resource>[/<name>[/<subresource>]]`, where `namespaces/<name>/status`
and `/finalize` are a Namespace's own subresources. Trailing slashes are tolerated (kr8s sends them).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.apiserver import kinds

NAMESPACE_SUBRESOURCES = ("status", "finalize")


@dataclass(frozen=True)
class Route:
    """What a path names. `what` is one of: version, health, api, apis, group, resources,
    openapi-root, openapi, openapi-v2, resource, unknown."""

    what: str
    group: str = ""
    version: str = ""
    namespace: str | None = None
    resource: str = ""
    name: str | None = None
    subresource: str | None = None
    watch: bool = False  # the legacy `/watch/` path prefix

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def parse(path: str) -> Route:
    parts = [p for p in path.split("/") if p]
    if not parts:
        return Route("unknown")
    head = parts[0]
    if head == "version" and len(parts) == 1:
        return Route("version")
    if head in ("healthz", "livez", "readyz"):
        return Route("health", name=head)
    if head == "openapi":
        return _openapi(parts[1:])
    if head == "api":
        if len(parts) == 1:
            return Route("api")
        return _resource("", parts[1], parts[2:])
    if head == "apis":
        if len(parts) == 1:
            return Route("apis")
        if len(parts) == 2:
            return Route("group", group=parts[1])
        return _resource(parts[1], parts[2], parts[3:])
    return Route("unknown")


def _openapi(rest: list[str]) -> Route:
    if rest == ["v2"]:
        return Route("openapi-v2")
    if not rest or rest[0] != "v3":
        return Route("unknown")
    gv = rest[1:]
    if not gv:
        return Route("openapi-root")
    if gv[0] == "api" and len(gv) == 2:
        return Route("openapi", version=gv[1])
    if gv[0] == "apis" and len(gv) == 3:
        return Route("openapi", group=gv[1], version=gv[2])
    return Route("unknown")


def _resource(group: str, version: str, rest: list[str]) -> Route:
    if not rest:
        return Route("resources", group=group, version=version)
    watch = False
    if rest[0] == "watch":
        watch, rest = True, rest[1:]
    namespace = None
    if len(rest) >= 2 and rest[0] == "namespaces":
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return Route("unknown")
    return Route(
        "resource",
        group,
        version,
        namespace,
        rest[0],
        rest[1] if len(rest) > 1 else None,
        rest[2] if len(rest) > 2 else None,
        watch,
    )


def lookup(group: str, version: str, resource: str) -> kinds.Kind | None:
    """The kind served as RESOURCE (its plural) in GROUP/VERSION, or None."""
    for k in kinds.KINDS:
        if k.group == group and k.plural == resource and version in k.versions:
            return k
    return None


def served_group_versions() -> list[tuple[str, tuple[str, ...]]]:
    """(group, versions: preferred first) for every group the lab serves, core first."""
    groups: dict[str, list[str]] = {}
    for k in kinds.KINDS:
        versions = groups.setdefault(k.group, [])
        for v in k.versions:
            if v not in versions:
                versions.append(v)
    return [(g, tuple(vs)) for g, vs in sorted(groups.items(), key=lambda item: (item[0] != "", item[0]))]


def kinds_in(group: str, version: str) -> list[kinds.Kind]:
    return [k for k in kinds.KINDS if k.group == group and version in k.versions]
