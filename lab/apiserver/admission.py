"""Mutating admission webhooks, called in-process (MutatingWebhookConfiguration, docs/internals.md).

A webhook configuration names its handler with the annotation `lab.ambient/handler:
"<module>:<function>"`; labd imports it when the configuration is applied and calls it, on every
Pod CREATE the webhook's rules and selectors match, as

    handler(pod: dict, namespace: dict, webhook: dict) -> dict | None

with copies of the pod (after the API server's defaulting and the previous webhooks' changes),
its Namespace object and the `webhooks[]` entry. It returns the mutated pod, or None to leave it
as it is, or raises ValueError(message) to refuse it. A refusal, and any other failure of the
handler, obeys the webhook's failurePolicy: `Fail` (the default) refuses the pod, `Ignore` lets it
through without that webhook's change and records a Warning Event on the pod.

`Registry.review` is the pure part (configurations, namespace and pod in, pod out).
`AdmittingStore` is the one door pods enter the store by: every `create` of a Pod, whoever makes
it (the API's apply, the ReplicaSet and DaemonSet controllers), is reviewed first. A refused pod
of a controller becomes a `FailedCreate` Event on its owner and a retry with backoff.
"""

from __future__ import annotations

import copy
import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, overload

from lab.apiserver import validation
from lab.apiserver.selectors import Selector, from_label_selector
from lab.apiserver.store import Store
from lab.client.contract import HANDLER_ANNOTATION

log = logging.getLogger("labd.admission")
KIND = "MutatingWebhookConfiguration"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # Kubernetes puts it on every namespace
BACKOFF_START = 1.0
BACKOFF_MAX = 30.0

Handler = Callable[[dict, dict, dict], "dict | None"]


class AdmissionDenied(Exception):
    """A pod refused by admission; str() is what the user sees (it names the webhook)."""


class HandlerError(Exception):
    """A handler reference that cannot be resolved (bad form, import error, no such function)."""


def load_handler(ref: Any, import_module: Callable[[str], Any] = importlib.import_module) -> Handler:
    """The function `ref` ("<module>:<function>") names, imported with importlib."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise HandlerError(f'{ref!r} is not of the form "<module>:<function>"')
    module_name, func = (part.strip() for part in ref.split(":"))
    if not module_name or not func:
        raise HandlerError(f'{ref!r} is not of the form "<module>:<function>"')
    try:
        module = import_module(module_name)
    except Exception as e:  # ImportError, or whatever the module raises while loading
        raise HandlerError(f'cannot import module "{module_name}": {type(e).__name__}: {e}') from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise HandlerError(f'module "{module_name}" has no function "{func}"')
    return fn


def default_pod(pod: dict) -> dict:
    """The API server's defaulting of a Pod (what webhooks see), in place; returns POD."""
    spec = pod.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("restartPolicy", "Always")
    return pod


# --- the configurations -----------------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    name: str
    configuration: str
    handler: str  # "<module>:<function>"
    namespace_selector: Selector
    object_selector: Selector
    failure_policy: str  # "Fail" or "Ignore"
    matches_pod_create: bool  # its rules cover CREATE of pods
    spec: dict = field(compare=False, repr=False)  # the webhooks[] entry as written
    #: The configuration's metadata (its annotations carry settings for the handler).
    metadata: dict = field(default_factory=dict, compare=False, repr=False)

    def applies_to(self, pod: Mapping, namespace: Mapping | None) -> bool:
        if not self.matches_pod_create:
            return False
        if not self.object_selector.matches(_labels(pod)):
            return False
        return self.namespace_selector.matches(namespace_labels(namespace, _namespace_of(pod)))


def _labels(obj: Mapping | None) -> dict:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


def _namespace_of(pod: Mapping) -> str:
    return (pod.get("metadata") or {}).get("namespace") or "default"


def namespace_labels(namespace: Mapping | None, name: str) -> dict:
    """A namespace's labels as selectors see them: with `kubernetes.io/metadata.name`."""
    return {**_labels(namespace), NAMESPACE_NAME_LABEL: name}


