"""`lab istioctl proxy-config`: istioctl's tables from an Envoy-admin-shaped config_dump of a
waypoint, and what it says for pods that run no proxy."""

import base64
import datetime as dt

import pytest
from cryptography import x509

from lab.cli import build_parser
from lab.cli.common import CliError
from mesh.identity.ca import RootCA, make_csr
from mesh.identity.spiffe import Identity
from mesh.istioctl import proxy_config
from mesh.istioctl.cli import cmd_istioctl
from mesh.istiod.proxyconfig import connect_terminate_listener, sidecar_resources

T = "type.googleapis.com/"
HCM = T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)
WAYPOINT = Identity.parse("spiffe://cluster.local/ns/ambient-apps/sa/waypoint")

# A waypoint's chain as istiod's CA signs it: a day's leaf, then the root.
CA = RootCA.generate(now=dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.timezone.utc))
LEAF, ROOT = CA.sign_csr(
    make_csr(WAYPOINT)[1],
    [WAYPOINT],
    ttl=dt.timedelta(days=1),
    now=dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.timezone.utc),
)
VIP_CLUSTER = "inbound-vip|8000|http|httpbin-ambient.ambient-apps.svc.cluster.local"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


DUMP = {
    "configs": [
        {
            "@type": T + "envoy.admin.v3.ListenersConfigDump",
            "dynamic_listeners": [
                {"name": "connect_terminate", "active_state": {"listener": connect_terminate_listener()}},
                {
                    "name": "main_internal",
                    "active_state": {
                        "listener": {
                            "name": "main_internal",
                            "internal_listener": {},
                            "filter_chains": [
                                {
                                    "name": VIP_CLUSTER,
                                    "filter_chain_match": {
                                        "prefix_ranges": [{"address_prefix": "10.96.0.4", "prefix_len": 32}],
                                        "destination_port": 8000,
                                        "application_protocols": ["http/1.1", "h2c"],
                                    },
                                    "filters": [
                                        {
                                            "name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": {"@type": HCM, "rds": {"route_config_name": VIP_CLUSTER}},
                                        }
                                    ],
                                },
                                {
                                    "name": VIP_CLUSTER.replace("|http|", "|tcp|"),
                                    "filter_chain_match": {
                                        "prefix_ranges": [{"address_prefix": "10.96.0.4", "prefix_len": 32}],
                                        "destination_port": 8000,
                                    },
                                    "filters": [
                                        {
                                            "name": "envoy.filters.network.tcp_proxy",
                                            "typed_config": {
                                                "@type": T + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                                "cluster": VIP_CLUSTER,
                                            },
                                        }
                                    ],
                                },
                            ],
                        }
                    },
                },
            ],
        },
        {
            "@type": T + "envoy.admin.v3.ClustersConfigDump",
            "dynamic_active_clusters": [
                {
                    "cluster": {
                        "name": VIP_CLUSTER,
                        "type": "EDS",
                        "load_assignment": {
                            "cluster_name": VIP_CLUSTER,
                            "endpoints": [
                                {
                                    "lb_endpoints": [
                                        {
                                            "endpoint": {
                                                "address": {
                                                    "socket_address": {"address": "10.244.1.2", "port_value": 80}
                                                }
                                            },
                                            "health_status": "HEALTHY",
                                        }
                                    ]
                                }
                            ],
                        },
                    }
                },
                {
                    "cluster": {
                        "name": "outbound|8000||httpbin-ambient.ambient-apps.svc.cluster.local",
                        "type": "EDS",
                        "metadata": {
                            "filter_metadata": {
                                "istio": {
                                    "config": "/apis/networking.istio.io/v1/namespaces/ambient-apps/destination-rule/httpbin"  # noqa: E501 (a path as Istio writes it)
                                }
                            }
                        },
                    }
                },
                {"cluster": {"name": "inbound-pod|ambient-apps/httpbin-1", "type": "EDS"}},
                {"cluster": {"name": "main_internal", "type": "STATIC"}},
            ],
        },
        {
            "@type": T + "envoy.admin.v3.RoutesConfigDump",
            "dynamic_route_configs": [
                {
                    "route_config": {
                        "name": VIP_CLUSTER,
                        "virtual_hosts": [
                            {
                                "name": VIP_CLUSTER,
                                "domains": ["*"],
                                "routes": [
                                    {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": VIP_CLUSTER}},
                                    {
                                        "match": {"path": "/ip"},
                                        "route": {"cluster": VIP_CLUSTER},
                                        "metadata": {
                                            "filter_metadata": {
                                                "istio": {
                                                    "config": "/apis/networking.istio.io/v1alpha3/namespaces/ambient-apps/virtual-service/vs"  # noqa: E501 (a path as Istio writes it)
                                                }
                                            }
                                        },
                                    },
                                ],
                            }
                        ],
                    }
                }
            ],
        },
        {
            "@type": T + "envoy.admin.v3.SecretsConfigDump",
            "dynamic_active_secrets": [
                {
                    "name": "default",
                    "secret": {
                        "name": "default",
                        "tls_certificate": {
                            "certificate_chain": {"inline_bytes": b64(LEAF + ROOT)},
                            "private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="},
                        },
                    },
                },
                {
                    "name": "ROOTCA",
                    "secret": {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_bytes": b64(ROOT)}}},
                },
            ],
        },
    ]
}


def rows(text: str) -> list[list[str]]:
    return [[c for c in line.split("  ") if c.strip()] for line in text.splitlines()]


def strip(table):
    return [[c.strip() for c in r] for r in table]


def test_listeners():
    out = strip(rows(proxy_config.format_proxy_listeners(DUMP)))
    assert out[0] == ["ADDRESSES", "PORT", "MATCH", "DESTINATION"]
    assert out[1] == ["0.0.0.0", "15008", "ALL", "Inline Route: main_internal"]
    assert out[2] == [
        "envoy://main_internal",
        "-",
        "Addr: 10.96.0.4/32; Port: 8000; App: http/1.1,h2c",
        f"Route: {VIP_CLUSTER}",
    ]
    assert out[3] == ["envoy://main_internal", "-", "Addr: 10.96.0.4/32; Port: 8000", f"Cluster: {VIP_CLUSTER}"]


def test_cluster_names_and_table():
    assert proxy_config.parse_cluster_name("outbound|8000||httpbin.ns.svc.cluster.local") == (
        "httpbin.ns.svc.cluster.local",
        "8000",
        "-",
        "outbound",
    )
    assert proxy_config.parse_cluster_name(VIP_CLUSTER) == (
        "httpbin-ambient.ambient-apps.svc.cluster.local",
        "8000",
        "http",
        "inbound-vip",
    )
    assert proxy_config.parse_cluster_name("BlackHoleCluster") == ("BlackHoleCluster", "-", "-", "-")
    out = strip(rows(proxy_config.format_proxy_clusters(DUMP)))
    assert out[0] == ["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"]
    assert ["ambient-apps/httpbin-1", "-", "-", "inbound-pod", "EDS", "-"] in out
    assert ["httpbin-ambient.ambient-apps.svc.cluster.local", "8000", "http", "inbound-vip", "EDS", "-"] in out
    assert [
        "httpbin-ambient.ambient-apps.svc.cluster.local",
        "8000",
        "-",
        "outbound",
        "EDS",
        "httpbin.ambient-apps",
    ] in out
    assert ["main_internal", "-", "-", "-", "STATIC", "-"] in out


def test_routes():
    out = strip(rows(proxy_config.format_proxy_routes(DUMP)))
    assert out[0] == ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
    assert out[1] == [VIP_CLUSTER, VIP_CLUSTER, "*", "/*", "-"]
    assert out[2] == [VIP_CLUSTER, VIP_CLUSTER, "*", "/ip", "vs.ambient-apps"]


def test_secrets_decode_the_pem():
    out = strip(rows(proxy_config.format_proxy_secrets(DUMP, NOW)))
    assert out[0] == ["RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"]
    leaf, root = (x509.load_pem_x509_certificate(pem.encode()) for pem in (LEAF, ROOT))
    assert out[1] == [
        "default",
        "Cert Chain",
        "ACTIVE",
        "true",
        format(leaf.serial_number, "x"),
        "2026-11-28T10:00:00Z",
        "2026-11-27T09:58:00Z",  # istiod backdates NotBefore by two minutes
    ]
    assert out[2][:5] == ["ROOTCA", "CA", "ACTIVE", "true", format(root.serial_number, "x")]
    later = strip(rows(proxy_config.format_proxy_secrets(DUMP, NOW + dt.timedelta(days=2))))
    assert later[1][3] == "false"


def test_all_and_camel_case_and_empty_dumps():
    text = proxy_config.format_proxy_all(DUMP, NOW)
    assert [line.split("  ")[0] for line in text.split("\n\n")] == [
        "SERVICE FQDN",
        "ADDRESSES",
        "NAME",
        "RESOURCE NAME",
    ]
    camel = {
        "configs": [
            {
                "@type": T + "envoy.admin.v3.ListenersConfigDump",
                "dynamicListeners": [
                    {
                        "activeState": {
                            "listener": {
                                "name": "x",
                                "address": {"socketAddress": {"address": "0.0.0.0", "portValue": 15008}},
                                "filterChains": [{"filters": []}],
                            }
                        }
                    }
                ],
            }
        ]
    }
    assert strip(rows(proxy_config.format_proxy_listeners(camel)))[1] == ["0.0.0.0", "15008", "ALL", "Non-HTTP/Non-TCP"]
    assert proxy_config.format_proxy_clusters({}).splitlines() == [
        "SERVICE FQDN   PORT   SUBSET   DIRECTION   TYPE   DESTINATION RULE"
    ]


class FakeLab:
    def __init__(self, *objects):
        self.objects = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}

    def call(self, op, kind=None, name=None, namespace=None, **kw):
        from lab.client import LabError

        assert op == "get"
        if (kind, namespace, name) not in self.objects:
            raise LabError("not found")
        return self.objects[(kind, namespace, name)]


