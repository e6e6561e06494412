"""What a resource request is about, and what every handler of one shares.

A `Target` is the resolved route: the kind (from the registry), the version asked for, namespace,
name and subresource. Objects go out with the apiVersion the request named (the lab keeps one
copy of each object; its served versions have the same schema). `Context` is what the handlers
need from labd: the API server (validation, admission, writes) and the dispatcher (logs, exec).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from lab.apiserver import kinds
from lab.apiserver.api import ApiServer
from lab.apiserver.errors import ApiError, Invalid
from lab.apiserver.rest import status

if TYPE_CHECKING:
    from lab.apiserver.dispatch import Dispatcher


@dataclass
class Context:
    api: ApiServer
    dispatcher: "Dispatcher | None" = None
    server_address: str = "127.0.0.1:6443"
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.timezone.utc))

    @property
    def store(self) -> Any:
        return self.api.store


@dataclass(frozen=True)
class Target:
    kind: kinds.Kind
    version: str
    namespace: str | None  # None: all namespaces (a namespaced LIST) or a cluster-scoped kind
    name: str | None
    subresource: str | None

    @property
    def api_version(self) -> str:
        return f"{self.kind.group}/{self.version}" if self.kind.group else self.version

    @property
    def store_namespace(self) -> str | None:
        return self.namespace if self.kind.namespaced else None

    def out(self, obj: dict[str, Any]) -> dict[str, Any]:
        """OBJ as this request's version shows it (a shallow copy: never change the store's)."""
        return {**obj, "apiVersion": self.api_version, "kind": self.kind.kind}

    def describe(self) -> str:
        return f"{self.kind.plural}" + (f"/{self.name}" if self.name else "")


def api_error(e: ApiError, target: Target) -> status.StatusError:
    """The Status for an ApiError raised while serving TARGET."""
    if isinstance(e, Invalid):
        kind = kinds.get(e.kind) or target.kind
        return status.invalid(kind, e.name or target.name or "", e.problems)
    return status.from_api_error(str(e), target.kind, target.name or "")


def warning_headers(messages: list[str]) -> list[tuple[str, str]]:
    """RFC 7234 Warning headers as the kube-apiserver sends them (code 299, agent `-`)."""
    out = []
    for m in messages:
        text = m.replace("\\", "\\\\").replace('"', '\\"')
        out.append(("Warning", f'299 - "{text}"'))
    return out