def rule_matches_pod_create(rule: Mapping) -> bool:
    return (
        "CREATE" in (rule.get("operations") or [])
        and "pods" in (rule.get("resources") or [])
        and set(rule.get("apiGroups") or []) & {"", "*"} != set()
        and set(rule.get("apiVersions") or []) & {"v1", "*"} != set()
    )


def webhooks_of(configurations: list[dict]) -> list[Webhook]:
    """The webhooks in the order Kubernetes calls them: configurations by name, then as listed.
    Configurations are assumed valid (validation/webhooks.py checked them at apply)."""
    out = []
    for config in sorted(configurations, key=lambda c: c["metadata"]["name"]):
        md = config["metadata"]
        handler = (md.get("annotations") or {}).get(HANDLER_ANNOTATION, "")
        for wh in config.get("webhooks") or []:
            out.append(
                Webhook(
                    name=wh["name"],
                    configuration=md["name"],
                    handler=handler,
                    # An absent selector is Kubernetes' default `{}`: everything.
                    namespace_selector=from_label_selector(wh.get("namespaceSelector") or {}),
                    object_selector=from_label_selector(wh.get("objectSelector") or {}),
                    failure_policy=wh.get("failurePolicy") or "Fail",
                    matches_pod_create=any(rule_matches_pod_create(r) for r in wh.get("rules") or []),
                    spec=wh,
                    metadata=md,
                )
            )
    return out


# --- review -----------------------------------------------------------------------------------


@dataclass
class Review:
    pod: dict  # the pod to create
    mutated_by: list[str] = field(default_factory=list)  # webhooks that changed it
    ignored: list[str] = field(default_factory=list)  # failures let through (failurePolicy Ignore)


class Registry:
    """Runs the matching webhooks over a pod. Pure but for the handlers it calls."""

    def __init__(self, import_module: Callable[[str], Any] = importlib.import_module):
        self.import_module = import_module

    def review(self, pod: dict, namespace: dict | None, configurations: list[dict]) -> Review:
        """The pod after every matching webhook, or AdmissionDenied."""
        result = Review(copy.deepcopy(pod))
        for wh in webhooks_of(configurations):
            if not wh.applies_to(result.pod, namespace):
                continue
            failure = None
            try:
                handler = load_handler(wh.handler, self.import_module)
                out = handler(
                    copy.deepcopy(result.pod),
                    copy.deepcopy(namespace or {}),
                    copy.deepcopy({**wh.spec, "metadata": wh.metadata}),
                )
                if out is not None:
                    _check_result(out, result.pod)
            except HandlerError as e:
                failure = f'failed calling webhook "{wh.name}": {e}'
            except ValueError as e:
                failure = f'admission webhook "{wh.name}" denied the request: {e}'
            except Exception as e:  # a bug in the handler: Kubernetes' "failed calling webhook"
                log.exception("admission webhook %s (%s) failed", wh.name, wh.handler)
                failure = f'failed calling webhook "{wh.name}": {type(e).__name__}: {e}'
            if failure is not None:
                if wh.failure_policy == "Ignore":
                    result.ignored.append(failure)
                    continue
                raise AdmissionDenied(failure)
            if out is not None and out != result.pod:
                result.pod = copy.deepcopy(out)
                result.mutated_by.append(wh.name)
        if result.mutated_by:
            try:
                validation.validate([result.pod], "admission")
            except validation.ManifestError as e:
                problem = e.problems[0]
                where = f"{problem.field}: " if problem.field else ""
                raise AdmissionDenied(
                    f'Pod "{result.pod["metadata"]["name"]}" is invalid after admission webhook '
                    f'"{result.mutated_by[-1]}": {where}{problem.message}'
                ) from None
        return result


def _check_result(out: Any, pod: dict) -> None:
    """What a handler returns must still be this pod."""
    if not isinstance(out, dict):
        raise RuntimeError(f"the handler returned {type(out).__name__}, not the pod (a dict) or None")
    for key in ("kind", "apiVersion"):
        if out.get(key) != pod.get(key):
            raise RuntimeError(f"the handler changed {key} (from {pod.get(key)!r} to {out.get(key)!r})")
    md, was = out.get("metadata") or {}, pod.get("metadata") or {}
    for key in ("name", "namespace"):
        if md.get(key) != was.get(key):
            raise RuntimeError(f"the handler changed metadata.{key} (from {was.get(key)!r} to {md.get(key)!r})")