def pod(name, ns, containers, annotations=None, labels=None):
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels or {},
            "annotations": {"lab.ambient/netns": f"al-t-pod-{ns}_{name}", **(annotations or {})},
        },
        "spec": {"nodeName": "worker1", "containers": [{"name": c} for c in containers]},
    }


def run(lab, argv):
    args = build_parser().parse_args(["istioctl", *argv])
    args.namespace_set = args.namespace is not None
    args.namespace = args.namespace or "default"
    return cmd_istioctl(args, lab)


def test_pods_without_a_proxy_are_explained():
    lab = FakeLab(
        pod("h", "ambient-apps", ["httpbin"], {"ambient.istio.io/redirection": "enabled"}),
        pod("l", "legacy-apps", ["httpbin"]),
        {"kind": "Namespace", "metadata": {"name": "ambient-apps", "labels": {"istio.io/dataplane-mode": "ambient"}}},
    )
    with pytest.raises(CliError, match="ztunnel on node worker1 captures its traffic.*ztunnel-config workloads"):
        run(lab, ["proxy-config", "listeners", "h", "-n", "ambient-apps"])
    with pytest.raises(CliError, match="not in the mesh"):
        run(lab, ["pc", "clusters", "l.legacy-apps"])
    with pytest.raises(CliError, match="not found"):
        run(lab, ["pc", "routes", "nope"])
    with pytest.raises(CliError, match="unknown proxy-config type"):
        run(lab, ["pc", "bootstrap", "h"])


