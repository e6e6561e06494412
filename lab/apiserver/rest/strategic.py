"""Strategic merge patch, as the kube-apiserver applies it to the built-in kinds.

kubectl's client-side apply and `kubectl patch` (and the Python client by default) send
`application/strategic-merge-patch+json`: a merge patch whose lists of named things (containers,
ports, env...) merge item by item on a *merge key* instead of being replaced, plus directives
(`$patch`, `$setElementOrder/<list>`, `$deleteFromPrimitiveList/<list>`, `$retainKeys`). Which
lists merge, and on which key, is Go struct tags in Kubernetes (`patchStrategy:"merge"
patchMergeKey:"name"` in k8s.io/api/core/v1/types.go, apps/v1/types.go, admissionregistration/v1
and k8s.io/apimachinery/pkg/apis/meta/v1/types.go); here it is `MERGE_RULES`, data keyed by
field path. The algorithm follows k8s.io/apimachinery/pkg/util/strategicpatch/patch.go (the apply
half: mergeMap, mergeSlice, mergePatchIntoOriginal, normalizeElementOrder) in our own code; the
differences (values new to the object are cleaned of directives and nulls, which the Go code
leaves for typed decoding to drop) are in docs/kube-api-patch.md. Kinds without rules (Istio,
Gateway API: custom resources) get 415 from the dispatcher in patch.py, as from a real server.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

PATCH = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_PRIMITIVES = "$deleteFromPrimitiveList/"


class StrategicMergeError(ValueError):
    """The patch cannot be applied; code/reason as interpretStrategicMergePatchError gives them."""

    def __init__(self, message: str, code: int = 400, reason: str = "BadRequest"):
        super().__init__(message)
        self.message, self.code, self.reason = message, code, reason


@dataclass(frozen=True)
class ListRule:
    """A list with patchStrategy "merge": items match on MERGE_KEY (None: primitives merged as a set)."""

    merge_key: str | None
    retain_keys: bool = False  # patchStrategy "merge,retainKeys": clients may send $retainKeys in items


# Path syntax: field names joined by ".", "[]" after a list's name to step into its items.
# Lists absent from the tables are replaced whole (no patchStrategy), maps merge key by key.

_OBJECT_META = {  # meta/v1 ObjectMeta
    "finalizers": ListRule(None),
    "ownerReferences": ListRule("uid"),
}
_CONTAINER = {  # core/v1 Container and EphemeralContainerCommon
    "ports": ListRule("containerPort"),
    "env": ListRule("name"),
    "volumeMounts": ListRule("mountPath"),
    "volumeDevices": ListRule("devicePath"),
}
_POD_SPEC = {  # core/v1 PodSpec (tolerations, args, command, envFrom... have no strategy: replaced)
    "containers": ListRule("name"),
    "initContainers": ListRule("name"),
    "ephemeralContainers": ListRule("name"),
    "volumes": ListRule("name", retain_keys=True),
    "imagePullSecrets": ListRule("name"),
    "hostAliases": ListRule("ip"),
    "topologySpreadConstraints": ListRule("topologyKey"),
    "schedulingGates": ListRule("name"),
    "resourceClaims": ListRule("name", retain_keys=True),
}
_POD_STATUS = {  # core/v1 PodStatus (containerStatuses has no strategy)
    "conditions": ListRule("type"),
    "podIPs": ListRule("ip"),
    "hostIPs": ListRule("ip"),
    "resourceClaimStatuses": ListRule("name", retain_keys=True),
}
_CONDITIONS = {"conditions": ListRule("type")}  # apps/v1 *Status, ServiceStatus, NamespaceStatus
_SERVICE_SPEC = {"ports": ListRule("port")}  # core/v1 ServiceSpec (SSA keys on port+protocol; SMP on port)
_NODE_SPEC = {"podCIDRs": ListRule(None)}  # core/v1 NodeSpec (taints: replaced)
_NODE_STATUS = {"conditions": ListRule("type"), "addresses": ListRule("type")}
_SERVICE_ACCOUNT = {"secrets": ListRule("name")}  # imagePullSecrets of a ServiceAccount: replaced
_WEBHOOKS = {"webhooks": ListRule("name"), "webhooks[].matchConditions": ListRule("name")}


def _under(prefix: str, table: Mapping[str, ListRule]) -> dict[str, ListRule]:
    return {f"{prefix}.{path}" if prefix else path: rule for path, rule in table.items()}


def _pod_spec(prefix: str) -> dict[str, ListRule]:
    rules = _under(prefix, _POD_SPEC)
    for containers in ("containers", "initContainers", "ephemeralContainers"):
        rules.update(_under(f"{prefix}.{containers}[]", _CONTAINER))
    return rules


def _kind(*tables: dict[str, ListRule]) -> dict[str, ListRule]:
    rules = _under("metadata", _OBJECT_META)
    for t in tables:
        rules.update(t)
    return rules


_WORKLOAD = _kind(
    _under("spec.template.metadata", _OBJECT_META), _pod_spec("spec.template.spec"), _under("status", _CONDITIONS)
)

# kind → {field path: rule}: every built-in kind the lab serves (strategic merge is refused for others).
MERGE_RULES: dict[str, dict[str, ListRule]] = {
    "Pod": _kind(_pod_spec("spec"), _under("status", _POD_STATUS)),
    "Deployment": _WORKLOAD,
    "ReplicaSet": _WORKLOAD,
    "DaemonSet": _WORKLOAD,
    "Service": _kind(_under("spec", _SERVICE_SPEC), _under("status", _CONDITIONS)),
    "Endpoints": _kind(),  # subsets have no strategy: replaced whole
    "ConfigMap": _kind(),
    "Secret": _kind(),
    "ServiceAccount": _kind(_SERVICE_ACCOUNT),
    "Namespace": _kind(_under("status", _CONDITIONS)),  # spec.finalizers has no strategy
    "Node": _kind(_under("spec", _NODE_SPEC), _under("status", _NODE_STATUS)),
    "Event": _kind(),
    "MutatingWebhookConfiguration": _kind(_WEBHOOKS),
    "Scale": _kind(),  # autoscaling/v1, what the /scale subresource of the workloads reads and patches
}
METADATA_RULES: dict[str, ListRule] = _kind()  # what every kind has, custom ones included (server-side apply)


def supports(kind: str) -> bool:
    """Whether KIND is a built-in kind the lab serves (strategic merge applies to those only)."""
    return kind in MERGE_RULES


def strategic_merge_patch(obj: Mapping[str, Any], patch: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """OBJ with PATCH applied the way the kube-apiserver does for KIND; neither input is changed."""
    rules = MERGE_RULES.get(kind)
    if rules is None:
        raise StrategicMergeError(f"strategic merge patch is not supported for {kind}", 415, "UnsupportedMediaType")
    if not isinstance(patch, Mapping):
        raise StrategicMergeError("invalid JSON document")
    return _Merger(rules).merge_map(copy.deepcopy(dict(obj)), copy.deepcopy(dict(patch)), "")


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shape(v: Any) -> str:
    """The JSON type that decides merge-or-replace: Go compares reflect types the same way."""
    if isinstance(v, dict):
        return "map"
    if isinstance(v, list):
        return "list"
    return "scalar"


def _same(a: Any, b: Any) -> bool:
    """Go's == on decoded JSON scalars: numbers by value, booleans apart from numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    return bool(a == b) and (isinstance(a, str) == isinstance(b, str))


