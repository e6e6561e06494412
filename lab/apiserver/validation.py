"""`lab apply -f` input: YAML text in, validated Kubernetes objects out, all or nothing.

    objects = load(text, "httpbin.yaml")       # parse_manifests + validate, exact positions

Every problem names the file, the document, the object and the field, on one line:

    error: httpbin.yaml: document 2 (Deployment ambient-apps/httpbin):
        spec.template.spec.containers[0].image: unknown image "foo/bar"; known images: ...

Field problems use the API server's wording (`Required value`, `Invalid value: X: why`,
`Unsupported value: X: supported values: ...`, `Duplicate value: X`), so messages read like
Kubernetes'. The checks cover what the lab runs (pods, workloads, services); mesh kinds get
metadata checks here and deep checks from the mesh package through `extra`. Validation does not
default fields the API server would: only `metadata.namespace` is filled in.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from lab.runtime import images
from lab.apiserver import selectors
from lab.runtime import cgroups

ExtraCheck = Callable[[dict], "list[tuple[str, str]]"]

# --- problems ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where (document, object), which field, and what."""

    document: str                 # "document 2" or "document 2, item 1"
    subject: str                  # "Deployment ambient-apps/httpbin", "" when unknown
    field: str                    # "spec.replicas", "" for the whole document
    message: str

    def line(self, source: str) -> str:
        where = f"{source}: {self.document}" + (f" ({self.subject})" if self.subject else "")
        return f"error: {where}: " + (f"{self.field}: " if self.field else "") + self.message


class ManifestError(ValueError):
    """The manifests were refused; str() is the first problem, one line, kubectl style."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(str(self))

    def lines(self) -> list[str]:
        return [p.line(self.source) for p in self.problems]

    def __str__(self) -> str:
        first = self.problems[0].line(self.source)
        more = len(self.problems) - 1
        return first + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


class _Errors:
    """Collects (field, message) pairs for one object, worded like the API server's."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append((field, message))

    def required(self, field: str, detail: str = "") -> None:
        self.add(field, "Required value" + (f": {detail}" if detail else ""))

    def invalid(self, field: str, value: Any, reason: str) -> None:
        self.add(field, f"Invalid value: {_show(value)}: {reason}")

    def unsupported(self, field: str, value: Any, supported: Iterable[str]) -> None:
        listed = ", ".join(f'"{s}"' for s in supported)
        self.add(field, f"Unsupported value: {_show(value)}: supported values: {listed}")

    def duplicate(self, field: str, value: Any, detail: str = "") -> None:
        self.add(field, f"Duplicate value: {_show(value)}" + (f": {detail}" if detail else ""))


def _show(value: Any) -> str:
    """A value as the message quotes it: JSON, so strings are quoted and maps stay short."""
    return json.dumps(value, separators=(", ", ": "), default=str)


# --- names and small syntax rules (k8s.io/apimachinery/pkg/util/validation) -------------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def dns1123_label(name: str) -> str | None:
    if len(name) > 63:
        return "must be no more than 63 characters"
    if not _DNS1123_LABEL.fullmatch(name):
        return ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                "or '-', and must start and end with an alphanumeric character "
                "(e.g. 'my-name', or '123-abc')")
    return None


def dns1035_label(name: str) -> str | None:
    if len(name) > 63:
        return "must be no more than 63 characters"
    if not _DNS1035_LABEL.fullmatch(name):
        return ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character "
                "(e.g. 'my-name', or 'abc-123')")
    return None


def dns1123_subdomain(name: str) -> str | None:
    if len(name) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.fullmatch(name):
        return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character "
                "(e.g. 'example.com')")
    return None


def port_name(name: str) -> str | None:
    """IsValidPortName: an IANA service name, what `targetPort: http` refers to."""
    if len(name) > 15:
        return "must be no more than 15 characters"
    if not re.fullmatch(r"[-a-z0-9]+", name):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if not re.search(r"[a-z]", name):
        return "must contain at least one letter (a-z)"
    if "--" in name:
        return "must not contain consecutive hyphens"
    if name.startswith("-") or name.endswith("-"):
        return "must not begin or end with a hyphen"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mapping(value: Any, field: str, errs: _Errors) -> Mapping:
    """VALUE when it is a mapping (or absent); otherwise reports it and returns {}."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        errs.invalid(field, value, "must be a mapping")
        return {}
    return value


def _list(value: Any, field: str, errs: _Errors) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        errs.invalid(field, value, "must be a list")
        return []
    return value


def _unknown_fields(obj: Mapping, known: frozenset[str], field: str, errs: _Errors) -> None:
    """Strict decoding, as kubectl's server-side field validation does for typos."""
    for key in obj:
        if key not in known:
            errs.add(f"{field}.{key}", "unknown field")


