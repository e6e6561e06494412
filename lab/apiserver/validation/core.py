"""Checks of the metadata every object has and of the core/v1 kinds other than pods
(Service, Endpoints, ConfigMap, Secret): what the API server refuses before storing them."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any, Mapping

from lab.apiserver.names import config_key, dns1123_label, dns1123_subdomain, port_name
from lab.apiserver.validation.fields import (
    Errors,
    as_list,
    as_mapping,
    check_annotations,
    check_entry,
    check_labels,
    check_name,
    check_port_number,
    check_protocol,
)

if TYPE_CHECKING:
    from lab.apiserver.kinds import Kind


def check_metadata(obj: Mapping[str, Any], kind: Kind, errs: Errors) -> None:
    """Name (by the kind's rule), namespace, labels and annotations."""
    meta = as_mapping(obj.get("metadata"), "metadata", errs)
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
        check_name(namespace, dns1123_label, "metadata.namespace", errs)
    check_labels(meta.get("labels"), "metadata.labels", errs)
    check_annotations(meta.get("annotations"), "metadata.annotations", errs)


# --- services, endpoints, config maps -------------------------------------------------------

_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_SERVICE_PORT_FIELDS = frozenset({"name", "protocol", "appProtocol", "port", "targetPort", "nodePort"})


def _check_service_port(port: Any, field: str, errs: Errors, *, several: bool, node_ports: bool) -> str | None:
    if not check_entry(port, field, errs, shape="port", known=_SERVICE_PORT_FIELDS):
        return None
    check_port_number(port.get("port"), f"{field}.port", errs)
    check_protocol(port.get("protocol"), f"{field}.protocol", errs)
    target = port.get("targetPort")
    if isinstance(target, str):
        problem = port_name(target)
        if problem:
            errs.invalid(f"{field}.targetPort", target, problem)
    elif target is not None:
        check_port_number(target, f"{field}.targetPort", errs)
    if port.get("nodePort") is not None:
        if not node_ports:
            errs.invalid(f"{field}.nodePort", port["nodePort"], "may not be used when `type` is 'ClusterIP'")
        else:
            check_port_number(port["nodePort"], f"{field}.nodePort", errs)
    name = port.get("name")
    if name in (None, ""):
        if several:
            errs.required(f"{field}.name")
        return None
    return name if check_name(name, dns1123_label, f"{field}.name", errs) else None


def check_service(obj: Mapping[str, Any], errs: Errors) -> None:
    spec = as_mapping(obj.get("spec"), "spec", errs)
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
            errs.invalid("spec.clusterIP", cluster_ip, "may not be set for ExternalName services")
    ports = as_list(spec.get("ports"), "spec.ports", errs)
    if not ports and service_type != "ExternalName" and cluster_ip != "None":
        errs.required("spec.ports")
    names: set[str] = set()
    for i, port in enumerate(ports):
        name = _check_service_port(
            port,
            f"spec.ports[{i}]",
            errs,
            several=len(ports) > 1,
            node_ports=service_type in ("NodePort", "LoadBalancer"),
        )
        if name in names:
            errs.duplicate(f"spec.ports[{i}].name", name)
        if name:
            names.add(name)
    check_labels(spec.get("selector"), "spec.selector", errs)


def check_endpoints(obj: Mapping[str, Any], errs: Errors) -> None:
    for i, subset in enumerate(as_list(obj.get("subsets"), "subsets", errs)):
        at = f"subsets[{i}]"
        subset = as_mapping(subset, at, errs)
        for group in ("addresses", "notReadyAddresses"):
            for j, address in enumerate(as_list(subset.get(group), f"{at}.{group}", errs)):
                ip: Any = as_mapping(address, f"{at}.{group}[{j}]", errs).get("ip")
                try:
                    ipaddress.ip_address(ip)
                except ValueError:
                    errs.invalid(f"{at}.{group}[{j}].ip", ip, "must be a valid IP address")
        for j, port in enumerate(as_list(subset.get("ports"), f"{at}.ports", errs)):
            port = as_mapping(port, f"{at}.ports[{j}]", errs)
            check_port_number(port.get("port"), f"{at}.ports[{j}].port", errs)
            check_protocol(port.get("protocol"), f"{at}.ports[{j}].protocol", errs)


def check_configmap(obj: Mapping[str, Any], errs: Errors) -> None:
    """ConfigMaps, and Secrets: the lab keeps a Secret's `data` as plain strings."""
    for key, value in as_mapping(obj.get("data"), "data", errs).items():
        problem = config_key(key)
        if problem:
            errs.invalid("data", key, problem)
        elif not isinstance(value, str):
            errs.invalid(f"data[{key}]", value, "must be a string (quote numbers and booleans)")
