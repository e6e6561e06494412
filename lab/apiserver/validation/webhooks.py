"""Checks of MutatingWebhookConfiguration: the lab calls webhooks in-process on Pod CREATE only,
so everything else a configuration may say is refused with a reason, at apply."""

from __future__ import annotations

import re
from typing import Any, Mapping

from lab.apiserver import selectors
from lab.apiserver.names import dns1123_label, dns1123_subdomain
from lab.apiserver.validation.fields import (
    Errors,
    as_list,
    as_mapping,
    check_entry,
    check_name,
    check_port_number,
    check_string_list,
    is_int,
    show,
    unknown_fields,
)
from lab.client.contract import HANDLER_ANNOTATION

_HANDLER_ANNOTATION = HANDLER_ANNOTATION  # the in-process handler
_WEBHOOK_FIELDS = frozenset(
    {
        "name",
        "clientConfig",
        "rules",
        "failurePolicy",
        "matchPolicy",
        "namespaceSelector",
        "objectSelector",
        "sideEffects",
        "timeoutSeconds",
        "admissionReviewVersions",
        "reinvocationPolicy",
        "matchConditions",
    }
)
_RULE_FIELDS = frozenset({"operations", "apiGroups", "apiVersions", "resources", "scope"})
_ONLY_POD_CREATE = "the lab calls mutating webhooks on CREATE of pods only"


def _check_rule(rule: Any, field: str, errs: Errors) -> None:
    """A rule must be CREATE of core/v1 pods: the one case the lab admits."""
    if not check_entry(rule, field, errs, shape="operations, apiGroups, apiVersions, resources", known=_RULE_FIELDS):
        return
    for key, allowed in (
        ("operations", ("CREATE",)),
        ("apiGroups", ("", "*")),
        ("apiVersions", ("v1", "*")),
        ("resources", ("pods",)),
    ):
        values = rule.get(key)
        if not values:
            errs.required(f"{field}.{key}")
            continue
        check_string_list(values, f"{field}.{key}", errs)
        for value in values if isinstance(values, list) else []:
            if value not in allowed:
                listed = ", ".join(f'"{a}"' for a in allowed)
                errs.add(
                    f"{field}.{key}",
                    f"Unsupported value: {show(value)}: {_ONLY_POD_CREATE} (supported values: {listed})",
                )
                break
    scope = rule.get("scope")
    if scope is not None and scope not in ("*", "Namespaced"):
        errs.unsupported(f"{field}.scope", scope, ("*", "Namespaced"))


def _check_client_config(config: Any, field: str, errs: Errors) -> None:
    config = as_mapping(config, field, errs)
    if not config:
        errs.required(field, "exactly one of url or service is required")
        return
    unknown_fields(config, frozenset({"url", "service", "caBundle"}), field, errs)
    if ("url" in config) == ("service" in config):
        errs.add(field, "exactly one of url or service is required")
    if "service" in config:
        service = as_mapping(config["service"], f"{field}.service", errs)
        unknown_fields(service, frozenset({"name", "namespace", "path", "port"}), f"{field}.service", errs)
        for key in ("name", "namespace"):
            if not service.get(key):
                errs.required(f"{field}.service.{key}")
            elif not isinstance(service[key], str) or dns1123_label(service[key]):
                errs.invalid(f"{field}.service.{key}", service[key], "must be a DNS label")
        path = service.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            errs.invalid(f"{field}.service.path", path, "must start with a '/'")
        if service.get("port") is not None:
            check_port_number(service["port"], f"{field}.service.port", errs)


def _check_webhook(webhook: Any, field: str, errs: Errors) -> str | None:
    if not check_entry(webhook, field, errs, shape="name, clientConfig and rules", known=_WEBHOOK_FIELDS):
        return None
    name = webhook.get("name")
    if check_name(name, dns1123_subdomain, f"{field}.name", errs, required=True) and name.count(".") < 2:
        errs.invalid(f"{field}.name", name, "should be a domain with at least three segments separated by dots")
    _check_client_config(webhook.get("clientConfig"), f"{field}.clientConfig", errs)
    for i, rule in enumerate(as_list(webhook.get("rules"), f"{field}.rules", errs)):
        _check_rule(rule, f"{field}.rules[{i}]", errs)
    for key, allowed in (
        ("failurePolicy", ("Fail", "Ignore")),
        ("matchPolicy", ("Exact", "Equivalent")),
        ("reinvocationPolicy", ("Never", "IfNeeded")),
    ):
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
    if timeout is not None and (not is_int(timeout) or not 1 <= timeout <= 30):
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


def check_mutating_webhooks(obj: Mapping[str, Any], errs: Errors) -> None:
    """A MutatingWebhookConfiguration; its handler is imported by the API server at apply."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    handler = annotations.get(_HANDLER_ANNOTATION) if isinstance(annotations, Mapping) else None
    field = f"metadata.annotations[{_HANDLER_ANNOTATION}]"
    if not handler:
        errs.required(field, 'the lab calls webhooks in-process: name the handler as "<module>:<function>"')
    elif not isinstance(handler, str) or not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", handler):
        errs.invalid(field, handler, 'must be "<module>:<function>", e.g. "mesh.sidecar.injection:admit"')
    names: set[str] = set()
    for i, webhook in enumerate(as_list(obj.get("webhooks"), "webhooks", errs)):
        name = _check_webhook(webhook, f"webhooks[{i}]", errs)
        if name in names:
            errs.duplicate(f"webhooks[{i}].name", name)
        if name:
            names.add(name)
