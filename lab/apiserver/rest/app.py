"""The Kubernetes REST endpoint's front door: authentication, then the route to its handler.

A request needs a client certificate from the lab's CA (else 401 `Unauthorized`, as the
kube-apiserver answers an unauthenticated request) whose groups include `system:masters` (else
403: the lab has no RBAC, so only cluster admins are let in). Then the path decides: version and
health, discovery (discovery.py), OpenAPI (openapi.py) or a resource, whose verb comes from the
method and the subresource (reads.py, writes.py; watch.py, exec.py and the dispatcher's logs for
the streams). Follows k8s.io/apiserver/pkg/endpoints (installer.go's routes and verbs).
"""

from __future__ import annotations

import importlib
from typing import Any

from lab.apiserver.errors import ApiError
from lab.apiserver.rest import certs, discovery, negotiate, openapi, reads, routes, status, writes
from lab.apiserver.rest.messages import Request, Response, Result, Upgrade, json_response
from lab.apiserver.rest.target import Context, Target, api_error

VERSION_INFO = {
    "major": "1",
    "minor": "30",
    "gitVersion": f"{openapi.VERSION}-lab",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-04-17T00:00:00Z",
    "goVersion": "go1.22.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_TRUE = ("true", "1", "True", "t", "T", "TRUE")


def not_found_path() -> status.StatusError:
    return status.StatusError(
        404,
        "NotFound",
        "the server could not find the requested resource",
        {"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]},
    )


class RestApp:
    """`await app(request)`: the answer to one request (messages.App)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    async def __call__(self, request: Request) -> Result:
        if request.user is None:
            raise status.unauthorized()
        if certs.ADMIN_GROUP not in request.groups:
            raise status.StatusError(
                403,
                "Forbidden",
                f'User "{request.user}" cannot {request.method.lower()} '
                f'"{request.path}": only {certs.ADMIN_GROUP} may use the lab',
            )
        route = routes.parse(request.path)
        if route.what == "resource":
            return await self.resource(route, request)
        if request.method != "GET":
            raise status.method_not_allowed(request.method, request.path)
        return self.info(route, request)

    # --- version, health, discovery, OpenAPI ----------------------------------------------------

    def info(self, route: routes.Route, request: Request) -> Response:
        accept = request.header("accept")
        if route.what == "version":
            return json_response(200, VERSION_INFO)
        if route.what == "health":
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if route.what in ("api", "apis"):
            aggregated = negotiate.discovery_version(accept)
            vary = [("Vary", "Accept")]
            if aggregated is not None:
                version, content_type = aggregated
                return json_response(200, discovery.aggregated(route.what == "api", version), vary, content_type)
            doc = discovery.api_versions(self.ctx.server_address) if route.what == "api" else discovery.api_group_list()
            return json_response(200, doc, vary)
        if route.what == "group":
            group = discovery.api_group(route.group)
            if group is None:
                raise not_found_path()
            return json_response(200, group)
        if route.what == "resources":
            resources = discovery.api_resource_list(route.group, route.version)
            if resources is None:
                raise not_found_path()
            return json_response(200, resources)
        if route.what == "openapi-root":
            return json_response(200, openapi.root())
        if route.what == "openapi":
            gv_doc = openapi.document(route.group, route.version)
            if gv_doc is None:
                raise not_found_path()
            body, digest = gv_doc
            cache = "public, immutable" if request.param("hash") == digest else "no-cache, private"
            return Response(200, body, "application/json", [("Etag", f'"{digest}"'), ("Cache-Control", cache)])
        raise not_found_path()

    # --- resources ------------------------------------------------------------------------------

    def target(self, route: routes.Route) -> Target:
        kind = routes.lookup(route.group, route.version, route.resource)
        if kind is None or (route.namespace is not None and not kind.namespaced):
            raise not_found_path()
        if route.subresource is not None and not discovery.has_subresource(kind, route.subresource):
            raise not_found_path()
        return Target(kind, route.version, route.namespace, route.name, route.subresource)

    async def resource(self, route: routes.Route, request: Request) -> Result:
        target = self.target(route)
        ctx, method, sub = self.ctx, request.method, target.subresource
        if route.watch and method != "GET":
            raise status.method_not_allowed(method, target.describe())
        if method == "GET":
            if sub == "log":
                return await reads.logs(ctx, target, request)
            if sub == "exec":
                return self.exec(target, request)
            if reads.is_watch(request, route.watch) and sub is None:
                return reads.watch(ctx, target, request)
            if target.name is None:
                return reads.get_list(ctx, target, request)
            if sub == "scale":
                obj = ctx.store.get(target.kind.kind, target.store_namespace, target.name)
                if obj is None:
                    raise status.not_found(target.kind, target.name)
                return json_response(200, writes.scale_of(obj))
            return reads.get_one(ctx, target, request)
        if method == "POST" and sub == "exec":
            return self.exec(target, request)
        if sub in ("exec", "log"):
            raise status.method_not_allowed(method, f"{target.kind.plural}/{sub}")
        if method == "POST" and target.name is None:
            if target.kind.namespaced and target.namespace is None:
                raise not_found_path()
            return writes.create(ctx, target, request)
        if method == "DELETE" and target.name is None:
            return writes.delete_collection(ctx, target, request)
        if target.name is None:
            raise status.method_not_allowed(method, target.kind.plural)
        if method == "PUT":
            return writes.replace(ctx, target, request)
        if method == "PATCH":
            return writes.patch(ctx, target, request)
        if method == "DELETE" and sub is None:
            return writes.delete(ctx, target, request)
        raise status.method_not_allowed(method, target.describe())

    def exec(self, target: Target, request: Request) -> Result:
        """`pods/NAME/exec` over WebSocket: checked and resolved here, then the connection goes
        to exec.py, which answers the upgrade and runs the command."""
        assert target.name is not None and target.namespace is not None
        if "websocket" not in request.header("upgrade").lower():
            raise status.bad_request(
                "Upgrade request required (WebSocket: v5.channel.k8s.io or v4.channel.k8s.io; SPDY is not served)"
            )
        command = request.query.get("command") or []
        if not command:
            raise status.bad_request("you must specify at least 1 command")
        flags = {f: request.param(f) in _TRUE for f in ("stdin", "stdout", "stderr", "tty")}
        if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
            raise status.bad_request("you must specify at least 1 of stdin, stdout, stderr")
        agent = self.ctx.dispatcher.node_agent if self.ctx.dispatcher is not None else None
        try:
            engine: Any = importlib.import_module("lab.apiserver.rest.exec")
        except ImportError:
            engine = None
        if agent is None or engine is None:
            raise status.bad_request("exec is not served by this API server (no kubelet or exec support)")
        if self.ctx.store.get("Pod", target.namespace, target.name) is None:
            raise status.not_found(target.kind, target.name)
        try:
            where = self.ctx.api.exec_target(
                target.namespace,
                target.name,
                request.param("container") or None,
                lambda p, c: agent.container_env(p, c, p.get("status", {}).get("podIP")),
                agent.exec_argv,
            )
        except ApiError as e:
            raise api_error(e, target) from None

        async def handover(stream: Any, leftover: bytes, headers: Any) -> None:
            await engine.serve(
                stream,
                leftover,
                headers,
                where,
                command,
                flags["stdin"],
                flags["stdout"],
                flags["stderr"],
                flags["tty"],
            )

        return Upgrade(handover)
