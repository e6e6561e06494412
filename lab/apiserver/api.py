"""The API's verbs over the store: apply, get, delete, label, scale, rollout restart, exec, logs.

The kube-apiserver's part of labd, without sockets (lab/api/server.py carries the bytes). `apply`
is all-or-nothing: every document is parsed, validated and admitted before the first write; a new
Pod goes through the mutating webhooks (lab/admission.py) while the apply is planned.

Beside it: errors.py (ApiError, Invalid), defaulting.py (ClusterIPs, defaults, immutable fields)
and containers.py (where exec runs and logs are: ApiServer's ContainerAccess mix-in).
"""

from __future__ import annotations

import copy
import ipaddress
import uuid
from typing import Any, Callable, Mapping

from lab.apiserver import admission, kinds, validation
from lab.apiserver.containers import ContainerAccess
from lab.apiserver.defaulting import ServiceIPs, immutable_changed, set_defaults
from lab.apiserver.errors import ApiError, Invalid
from lab.apiserver.names import validate_label
from lab.apiserver.selectors import parse as parse_selector
from lab.apiserver.store import Store, now_rfc3339
from lab.controllers.workloads import RESTARTED_AT
from lab.topology import Topology

PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")


class ApiServer(ContainerAccess):
    def __init__(
        self,
        store: Store,
        topo: Topology,
        lab_dir: str,
        extra_validators: Mapping[str, Callable[[dict], list[tuple[str, str]]]] | None = None,
        extra_warners: Mapping[str, Callable[[dict], list[tuple[str, str]]]] | None = None,
    ):
        self.store = store
        self.topo = topo
        self.lab_dir = lab_dir
        self.service_ips = ServiceIPs(topo.service_cidr, store)
        self.extra_validators = extra_validators or {}
        #: Per kind: warnings for a valid object (kubectl prints them as "Warning: ...", as it
        #: prints the Warning headers a validating webhook adds).
        self.extra_warners = extra_warners or {}
        # uid -> the spec a mutated pod was applied with, so re-applying its file is "unchanged"
        self._applied_pod_specs: dict[str, dict] = {}

    # apply ------------------------------------------------------------------------------------
    def apply(self, manifests: str, source: str = "-") -> list[dict]:
        try:
            objs = validation.load(manifests, source, extra=self.extra_validators)
        except validation.ManifestError as e:
            raise ApiError(str(e)) from None
        if not objs:
            raise ApiError(f"error: no objects passed to apply ({source})")
        missing = sorted(
            ns for ns in validation.namespaces_needed(objs) if self.store.get("Namespace", None, ns) is None
        )
        if missing:
            raise ApiError(f'error: {source}: namespaces "{missing[0]}" not found')
        plan: list[tuple[str, dict, admission.Review | None]] = []
        taken: set[str] = set()
        new_namespaces = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Namespace"}
        for obj in objs:
            action, obj = self._admit(obj, source, taken)
            review = None
            if action == "created" and obj["kind"] == "Pod" and isinstance(self.store, admission.AdmittingStore):
                ns = obj["metadata"]["namespace"]
                try:
                    review = self.store.review_pod(
                        obj, new_namespaces.get(ns) if self.store.get("Namespace", None, ns) is None else None
                    )
                except admission.AdmissionDenied as e:
                    raise ApiError(f'Error from server: error when creating "{source}": {e}') from None
            plan.append((action, obj, review))
        results = []
        for action, obj, review in plan:
            k = kinds.by_kind(obj["kind"])
            if review is not None and isinstance(self.store, admission.AdmittingStore):  # only it reviews
                created = self.store.create(obj, review=review)
                if review.mutated_by:
                    self._remember_applied_spec(created["metadata"]["uid"], obj["spec"])
            elif action == "created":
                self.store.create(obj)
            elif action == "configured":
                self.store.update(obj)
            result = {
                "kind": obj["kind"],
                "group": k.group,
                "namespace": obj["metadata"].get("namespace"),
                "name": obj["metadata"]["name"],
                "action": action,
            }
            warner = self.extra_warners.get(obj["kind"])
            warnings = [f"{path}: {text}" if path else text for path, text in (warner(obj) if warner else [])]
            if warnings:
                result["warnings"] = warnings
            results.append(result)
        return results

    def _admit(self, obj: dict, source: str, taken: set[str]) -> tuple[str, dict]:
        md = obj["metadata"]
        where = f'{source}: {obj["kind"]} "{md["name"]}"'
        cur = self.store.get(obj["kind"], md.get("namespace"), md["name"])
        if obj["kind"] == admission.KIND:
            try:  # labd imports the handler now: a typo is refused at apply, not at the first pod
                admission.load_handler((md.get("annotations") or {}).get(admission.HANDLER_ANNOTATION))
            except admission.HandlerError as e:
                raise ApiError(f"error: {where}: metadata.annotations[{admission.HANDLER_ANNOTATION}]: {e}") from None
        if cur is None:
            if cur is None and md.get("namespace"):
                ns = self.store.get("Namespace", None, md["namespace"])
                if ns is not None and ns["metadata"].get("deletionTimestamp"):
                    raise ApiError(f'error: {where}: namespace {md["namespace"]} is being terminated')
            return "created", self._default_new(obj, taken)
        changed = immutable_changed(obj, cur)
        if changed:
            raise ApiError(f"error: {where}: {changed}: field is immutable")
        merged = copy.deepcopy(cur)
        for key, value in obj.items():
            if key not in ("metadata", "status"):
                merged[key] = copy.deepcopy(value)
        spec, live = merged.get("spec"), cur.get("spec") or {}
        if isinstance(spec, dict):
            # What the server filled in stays unless the file says otherwise (kubectl apply's merge).
            if obj["kind"] == "Service":
                spec["clusterIP"] = live.get("clusterIP")
                spec["clusterIPs"] = live.get("clusterIPs", [live.get("clusterIP")])
            if obj["kind"] in ("Deployment", "ReplicaSet") and "replicas" not in obj.get("spec", {}):
                spec["replicas"] = live.get("replicas", 1)
            if obj["kind"] == "Pod" and live.get("nodeName"):
                spec.setdefault("nodeName", live["nodeName"])
            set_defaults(merged)
            applied = self._applied_pod_specs.get(cur["metadata"]["uid"]) if obj["kind"] == "Pod" else None
            if applied is not None and {**spec, "nodeName": None} == {**applied, "nodeName": None}:
                merged["spec"] = copy.deepcopy(live)  # the same file: keep what the webhooks added
        for field in ("labels", "annotations"):
            if field in md:
                merged["metadata"][field] = {**(cur["metadata"].get(field) or {}), **(md[field] or {})}
        if obj["kind"] == "Pod" and merged.get("spec") != cur.get("spec"):
            raise ApiError(
                f"error: {where}: spec: Forbidden: pod updates may not change fields other than "
                f"labels and annotations (delete and re-create the pod)"
            )
        if merged == cur:
            return "unchanged", cur
        return "configured", merged

    def _remember_applied_spec(self, uid: str, spec: dict) -> None:
        if len(self._applied_pod_specs) > 256:  # forget pods that are gone
            live = {p["metadata"]["uid"] for p in self.store.list("Pod")}
            self._applied_pod_specs = {u: s for u, s in self._applied_pod_specs.items() if u in live}
        self._applied_pod_specs[uid] = copy.deepcopy(spec)

    def _default_new(self, obj: dict, taken: set[str]) -> dict:
        obj = copy.deepcopy(obj)
        if obj["kind"] == "Service":
            spec = obj.setdefault("spec", {})
            if spec.get("clusterIP") in (None, ""):
                ip = self.service_ips.allocate(taken)
                spec["clusterIP"] = ip
                taken.add(ip)
            elif spec["clusterIP"] != "None":
                ip = spec["clusterIP"]
                try:
                    ok = ipaddress.IPv4Address(ip) in self.topo.service_cidr
                except ValueError:
                    ok = False
                if not ok or ip in self.service_ips.used() | taken:
                    raise ApiError(
                        f'error: Service "{obj["metadata"]["name"]}": spec.clusterIP: '
                        f'{ip} is not a free address of {self.topo.service_cidr}'
                    )
                taken.add(ip)
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif obj["kind"] == "Pod":
            obj.setdefault("status", {"phase": "Pending"})
        set_defaults(obj)
        return obj

    # one object at a time: the REST endpoint's POST, PUT and DELETE ----------------------------
    def _validated(self, obj: dict, source: str) -> dict:
        """OBJ checked as `apply` checks it (the add-ons' validators included), normalized."""
        try:
            [out] = validation.validate([obj], source, extra=self.extra_validators)
        except validation.ManifestError as e:
            md = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
            raise Invalid(
                str(obj.get("kind")), str(md.get("name") or ""), [(p.field, p.message) for p in e.problems]
            ) from None
        return out

    def warnings(self, obj: dict) -> list[str]:
        """What the add-ons' warners say of a valid OBJ (kubectl prints them as `Warning: ...`)."""
        warner = self.extra_warners.get(obj["kind"])
        return [f"{path}: {text}" if path else text for path, text in (warner(obj) if warner else [])]

    def create(self, obj: dict, *, dry_run: bool = False, source: str = "-") -> dict:
        """One new object, as a POST makes it: validated like `apply`, defaulted, a Pod through
        the mutating webhooks, then stored (DRY_RUN: only returned). Its status is the server's."""
        k = kinds.by_kind(obj["kind"])
        obj = copy.deepcopy(obj)
        if k.has_status:
            obj.pop("status", None)
        for field in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp"):
            obj.get("metadata", {}).pop(field, None)
        obj = self._validated(obj, source)
        md = obj["metadata"]
        if k.namespaced and self.store.get("Namespace", None, md["namespace"]) is None:
            raise ApiError(f'Error from server (NotFound): namespaces "{md["namespace"]}" not found')
        if self.store.get(k.kind, md.get("namespace"), md["name"]) is not None:
            group = f".{k.group}" if k.group else ""
            raise ApiError(f'Error from server (AlreadyExists): {k.plural}{group} "{md["name"]}" already exists')
        _, obj = self._admit(obj, source, set())
        review = None
        if k.kind == "Pod" and isinstance(self.store, admission.AdmittingStore):
            try:
                review = self.store.review_pod(obj)
            except admission.AdmissionDenied as e:
                raise ApiError(str(e)) from None
            obj = review.pod
        if dry_run:
            out = copy.deepcopy(obj)
            out["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
            return out
        created = self.store.create(obj, review=review) if review is not None else self.store.create(obj)  # type: ignore[call-arg]
        if created is None:
            raise ApiError(f'Error from server (Forbidden): {k.plural} "{md["name"]}" was refused by admission')
        return created

    def replace(self, obj: dict, *, dry_run: bool = False, status_only: bool = False, source: str = "-") -> dict:
        """PUT: OBJ replaces the stored object, whose status stays (STATUS_ONLY: only OBJ's status
        is taken); a resourceVersion in OBJ must be the stored one. An unchanged object is not
        written (its resourceVersion stays), as in Kubernetes."""
        k = kinds.by_kind(obj["kind"])
        md = obj.get("metadata") or {}
        name = md.get("name") or ""
        cur = self.store.get(k.kind, (md.get("namespace") or "default") if k.namespaced else None, name)
        group = f".{k.group}" if k.group else ""
        if cur is None:
            raise ApiError(f'Error from server (NotFound): {k.plural}{group} "{name}" not found')
        rv = md.get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise ApiError(
                f'Error from server (Conflict): Operation cannot be fulfilled on {k.plural}{group} '
                f'"{name}": the object has been modified; please apply your changes to the latest '
                f'version and try again'
            )
        if status_only:
            new = copy.deepcopy(cur)
            new["status"] = copy.deepcopy(obj.get("status") or {})
        else:
            new = self._validated(obj, source)
            changed = immutable_changed(new, cur)
            if changed:
                raise Invalid(k.kind, name, [(changed, "field is immutable")])
            if k.has_status:
                new["status"] = copy.deepcopy(cur.get("status", {}))
            for field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ):
                if field in cur["metadata"]:
                    new["metadata"][field] = cur["metadata"][field]
            spec, live = new.get("spec"), cur.get("spec") or {}
            if isinstance(spec, dict) and k.kind == "Service" and spec.get("clusterIP") in (None, ""):
                spec["clusterIP"], spec["clusterIPs"] = live.get("clusterIP"), live.get("clusterIPs")
            if isinstance(spec, dict) and k.kind == "Pod" and live.get("nodeName"):
                spec.setdefault("nodeName", live["nodeName"])
            set_defaults(new)
            if k.kind == "Pod" and new.get("spec") != cur.get("spec"):
                raise Invalid(
                    k.kind,
                    name,
                    [
                        (
                            "spec",
                            "Forbidden: pod updates may not change fields other than "
                            "labels and annotations (delete and re-create the pod)",
                        )
                    ],
                )
        if new == cur or dry_run:
            return new
        return self.store.update(new, spec_changed=False if status_only else None)

    def delete_object(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        dry_run: bool = False,
        propagation: str = "Background",
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> dict:
        """DELETE of one object; returns it as deletion left it (a Pod or Namespace stays, marked,
        until the kubelet or the namespace controller is done) or as it was. PROPAGATION: the
        garbage collector removes dependents later (Background), they go first, in this call
        (Foreground), or they lose their ownerReference and stay (Orphan)."""
        k, obj = self._must_get(kind, namespace, name)
        if k.kind == "Namespace" and name in PROTECTED_NAMESPACES:
            raise ApiError(
                f'Error from server (Forbidden): namespaces "{name}" is forbidden: this namespace may not be deleted'
            )
        for what, want, have in (
            ("UID", uid, obj["metadata"]["uid"]),
            ("ResourceVersion", resource_version, obj["metadata"]["resourceVersion"]),
        ):
            if want and want != have:
                raise ApiError(
                    f"Error from server (Conflict): Operation cannot be fulfilled on {k.plural} "
                    f'"{name}": Precondition failed: {what} in precondition: {want}, {what} in '
                    f"object meta: {have}"
                )
        if dry_run:
            return obj
        owner = obj["metadata"]["uid"]
        for dep in [
            o
            for o in self.store.all()
            if any(r.get("uid") == owner for r in o["metadata"].get("ownerReferences") or [])
        ]:
            dmd = dep["metadata"]
            if propagation == "Orphan":
                upd = copy.deepcopy(dep)
                upd["metadata"]["ownerReferences"] = [r for r in dmd["ownerReferences"] if r.get("uid") != owner]
                if not upd["metadata"]["ownerReferences"]:
                    del upd["metadata"]["ownerReferences"]
                self.store.update(upd, spec_changed=False)
            elif propagation == "Foreground" and self.store.get(dep["kind"], dmd.get("namespace"), dmd["name"]):
                self.delete_object(dep["kind"], dmd.get("namespace"), dmd["name"], propagation="Foreground")
        self._delete_one(obj)
        return self.store.get(k.kind, obj["metadata"].get("namespace"), name) or obj

    # get ------------------------------------------------------------------------------------
    def get(
        self, kind: str, name: str | None = None, namespace: str | None = "default", selector: str | None = None
    ) -> Any:
        k = self._kind(kind)
        ns = namespace if k.namespaced else None
        if name:
            obj = self.store.get(k.kind, ns, name)
            if obj is None:
                raise ApiError(f'Error from server (NotFound): {k.plural} "{name}" not found')
            return obj
        sel = None
        if selector:
            try:
                sel = parse_selector(selector)
            except ValueError as e:
                raise ApiError(f"error: invalid selector {selector!r}: {e}") from None
        return {"apiVersion": "v1", "kind": "List", "items": self.store.list(k.kind, ns, sel)}

    def _kind(self, kind: str) -> kinds.Kind:
        try:
            return kinds.resolve(kind)
        except kinds.UnknownKind as e:
            raise ApiError(f"error: {e}") from None

    def _must_get(self, kind: str, namespace: str | None, name: str) -> tuple[kinds.Kind, dict]:
        k = self._kind(kind)
        obj = self.store.get(k.kind, namespace if k.namespaced else None, name)
        if obj is None:
            raise ApiError(f'Error from server (NotFound): {k.plural} "{name}" not found')
        return k, obj

    # delete ---------------------------------------------------------------------------------
    def delete(
        self,
        kind: str | None = None,
        name: str | None = None,
        namespace: str | None = "default",
        manifests: str | None = None,
        source: str = "-",
        ignore_not_found: bool = False,
        selector: str | None = None,
    ) -> list[dict]:
        targets: list[tuple[str, str | None, str]] = []
        if manifests is not None:
            try:
                objs = validation.load(manifests, source, extra=self.extra_validators)
            except validation.ManifestError as e:
                raise ApiError(str(e)) from None
            targets = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
        else:
            k = self._kind(kind or "")
            if name:
                targets = [(k.kind, namespace if k.namespaced else None, name)]
            else:
                items = self.get(kind or "", None, namespace, selector)["items"]  # kind resolved above
                targets = [(k.kind, o["metadata"].get("namespace"), o["metadata"]["name"]) for o in items]
        for k_, ns, n in targets:  # refuse before deleting anything
            if k_ == "Namespace" and n in PROTECTED_NAMESPACES:
                raise ApiError(
                    f'Error from server (Forbidden): namespaces "{n}" is forbidden: this namespace may not be deleted'
                )
            if not ignore_not_found and self.store.get(k_, ns, n) is None:
                raise ApiError(f'Error from server (NotFound): {kinds.by_kind(k_).plural} "{n}" not found')
        done = []
        # Delete in reverse order of creation, as kubectl does for a file.
        for k_, ns, n in reversed(targets):
            obj = self.store.get(k_, ns, n)
            if obj is None:
                continue
            self._delete_one(obj)
            done.append({"kind": k_, "group": kinds.by_kind(k_).group, "namespace": ns, "name": n})
        done.reverse()
        return done

    def _delete_one(self, obj: dict) -> None:
        md = obj["metadata"]
        if obj["kind"] in ("Pod", "Namespace"):
            if not md.get("deletionTimestamp"):
                upd = copy.deepcopy(obj)
                upd["metadata"]["deletionTimestamp"] = now_rfc3339()
                if obj["kind"] == "Pod":
                    upd["metadata"]["deletionGracePeriodSeconds"] = obj["spec"].get("terminationGracePeriodSeconds", 30)
                else:
                    upd["status"] = {"phase": "Terminating"}
                self.store.update(upd, spec_changed=False)
            return
        self.store.delete(obj["kind"], md.get("namespace"), md["name"])

    # label, annotate, scale, rollout --------------------------------------------------------
    def label(
        self,
        kind: str,
        name: str,
        namespace: str | None,
        changes: dict[str, str | None],
        overwrite: bool = False,
        field: str = "labels",
    ) -> dict:
        k, obj = self._must_get(kind, namespace, name)
        upd = copy.deepcopy(obj)
        current = upd["metadata"].setdefault(field, {})
        for key, value in changes.items():
            if value is None:
                if key not in current:
                    continue
                del current[key]
                continue
            if field == "labels":
                problem = validate_label(key, value)
                if problem:
                    raise ApiError(f"error: invalid label {key}={value}: {problem}")
            if key in current and current[key] != value and not overwrite:
                raise ApiError(f"error: '{key}' already has a value ({current[key]}), and --overwrite is false")
            current[key] = value
        if upd == obj:
            return obj
        return self.store.update(upd, spec_changed=False)

    def scale(self, kind: str, name: str, namespace: str | None, replicas: int) -> dict:
        k, obj = self._must_get(kind, namespace, name)
        if k.kind not in ("Deployment", "ReplicaSet"):
            raise ApiError(f"error: cannot scale a {k.kind}")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(f"error: --replicas={replicas!r}: must be a non-negative integer")
        upd = copy.deepcopy(obj)
        upd["spec"]["replicas"] = replicas
        return self.store.update(upd)

    def rollout_restart(self, kind: str, name: str, namespace: str | None) -> dict:
        k, obj = self._must_get(kind, namespace, name)
        if k.kind not in ("Deployment", "DaemonSet"):
            raise ApiError(f"error: rollout restart is not supported for {k.kind}")
        upd = copy.deepcopy(obj)
        tmd = upd["spec"]["template"].setdefault("metadata", {})
        tmd.setdefault("annotations", {})[RESTARTED_AT] = now_rfc3339()
        return self.store.update(upd)
