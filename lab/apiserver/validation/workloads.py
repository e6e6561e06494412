"""Checks of pods and of the workloads that template them (Deployment, ReplicaSet, DaemonSet):
containers, images, ports, env, probes, resources, selectors, with the API server's wording."""

from __future__ import annotations

import re
from typing import Any, Mapping

from lab.apiserver import selectors
from lab.apiserver.names import dns1123_label, dns1123_subdomain, port_name
from lab.apiserver.validation.fields import (
    Errors,
    as_list,
    as_mapping,
    check_entry,
    check_labels,
    check_name,
    check_port_number,
    check_protocol,
    check_string_list,
    is_int,
    unknown_fields,
)
from lab.runtime import cgroups, images

# A container's and a container port's fields (core/v1); bodies.py's schema is built from these.
CONTAINER_FIELDS = frozenset(
    {
        "name",
        "image",
        "command",
        "args",
        "workingDir",
        "ports",
        "envFrom",
        "env",
        "resources",
        "resizePolicy",
        "restartPolicy",
        "volumeMounts",
        "volumeDevices",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "lifecycle",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "imagePullPolicy",
        "securityContext",
        "stdin",
        "stdinOnce",
        "tty",
    }
)
CONTAINER_PORT_FIELDS = frozenset({"name", "hostPort", "containerPort", "protocol", "hostIP"})
_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.hostIP",
)
_RESTART_POLICIES = ("Always", "OnFailure", "Never")


def _check_env(env: Any, field: str, errs: Errors) -> None:
    for i, var in enumerate(as_list(env, field, errs)):
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
        source = as_mapping(value_from, f"{at}.valueFrom", errs)
        if set(source) != {"fieldRef"}:
            errs.add(f"{at}.valueFrom", "only fieldRef is supported by the lab")
            continue
        path = as_mapping(source["fieldRef"], f"{at}.valueFrom.fieldRef", errs).get("fieldPath")
        if path is None:
            errs.required(f"{at}.valueFrom.fieldRef.fieldPath")
        elif path not in _FIELD_PATHS:
            errs.unsupported(f"{at}.valueFrom.fieldRef.fieldPath", path, _FIELD_PATHS)


def _check_container_ports(ports: Any, field: str, errs: Errors) -> None:
    names: set[str] = set()
    for i, port in enumerate(as_list(ports, field, errs)):
        at = f"{field}[{i}]"
        if not check_entry(port, at, errs, shape="containerPort", known=CONTAINER_PORT_FIELDS):
            continue
        check_port_number(port.get("containerPort"), f"{at}.containerPort", errs)
        if port.get("hostPort") not in (None, 0):
            check_port_number(port["hostPort"], f"{at}.hostPort", errs)
        check_protocol(port.get("protocol"), f"{at}.protocol", errs)
        name = port.get("name")
        if name is None:
            continue
        if not check_name(name, port_name, f"{at}.name", errs):
            pass
        elif name in names:
            errs.duplicate(f"{at}.name", name)
        names.add(name)


def _check_container(container: Any, field: str, errs: Errors) -> str | None:
    """Checks one container; returns its name for the uniqueness check."""
    if not check_entry(container, field, errs, shape="name and image", known=CONTAINER_FIELDS):
        return None
    name = container.get("name")
    check_name(name, dns1123_label, f"{field}.name", errs, required=True)
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
    check_string_list(container.get("command"), f"{field}.command", errs)
    check_string_list(container.get("args"), f"{field}.args", errs)
    _check_container_ports(container.get("ports"), f"{field}.ports", errs)
    _check_env(container.get("env"), f"{field}.env", errs)
    _check_probe(container, f"{field}.readinessProbe", errs)
    _check_resources(container.get("resources"), f"{field}.resources", errs)
    return name if isinstance(name, str) and name else None


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


