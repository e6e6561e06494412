"""`apply -f` checks of services, endpoints and config maps, with the API server's wording."""

import pytest

from lab.apiserver.validation import load
from tests.unit.validation_helpers import LABEL_RULE, LABEL_VALUE_RULE, one_line, refused, service_doc

PORT_RANGE = "must be between 1 and 65535, inclusive"
TARGET = "spec.ports[0].targetPort"

# --- services and endpoints ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, field, message",
    [
        ("{ports: [{port: 0}]}", "spec.ports[0].port", f"Invalid value: 0: {PORT_RANGE}"),
        ("{ports: [{port: 65536}]}", "spec.ports[0].port", f"Invalid value: 65536: {PORT_RANGE}"),
        ("{ports: [{targetPort: 80}]}", "spec.ports[0].port", "Required value"),
        ("{ports: [{port: 80, targetPort: 99999}]}", TARGET, f"Invalid value: 99999: {PORT_RANGE}"),
        (
            "{ports: [{port: 80, targetPort: http--web}]}",
            TARGET,
            'Invalid value: "http--web": must not contain consecutive hyphens',
        ),
        (
            "{ports: [{port: 80, targetPort: '8080'}]}",
            TARGET,
            'Invalid value: "8080": must contain at least one letter (a-z)',
        ),
        (
            "{ports: [{port: 80, protocol: tcp}]}",
            "spec.ports[0].protocol",
            'Unsupported value: "tcp": supported values: "TCP", "UDP", "SCTP"',
        ),
        ("{}", "spec.ports", "Required value"),
        ("{ports: [{port: 80, name: http}, {port: 81, name: http}]}", "spec.ports[1].name", 'Duplicate value: "http"'),
        ("{ports: [{port: 80, name: Http}]}", "spec.ports[0].name", f'Invalid value: "Http": {LABEL_RULE}'),
        (
            "{type: Headless, ports: [{port: 80}]}",
            "spec.type",
            'Unsupported value: "Headless": supported values: "ClusterIP", "NodePort", "LoadBalancer", "ExternalName"',
        ),
        (
            "{clusterIP: 10.96.0.300, ports: [{port: 80}]}",
            "spec.clusterIP",
            'Invalid value: "10.96.0.300": must be "None", empty or an IP address',
        ),
        (
            "{ports: [{port: 80, nodePort: 30080}]}",
            "spec.ports[0].nodePort",
            "Invalid value: 30080: may not be used when `type` is 'ClusterIP'",
        ),
        ("{type: ExternalName}", "spec.externalName", "Required value"),
        ("{ports: [{port: 80, targetport: 8080}]}", "spec.ports[0].targetport", "unknown field"),
        ("{ports: [{port: 80}], selector: {app: 'a b'}}", "spec.selector", f'Invalid value: "a b": {LABEL_VALUE_RULE}'),
    ],
)
def test_bad_services(spec, field, message):
    assert one_line(service_doc(spec)) == (f"error: test.yaml: document 1 (Service default/web): {field}: {message}")


def test_several_ports_need_names():
    error = refused(service_doc("{ports: [{port: 80}, {port: 81}]}"))
    assert error.lines() == [
        "error: test.yaml: document 1 (Service default/web): spec.ports[0].name: Required value",
        "error: test.yaml: document 1 (Service default/web): spec.ports[1].name: Required value",
    ]
    assert str(error) == (
        "error: test.yaml: document 1 (Service default/web): spec.ports[0].name: Required value (and 1 more problem)"
    )


@pytest.mark.parametrize(
    "spec",
    [
        "{clusterIP: None}",  # headless without ports
        "{clusterIP: None, ports: [{port: 5432, targetPort: postgres}]}",
        "{type: NodePort, ports: [{port: 80, nodePort: 30080, protocol: UDP}]}",
        "{type: LoadBalancer, ports: [{port: 443, name: https, appProtocol: https}]}",
        "{type: ExternalName, externalName: db.example.com}",
        "{clusterIP: 10.96.0.42, ports: [{port: 80}]}",
        "{clusterIP: 'fd00::42', ports: [{port: 80}]}",
    ],
)
def test_good_services(spec):
    assert len(load(service_doc(spec), "svc.yaml")) == 1


def test_endpoints_can_be_applied():
    text = """\
apiVersion: v1
kind: Endpoints
metadata: {name: external-db, namespace: apps}
subsets:
- addresses: [{ip: 192.0.2.10}]
  ports: [{port: 5432, name: db}]
"""
    assert load(text, "ep.yaml")[0]["subsets"][0]["ports"][0]["port"] == 5432
    bad = text.replace("192.0.2.10", "db.example.com")
    assert one_line(bad) == (
        'error: test.yaml: document 1 (Endpoints apps/external-db): '
        'subsets[0].addresses[0].ip: Invalid value: "db.example.com": '
        "must be a valid IP address"
    )


def test_configmap_values_must_be_strings():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {enabled: true}\n"
    assert one_line(text) == (
        "error: test.yaml: document 1 (ConfigMap default/c): "
        "data[enabled]: Invalid value: true: must be a string "
        "(quote numbers and booleans)"
    )
