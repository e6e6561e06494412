"""GET, LIST and WATCH of resources, and `pods/log`: what `kubectl get`, `wait`, `logs` read.

LIST filters with label and field selectors and pages with `limit` and `continue` (a token
naming the last item sent; pages are not a snapshot, unlike etcd's). Answers are the objects, a
meta.k8s.io/v1 Table (the lab's columns, lab/apiserver/tables.py) or PartialObjectMetadata as the
Accept header asks (k8s.io/apiserver/pkg/endpoints/handlers/response.go). WATCH streams the
events watch.py makes, one JSON object per chunk. Following the "API Concepts" page of the
Kubernetes documentation.
"""

from __future__ import annotations

import base64
import importlib
import json
from contextlib import aclosing
from typing import Any, AsyncGenerator, Callable, cast

import trio

from lab.apiserver import selectors, tables
from lab.apiserver.errors import ApiError
from lab.apiserver.rest import fieldselector, negotiate, status
from lab.apiserver.rest.messages import Request, Response, Streaming, Write, dumps, json_response
from lab.apiserver.rest.target import Context, Target, api_error

META = "meta.k8s.io/v1"
_TRUE = ("true", "1", "True", "t", "T", "TRUE")


def conversion(request: Request) -> str | None:
    try:
        return negotiate.conversion(request.header("accept"))
    except ValueError:
        raise status.not_acceptable(request.header("accept")) from None