def _port_number(value: Any, field: str, errs: _Errors, *, required: bool = True) -> None:
    if value is None:
        if required:
            errs.required(field)
    elif not _is_int(value):
        errs.invalid(field, value, "must be an integer")
    elif not 1 <= value <= 65535:
        errs.invalid(field, value, "must be between 1 and 65535, inclusive")


_PROTOCOLS = ("TCP", "UDP", "SCTP")


def _protocol(value: Any, field: str, errs: _Errors) -> None:
    if value is not None and value not in _PROTOCOLS:
        errs.unsupported(field, value, _PROTOCOLS)


# --- metadata ---------------------------------------------------------------------------------


def _check_labels(labels: Any, field: str, errs: _Errors) -> None:
    for key, value in _mapping(labels, field, errs).items():
        problem = selectors.validate_label_key(key)
        if problem:
            errs.invalid(field, key, problem)
            continue
        problem = selectors.validate_label_value(value)
        if problem:
            errs.invalid(field, value, problem)


def _check_annotations(annotations: Any, field: str, errs: _Errors) -> None:
    total = 0
    for key, value in _mapping(annotations, field, errs).items():
        problem = selectors.validate_label_key(key)
        if problem:
            errs.invalid(field, key, problem)
        if not isinstance(value, str):
            errs.invalid(f"{field}[{key}]", value, "annotation values must be strings")
            continue
        total += len(str(key)) + len(value)
    if total > 256 * 1024:
        errs.add(field, "Too long: must have at most 262144 bytes")


def _check_metadata(obj: Mapping, kind: "KindInfo", errs: _Errors) -> None:
    meta = _mapping(obj.get("metadata"), "metadata", errs)
    name = meta.get("name")
    if not name:
        errs.required("metadata.name", "name is required")
    elif not isinstance(name, str):
        errs.invalid("metadata.name", name, "must be a string")
    else:
        problem = kind.name_rule(name)
        if problem:
            errs.invalid("metadata.name", name, problem)
    namespace = meta.get("namespace")
    if kind.namespaced and namespace is not None:
        if not isinstance(namespace, str) or dns1123_label(namespace):
            errs.invalid("metadata.namespace", namespace,
                         dns1123_label(namespace) if isinstance(namespace, str)
                         else "must be a string")
    _check_labels(meta.get("labels"), "metadata.labels", errs)
    _check_annotations(meta.get("annotations"), "metadata.annotations", errs)


# --- pods -------------------------------------------------------------------------------------

_CONTAINER_FIELDS = frozenset({
    "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
    "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe",
    "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty",
})
_CONTAINER_PORT_FIELDS = frozenset({"name", "hostPort", "containerPort", "protocol", "hostIP"})
_FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
                "spec.serviceAccountName", "status.podIP", "status.hostIP")
_RESTART_POLICIES = ("Always", "OnFailure", "Never")


def _check_string_list(value: Any, field: str, errs: _Errors) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errs.invalid(field, value, "must be a list of strings (quote numbers)")


def _check_env(env: Any, field: str, errs: _Errors) -> None:
    for i, var in enumerate(_list(env, field, errs)):
        at = f"{field}[{i}]"
        if not isinstance(var, Mapping):
            errs.invalid(at, var, "must be a mapping with name and value")
            continue
        name = var.get("name")
        if not name:
            errs.required(f"{at}.name")
        elif not isinstance(name, str) or "=" in name:
            errs.invalid(f"{at}.name", name, "must be a string without '='")
        if "value" in var and not isinstance(var["value"], str):
            errs.invalid(f"{at}.value", var["value"], "must be a string (quote numbers)")
        value_from = var.get("valueFrom")
        if value_from is None:
            continue
        if var.get("value"):
            errs.invalid(f"{at}.valueFrom", "", "may not be specified when `value` is not empty")
        source = _mapping(value_from, f"{at}.valueFrom", errs)
        if set(source) != {"fieldRef"}:
            errs.add(f"{at}.valueFrom", "only fieldRef is supported by the lab")
            continue
        path = _mapping(source["fieldRef"], f"{at}.valueFrom.fieldRef", errs).get("fieldPath")
        if path is None:
            errs.required(f"{at}.valueFrom.fieldRef.fieldPath")
        elif path not in _FIELD_PATHS:
            errs.unsupported(f"{at}.valueFrom.fieldRef.fieldPath", path, _FIELD_PATHS)


def _check_container_ports(ports: Any, field: str, errs: _Errors) -> None:
    names: set[str] = set()
    for i, port in enumerate(_list(ports, field, errs)):
        at = f"{field}[{i}]"
        if not isinstance(port, Mapping):
            errs.invalid(at, port, "must be a mapping with containerPort")
            continue
        _unknown_fields(port, _CONTAINER_PORT_FIELDS, at, errs)
        _port_number(port.get("containerPort"), f"{at}.containerPort", errs)
        if port.get("hostPort") not in (None, 0):
            _port_number(port["hostPort"], f"{at}.hostPort", errs)
        _protocol(port.get("protocol"), f"{at}.protocol", errs)
        name = port.get("name")
        if name is None:
            continue
        problem = port_name(name) if isinstance(name, str) else "must be a string"
        if problem:
            errs.invalid(f"{at}.name", name, problem)
        elif name in names:
            errs.duplicate(f"{at}.name", name)
        names.add(name)


