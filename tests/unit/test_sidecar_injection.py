"""mesh.sidecar.injection: who gets a sidecar (Istio's webhook selectors and injector policy) and
the exact pod that comes out (Istio's injection template in the lab's terms)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from lab.apiserver import selectors, validation
from mesh.sidecar import injection, iptables
from tests.unit.test_sidecar_iptables import INJECTED_FLAGS

WEBHOOK = {
    "apiVersion": "admissionregistration.k8s.io/v1",
    "kind": "MutatingWebhookConfiguration",
    "metadata": {
        "name": "istio-sidecar-injector",
        "labels": {"istio.io/rev": "default"},
        "annotations": {"lab.ambient/handler": "mesh.sidecar.injection:admit", "lab.ambient/proxy-tag": "1.24.0"},
    },
}

STATUS = (
    '{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["workload-socket",'
    '"credential-socket","workload-certs","istio-envoy","istio-data","istio-podinfo","istio-token",'
    '"istiod-ca-cert"],"imagePullSecrets":null,"revision":"default"}'
)


def namespace(name: str = "legacy-apps", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod(
    ns: str = "legacy-apps",
    labels: dict | None = None,
    annotations: dict | None = None,
    containers: list[dict] | None = None,
    **spec,
) -> dict:
    """A pod as the lab's ReplicaSet controller makes it for the article's httpbin-legacy."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "httpbin-legacy-6d8f7c9b5-x2x7k",
            "namespace": ns,
            "labels": {"app": "httpbin-legacy", "version": "v1", "pod-template-hash": "6d8f7c9b5", **(labels or {})},
            "annotations": dict(annotations or {}),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "httpbin-legacy-6d8f7c9b5",
                    "uid": "u1",
                    "controller": True,
                }
            ],
        },
        "spec": {
            "serviceAccountName": "httpbin-legacy",
            "containers": containers
            or [{"image": "docker.io/kennethreitz/httpbin", "name": "httpbin", "ports": [{"containerPort": 80}]}],
            **spec,
        },
    }


ENABLED = namespace(**{"istio-injection": "enabled"})


# --- whether -------------------------------------------------------------------------------------

SELECTION_CASES = [
    ({"istio-injection": "enabled"}, {}, True),
    ({"istio.io/rev": "default"}, {}, True),
    ({}, {"sidecar.istio.io/inject": "true"}, True),
    ({}, {"istio.io/rev": "default"}, True),
    ({}, {}, False),
    ({"istio-injection": "disabled"}, {}, False),
    ({"istio-injection": "disabled"}, {"sidecar.istio.io/inject": "true"}, False),  # namespace says no
    ({"istio.io/rev": "canary"}, {}, False),  # another revision's namespace
    ({"istio.io/rev": "canary"}, {"sidecar.istio.io/inject": "true"}, False),
    ({}, {"sidecar.istio.io/inject": "true", "istio.io/rev": "canary"}, False),
    ({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "false"}, False),
    ({"istio.io/rev": "default"}, {"sidecar.istio.io/inject": "false"}, False),
    ({"istio-injection": "enabled", "istio.io/rev": "canary"}, {}, True),  # the legacy label wins
    ({"istio-injection": "enabled"}, {"sidecar.istio.io/inject": "true"}, True),
    ({}, {"sidecar.istio.io/inject": "True"}, False),  # the object selector is an exact match
]


@pytest.mark.parametrize("ns_labels, pod_labels, wanted", SELECTION_CASES)
def test_selection_follows_the_webhook_selectors(ns_labels, pod_labels, wanted) -> None:
    got, why = injection.injection_wanted(pod(labels=pod_labels), namespace(**ns_labels))
    assert got is wanted, why


