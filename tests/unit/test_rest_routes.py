"""The REST URL space: what each path kubectl and the Python clients use names."""

from __future__ import annotations

import pytest

from lab.apiserver.rest import routes
from lab.apiserver.rest.routes import Route


@pytest.mark.parametrize(
    "path,route",
    [
        ("/version", Route("version")),
        ("/version/", Route("version")),
        ("/healthz", Route("health", name="healthz")),
        ("/readyz", Route("health", name="readyz")),
        ("/api", Route("api")),
        ("/api/", Route("api")),
        ("/apis/", Route("apis")),
        ("/apis/apps", Route("group", group="apps")),
        ("/api/v1", Route("resources", version="v1")),
        ("/apis/apps/v1/", Route("resources", group="apps", version="v1")),
        ("/openapi/v3", Route("openapi-root")),
        ("/openapi/v3/api/v1", Route("openapi", version="v1")),
        ("/openapi/v3/apis/security.istio.io/v1", Route("openapi", group="security.istio.io", version="v1")),
        ("/openapi/v2", Route("openapi-v2")),
        ("/metrics", Route("unknown")),
        ("/", Route("unknown")),
    ],
)
def test_non_resource_paths(path: str, route: Route) -> None:
    assert routes.parse(path) == route


@pytest.mark.parametrize(
    "path,expected",
    [
        ("/api/v1/pods", ("", "v1", None, "pods", None, None, False)),
        ("/api/v1/namespaces/default/pods", ("", "v1", "default", "pods", None, None, False)),
        ("/api/v1/namespaces/default/pods/web/log", ("", "v1", "default", "pods", "web", "log", False)),
        ("/api/v1/namespaces/default/pods/web/exec", ("", "v1", "default", "pods", "web", "exec", False)),
        ("/api/v1/namespaces", ("", "v1", None, "namespaces", None, None, False)),
        ("/api/v1/namespaces/demo", ("", "v1", None, "namespaces", "demo", None, False)),
        ("/api/v1/namespaces/demo/status", ("", "v1", None, "namespaces", "demo", "status", False)),
        ("/api/v1/namespaces/demo/finalize", ("", "v1", None, "namespaces", "demo", "finalize", False)),
        ("/apis/apps/v1/namespaces/x/deployments/d/scale", ("apps", "v1", "x", "deployments", "d", "scale", False)),
        (
            "/apis/security.istio.io/v1/namespaces/x/authorizationpolicies/",
            ("security.istio.io", "v1", "x", "authorizationpolicies", None, None, False),
        ),
        ("/api/v1/watch/namespaces/x/pods/p", ("", "v1", "x", "pods", "p", None, True)),
    ],
)
def test_resource_paths(path: str, expected: tuple) -> None:
    r = routes.parse(path)
    assert r.what == "resource"
    assert (r.group, r.version, r.namespace, r.resource, r.name, r.subresource, r.watch) == expected


def test_too_deep_is_unknown() -> None:
    assert routes.parse("/api/v1/namespaces/x/pods/p/log/more").what == "unknown"


def test_lookup_by_group_version_and_plural() -> None:
    ap = routes.lookup("security.istio.io", "v1beta1", "authorizationpolicies")
    assert ap is not None and ap.kind == "AuthorizationPolicy"
    assert routes.lookup("security.istio.io", "v1alpha9", "authorizationpolicies") is None
    assert routes.lookup("", "v1", "deployments") is None  # deployments are apps/v1
    deploy = routes.lookup("apps", "v1", "deployments")
    assert deploy is not None and deploy.kind == "Deployment"


def test_served_groups_core_first_preferred_version_first() -> None:
    served = dict(routes.served_group_versions())
    assert next(iter(served)) == ""
    assert served["apps"] == ("v1",)
    assert served["networking.istio.io"][0] == "v1"