def _check_container(container: Any, field: str, errs: _Errors) -> str | None:
    """Checks one container; returns its name for the uniqueness check."""
    if not isinstance(container, Mapping):
        errs.invalid(field, container, "must be a mapping with name and image")
        return None
    _unknown_fields(container, _CONTAINER_FIELDS, field, errs)
    name = container.get("name")
    if not name:
        errs.required(f"{field}.name")
        name = None
    elif not isinstance(name, str) or dns1123_label(name):
        errs.invalid(f"{field}.name", name,
                     dns1123_label(name) if isinstance(name, str) else "must be a string")
    image = container.get("image")
    if not image:
        errs.required(f"{field}.image")
    elif not isinstance(image, str):
        errs.invalid(f"{field}.image", image, "must be a string")
    else:
        try:
            images.lookup(image)
        except images.UnknownImage as e:
            errs.add(f"{field}.image", str(e))
    _check_string_list(container.get("command"), f"{field}.command", errs)
    _check_string_list(container.get("args"), f"{field}.args", errs)
    _check_container_ports(container.get("ports"), f"{field}.ports", errs)
    _check_env(container.get("env"), f"{field}.env", errs)
    _check_probe(container, f"{field}.readinessProbe", errs)
    _check_resources(container.get("resources"), f"{field}.resources", errs)
    return name if isinstance(name, str) else None