def test_a_waypoint_pod_is_read_from_its_own_network_namespace(monkeypatch, capsys):
    wp = pod("waypoint-1", "ambient-apps", ["istio-proxy"], labels={"gateway.networking.k8s.io/gateway-name": "wp"})
    seen = []
    monkeypatch.setattr(proxy_config, "fetch_proxy_config_dump", lambda netns, what: seen.append(netns) or DUMP)
    assert run(FakeLab(wp), ["proxy-config", "routes", "waypoint-1", "-n", "ambient-apps"]) == 0
    assert seen == ["al-t-pod-ambient-apps_waypoint-1"]
    assert capsys.readouterr().out.startswith("NAME")
    run(FakeLab(wp), ["pc", "secret", "waypoint-1.ambient-apps", "-o", "json"])
    assert '"dynamic_active_secrets"' in capsys.readouterr().out


# ---- a sidecar's dump ---------------------------------------------------------------------------------


def _sidecar_dump() -> dict:
    """What a sidecar's admin port serves: istiod's sidecar resources in the config_dump shape."""

    def workload(name, ns, ip, app, sa):
        return {
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"serviceAccountName": sa, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"podIP": ip, "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }

    me = workload("sleep-6b8-p9q", "sidecar-apps", "10.244.2.5", "sleep", "sleep")
    httpbin = workload("httpbin-ambient-x", "ambient-apps", "10.244.1.2", "httpbin", "httpbin")
    svc = {
        "metadata": {"name": "httpbin-ambient", "namespace": "ambient-apps"},
        "spec": {
            "clusterIP": "10.96.0.4",
            "selector": {"app": "httpbin"},
            "ports": [{"name": "http", "port": 8000, "targetPort": 80}],
        },
    }
    res = sidecar_resources(
        me, [svc], [me, httpbin], [], [], mtls_mode="PERMISSIVE", jwks_for=lambda *a: None, hbone=lambda p: p is httpbin
    )
    return {
        "configs": [
            {
                "@type": T + "envoy.admin.v3.ListenersConfigDump",
                "dynamic_listeners": [{"name": n, "active_state": {"listener": x}} for n, x in res["Listener"].items()],
            },
            {
                "@type": T + "envoy.admin.v3.ClustersConfigDump",
                "dynamic_active_clusters": [{"cluster": c} for c in res["Cluster"].values()],
            },
            {
                "@type": T + "envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": [{"route_config": r} for r in res["RouteConfiguration"].values()],
            },
        ]
    }


def test_sidecar_listeners_virtual_inbound_and_outbound():
    table = strip(rows(proxy_config.format_proxy_listeners(_sidecar_dump())))
    assert table[1:] == [
        ["0.0.0.0", "15008", "ALL", "Inline Route: virtualInbound"],
        ["0.0.0.0", "15006", "Addr: 10.244.2.5/32; App: http/1.1,h2c", "Route: inbound|sidecar-apps/sleep-6b8-p9q"],
        ["0.0.0.0", "15006", "Addr: 10.244.2.5/32", "Cluster: inbound|sidecar-apps/sleep-6b8-p9q"],
        [
            "0.0.0.0",
            "15001",
            "Addr: 10.96.0.4/32; Port: 8000",
            "Cluster: outbound|8000||httpbin-ambient.ambient-apps.svc.cluster.local",
        ],
        ["0.0.0.0", "15001", "Addr: 10.244.1.2/32", "Cluster: outbound-pod|ambient-apps/httpbin-ambient-x"],
        ["0.0.0.0", "15001", "ALL", "PassthroughCluster"],  # the default chain: whatever no chain matched
    ]


def test_sidecar_clusters_and_routes():
    table = {r[0]: r[1:] for r in strip(rows(proxy_config.format_proxy_clusters(_sidecar_dump())))[1:]}
    assert table == {
        "PassthroughCluster": ["-", "-", "-", "ORIGINAL_DST", "-"],
        "ambient-apps/httpbin-ambient-x": ["-", "-", "outbound-pod", "EDS", "-"],
        "httpbin-ambient.ambient-apps.svc.cluster.local": ["8000", "-", "outbound", "EDS", "-"],
        "sidecar-apps/sleep-6b8-p9q": ["-", "-", "inbound", "EDS", "-"],
    }
    assert strip(rows(proxy_config.format_proxy_routes(_sidecar_dump())))[1] == [
        "inbound|sidecar-apps/sleep-6b8-p9q",
        "inbound|sidecar-apps/sleep-6b8-p9q",
        "*",
        "/*",
        "-",
    ]


def test_a_sidecar_pod_is_read_from_its_own_network_namespace(monkeypatch, capsys):
    app = pod(
        "sleep-6b8-p9q",
        "sidecar-apps",
        ["sleep", "istio-proxy"],
        annotations={"sidecar.istio.io/status": '{"containers":["istio-proxy"],"revision":"default"}'},
    )
    seen = []
    monkeypatch.setattr(
        proxy_config, "fetch_proxy_config_dump", lambda netns, what: seen.append(netns) or _sidecar_dump()
    )
    assert run(FakeLab(app), ["pc", "listeners", "sleep-6b8-p9q.sidecar-apps"]) == 0
    assert seen == ["al-t-pod-sidecar-apps_sleep-6b8-p9q"]
    assert "PassthroughCluster" in capsys.readouterr().out