def list_filter(target: Target, params: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    """The label and field selectors of a LIST as one predicate; 400 for a malformed one."""
    try:
        labels = selectors.parse(params.get("labelSelector") or "")
    except ValueError as e:
        raise status.bad_request(f"unable to parse requirement: {e}") from None
    try:
        fields = fieldselector.parse(target.kind.kind, params.get("fieldSelector"))
    except fieldselector.FieldSelectorError as e:
        raise status.bad_request(str(e)) from None

    def keep(obj: dict[str, Any]) -> bool:
        return (labels.empty() or labels.matches(obj["metadata"].get("labels"))) and (fields is None or fields(obj))

    return keep


def _key(obj: dict[str, Any]) -> list[str]:
    md = obj["metadata"]
    return [md.get("namespace") or "", md["name"]]


def _page(items: list[dict[str, Any]], params: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """ITEMS from the `continue` token on, at most `limit` of them, and the list metadata."""
    meta: dict[str, Any] = {}
    token = params.get("continue")
    if token:
        try:
            after = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
            assert isinstance(after, list) and len(after) == 2
        except (ValueError, KeyError, TypeError, AssertionError):
            raise status.bad_request(
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
            ) from None
        items = [o for o in items if _key(o) > after]
    raw_limit = params.get("limit") or "0"
    try:
        limit = int(raw_limit)
    except ValueError:
        raise status.bad_request(f'invalid value for limit: "{raw_limit}"') from None
    if 0 < limit < len(items):
        rest = len(items) - limit
        items = items[:limit]
        meta["continue"] = base64.urlsafe_b64encode(json.dumps({"after": _key(items[-1])}).encode()).decode()
        meta["remainingItemCount"] = rest
    return items, meta


def _table(ctx: Context, target: Target, objs: list[dict[str, Any]], include: str | None) -> dict[str, Any]:
    table = tables.to_table(target.kind.table, objs, ctx.now())
    if include == "None":
        for row in table["rows"]:
            row.pop("object", None)
    elif include == "Object":
        for row, obj in zip(table["rows"], objs):
            row["object"] = target.out(obj)
    elif include not in (None, "", "Metadata"):
        raise status.bad_request(f'includeObject must be one of "None", "Metadata" or "Object", not "{include}"')
    return table


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": META, "metadata": obj["metadata"]}


def get_one(ctx: Context, target: Target, request: Request) -> Response:
    assert target.name is not None
    as_ = conversion(request)
    obj = ctx.store.get(target.kind.kind, target.store_namespace, target.name)
    if obj is None:
        raise status.not_found(target.kind, target.name)
    if as_ == "Table":
        table = _table(ctx, target, [obj], request.param("includeObject"))
        table["metadata"] = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
        return json_response(200, table)
    if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList"):
        return json_response(200, _partial(obj))
    return json_response(200, target.out(obj))


def list_objects(ctx: Context, target: Target, request: Request) -> list[dict[str, Any]]:
    keep = list_filter(target, request.params())
    return [o for o in ctx.store.list(target.kind.kind, target.store_namespace) if keep(o)]


def get_list(ctx: Context, target: Target, request: Request) -> Response:
    as_ = conversion(request)
    params = request.params()
    rv = str(ctx.store.resource_version)
    items, meta = _page(list_objects(ctx, target, request), params)
    meta = {"resourceVersion": rv, **meta}
    if as_ == "Table":
        table = _table(ctx, target, items, params.get("includeObject"))
        table["metadata"] = meta
        return json_response(200, table)
    if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList"):
        return json_response(
            200,
            {
                "kind": "PartialObjectMetadataList",
                "apiVersion": META,
                "metadata": meta,
                "items": [_partial(o) for o in items],
            },
        )
    return json_response(
        200,
        {
            "kind": f"{target.kind.kind}List",
            "apiVersion": target.api_version,
            "metadata": meta,
            "items": [target.out(o) for o in items],
        },
    )


# --- watch ------------------------------------------------------------------------------------


def is_watch(request: Request, legacy_prefix: bool) -> bool:
    value = request.param("watch")
    return legacy_prefix or value in ("true", "1", "True", "t", "T", "TRUE")


def watch(ctx: Context, target: Target, request: Request) -> Response | Streaming:
    """A chunked stream of watch events from watch.py (one JSON object per line)."""
    from lab.apiserver.rest import watch as engine

    as_ = conversion(request)
    params = request.params()
    if target.name:  # /watch/namespaces/x/pods/NAME (and GET .../pods/NAME?watch=true) watch one object
        name_sel = f"metadata.name={target.name}"
        params["fieldSelector"] = f"{params['fieldSelector']},{name_sel}" if params.get("fieldSelector") else name_sel
    try:
        engine.check(ctx.store, target.kind.kind, target.store_namespace, params)
    except engine.WatchError as e:
        return json_response(e.code, e.status())
    include = params.get("includeObject")
    if as_ == "Table":
        _table(ctx, target, [], include)  # refuses a bad includeObject before the 200

    async def body(write: Write, client_gone: trio.Event) -> None:
        first = True
        try:
            stream = cast(
                AsyncGenerator[dict[str, Any], None],
                engine.stream(ctx.store, target.kind.kind, target.store_namespace, params),
            )
            async with aclosing(stream) as events:
                async for event in events:
                    obj = event.get("object")
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, dict):
                        if as_ == "Table":
                            table = _table(ctx, target, [obj], include)
                            if not first:
                                table["columnDefinitions"] = []
                            table["metadata"] = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                            first = False
                            event = {"type": event["type"], "object": table}
                        elif as_ is not None:
                            event = {"type": event["type"], "object": _partial(obj)}
                        else:
                            event = {"type": event["type"], "object": target.out(obj)}
                    await write(dumps(event) + b"\n")
        except engine.WatchError as e:
            await write(dumps(engine.error_event(e)) + b"\n")

    return Streaming(200, body)


# --- logs -------------------------------------------------------------------------------------


def _int_param(request: Request, name: str) -> int | None:
    raw = request.param(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise status.bad_request(f'invalid value for {name}: "{raw}"') from None
    if value < 0:
        raise status.StatusError(
            422,
            "Invalid",
            f'PodLogOptions "" is invalid: {name}: Invalid value: {value}: must be greater than or equal to 0',
        )
    return value


async def logs(ctx: Context, target: Target, request: Request) -> Response | Streaming:
    """`pods/NAME/log`: the container's output as text/plain, streamed with `follow=true`. The
    chunks come from logs.py (the kubelet's PodLogOptions); its first chunk is taken before the
    answer's status is chosen, so a bad option or a missing container is a Status, not a 200."""
    assert target.name is not None and target.namespace is not None
    if ctx.dispatcher is None:
        raise status.bad_request("logs are not served by this API server")
    pod = ctx.store.get("Pod", target.namespace, target.name)
    if pod is None:
        raise status.not_found(target.kind, target.name)
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    if not request.param("container") and len(names) > 1:
        raise status.bad_request(
            f"a container name must be specified for pod {target.name}, choose one of: [{' '.join(names)}]"
        )
    try:
        engine: Any = importlib.import_module("lab.apiserver.rest.logs")
    except ImportError:
        return _dispatcher_logs(ctx, target, request)
    chunks = cast(
        AsyncGenerator[bytes, None], engine.stream(ctx.dispatcher, target.namespace, target.name, request.params())
    )
    try:
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = b""
    except engine.LogOptionsError as e:
        await chunks.aclose()
        return json_response(e.code, e.status())
    except ApiError as e:
        await chunks.aclose()
        raise api_error(e, target) from None
    if request.param("follow") not in _TRUE:
        async with aclosing(chunks):
            rest = [c async for c in chunks]
        return Response(200, first + b"".join(rest), "text/plain")

    async def body(write: Write, client_gone: trio.Event) -> None:
        async with aclosing(chunks):
            await write(first)
            try:
                async for chunk in chunks:
                    await write(chunk)
            except ApiError:
                return  # the pod went away while followed: the stream just ends

    return Streaming(200, body, "text/plain")


def _dispatcher_logs(ctx: Context, target: Target, request: Request) -> Response | Streaming:
    """Logs from the dispatcher alone (no logs.py): container, tailLines, previous, follow."""
    assert target.name is not None and target.namespace is not None and ctx.dispatcher is not None
    container = request.param("container") or None
    tail = _int_param(request, "tailLines")
    previous = request.param("previous") in _TRUE
    dispatcher = ctx.dispatcher
    try:
        text = dispatcher.logs(target.namespace, target.name, container, previous, tail)
    except ApiError as e:
        raise api_error(e, target) from None
    if request.param("follow") not in _TRUE or previous:
        return Response(200, text.encode(), "text/plain")
    req = {"namespace": target.namespace, "pod": target.name, "container": container, "tail": tail}

    async def body(write: Write, client_gone: trio.Event) -> None:
        async def send(message: dict[str, Any]) -> None:
            await write(str(message.get("data", "")).encode())

        try:
            await dispatcher.follow_logs(req, send, client_gone)
        except ApiError:
            return

    return Streaming(200, body, "text/plain")
