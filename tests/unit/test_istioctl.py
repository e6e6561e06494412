"""`lab istioctl ztunnel-config` tables: istioctl's columns from a ztunnel config_dump."""

from mesh.istioctl import ztunnel_config

DUMP = {
    "workloads": [
        {
            "uid": "Kubernetes//Pod/ambient-apps/sleep-1",
            "name": "sleep-1",
            "namespace": "ambient-apps",
            "addresses": ["10.244.2.2"],
            "node": "worker2",
            "protocol": "HBONE",
            "waypoint": None,
        },
        {
            "uid": "Kubernetes//Pod/kube-system/coredns-1",
            "name": "coredns-1",
            "namespace": "kube-system",
            "addresses": ["10.244.0.2"],
            "node": "control-plane",
            "protocol": "TCP",
        },
    ],
    "services": [
        {
            "name": "httpbin",
            "namespace": "ambient-apps",
            "addresses": ["10.96.0.12"],
            "endpoints": {"a": {"status": "Healthy"}, "b": {"status": "Unhealthy"}},
        }
    ],
    "policies": [
        {"name": "require-sleep-identity", "namespace": "ambient-apps", "scope": "WORKLOAD_SELECTOR", "action": "ALLOW"}
    ],
    "certificates": [
        {
            "identity": "spiffe://cluster.local/ns/ambient-apps/sa/sleep",
            "state": "Available",
            "certChain": [
                {"serialHex": "ab12", "validFrom": "2026-11-27T10:00:00Z", "expirationTime": "2026-11-28T10:02:00Z"}
            ],
            "rootCerts": [
                {"serialHex": "01", "validFrom": "2026-11-27T10:00:00Z", "expirationTime": "2036-11-25T10:00:00Z"}
            ],
        }
    ],
    "connections": {
        "ambient-apps/sleep-1": {
            "outbound": [
                {
                    "src": "10.244.2.2:40000",
                    "originalDst": "10.96.0.12:8000",
                    "actualDst": "10.244.1.2:15008",
                    "protocol": "HBONE",
                }
            ],
            "inbound": [],
        }
    },
}


def test_workloads_columns_and_filter():
    out = ztunnel_config.format_workloads(DUMP).splitlines()
    assert out[0].split() == ["NAMESPACE", "POD", "NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"]
    assert out[1].split() == ["ambient-apps", "sleep-1", "10.244.2.2", "worker2", "None", "HBONE"]
    assert out[2].split()[-1] == "TCP"
    assert len(ztunnel_config.format_workloads(DUMP, "kube-system").splitlines()) == 2


def test_services_count_healthy_endpoints():
    out = ztunnel_config.format_services(DUMP).splitlines()
    assert out[1].split() == ["ambient-apps", "httpbin", "10.96.0.12", "None", "1/2"]


def test_policies_and_certificates():
    assert ztunnel_config.format_policies(DUMP).splitlines()[1].split() == [
        "ambient-apps",
        "require-sleep-identity",
        "Allow",
        "WorkloadSelector",
    ]
    certs = ztunnel_config.format_certificates(DUMP).splitlines()
    assert certs[1].split() == [
        "spiffe://cluster.local/ns/ambient-apps/sa/sleep",
        "Leaf",
        "Available",
        "true",
        "ab12",
        "2026-11-28T10:02:00Z",
        "2026-11-27T10:00:00Z",
    ]
    assert certs[2].split()[1] == "Root"


def test_connections():
    row = ztunnel_config.format_connections(DUMP).splitlines()[1].split()
    assert row == [
        "ambient-apps/sleep-1",
        "Outbound",
        "10.244.2.2:40000",
        "10.244.1.2:15008",
        "10.96.0.12:8000",
        "HBONE",
    ]