def test_the_opt_out_annotation_is_honoured_and_the_label_wins_over_it() -> None:
    for value in ("false", "no", "off", "n", "FALSE"):
        assert injection.injection_wanted(pod(annotations={"sidecar.istio.io/inject": value}), ENABLED) == (
            False,
            "pod opts out with sidecar.istio.io/inject",
        )
    # label true beats annotation false; label false beats annotation true
    assert injection.injection_wanted(
        pod(labels={"sidecar.istio.io/inject": "true"}, annotations={"sidecar.istio.io/inject": "false"}), ENABLED
    )[0]
    assert not injection.injection_wanted(
        pod(labels={"sidecar.istio.io/inject": "false"}, annotations={"sidecar.istio.io/inject": "true"}), ENABLED
    )[0]


def test_host_network_system_namespaces_and_injected_pods_are_never_injected() -> None:
    assert injection.injection_wanted(pod(hostNetwork=True), ENABLED) == (False, "hostNetwork pod")
    for ns in ("kube-system", "istio-system", "kube-public"):
        got, why = injection.injection_wanted(
            pod(ns=ns, labels={"sidecar.istio.io/inject": "true"}), namespace(ns, **{"istio-injection": "enabled"})
        )
        assert not got and why == f"system namespace {ns}"
    injected = injection.admit(pod(), ENABLED, WEBHOOK)
    assert injection.injection_wanted(injected, ENABLED)[1].startswith("already injected")
    assert injection.admit(injected, ENABLED, WEBHOOK) is None


def test_no_selector_means_no_change() -> None:
    assert injection.admit(pod(), namespace(), WEBHOOK) is None
    assert "neither the namespace" in injection.injection_wanted(pod(), namespace())[1]