def _discard_nulls(v: Any) -> None:
    if isinstance(v, dict):
        for k in [k for k, x in v.items() if x is None]:
            del v[k]
        for x in v.values():
            _discard_nulls(x)
    elif isinstance(v, list):
        for x in v:
            _discard_nulls(x)


def _strip_directives(v: Any) -> tuple[Any, bool]:
    """A value new to the object, without directives: a map carrying `$patch` is dropped altogether."""
    if isinstance(v, dict):
        if PATCH in v:
            return None, False
        out = {}
        for k, x in v.items():
            if k == RETAIN_KEYS or k.startswith((SET_ORDER, DELETE_PRIMITIVES)):
                continue
            x, keep = _strip_directives(x)
            if keep:
                out[k] = x
        return out, True
    if isinstance(v, list):
        kept = [_strip_directives(x) for x in v]
        return [x for x, keep in kept if keep], True
    return v, True


def _fresh(v: Any) -> tuple[Any, bool]:
    """What a patch value becomes where the object had nothing to merge it with."""
    _discard_nulls(v)
    return _strip_directives(v)


def _element_shape(*lists: list[Any]) -> str | None:
    """The one shape of all items (None when there are none); mixed shapes or nested lists are refused."""
    shape = None
    for lst in lists:
        for item in lst:
            s = _shape(item)
            if s == "list":
                raise StrategicMergeError("lists of lists are not supported", 422, "Invalid")
            if shape is None:
                shape = s
            elif shape != s:
                raise StrategicMergeError(f"list element types are not identical: {lists}", 422, "Invalid")
    return shape