def _check_resources(resources: Any, field: str, errs: Errors) -> None:
    """`resources.requests`/`limits`: Kubernetes quantities (cpu and memory are what the lab
    enforces), none negative, no request above its limit."""
    if resources is None:
        return
    resources = as_mapping(resources, field, errs)
    unknown_fields(resources, _RESOURCES_FIELDS, field, errs)
    parsed: dict[str, dict[str, Any]] = {}
    for group in ("limits", "requests"):
        values = as_mapping(resources.get(group) or {}, f"{field}.{group}", errs)
        parsed[group] = {}
        for key, value in values.items():
            at = f"{field}.{group}.{key}"
            if not isinstance(key, str) or (
                key not in _STANDARD_RESOURCES and "/" not in key and not key.startswith("hugepages-")
            ):
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
            errs.invalid(
                f"{field}.requests",
                resources["requests"][key],
                f"must be less than or equal to {key} limit of {resources['limits'][key]}",
            )


_PROBE_NUMBERS = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold")


def _check_probe(container: Mapping[str, Any], field: str, errs: Errors) -> None:
    """A readinessProbe: one handler whose port names a container port; whole-number timings."""
    probe = container.get("readinessProbe")
    if probe is None:
        return
    probe = as_mapping(probe, field, errs)
    handlers = [h for h in ("tcpSocket", "httpGet", "exec") if h in probe]
    if len(handlers) != 1:
        errs.add(field, "must have exactly one of tcpSocket, httpGet, exec")
        return
    for key in _PROBE_NUMBERS:
        value = probe.get(key)
        if value is not None and (not is_int(value) or value < 0):
            errs.invalid(f"{field}.{key}", value, "must be a non-negative integer")
    handler = as_mapping(probe[handlers[0]], f"{field}.{handlers[0]}", errs)
    if handlers[0] == "exec":
        check_string_list(handler.get("command"), f"{field}.exec.command", errs)
        if not handler.get("command"):
            errs.required(f"{field}.exec.command")
        return
    port = handler.get("port")
    names = {p.get("name") for p in container.get("ports") or [] if isinstance(p, Mapping)}
    if is_int(port):
        check_port_number(port, f"{field}.{handlers[0]}.port", errs)
    elif not isinstance(port, str) or port not in names:
        errs.invalid(f"{field}.{handlers[0]}.port", port, "must be a port number or the name of a container port")


def _check_pod_spec(spec: Any, field: str, errs: Errors, *, template: bool) -> None:
    """A Pod's spec, or a workload's pod template spec (where only `Always` restarts)."""
    spec = as_mapping(spec, field, errs)
    containers = as_list(spec.get("containers"), f"{field}.containers", errs)
    if not containers:
        errs.required(f"{field}.containers")
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, container in enumerate(as_list(spec.get(group), f"{field}.{group}", errs)):
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
        check_name(account, dns1123_subdomain, f"{field}.serviceAccountName", errs)
    if spec.get("hostNetwork") is not None and not isinstance(spec["hostNetwork"], bool):
        errs.invalid(f"{field}.hostNetwork", spec["hostNetwork"], "must be true or false")
    check_labels(spec.get("nodeSelector"), f"{field}.nodeSelector", errs)
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (not is_int(grace) or grace < 0):
        errs.invalid(f"{field}.terminationGracePeriodSeconds", grace, "must be a non-negative integer")


def check_pod(obj: Mapping[str, Any], errs: Errors) -> None:
    if obj.get("spec") is None:
        errs.required("spec")
        return
    _check_pod_spec(obj["spec"], "spec", errs, template=False)


# --- workloads --------------------------------------------------------------------------------


def check_workload(obj: Mapping[str, Any], errs: Errors) -> None:
    """Deployment, ReplicaSet, DaemonSet: selector, template and (not DaemonSet) replicas."""
    kind = obj.get("kind", "")
    spec = as_mapping(obj.get("spec"), "spec", errs)
    if kind != "DaemonSet" and "replicas" in spec:
        replicas = spec["replicas"]
        if not is_int(replicas):
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
                errs.invalid("spec.selector", spec["selector"], f"empty selector is invalid for {kind.lower()}")
                selector = None
    template = spec.get("template")
    if template is None:
        errs.required("spec.template")
        return
    template = as_mapping(template, "spec.template", errs)
    labels = as_mapping(template.get("metadata"), "spec.template.metadata", errs).get("labels")
    check_labels(labels, "spec.template.metadata.labels", errs)
    if selector is not None and not selector.matches(labels if isinstance(labels, Mapping) else {}):
        errs.invalid("spec.template.metadata.labels", labels or {}, "`selector` does not match template `labels`")
    _check_pod_spec(template.get("spec"), "spec.template.spec", errs, template=True)
