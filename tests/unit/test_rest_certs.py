"""The lab's CA and the kubeconfig that carries it."""

from __future__ import annotations

import os
from typing import Any

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.apiserver.rest import certs
from lab.apiserver.rest.server import parse_target


def test_generate_once_then_reuse(tmp_path: Any) -> None:
    d = str(tmp_path / "pki")
    first = certs.ensure(d, "demo")
    assert certs.ensure(d, "demo") == first  # kept across labd restarts
    for name in ("ca.key", "apiserver.key", "admin.key"):
        assert os.stat(os.path.join(d, name)).st_mode & 0o777 == 0o600
    server = x509.load_pem_x509_certificate(first.server_cert)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    client = x509.load_pem_x509_certificate(first.client_cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == certs.ADMIN_USER
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == certs.ADMIN_GROUP
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    os.remove(os.path.join(d, "admin.crt"))
    assert certs.ensure(d, "demo").ca_cert != first.ca_cert  # incomplete: made anew


def test_kubeconfig_names_cluster_user_and_context(tmp_path: Any) -> None:
    pki = certs.generate(str(tmp_path), "demo")
    doc = yaml.safe_load(certs.kubeconfig(pki, "demo", 4321))
    assert doc["current-context"] == "demo"
    assert doc["contexts"] == [{"name": "demo", "context": {"cluster": "lab-demo", "user": "lab-demo-admin"}}]
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:4321"
    assert set(doc["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}
    path = str(tmp_path / "kubeconfig")
    certs.write_kubeconfig(path, "x")
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_peer_identity() -> None:
    cert = {"subject": ((("organizationName", "system:masters"),), (("commonName", "lab-admin"),))}
    assert certs.peer_identity(cert) == ("lab-admin", ("system:masters",))
    assert certs.peer_identity({}) is None and certs.peer_identity(None) is None


def test_parse_target_keeps_repeated_and_blank_parameters() -> None:
    path, query = parse_target("/api/v1/namespaces/a/pods/p%2Dq/exec?command=sh&command=-c&command=echo%20hi&tty=")
    assert path == "/api/v1/namespaces/a/pods/p-q/exec"
    assert query == {"command": ["sh", "-c", "echo hi"], "tty": [""]}