class _Merger:
    """One patch application against one kind's rules."""

    def __init__(self, rules: Mapping[str, ListRule]):
        self.rules = rules

    def merge_map(self, original: dict[str, Any] | None, patch: dict[str, Any], path: str) -> dict[str, Any]:
        if PATCH in patch:
            directive = patch[PATCH]
            if directive == "replace":
                out, _ = _fresh({k: v for k, v in patch.items() if k != PATCH})
                return dict(out)
            if directive == "delete":
                return {}
            raise StrategicMergeError(f"Unknown patch type: {directive} in map: {patch}")
        original = original if isinstance(original, dict) else {}
        self._retain_keys(original, patch)
        self._element_orders(original, patch, path)
        for key, value in patch.items():
            delete_list = key.startswith(DELETE_PRIMITIVES)
            if delete_list:
                key = _list_name(key, DELETE_PRIMITIVES)
            elif key.startswith("$"):
                raise StrategicMergeError(f"unknown directive {key!r} in a strategic merge patch")
            if value is None:
                original.pop(key, None)
                continue
            if key not in original or _shape(original[key]) != _shape(value):
                if not delete_list:
                    fresh, keep = _fresh(value)
                    if keep:
                        original[key] = fresh
                    else:
                        original.pop(key, None)
                continue
            current, where = original[key], _child(path, key)
            if isinstance(current, dict):
                original[key] = self.merge_map(current, value, where)
            elif isinstance(current, list):
                original[key] = self.merge_list(current, value, where, delete_list)
            else:
                original[key], _ = _fresh(value)
        return original

    def merge_list(self, original: list[Any], patch: list[Any], path: str, delete_list: bool) -> list[Any]:
        rule = self.rules.get(path)
        if rule is None and not delete_list:
            return list(_fresh(patch)[0])  # no patch strategy: the patch's list replaces the object's
        if not original and not patch:
            return original
        shape = _element_shape(original, patch)
        if shape != "map":
            if delete_list:
                return [x for x in original if not any(_same(x, d) for d in patch)]
            merged: list[Any] = []
            for x in original + patch:
                if not any(_same(x, m) for m in merged):
                    merged.append(x)
            return _normalize(merged, patch, original, None)
        key = rule.merge_key if rule else None
        if key is None:
            raise StrategicMergeError(f"cannot merge lists without merge key for {path}", 422, "Invalid")
        server, items = _special_items(original, patch, key)
        merged = list(server)
        for item in items:
            if key not in item:
                raise StrategicMergeError(f"map: {item} does not contain declared merge key: {key}")
            i = _find(merged, key, item[key])
            if i is None:
                merged.append(_fresh(item)[0])
            else:
                merged[i] = self.merge_map(merged[i], item, path + "[]")
        return _normalize(merged, items, server, key)

    @staticmethod
    def _retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
        """`$retainKeys`: the object keeps only the listed keys (then the patch merges)."""
        if RETAIN_KEYS not in patch:
            return
        keep = patch.pop(RETAIN_KEYS)
        if not isinstance(keep, list):
            raise StrategicMergeError("invalid patch format of retainKeys")
        for k, v in patch.items():
            if v is not None and not k.startswith((SET_ORDER, DELETE_PRIMITIVES)) and k not in keep:
                raise StrategicMergeError("invalid patch format of retainKeys")
        for k in [k for k in original if k not in keep]:
            del original[k]

    def _element_orders(self, original: dict[str, Any], patch: dict[str, Any], path: str) -> None:
        """`$setElementOrder/<list>`: merge that list now and order it as the directive says.

        The order's precedence is the directive, then the patch, then the object (server-only items
        stay where they were relative to the others).
        """
        for directive in [k for k in patch if k.startswith(SET_ORDER)]:
            order = patch.pop(directive)
            name = _list_name(directive, SET_ORDER)
            if not isinstance(order, list):
                raise StrategicMergeError("invalid patch format of setElementOrder list")
            where = _child(path, name)
            rule = self.rules.get(where)
            key = rule.merge_key if rule else None
            current, change = original.get(name), patch.get(name)
            for v in (current, change):
                if v is not None and not isinstance(v, list):
                    raise StrategicMergeError(f"expected a list, but received a {_shape(v)}")
            _check_order(change or [], order, key)
            if current is None and change is None:
                continue
            if change is None:
                merged = list(current or [])
            elif current is None:
                merged = list(_fresh(change)[0])
            else:
                merged = self.merge_list(current, change, where, False)
            patch.pop(name, None)
            if _element_shape(merged) == "map" and key is None:
                original[name] = merged  # no merge key to order items by
                continue
            named = [x for x in merged if _in(order, x, key)]
            others = [x for x in merged if not _in(order, x, key)]
            original[name] = _interleave(named, others, order, current or [], key)