# --- the store's door -------------------------------------------------------------------------


def _controller_ref(obj: Mapping) -> dict | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


class AdmittingStore(Store):
    """A Store whose `create` of a Pod runs the mutating webhooks first.

    The API's apply reviews pods while it plans (so a refusal leaves nothing of the apply) and
    hands the review to `create`; any other creator (the controllers) is reviewed here. A refused
    pod with a controlling owner is not created: the owner gets a Warning Event `FailedCreate`,
    its next pods are skipped until a backoff (1 s doubling to 30 s) has passed, then
    `retry_after` wakes the controllers. Changing a webhook configuration or a namespace clears
    the backoff. `create` returns None for such a pod.
    """

    def __init__(self, registry: Registry | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.registry = registry or Registry()
        self.clock = clock
        self.record_event: Callable[..., None] | None = None  # (obj, reason, message, type)
        self.retry_after: Callable[[float], None] | None = None
        self._backoff: dict[str, tuple[int, float]] = {}  # owner uid -> (failures, not before)
        self.subscribe(self._on_change)

    def _on_change(self, type_: str, obj: dict) -> None:
        if obj["kind"] in (KIND, "Namespace") and self._backoff:
            self._backoff.clear()

    def review_pod(self, pod: dict, namespace: dict | None = None) -> Review:
        """Review POD (defaulted) against the stored configurations; NAMESPACE overrides the
        stored Namespace (one created by the same apply)."""
        if namespace is None:
            namespace = self.get("Namespace", None, _namespace_of(pod))
        return self.registry.review(pod, namespace, self.list(KIND))

    @overload
    def create(self, obj: dict, *, review: Review) -> dict: ...
    @overload
    def create(self, obj: dict, *, review: None = None) -> dict | None: ...

    def create(self, obj: dict, *, review: Review | None = None) -> dict | None:
        """Create OBJ; a Pod is reviewed first, unless REVIEW (made by `review_pod`) is given, in
        which case it is created as the review left it (never refused)."""
        if obj.get("kind") != "Pod":
            return self._insert(obj)
        if review is None:
            owner = _controller_ref(obj)
            uid = (owner or {}).get("uid")
            if uid and uid in self._backoff and (wait := self._backoff[uid][1] - self.clock()) > 0:
                if self.retry_after is not None:
                    self.retry_after(wait)
                return None
            try:
                review = self.review_pod(default_pod(copy.deepcopy(obj)))
            except AdmissionDenied as e:
                if owner is None:
                    raise
                self._refused(owner, _namespace_of(obj), str(e))
                return None
            if uid:
                self._backoff.pop(uid, None)
        created = self._insert(review.pod)
        for message in review.ignored:
            self._event(
                created,
                "AdmissionWebhookIgnored",
                f"{message} (failurePolicy Ignore: created without this webhook's change)",
            )
        return created

    def _refused(self, owner: dict, namespace: str, message: str) -> None:
        uid = owner["uid"]
        failures = self._backoff.get(uid, (0, 0.0))[0] + 1
        delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (failures - 1))
        self._backoff[uid] = (failures, self.clock() + delay)
        log.info("pod of %s %s/%s refused: %s", owner.get("kind"), namespace, owner.get("name"), message)
        obj = self.get(owner.get("kind", ""), namespace, owner.get("name", ""))
        if obj is not None and obj["metadata"].get("uid") == uid:
            self._event(obj, "FailedCreate", f"Error creating: {message}")
        if self.retry_after is not None:
            self.retry_after(delay)

    def _event(self, obj: dict, reason: str, message: str) -> None:
        if self.record_event is not None:
            self.record_event(obj, reason, message, "Warning")
        else:
            log.warning("%s %s/%s: %s", reason, obj["metadata"].get("namespace"), obj["metadata"]["name"], message)
