"""Discovery as kubectl reads it: legacy lists and aggregated (v2, v2beta1) by the Accept header."""

from __future__ import annotations

from lab.apiserver.rest import discovery, negotiate

V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"


def test_aggregated_version_follows_the_accept_header_exactly() -> None:
    assert negotiate.discovery_version(f"{V2},{V2BETA1},application/json") == ("v2", V2)
    assert negotiate.discovery_version(f"{V2BETA1},application/json") == ("v2beta1", V2BETA1)
    assert negotiate.discovery_version("application/json") is None
    assert negotiate.discovery_version(None) is None
    assert (
        negotiate.discovery_version(
            "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,application/json"
        )
        is None
    )


def test_legacy_core_resources() -> None:
    doc = discovery.api_resource_list("", "v1")
    assert doc is not None and doc["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in doc["resources"]}
    pods = by_name["pods"]
    assert pods["kind"] == "Pod" and pods["namespaced"] and pods["shortNames"] == ["po"]
    assert pods["singularName"] == "pod" and "watch" in pods["verbs"] and pods["categories"] == ["all"]
    assert by_name["pods/log"]["verbs"] == ["get"]
    assert by_name["pods/exec"]["kind"] == "PodExecOptions"
    assert by_name["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert not by_name["namespaces"]["namespaced"]
    assert by_name["events"]["verbs"] == ["get", "list", "watch"]  # only the lab writes events


def test_legacy_apps_scale_names_autoscaling() -> None:
    doc = discovery.api_resource_list("apps", "v1")
    assert doc is not None
    scale = next(r for r in doc["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert discovery.api_resource_list("apps", "v2") is None


def test_group_list_prefers_the_first_version() -> None:
    groups = {g["name"]: g for g in discovery.api_group_list()["groups"]}
    assert "" not in groups
    sec = groups["security.istio.io"]
    assert sec["preferredVersion"] == {"groupVersion": "security.istio.io/v1", "version": "v1"}
    assert [v["version"] for v in sec["versions"]] == ["v1", "v1beta1"]
    assert discovery.api_group("nope.example.com") is None


def test_aggregated_core_and_groups() -> None:
    core = discovery.aggregated(True, "v2")
    assert core["apiVersion"] == "apidiscovery.k8s.io/v2" and core["kind"] == "APIGroupDiscoveryList"
    assert len(core["items"]) == 1 and core["items"][0]["metadata"] == {}
    pods = next(r for r in core["items"][0]["versions"][0]["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert pods["scope"] == "Namespaced" and pods["singularResource"] == "pod"
    assert {s["subresource"] for s in pods["subresources"]} == {"exec", "log", "status"}
    groups = discovery.aggregated(False, "v2beta1")
    assert groups["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    names = [i["metadata"]["name"] for i in groups["items"]]
    assert "apps" in names and "security.istio.io" in names and "" not in names
    apps = next(i for i in groups["items"] if i["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    scale = next(s for s in deploy["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert apps["versions"][0]["freshness"] == "Current"


def test_api_versions() -> None:
    doc = discovery.api_versions("127.0.0.1:1234")
    assert doc["versions"] == ["v1"]
    assert doc["serverAddressByClientCIDRs"][0]["serverAddress"] == "127.0.0.1:1234"


def test_table_conversion_from_accept() -> None:
    kubectl = (
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
        "application/json"
    )
    assert negotiate.conversion(kubectl) == "Table"
    assert negotiate.conversion("application/json") is None
    assert negotiate.conversion(None) is None
    assert negotiate.conversion("application/vnd.kubernetes.protobuf,application/json") is None
    assert (
        negotiate.conversion("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io")
        == "PartialObjectMetadataList"
    )