def _quantity_hint(value: Any) -> str:
    """What a refused quantity may have meant: `64MB` is `64M` (10^6) or `64Mi` (2^20)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKMGTPE])(i?)[bB]", value) if isinstance(value, str) else None
    if m:
        number, prefix = m.group(1), m.group(2)
        decimal = number + ("k" if prefix == "K" else prefix)
        binary = number + prefix.upper() + "i"
        return f'did you mean "{binary}"?' if m.group(3) else f'did you mean "{decimal}" or "{binary}"?'
    return "e.g. 100m, 0.5 or 2 for cpu; 64Mi or 1G for memory"


_RESOURCES_FIELDS = frozenset({"requests", "limits", "claims"})
_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def _check_resources(resources: Any, field: str, errs: _Errors) -> None:
    """`resources.requests`/`limits`: Kubernetes quantities (cpu and memory are what the lab
    enforces), none negative, no request above its limit."""
    if resources is None:
        return
    resources = _mapping(resources, field, errs)
    _unknown_fields(resources, _RESOURCES_FIELDS, field, errs)
    parsed: dict[str, dict[str, Any]] = {}
    for group in ("limits", "requests"):
        values = _mapping(resources.get(group) or {}, f"{field}.{group}", errs)
        parsed[group] = {}
        for key, value in values.items():
            at = f"{field}.{group}.{key}"
            if not isinstance(key, str) or (key not in _STANDARD_RESOURCES and "/" not in key
                                            and not key.startswith("hugepages-")):
                errs.invalid(at, key, "must be a standard resource type or fully qualified")
                continue
            try:
                q = cgroups.parse_quantity(value)
            except cgroups.QuantityError as e:
                errs.invalid(at, value, f"{e} ({_quantity_hint(value)})")
                continue
            if q < 0:
                errs.invalid(at, value, "must be greater than or equal to 0")
                continue
            parsed[group][key] = q
    for key, request in parsed["requests"].items():
        limit = parsed["limits"].get(key)
        if limit is not None and request > limit:
            errs.invalid(f"{field}.requests", resources["requests"][key],
                         f"must be less than or equal to {key} limit of {resources['limits'][key]}")


_PROBE_NUMBERS = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold",
                  "successThreshold")


def _check_probe(container: Mapping, field: str, errs: _Errors) -> None:
    """A readinessProbe: one handler whose port names a container port; whole-number timings."""
    probe = container.get("readinessProbe")
    if probe is None:
        return
    probe = _mapping(probe, field, errs)
    handlers = [h for h in ("tcpSocket", "httpGet", "exec") if h in probe]
    if len(handlers) != 1:
        errs.add(field, "must have exactly one of tcpSocket, httpGet, exec")
        return
    for key in _PROBE_NUMBERS:
        value = probe.get(key)
        if value is not None and (not _is_int(value) or value < 0):
            errs.invalid(f"{field}.{key}", value, "must be a non-negative integer")
    handler = _mapping(probe[handlers[0]], f"{field}.{handlers[0]}", errs)
    if handlers[0] == "exec":
        _check_string_list(handler.get("command"), f"{field}.exec.command", errs)
        if not handler.get("command"):
            errs.required(f"{field}.exec.command")
        return
    port = handler.get("port")
    names = {p.get("name") for p in container.get("ports") or [] if isinstance(p, Mapping)}
    if _is_int(port):
        _port_number(port, f"{field}.{handlers[0]}.port", errs)
    elif not isinstance(port, str) or port not in names:
        errs.invalid(f"{field}.{handlers[0]}.port", port, "must be a port number or the name of a container port")


def _check_pod_spec(spec: Any, field: str, errs: _Errors, *, template: bool) -> None:
    """A Pod's spec, or a workload's pod template spec (where only `Always` restarts)."""
    spec = _mapping(spec, field, errs)
    containers = _list(spec.get("containers"), f"{field}.containers", errs)
    if not containers:
        errs.required(f"{field}.containers")
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, container in enumerate(_list(spec.get(group), f"{field}.{group}", errs)):
            name = _check_container(container, f"{field}.{group}[{i}]", errs)
            if name in seen:
                errs.duplicate(f"{field}.{group}[{i}].name", name)
            if name:
                seen.add(name)
    policy = spec.get("restartPolicy")
    allowed = ("Always",) if template else _RESTART_POLICIES
    if policy is not None and policy not in allowed:
        errs.unsupported(f"{field}.restartPolicy", policy, allowed)
    account = spec.get("serviceAccountName")
    if account is not None:
        problem = dns1123_subdomain(account) if isinstance(account, str) else "must be a string"
        if problem:
            errs.invalid(f"{field}.serviceAccountName", account, problem)
    if spec.get("hostNetwork") is not None and not isinstance(spec["hostNetwork"], bool):
        errs.invalid(f"{field}.hostNetwork", spec["hostNetwork"], "must be true or false")
    _check_labels(spec.get("nodeSelector"), f"{field}.nodeSelector", errs)
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not _is_int(grace) or grace < 0):
        errs.invalid(f"{field}.terminationGracePeriodSeconds", grace, "must be a non-negative integer")


def _check_pod(obj: Mapping, errs: _Errors) -> None:
    if obj.get("spec") is None:
        errs.required("spec")
        return
    _check_pod_spec(obj["spec"], "spec", errs, template=False)


# --- workloads --------------------------------------------------------------------------------


def _check_workload(obj: Mapping, errs: _Errors) -> None:
    """Deployment, ReplicaSet, DaemonSet: selector, template and (not DaemonSet) replicas."""
    kind = obj.get("kind", "")
    spec = _mapping(obj.get("spec"), "spec", errs)
    if kind != "DaemonSet" and "replicas" in spec:
        replicas = spec["replicas"]
        if not _is_int(replicas):
            errs.invalid("spec.replicas", replicas, "must be an integer")
        elif replicas < 0:
            errs.invalid("spec.replicas", replicas, "must be greater than or equal to 0")
    selector = None
    if spec.get("selector") is None:
        errs.required("spec.selector")
    else:
        try:
            selector = selectors.from_label_selector(spec["selector"])
        except ValueError as e:
            errs.invalid("spec.selector", spec["selector"], str(e))
        else:
            if selector.empty():
                errs.invalid("spec.selector", spec["selector"],
                             f"empty selector is invalid for {kind.lower()}")
                selector = None
    template = spec.get("template")
    if template is None:
        errs.required("spec.template")
        return
    template = _mapping(template, "spec.template", errs)
    labels = _mapping(template.get("metadata"), "spec.template.metadata", errs).get("labels")
    _check_labels(labels, "spec.template.metadata.labels", errs)
    if selector is not None and not selector.matches(labels if isinstance(labels, Mapping)
                                                     else {}):
        errs.invalid("spec.template.metadata.labels", labels or {},
                     "`selector` does not match template `labels`")
    _check_pod_spec(template.get("spec"), "spec.template.spec", errs, template=True)


# --- services and endpoints -------------------------------------------------------------------

_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_SERVICE_PORT_FIELDS = frozenset({"name", "protocol", "appProtocol", "port", "targetPort",
                                  "nodePort"})


def _check_service_port(port: Any, field: str, errs: _Errors, *, several: bool,
                        node_ports: bool) -> str | None:
    if not isinstance(port, Mapping):
        errs.invalid(field, port, "must be a mapping with port")
        return None
    _unknown_fields(port, _SERVICE_PORT_FIELDS, field, errs)
    _port_number(port.get("port"), f"{field}.port", errs)
    _protocol(port.get("protocol"), f"{field}.protocol", errs)
    target = port.get("targetPort")
    if isinstance(target, str):
        problem = port_name(target)
        if problem:
            errs.invalid(f"{field}.targetPort", target, problem)
    elif target is not None:
        _port_number(target, f"{field}.targetPort", errs)
    if port.get("nodePort") is not None:
        if not node_ports:
            errs.invalid(f"{field}.nodePort", port["nodePort"],
                         "may not be used when `type` is 'ClusterIP'")
        else:
            _port_number(port["nodePort"], f"{field}.nodePort", errs)
    name = port.get("name")
    if name in (None, ""):
        if several:
            errs.required(f"{field}.name")
        return None
    problem = dns1123_label(name) if isinstance(name, str) else "must be a string"
    if problem:
        errs.invalid(f"{field}.name", name, problem)
        return None
    return name


def _check_service(obj: Mapping, errs: _Errors) -> None:
    spec = _mapping(obj.get("spec"), "spec", errs)
    service_type = spec.get("type", "ClusterIP")
    if service_type not in _SERVICE_TYPES:
        errs.unsupported("spec.type", service_type, _SERVICE_TYPES)
    cluster_ip = spec.get("clusterIP")
    if cluster_ip not in (None, "", "None"):
        try:
            ipaddress.ip_address(cluster_ip)
        except ValueError:
            errs.invalid("spec.clusterIP", cluster_ip, 'must be "None", empty or an IP address')
    if service_type == "ExternalName":
        external = spec.get("externalName")
        if not external:
            errs.required("spec.externalName")
        elif not isinstance(external, str) or dns1123_subdomain(external):
            errs.invalid("spec.externalName", external, "must be a DNS name")
        if cluster_ip not in (None, ""):
            errs.invalid("spec.clusterIP", cluster_ip,
                         "may not be set for ExternalName services")
    ports = _list(spec.get("ports"), "spec.ports", errs)
    if not ports and service_type != "ExternalName" and cluster_ip != "None":
        errs.required("spec.ports")
    names: set[str] = set()
    for i, port in enumerate(ports):
        name = _check_service_port(port, f"spec.ports[{i}]", errs, several=len(ports) > 1,
                                   node_ports=service_type in ("NodePort", "LoadBalancer"))
        if name in names:
            errs.duplicate(f"spec.ports[{i}].name", name)
        if name:
            names.add(name)
    _check_labels(spec.get("selector"), "spec.selector", errs)


def _check_endpoints(obj: Mapping, errs: _Errors) -> None:
    for i, subset in enumerate(_list(obj.get("subsets"), "subsets", errs)):
        at = f"subsets[{i}]"
        subset = _mapping(subset, at, errs)
        for group in ("addresses", "notReadyAddresses"):
            for j, address in enumerate(_list(subset.get(group), f"{at}.{group}", errs)):
                ip = _mapping(address, f"{at}.{group}[{j}]", errs).get("ip")
                try:
                    ipaddress.ip_address(ip)
                except ValueError:
                    errs.invalid(f"{at}.{group}[{j}].ip", ip, "must be a valid IP address")
        for j, port in enumerate(_list(subset.get("ports"), f"{at}.ports", errs)):
            port = _mapping(port, f"{at}.ports[{j}]", errs)
            _port_number(port.get("port"), f"{at}.ports[{j}].port", errs)
            _protocol(port.get("protocol"), f"{at}.ports[{j}].protocol", errs)


def _check_configmap(obj: Mapping, errs: _Errors) -> None:
    for key, value in _mapping(obj.get("data"), "data", errs).items():
        if not isinstance(key, str) or len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
            errs.invalid("data", key, "a valid config key must consist of alphanumeric "
                                      "characters, '-', '_' or '.'")
        elif not isinstance(value, str):
            errs.invalid(f"data[{key}]", value, "must be a string (quote numbers and booleans)")


# --- mutating admission webhooks -------------------------------------------------------------

_HANDLER_ANNOTATION = "lab.ambient/handler"   # lab/admission.py: the in-process handler
_WEBHOOK_FIELDS = frozenset({
    "name", "clientConfig", "rules", "failurePolicy", "matchPolicy", "namespaceSelector",
    "objectSelector", "sideEffects", "timeoutSeconds", "admissionReviewVersions",
    "reinvocationPolicy", "matchConditions",
})
_RULE_FIELDS = frozenset({"operations", "apiGroups", "apiVersions", "resources", "scope"})
_ONLY_POD_CREATE = "the lab calls mutating webhooks on CREATE of pods only"


def _check_rule(rule: Any, field: str, errs: _Errors) -> None:
    """A rule must be CREATE of core/v1 pods: the one case the lab admits."""
    if not isinstance(rule, Mapping):
        errs.invalid(field, rule, "must be a mapping with operations, apiGroups, apiVersions, resources")
        return
    _unknown_fields(rule, _RULE_FIELDS, field, errs)
    for key, allowed in (("operations", ("CREATE",)), ("apiGroups", ("", "*")),
                         ("apiVersions", ("v1", "*")), ("resources", ("pods",))):
        values = rule.get(key)
        if not values:
            errs.required(f"{field}.{key}")
            continue
        _check_string_list(values, f"{field}.{key}", errs)
        for value in values if isinstance(values, list) else []:
            if value not in allowed:
                listed = ", ".join(f'"{a}"' for a in allowed)
                errs.add(f"{field}.{key}", f"Unsupported value: {_show(value)}: {_ONLY_POD_CREATE} "
                                           f"(supported values: {listed})")
                break
    scope = rule.get("scope")
    if scope is not None and scope not in ("*", "Namespaced"):
        errs.unsupported(f"{field}.scope", scope, ("*", "Namespaced"))


def _check_client_config(config: Any, field: str, errs: _Errors) -> None:
    config = _mapping(config, field, errs)
    if not config:
        errs.required(field, "exactly one of url or service is required")
        return
    _unknown_fields(config, frozenset({"url", "service", "caBundle"}), field, errs)
    if ("url" in config) == ("service" in config):
        errs.add(field, "exactly one of url or service is required")
    if "service" in config:
        service = _mapping(config["service"], f"{field}.service", errs)
        _unknown_fields(service, frozenset({"name", "namespace", "path", "port"}), f"{field}.service", errs)
        for key in ("name", "namespace"):
            if not service.get(key):
                errs.required(f"{field}.service.{key}")
            elif not isinstance(service[key], str) or dns1123_label(service[key]):
                errs.invalid(f"{field}.service.{key}", service[key], "must be a DNS label")
        path = service.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            errs.invalid(f"{field}.service.path", path, "must start with a '/'")
        if service.get("port") is not None:
            _port_number(service["port"], f"{field}.service.port", errs)


def _check_webhook(webhook: Any, field: str, errs: _Errors) -> str | None:
    if not isinstance(webhook, Mapping):
        errs.invalid(field, webhook, "must be a mapping with name, clientConfig and rules")
        return None
    _unknown_fields(webhook, _WEBHOOK_FIELDS, field, errs)
    name = webhook.get("name")
    if not name:
        errs.required(f"{field}.name")
    elif not isinstance(name, str) or dns1123_subdomain(name):
        errs.invalid(f"{field}.name", name, dns1123_subdomain(name) if isinstance(name, str) else "must be a string")
    elif name.count(".") < 2:
        errs.invalid(f"{field}.name", name, "should be a domain with at least three segments separated by dots")
    _check_client_config(webhook.get("clientConfig"), f"{field}.clientConfig", errs)
    for i, rule in enumerate(_list(webhook.get("rules"), f"{field}.rules", errs)):
        _check_rule(rule, f"{field}.rules[{i}]", errs)
    for key, allowed in (("failurePolicy", ("Fail", "Ignore")), ("matchPolicy", ("Exact", "Equivalent")),
                         ("reinvocationPolicy", ("Never", "IfNeeded"))):
        if webhook.get(key) is not None and webhook[key] not in allowed:
            errs.unsupported(f"{field}.{key}", webhook[key], allowed)
    side_effects = webhook.get("sideEffects")
    if side_effects is None:
        errs.required(f"{field}.sideEffects", "must specify one of None, NoneOnDryRun")
    elif side_effects not in ("None", "NoneOnDryRun"):
        errs.unsupported(f"{field}.sideEffects", side_effects, ("None", "NoneOnDryRun"))
    versions = webhook.get("admissionReviewVersions")
    if not versions:
        errs.required(f"{field}.admissionReviewVersions", "must specify one of v1, v1beta1")
    elif not isinstance(versions, list) or not set(versions) & {"v1", "v1beta1"}:
        errs.invalid(f"{field}.admissionReviewVersions", versions, "must include at least one of v1, v1beta1")
    timeout = webhook.get("timeoutSeconds")
    if timeout is not None and (not _is_int(timeout) or not 1 <= timeout <= 30):
        errs.invalid(f"{field}.timeoutSeconds", timeout, "the timeout value must be between 1 and 30 seconds")
    for key in ("namespaceSelector", "objectSelector"):
        if webhook.get(key) is not None:
            try:
                selectors.from_label_selector(webhook[key])
            except ValueError as e:
                errs.invalid(f"{field}.{key}", webhook[key], str(e))
    if webhook.get("matchConditions"):
        errs.add(f"{field}.matchConditions", "not supported by the lab (use namespaceSelector and objectSelector)")
    return name if isinstance(name, str) else None


def _check_mutating_webhooks(obj: Mapping, errs: _Errors) -> None:
    """A MutatingWebhookConfiguration; its handler is imported by the API server at apply."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    handler = annotations.get(_HANDLER_ANNOTATION) if isinstance(annotations, Mapping) else None
    field = f"metadata.annotations[{_HANDLER_ANNOTATION}]"
    if not handler:
        errs.required(field, 'the lab calls webhooks in-process: name the handler as "<module>:<function>"')
    elif not isinstance(handler, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", handler):
        errs.invalid(field, handler, 'must be "<module>:<function>", e.g. "mesh.sidecar.injection:admit"')
    names: set[str] = set()
    for i, webhook in enumerate(_list(obj.get("webhooks"), "webhooks", errs)):
        name = _check_webhook(webhook, f"webhooks[{i}]", errs)
        if name in names:
            errs.duplicate(f"webhooks[{i}].name", name)
        if name:
            names.add(name)


# --- the kinds the lab accepts ----------------------------------------------------------------


@dataclass(frozen=True)
class KindInfo:
    kind: str
    api_versions: tuple[str, ...]
    namespaced: bool = True
    name_rule: Callable[[str], str | None] = dns1123_subdomain
    check: Callable[[Mapping, _Errors], None] | None = None


_ISTIO_SECURITY = ("security.istio.io/v1", "security.istio.io/v1beta1")
_GATEWAY_API = ("gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1")
_ISTIO_NETWORKING = ("networking.istio.io/v1", "networking.istio.io/v1beta1",
                     "networking.istio.io/v1alpha3")

KINDS: tuple[KindInfo, ...] = (
    KindInfo("Namespace", ("v1",), namespaced=False, name_rule=dns1123_label),
    KindInfo("ServiceAccount", ("v1",)),
    KindInfo("Service", ("v1",), name_rule=dns1035_label, check=_check_service),
    KindInfo("Pod", ("v1",), check=_check_pod),
    KindInfo("Endpoints", ("v1",), check=_check_endpoints),
    KindInfo("ConfigMap", ("v1",), check=_check_configmap),
    KindInfo("Secret", ("v1",), check=_check_configmap),  # the lab keeps `data` as plain strings
    KindInfo("Deployment", ("apps/v1",), check=_check_workload),
    KindInfo("ReplicaSet", ("apps/v1",), check=_check_workload),
    KindInfo("DaemonSet", ("apps/v1",), check=_check_workload),
    KindInfo("AuthorizationPolicy", _ISTIO_SECURITY),
    KindInfo("RequestAuthentication", _ISTIO_SECURITY),
    KindInfo("PeerAuthentication", _ISTIO_SECURITY),
    KindInfo("Gateway", _GATEWAY_API),
    KindInfo("HTTPRoute", _GATEWAY_API),
    KindInfo("VirtualService", _ISTIO_NETWORKING),
    KindInfo("DestinationRule", _ISTIO_NETWORKING),
    KindInfo("ServiceEntry", _ISTIO_NETWORKING),
    KindInfo("MutatingWebhookConfiguration", ("admissionregistration.k8s.io/v1",), namespaced=False,
             check=_check_mutating_webhooks),
)
_BY_KIND = {info.kind: info for info in KINDS}


def kind_info(api_version: str, kind: str) -> KindInfo | None:
    info = _BY_KIND.get(kind)
    return info if info and api_version in info.api_versions else None


def known_kinds() -> str:
    """`Kind (apiVersion, ...)` for every accepted kind, for error messages."""
    return ", ".join(f"{i.kind} ({', '.join(i.api_versions)})"
                     for i in sorted(KINDS, key=lambda i: i.kind))


# --- parsing ----------------------------------------------------------------------------------


class _ManifestLoader(yaml.SafeLoader):
    """YAML as the API reads it: timestamps stay strings, so objects remain plain JSON."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _non_string_key(value: Any, path: str = "") -> str | None:
    """The path of the first mapping key that JSON cannot carry, or None."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}.{key}".lstrip(".") if path else str(key)
            found = _non_string_key(item, f"{path}.{key}" if path else key)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _non_string_key(item, f"{path}[{i}]")
            if found:
                return found
    return None


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML: {problem} (line {mark.line + 1}, column {mark.column + 1})"


def _documents(text: str, source: str) -> list[tuple[str, dict]]:
    """(position, object) for every object in TEXT; `kind: List` items are expanded."""
    found: list[tuple[str, dict]] = []
    problems: list[Problem] = []
    number = 0
    stream = yaml.load_all(text, Loader=_ManifestLoader)
    while True:
        try:
            document = next(stream)
        except StopIteration:
            break
        except yaml.YAMLError as e:
            problems.append(Problem(f"document {number + 1}", "", "", _yaml_problem(e)))
            break
        number += 1
        where = f"document {number}"
        if document is None:
            continue
        if not isinstance(document, dict):
            problems.append(Problem(where, "", "", "expected a Kubernetes object (a mapping "
                                    f"with apiVersion and kind), got {_yaml_type(document)}"))
            continue
        bad_key = _non_string_key(document)
        if bad_key:
            problems.append(Problem(where, "", bad_key, "mapping keys must be strings"))
            continue
        if document.get("kind") == "List" and document.get("apiVersion") == "v1":
            items = document.get("items") or []
            if not isinstance(items, list):
                problems.append(Problem(where, "List", "items", "must be a list"))
                continue
            for i, item in enumerate(items, 1):
                if isinstance(item, dict):
                    found.append((f"{where}, item {i}", item))
                else:
                    problems.append(Problem(f"{where}, item {i}", "", "",
                                            f"expected a Kubernetes object, got "
                                            f"{_yaml_type(item)}"))
            continue
        found.append((where, document))
    if problems:
        raise ManifestError(source, problems)
    return found


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    return f"the value {json.dumps(value)}"


def parse_manifests(text: str, source: str) -> list[dict]:
    """The objects in multi-document YAML TEXT; empty documents are skipped and `kind: List`
    expands to its items. Raises ManifestError for YAML that does not parse."""
    return [obj for _, obj in _documents(text, source)]


# --- validation -------------------------------------------------------------------------------


def _subject(obj: Mapping, info: KindInfo | None) -> str:
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else ""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else ""
    if not name:
        return kind
    namespaced = info.namespaced if info else "namespace" in meta
    namespace = meta.get("namespace") or "default"
    return f"{kind} {namespace}/{name}".strip() if namespaced else f"{kind} {name}".strip()


def _normalized(obj: Mapping, info: KindInfo) -> dict:
    copied = copy.deepcopy(dict(obj))
    meta = copied.setdefault("metadata", {})
    if info.namespaced:
        meta["namespace"] = meta.get("namespace") or "default"
    else:
        meta.pop("namespace", None)      # kubectl ignores a namespace on cluster-scoped kinds
    return copied


def _check_object(obj: Mapping, errs: _Errors) -> KindInfo | None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not api_version:
        errs.required("apiVersion")
    if not kind:
        errs.required("kind")
    if not api_version or not kind:
        return None
    info = kind_info(api_version, kind)
    if info is None:
        errs.add("", f'no matches for kind "{kind}" in version "{api_version}"; '
                     f"known kinds: {known_kinds()}")
        return None
    _check_metadata(obj, info, errs)
    if "spec" in obj and not isinstance(obj["spec"], Mapping):
        errs.invalid("spec", obj["spec"], "must be a mapping")
    elif info.check:
        info.check(obj, errs)
    return info


def _validate(entries: Sequence[tuple[str, Mapping]], source: str,
              extra: Mapping[str, ExtraCheck] | None) -> list[dict]:
    problems: list[Problem] = []
    result: list[dict] = []
    seen: dict[tuple[str, str, str], str] = {}
    for where, obj in entries:
        errs = _Errors()
        info = _check_object(obj, errs)
        subject = _subject(obj, info)
        if info is not None and not errs.items:
            normalized = _normalized(obj, info)
            meta = normalized["metadata"]
            key = (info.kind, meta.get("namespace", ""), meta["name"])
            if key in seen:
                errs.duplicate("metadata.name", meta["name"], f"also defined in {seen[key]}")
            seen.setdefault(key, where)
            check = (extra or {}).get(info.kind)
            for field, message in (check(normalized) if check else []):
                errs.add(field, message)
            result.append(normalized)
        problems += [Problem(where, subject, field, message) for field, message in errs.items]
    if problems:
        raise ManifestError(source, problems)
    return result


def validate(objects: Sequence[Mapping], source: str, *,
             extra: Mapping[str, ExtraCheck] | None = None) -> list[dict]:
    """Normalized copies of OBJECTS (namespace defaulted to "default" for namespaced kinds,
    dropped for cluster-scoped ones), or ManifestError listing every problem. EXTRA maps a kind
    to a function returning (field, problem) pairs for deeper checks. Problems are placed by
    position in OBJECTS; `load` places them by position in the file."""
    return _validate([(f"document {i}", obj) for i, obj in enumerate(objects, 1)], source, extra)


def load(text: str, source: str, *,
         extra: Mapping[str, ExtraCheck] | None = None) -> list[dict]:
    """parse_manifests + validate, with problems placed by document number in the file."""
    return _validate(_documents(text, source), source, extra)


def namespaces_needed(objects: Iterable[Mapping]) -> set[str]:
    """Namespaces the namespaced OBJECTS live in that the same apply does not create."""
    objects = list(objects)
    created = {_get_name(o) for o in objects if o.get("kind") == "Namespace"}
    needed = set()
    for obj in objects:
        info = _BY_KIND.get(obj.get("kind", ""))
        if info is not None and not info.namespaced:
            continue
        meta = obj.get("metadata") or {}
        needed.add(meta.get("namespace") or "default")
    return needed - created


def _get_name(obj: Mapping) -> str:
    return (obj.get("metadata") or {}).get("name", "")