def _list_name(directive: str, prefix: str) -> str:
    name = directive[len(prefix) :]
    if not name:
        kind = "primitive list" if prefix == DELETE_PRIMITIVES else "setElementOrder list"
        raise StrategicMergeError(f"invalid patch format of {kind}")
    return name


def _special_items(original: list[Any], patch: list[Any], key: str) -> tuple[list[Any], list[Any]]:
    """Apply the list items carrying `$patch`: (the object's items left, the patch's plain items)."""
    plain: list[Any] = []
    replace = False
    for item in patch:
        if PATCH not in item:
            plain.append(item)
            continue
        directive = item[PATCH]
        if directive == "delete":
            if key not in item:
                raise StrategicMergeError(f"map: {item} does not contain declared merge key: {key}")
            original = [x for x in original if not (isinstance(x, dict) and key in x and _same(x[key], item[key]))]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise StrategicMergeError("merging lists cannot yet be specified in the patch")
        else:
            raise StrategicMergeError(f"Unknown patch type: {directive} in map: {item}")
    if replace:
        return [_fresh(x)[0] for x in plain], []
    return original, plain


def _find(items: list[Any], key: str, value: Any) -> int | None:
    for i, x in enumerate(items):
        if not isinstance(x, dict):
            raise StrategicMergeError(f"value for key {i} is not a map.")
        if key in x and _same(x[key], value):
            return i
    return None


def _ident(item: Any, key: str | None) -> Any:
    return item.get(key) if key is not None and isinstance(item, dict) else item


def _position(order: list[Any], item: Any, key: str | None) -> int:
    want = _ident(item, key)
    for i, x in enumerate(order):
        if _same(_ident(x, key), want):
            return i
    return -1


def _in(order: list[Any], item: Any, key: str | None) -> bool:
    return _position(order, item, key) >= 0


def _sorted_by(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def rank(item: Any) -> int:
        p = _position(order, item, key)
        return p if p >= 0 else len(order)

    return sorted(items, key=rank)


def _interleave(
    patch_items: list[Any], server_only: list[Any], patch_order: list[Any], server_order: list[Any], key: str | None
) -> list[Any]:
    """normalizeElementOrder: patch items in patch order, server-only items in their old order,
    a server-only item placed before a patch item only if it came before it in the object."""
    right = _sorted_by(patch_items, patch_order, key)
    left = _sorted_by(server_only, server_order, key)
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if j >= len(right):
            out.append(left[i])
            i += 1
        elif i >= len(left):
            out.append(right[j])
            j += 1
        else:
            li, ri = _position(server_order, left[i], key), _position(server_order, right[j], key)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out


def _normalize(merged: list[Any], patch: list[Any], original: list[Any], key: str | None) -> list[Any]:
    """The order mergeSlice leaves: the items the patch named, interleaved with the object's others."""
    named = [x for x in merged if _in(patch, x, key)]
    others = [x for x in merged if not _in(patch, x, key)]
    return _interleave(named, others, patch, original, key)


def _check_order(patch_list: list[Any], order: list[Any], key: str | None) -> None:
    """The patch's own items must appear in `$setElementOrder` in the same relative order."""
    items = [x for x in patch_list if not (isinstance(x, dict) and PATCH in x)]
    if key is not None:
        for x in order:
            if not isinstance(x, dict) or key not in x:
                raise StrategicMergeError(f"map: {x} does not contain declared merge key: {key}")
    i = j = 0
    while i < len(items) and j < len(order):
        if _same(_ident(items[i], key), _ident(order[j], key)):
            i += 1
        j += 1
    if i < len(items):
        raise StrategicMergeError(
            f"The order in patch list:\n{patch_list}\n doesn't match $setElementOrder list:\n{order}\n"
        )
