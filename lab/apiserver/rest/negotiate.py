"""Content negotiation: what an Accept header asks for, and what a request body is. Pure.

kube-apiserver answers by the first media range of the Accept header it can serve, parameters
included: `application/json;as=Table;v=v1;g=meta.k8s.io` asks for a Table, `application/json;
g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList` for aggregated discovery
(k8s.io/apiserver/pkg/endpoints/handlers/negotiation). The lab always answers in JSON: a client
that asks for protobuf also accepts JSON (kubectl and client-go always list it).
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = ("Table", "meta.k8s.io", ("v1", "v1beta1"))
PARTIAL = ("PartialObjectMetadata", "meta.k8s.io", ("v1", "v1beta1"))
PARTIAL_LIST = ("PartialObjectMetadataList", "meta.k8s.io", ("v1", "v1beta1"))
DISCOVERY_GROUP = "apidiscovery.k8s.io"


@dataclass(frozen=True)
class MediaRange:
    type: str  # "application/json", "*/*"
    params: tuple[tuple[str, str], ...]

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    @property
    def json_like(self) -> bool:
        return self.type in (
            "application/json",
            "application/*",
            "*/*",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        )

    def text(self) -> str:
        return ";".join([self.type, *(f"{k}={v}" for k, v in self.params)])


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, in the order given (q values are dropped: clients
    list what they prefer first, and kube-apiserver also takes the first it serves)."""
    out = []
    for item in (header or "").split(","):
        pieces = [p.strip() for p in item.split(";")]
        if not pieces[0]:
            continue
        params = []
        for p in pieces[1:]:
            if "=" in p:
                k, v = p.split("=", 1)
                if k.strip().lower() != "q":
                    params.append((k.strip(), v.strip().strip('"')))
        out.append(MediaRange(pieces[0].lower(), tuple(params)))
    return out or [MediaRange("*/*", ())]


def _is(rng: MediaRange, target: tuple[str, str, tuple[str, ...]]) -> bool:
    as_, group, versions = target
    return rng.param("as") == as_ and rng.param("g") == group and (rng.param("v") or "") in versions


def conversion(header: str | None) -> str | None:
    """What the first servable media range converts the answer to: "Table", "PartialObjectMetadata"
    (and "PartialObjectMetadataList"), or None for the object itself. ValueError when nothing in
    the header can be served."""
    for rng in parse_accept(header):
        if rng.type not in (
            "application/json",
            "application/*",
            "*/*",
            "application/vnd.kubernetes.protobuf",
            "application/yaml",
        ):
            continue
        if rng.param("as") is None:
            return None
        for target in (TABLE, PARTIAL, PARTIAL_LIST):
            if _is(rng, target):
                return target[0]
    raise ValueError(header or "")


def discovery_version(header: str | None) -> tuple[str, str] | None:
    """("v2" or "v2beta1", the Content-Type to answer with) when the header's first servable
    range is aggregated discovery; None for the legacy documents."""
    for rng in parse_accept(header):
        if rng.param("as") == "APIGroupDiscoveryList" and rng.param("g") == DISCOVERY_GROUP:
            version = rng.param("v")
            if version in ("v2", "v2beta1"):
                return version, f"application/json;g={DISCOVERY_GROUP};v={version};as=APIGroupDiscoveryList"
            continue
        if rng.json_like and rng.param("as") is None:
            return None
    return None


def media_type(content_type: str | None) -> str:
    """A Content-Type without its parameters, lower case; "" when absent."""
    return (content_type or "").split(";", 1)[0].strip().lower()
