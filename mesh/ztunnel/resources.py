"""istiod's Address resources as ztunnel holds them: typed, frozen `Workload`s and `Service`s.

Each received resource is converted once, where it arrives (`from_xds`, ztunnel's `TryFrom`
conversions in `src/state/workload.rs` and `service.rs`): a resource that cannot be understood
is refused with the field named (`InvalidResource`), the push goes on without it. Defaults follow
ztunnel (docs/ambient-facts.md §2.1). Policies are `mesh.policy.authorization.Authorization`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, TypeVar

from mesh.contract import (
    HBONE_PORT,
    NETWORK_MODE_HOST,
    NETWORK_MODE_STANDARD,
    PROTOCOL_HBONE,
    PROTOCOL_TCP,
    STATUS_HEALTHY,
)
from mesh.identity.spiffe import DEFAULT_TRUST_DOMAIN, SCHEME

T = TypeVar("T")
D = TypeVar("D")

HBONE = PROTOCOL_HBONE
TCP = PROTOCOL_TCP
HEALTHY = STATUS_HEALTHY
HOST_NETWORK = NETWORK_MODE_HOST


class InvalidResource(ValueError):
    """A resource from istiod that cannot be understood; it is skipped, the stream goes on."""


class _Fields:
    """Reads one resource's fields, each converted; an error names the resource and the field."""

    def __init__(self, raw: Any, what: str, name_field: str | None = None) -> None:
        if not isinstance(raw, Mapping):
            raise InvalidResource(f"bad {what}: must be an object, got {raw!r}")
        self.raw: Mapping[str, Any] = raw
        self.what = f"{what} {raw.get(name_field, '?')!r}" if name_field else what

    def required(self, name: str, convert: Callable[[Any, str], T]) -> T:
        if name not in self.raw:
            raise InvalidResource(f"bad {self.what}: {name} is required")
        return convert(self.raw[name], f"{self.what}: {name}")

    def optional(self, name: str, convert: Callable[[Any, str], T], default: T) -> T:
        """Absent, null or empty (protobuf's zero value) gives `default`."""
        value = self.raw.get(name)
        return convert(value, f"{self.what}: {name}") if value else default


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidResource(f"bad {where}: must be a string, got {value!r}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidResource(f"bad {where}: must be a list, got {value!r}")
    return tuple(_string(item, f"{where}[{i}]") for i, item in enumerate(value))


def _int(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidResource(f"bad {where}: must be a number, got {value!r}") from None


def _port_map(value: Any, where: str) -> dict[int, int]:
    """{"8000": 80} → {8000: 80} (JSON object keys are strings)."""
    if not isinstance(value, Mapping):
        raise InvalidResource(f"bad {where}: port map must be an object, got {value!r}")
    return {_int(k, where): _int(v, f"{where}[{k!r}]") for k, v in value.items()}


def _services(value: Any, where: str) -> dict[str, dict[int, int]]:
    if not isinstance(value, Mapping):
        raise InvalidResource(f"bad {where}: must be an object, got {value!r}")
    return {_string(k, where): _port_map(v, f"{where}[{k!r}]") for k, v in value.items()}


def _service_ports(value: Any, where: str) -> dict[int, int]:
    if not isinstance(value, list | tuple):
        raise InvalidResource(f"bad {where}: must be a list, got {value!r}")
    ports = {}
    for i, port in enumerate(value):
        item = _Fields(port, f"{where}[{i}]")
        ports[item.required("servicePort", _int)] = item.optional("targetPort", _int, 0)
    return ports


def _from_fields(cls: type[D], f: _Fields, convert: Mapping[str, Callable[[Any, str], Any]]) -> D:
    """`cls` (a dataclass) read field by field from the resource: each from its camelCase key, with
    its converter in `convert` (a string if not named), required where the field has no default,
    else its default when absent or empty. `raw`, where the class has it, is the resource itself."""
    values: dict[str, Any] = {}
    for spec in fields(cls):  # type: ignore[arg-type]
        if spec.name == "raw":
            values["raw"] = f.raw
            continue
        key = "".join(w.capitalize() if i else w for i, w in enumerate(spec.name.split("_")))
        read = convert.get(spec.name, _string)
        if spec.default is not MISSING:
            values[spec.name] = f.optional(key, read, spec.default)
        elif spec.default_factory is not MISSING:
            values[spec.name] = f.optional(key, read, spec.default_factory())
        else:
            values[spec.name] = f.required(key, read)
    return cls(**values)


@dataclass(frozen=True)
class GatewayAddress:
    """A waypoint reference: a Service hostname ("ns/hostname") and/or an IP, and its HBONE port."""

    destination: str | None = None
    address: str | None = None
    hbone_mtls_port: int = HBONE_PORT

    @classmethod
    def from_xds(cls, raw: Any, where: str = "waypoint") -> GatewayAddress:
        return _from_fields(cls, _Fields(raw, where), {"hbone_mtls_port": _int})


@dataclass(frozen=True, eq=False)
class Workload:
    """A pod as ztunnel knows it (WDS `Workload`); `raw` is the resource as istiod sent it."""

    uid: str
    name: str
    namespace: str
    addresses: tuple[str, ...] = ()
    protocol: str = TCP
    # Empty trust domain / service account default as in ztunnel (docs/ambient-facts.md §2.1).
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    service_account: str = "default"
    node: str = ""
    canonical_name: str = ""
    canonical_revision: str = ""
    workload_type: str = "pod"
    workload_name: str = ""
    waypoint: GatewayAddress | None = None
    #: "ns/hostname" → {service port: target port}: the services this pod is an endpoint of.
    services: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    authorization_policies: tuple[str, ...] = ()
    status: str = HEALTHY
    cluster_id: str = "Kubernetes"
    network_mode: str = NETWORK_MODE_STANDARD
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_xds(cls, raw: Any) -> Workload:
        """The typed Workload; InvalidResource naming the bad field otherwise."""
        convert: dict[str, Callable[[Any, str], Any]] = {
            "addresses": _strings,
            "waypoint": GatewayAddress.from_xds,
            "services": _services,
            "authorization_policies": _strings,
        }
        return _from_fields(cls, _Fields(raw, "workload", "uid"), convert)

    @property
    def identity(self) -> str:
        return f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def healthy(self) -> bool:
        return self.status == HEALTHY

    def pick_ip(self, preferred: str | None = None) -> str | None:
        """The address to dial: the one the client used if it is ours, else the first."""
        if preferred in self.addresses:
            return preferred
        return self.addresses[0] if self.addresses else None


@dataclass(frozen=True, eq=False)
class Service:
    """A Service (WDS `Service`); `key` is "ns/hostname", the name workloads refer to it by."""

    name: str
    namespace: str
    hostname: str
    addresses: tuple[str, ...] = ()
    #: service port → target port (0: only the endpoints know, e.g. a named port).
    ports: Mapping[int, int] = field(default_factory=dict)
    subject_alt_names: tuple[str, ...] = ()
    waypoint: GatewayAddress | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_xds(cls, raw: Any) -> Service:
        """The typed Service; InvalidResource naming the bad field otherwise."""
        convert: dict[str, Callable[[Any, str], Any]] = {
            "addresses": _strings,
            "ports": _service_ports,
            "subject_alt_names": _strings,
            "waypoint": GatewayAddress.from_xds,
        }
        return _from_fields(cls, _Fields(raw, "service", "hostname"), convert)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.hostname}"