def test_ambient_namespace_with_injection_gets_the_sidecar_and_leaves_ztunnel() -> None:
    both = namespace(**{"istio-injection": "enabled", "istio.io/dataplane-mode": "ambient"})
    out = injection.admit(pod(), both, WEBHOOK)
    assert out is not None and injection.proxy_container(out) is not None
    assert out["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
    # ambient alone is not a reason to inject
    assert injection.admit(pod(), namespace(**{"istio.io/dataplane-mode": "ambient"}), WEBHOOK) is None


def test_helpers() -> None:
    plain = pod()
    assert not injection.is_injected(plain) and injection.proxy_container(plain) is None
    out = injection.admit(plain, ENABLED, WEBHOOK)
    assert injection.is_injected(out)
    assert injection.proxy_container(out)["image"] == "docker.io/istio/proxyv2:1.24.0"
    assert plain == pod()  # the input is not mutated


# --- what ----------------------------------------------------------------------------------------

EXPECTED_LABELS = {
    "app": "httpbin-legacy",
    "version": "v1",
    "pod-template-hash": "6d8f7c9b5",
    "security.istio.io/tlsMode": "istio",
    "networking.istio.io/tunnel": "http",
    "service.istio.io/canonical-name": "httpbin-legacy",
    "service.istio.io/canonical-revision": "v1",
    "istio.io/dataplane-mode": "none",
}
EXPECTED_ANNOTATIONS = {
    "istio.io/rev": "default",
    "kubectl.kubernetes.io/default-logs-container": "httpbin",
    "kubectl.kubernetes.io/default-container": "httpbin",
    "prometheus.io/path": "/stats/prometheus",
    "prometheus.io/port": "15020",
    "prometheus.io/scrape": "true",
    "sidecar.istio.io/status": STATUS,
}
INIT_ARGS = ["istio-iptables", *INJECTED_FLAGS]


def test_the_injected_pod_is_istios_template_in_the_labs_terms() -> None:
    out = injection.admit(pod(), ENABLED, WEBHOOK)
    md, spec = out["metadata"], out["spec"]
    assert md["labels"] == EXPECTED_LABELS
    assert md["annotations"] == EXPECTED_ANNOTATIONS
    assert json.loads(md["annotations"]["sidecar.istio.io/status"])["revision"] == "default"
    assert [c["name"] for c in spec["containers"]] == ["httpbin", "istio-proxy"]
    assert spec["containers"][0] == pod()["spec"]["containers"][0]
    assert spec["initContainers"] == [
        {
            "name": "istio-init",
            "image": "docker.io/istio/proxyv2:1.24.0",
            "args": INIT_ARGS,
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
                "readOnlyRootFilesystem": False,
                "runAsGroup": 0,
                "runAsNonRoot": False,
                "runAsUser": 0,
            },
        }
    ]
    proxy = spec["containers"][1]
    assert proxy["args"] == [
        "proxy",
        "sidecar",
        "--domain",
        "legacy-apps.svc.cluster.local",
        "--proxyLogLevel=warning",
        "--proxyComponentLogLevel=misc:error",
        "--log_output_level=default:info",
    ]
    assert proxy["ports"] == [{"containerPort": 15090, "protocol": "TCP", "name": "http-envoy-prom"}]
    assert "lifecycle" not in proxy
    assert proxy["readinessProbe"] == {
        "httpGet": {"path": "/healthz/ready", "port": 15021},
        "initialDelaySeconds": 0,
        "periodSeconds": 1,
        "timeoutSeconds": 3,
        "failureThreshold": 4,
    }
    assert proxy["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsGroup": 1337,
        "runAsNonRoot": True,
        "runAsUser": 1337,
    }
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in proxy["env"]}
    assert env["ISTIOD_ADDRESS"] == "istiod.istio-system.svc:15012"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["INSTANCE_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["SERVICE_ACCOUNT"] == {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}
    assert env["ISTIO_META_CLUSTER_ID"] == "Kubernetes"
    assert env["ISTIO_META_ENABLE_HBONE"] == "true"
    assert env["ISTIO_META_WORKLOAD_NAME"] == "httpbin-legacy"
    assert env["ISTIO_META_OWNER"] == "kubernetes://apis/apps/v1/namespaces/legacy-apps/deployments/httpbin-legacy"
    assert env["ISTIO_META_APP_CONTAINERS"] == "httpbin"
    assert json.loads(env["ISTIO_META_POD_PORTS"]) == [{"containerPort": 80, "protocol": "TCP"}]
    assert env["TERMINATION_DRAIN_DURATION_SECONDS"] == "5"
    assert json.loads(env["PROXY_CONFIG"])["terminationDrainDuration"] == "5s"


def test_the_injected_pod_passes_the_labs_validation() -> None:
    out = injection.admit(pod(), ENABLED, WEBHOOK)
    validation.validate([out], "test")
    held = injection.admit(
        pod(annotations={"proxy.istio.io/config": "holdApplicationUntilProxyStarts: true"}), ENABLED, WEBHOOK
    )
    validation.validate([held], "test")


def test_the_init_args_are_what_istio_iptables_accepts() -> None:
    out = injection.admit(pod(), ENABLED, WEBHOOK)
    args = out["spec"]["initContainers"][0]["args"]
    config = iptables.parse_args(args[1:])
    assert config.inbound_ports_exclude == "15090,15021,15020" and config.outbound_ip_ranges_include == "*"


def test_hold_application_puts_the_proxy_first_with_the_wait_hook() -> None:
    for raw in ("holdApplicationUntilProxyStarts: true", '{"holdApplicationUntilProxyStarts": true}'):
        out = injection.admit(pod(annotations={"proxy.istio.io/config": raw}), ENABLED, WEBHOOK)
        containers = out["spec"]["containers"]
        assert [c["name"] for c in containers] == ["istio-proxy", "httpbin"]
        assert containers[0]["lifecycle"] == {"postStart": {"exec": {"command": ["pilot-agent", "wait"]}}}
        # exec and logs still default to the app
        assert out["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "httpbin"
    mesh_wide = dict(
        WEBHOOK,
        metadata=dict(
            WEBHOOK["metadata"],
            annotations={
                **WEBHOOK["metadata"]["annotations"],
                "lab.ambient/hold-application-until-proxy-starts": "true",
            },
        ),
    )
    assert injection.admit(pod(), ENABLED, mesh_wide)["spec"]["containers"][0]["name"] == "istio-proxy"
    # the pod can turn the mesh-wide default off again
    off = injection.admit(
        pod(annotations={"proxy.istio.io/config": "holdApplicationUntilProxyStarts: false"}), ENABLED, mesh_wide
    )
    assert off["spec"]["containers"][-1]["name"] == "istio-proxy"


@pytest.mark.parametrize("duration, seconds", [("30s", "30"), ("1m30s", "90"), ("500ms", "0.5"), ("2.5s", "2.5")])
def test_termination_drain_duration_from_proxy_config(duration: str, seconds: str) -> None:
    out = injection.admit(
        pod(annotations={"proxy.istio.io/config": f"terminationDrainDuration: {duration}"}), ENABLED, WEBHOOK
    )
    env = {e["name"]: e.get("value") for e in injection.proxy_container(out)["env"]}
    assert env["TERMINATION_DRAIN_DURATION_SECONDS"] == seconds
    assert json.loads(env["PROXY_CONFIG"])["terminationDrainDuration"] == duration


@pytest.mark.parametrize(
    "raw, message",
    [
        ("holdApplicationUntilProxyStarts: [", "not YAML or JSON"),
        ("just a string", "must be a ProxyConfig mapping"),
        ("holdApplicationUntilProxyStarts: maybe", "must be true or false"),
        ("terminationDrainDuration: soon", "invalid duration"),
        ("noSuchField: 1", "unknown ProxyConfig field 'noSuchField'"),
        ("proxyMetadata: {A: 1}", "proxyMetadata must map names to strings"),
    ],
)
def test_a_bad_proxy_config_refuses_the_pod(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match="proxy.istio.io/config") as info:
        injection.admit(pod(annotations={"proxy.istio.io/config": raw}), ENABLED, WEBHOOK)
    assert message in str(info.value)


def test_other_settings_that_cannot_be_honoured_refuse_the_pod() -> None:
    with pytest.raises(ValueError, match="interception mode 'TPROXY'"):
        injection.admit(pod(annotations={"sidecar.istio.io/interceptionMode": "TPROXY"}), ENABLED, WEBHOOK)
    with pytest.raises(ValueError, match="not a port number"):
        injection.admit(pod(annotations={"traffic.sidecar.istio.io/excludeInboundPorts": "http"}), ENABLED, WEBHOOK)


def test_an_unknown_proxy_image_is_refused_by_the_api_not_the_injector() -> None:
    # As Istio's injector, it writes the image it is asked for; the API validates the mutated pod
    # (lab.apiserver.admission) and refuses it, naming the image, before any pod exists.
    out = injection.admit(pod(annotations={"sidecar.istio.io/proxyImage": "example.com/envoy:1"}), ENABLED, WEBHOOK)
    assert injection.proxy_container(out)["image"] == "example.com/envoy:1"
    with pytest.raises(validation.ManifestError, match='unknown image "example.com/envoy:1"'):
        validation.validate([out], "admission")


def test_the_proxy_tag_comes_from_the_webhook_object() -> None:
    newer = copy.deepcopy(WEBHOOK)
    newer["metadata"]["annotations"]["lab.ambient/proxy-tag"] = "1.25.1"
    out = injection.admit(pod(), ENABLED, newer)
    assert injection.proxy_container(out)["image"] == "docker.io/istio/proxyv2:1.25.1"
    assert out["spec"]["initContainers"][0]["image"] == "docker.io/istio/proxyv2:1.25.1"
    untagged = copy.deepcopy(WEBHOOK)
    del untagged["metadata"]["annotations"]["lab.ambient/proxy-tag"]
    assert injection.proxy_container(injection.admit(pod(), ENABLED, untagged))["image"].endswith(":1.24.0")
    own = injection.admit(
        pod(annotations={"sidecar.istio.io/proxyImage": "docker.io/istio/proxyv2:1.23.2"}), ENABLED, WEBHOOK
    )
    assert injection.proxy_container(own)["image"] == "docker.io/istio/proxyv2:1.23.2"


def test_traffic_annotations_shape_the_init_args() -> None:
    out = injection.admit(
        pod(
            annotations={
                "traffic.sidecar.istio.io/excludeInboundPorts": "9000,15020",
                "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
                "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.10/32",
                "traffic.sidecar.istio.io/includeInboundPorts": "80",
            }
        ),
        ENABLED,
        WEBHOOK,
    )
    args = out["spec"]["initContainers"][0]["args"]
    assert args[args.index("-d") + 1] == "15090,15021,15020,9000"
    assert args[args.index("-o") + 1] == "5432"
    assert args[args.index("-x") + 1] == "10.96.0.10/32"
    assert args[args.index("-b") + 1] == "80"


def test_interception_none_has_no_init_container() -> None:
    out = injection.admit(pod(annotations={"sidecar.istio.io/interceptionMode": "NONE"}), ENABLED, WEBHOOK)
    assert "initContainers" not in out["spec"]
    assert json.loads(out["metadata"]["annotations"]["sidecar.istio.io/status"])["initContainers"] is None


def test_istio_init_runs_after_the_pods_own_init_containers() -> None:
    own = {"name": "setup", "image": "busybox", "command": ["true"]}
    out = injection.admit(pod(initContainers=[own]), ENABLED, WEBHOOK)
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["setup", "istio-init"]


def test_canonical_labels_and_user_values_are_kept() -> None:
    bare = pod()
    del bare["metadata"]["labels"]["app"], bare["metadata"]["labels"]["version"]
    out = injection.admit(bare, ENABLED, WEBHOOK)
    assert out["metadata"]["labels"]["service.istio.io/canonical-name"] == "httpbin-legacy"  # the Deployment
    assert out["metadata"]["labels"]["service.istio.io/canonical-revision"] == "latest"
    own_labels = {"service.istio.io/canonical-name": "web", "security.istio.io/tlsMode": "disabled"}
    mine = injection.admit(
        pod(labels=own_labels, annotations={"kubectl.kubernetes.io/default-container": "other"}), ENABLED, WEBHOOK
    )
    assert mine["metadata"]["labels"]["service.istio.io/canonical-name"] == "web"
    assert mine["metadata"]["labels"]["security.istio.io/tlsMode"] == "disabled"
    assert mine["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "other"


def test_no_hbone_metadata_means_no_tunnel_label() -> None:
    out = injection.admit(
        pod(annotations={"proxy.istio.io/config": "proxyMetadata: {ISTIO_META_ENABLE_HBONE: 'false', FOO: bar}"}),
        ENABLED,
        WEBHOOK,
    )
    assert "networking.istio.io/tunnel" not in out["metadata"]["labels"]
    env = {e["name"]: e.get("value") for e in injection.proxy_container(out)["env"]}
    assert env["FOO"] == "bar" and env["ISTIO_META_ENABLE_HBONE"] == "false"


def test_prometheus_merge() -> None:
    opted_out = injection.admit(pod(annotations={"prometheus.io/scrape": "false"}), ENABLED, WEBHOOK)
    assert opted_out["metadata"]["annotations"]["prometheus.io/scrape"] == "false"
    assert "prometheus.io/port" not in opted_out["metadata"]["annotations"]
    own = injection.admit(
        pod(annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}), ENABLED, WEBHOOK
    )
    assert own["metadata"]["annotations"]["prometheus.io/port"] == "15020"
    env = {e["name"]: e.get("value") for e in injection.proxy_container(own)["env"]}
    assert json.loads(env["ISTIO_PROMETHEUS_ANNOTATIONS"]) == {"scrape": "true", "port": "9090"}


def test_workload_names() -> None:
    bare = pod()
    del bare["metadata"]["ownerReferences"]
    assert injection.workload_meta(bare) == injection.WorkloadMeta("httpbin-legacy-6d8f7c9b5-x2x7k", "Pod", "v1")
    ds = pod()
    ds["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": True}
    ]
    assert injection.workload_meta(ds) == injection.WorkloadMeta("agent", "DaemonSet", "apps/v1")


MANIFESTS = Path(__file__).resolve().parents[2] / "mesh" / "manifests"


def installed_webhook() -> dict:
    """The MutatingWebhookConfiguration the installer applies (`lab istioctl install`)."""
    found = [
        d
        for d in yaml.safe_load_all((MANIFESTS / "ambient.yaml").read_text())
        if d and d.get("kind") == "MutatingWebhookConfiguration"
    ]
    assert len(found) == 1, found
    return found[0]


def test_the_installer_manifest_declares_the_webhook_like_istio() -> None:
    webhook = installed_webhook()
    assert webhook["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert webhook["metadata"]["name"] == "istio-sidecar-injector"
    handler = webhook["metadata"]["annotations"]["lab.ambient/handler"]
    module, _, name = handler.partition(":")
    assert (module, name) == ("mesh.sidecar.injection", "admit")
    assert webhook["metadata"]["annotations"]["lab.ambient/proxy-tag"] == "1.24.0"
    names = [w["name"] for w in webhook["webhooks"]]
    assert names == [
        "rev.namespace.sidecar-injector.istio.io",
        "rev.object.sidecar-injector.istio.io",
        "namespace.sidecar-injector.istio.io",
        "object.sidecar-injector.istio.io",
    ]
    for w in webhook["webhooks"]:
        assert w["clientConfig"]["service"] == {
            "name": "istiod",
            "namespace": "istio-system",
            "path": "/inject",
            "port": 443,
        }
        assert w["rules"] == [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}
        ]
        assert w["failurePolicy"] == "Fail"


@pytest.mark.parametrize("ns_labels, pod_labels, wanted", SELECTION_CASES)
def test_the_manifests_selectors_agree_with_injection_wanted(ns_labels, pod_labels, wanted) -> None:
    webhook = installed_webhook()
    p = pod(labels=pod_labels)
    called = any(
        selectors.from_label_selector(w.get("namespaceSelector") or {}).matches(ns_labels)
        and selectors.from_label_selector(w.get("objectSelector") or {}).matches(p["metadata"]["labels"])
        for w in webhook["webhooks"]
    )
    assert (called and injection.admit(p, namespace(**ns_labels), webhook) is not None) is wanted


def test_labds_admission_runs_the_installed_injector_once() -> None:
    from lab.apiserver import admission

    review = admission.Registry().review(pod(), ENABLED, [installed_webhook()])
    assert review.mutated_by == ["namespace.sidecar-injector.istio.io"]
    assert [c["name"] for c in review.pod["spec"]["containers"]] == ["httpbin", "istio-proxy"]
    with pytest.raises(admission.AdmissionDenied, match="proxy.istio.io/config"):
        admission.Registry().review(pod(annotations={"proxy.istio.io/config": "{"}), ENABLED, [installed_webhook()])
    assert admission.Registry().review(pod(), namespace(), [installed_webhook()]).mutated_by == []


# --- pilot-agent wait (the postStart hook) --------------------------------------------------------


def test_pilot_agent_wait_polls_until_ready_or_times_out() -> None:
    import http.server
    import threading

    from mesh.proxy import agent_cli

    answers = [503, 503, 200]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(answers.pop(0) if len(answers) > 1 else answers[0])
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/healthz/ready"
        assert agent_cli.main(["wait", "--timeout", "5", "--url", url]) == 0
        assert answers == [200]
        answers[:] = [503]
        assert agent_cli.main(["wait", "--timeout", "0.3", "--url", url]) == 1
    finally:
        server.shutdown()
        server.server_close()
    closed = socket_free_port()
    assert not agent_cli.wait(0.2, f"http://127.0.0.1:{closed}/healthz/ready")


def socket_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
