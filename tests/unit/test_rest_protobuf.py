"""Kubernetes protobuf bodies (kubectl >= 1.32 `create`): decoded to the dict kubectl's JSON would be.

The bytes are built by a tiny encoder below that writes what Go's generated marshallers write:
every non-pointer field, zero or not, in field order; pointers only when set.
"""

import pytest

from lab.apiserver.rest.protobuf import MAGIC, ProtobufError, decode, fields, unwrap
from tests.conftest import NOT_READY_TOLERATION

# ---- a tiny test-side encoder ---------------------------------------------------------------------


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def v(number: int, n: int) -> bytes:
    """A varint field (ints, bools; negative ints as 64-bit two's complement, as Go writes int32s)."""
    return tag(number, 0) + varint(n)


def b(number: int, data: bytes | str) -> bytes:
    """A length-delimited field: string, bytes or an embedded message."""
    data = data.encode() if isinstance(data, str) else data
    return tag(number, 2) + varint(len(data)) + data


def entries(number: int, mapping: dict) -> bytes:
    """A map field: one {1: key, 2: value} entry per key, sorted as Go writes them."""
    return b"".join(b(number, b(1, k) + b(2, mapping[k])) for k in sorted(mapping))


def meta(name="", namespace="", labels=None, annotations=None, extra=b"") -> bytes:
    """ObjectMeta as gogo writes it: all strings, generation and an empty (zero) creationTimestamp."""
    return (
        b(1, name)
        + b(2, "")
        + b(3, namespace)
        + b(4, "")
        + b(5, "")
        + b(6, "")
        + v(7, 0)
        + b(8, b"")
        + entries(11, labels or {})
        + entries(12, annotations or {})
        + extra
    )


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return MAGIC + b(1, b(1, api_version) + b(2, kind)) + b(2, raw) + b(3, "") + b(4, "")


# ---- kubectl create namespace ---------------------------------------------------------------------

# `kubectl create namespace ambient-apps` (1.37), derived byte by byte from the .proto definitions:
CREATE_NAMESPACE = bytes.fromhex(
    "6b387300"  # magic k8s\0
    "0a0f"
    "0a027631"
    "12094e616d657370616365"  # Unknown.typeMeta {apiVersion: v1, kind: Namespace}
    "1224"  # Unknown.raw, 36 bytes: the Namespace
    "0a1c"
    "0a0c616d6269656e742d61707073"  #   metadata {name: ambient-apps,
    "1200"
    "1a00"
    "2200"
    "2a00"
    "3200"  #     generateName, namespace, selfLink, uid, resourceVersion: "",
    "3800"
    "4200"  #     generation: 0, creationTimestamp: zero Time}
    "1200"  #   spec {} (no finalizers)
    "1a02"
    "0a00"  #   status {phase: ""}
    "1a00"
    "2200"  # Unknown.contentEncoding, contentType: ""
)


def test_kubectl_create_namespace_decodes_to_what_its_json_would_say():
    assert decode(CREATE_NAMESPACE) == {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "ambient-apps"},
        "spec": {},
        "status": {},
    }
    # the hand-derived bytes are what the encoder above (gogo's rules) writes
    assert CREATE_NAMESPACE == envelope("v1", "Namespace", b(1, meta("ambient-apps")) + b(2, b"") + b(3, b(1, "")))
    assert list(decode(CREATE_NAMESPACE)) == ["kind", "apiVersion", "metadata", "spec", "status"]


def test_the_envelope_is_read_as_is():
    env = unwrap(CREATE_NAMESPACE)
    assert (env.api_version, env.kind, env.content_encoding, env.content_type) == ("v1", "Namespace", "", "")
    assert env.raw == CREATE_NAMESPACE[-40:-4]


def test_namespace_finalizers_labels_annotations_owners():
    owner = b(5, "v1") + b(1, "ConfigMap") + b(3, "owner") + b(4, "uid-1") + v(6, 1)
    raw = (
        b(
            1,
            meta(
                "ns1",
                labels={"istio.io/dataplane-mode": "ambient"},
                annotations={"note": "x"},
                extra=b(13, owner) + b(14, "example.com/hold"),
            ),
        )
        + b(2, b(1, "kubernetes"))
        + b(3, b(1, ""))
    )
    assert decode(envelope("v1", "Namespace", raw)) == {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": "ns1",
            "labels": {"istio.io/dataplane-mode": "ambient"},
            "annotations": {"note": "x"},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "uid-1", "controller": True}
            ],
            "finalizers": ["example.com/hold"],
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {},
    }


def test_times_are_rfc3339_in_whole_seconds():
    stamp = b(8, v(1, 1700000000) + v(2, 123456789))
    raw = b(1, b(1, "n") + v(7, 3) + stamp + b(9, v(1, 0) + v(2, 0)) + v(10, 30))
    assert decode(envelope("v1", "Namespace", raw))["metadata"] == {
        "name": "n",
        "generation": 3,
        "creationTimestamp": "2023-11-14T22:13:20Z",
        "deletionTimestamp": "1970-01-01T00:00:00Z",
        "deletionGracePeriodSeconds": 30,
    }


# ---- the other kinds kubectl create sends ---------------------------------------------------------


def test_service_account():
    raw = b(1, meta("reviews", "ambient-apps"))
    assert decode(envelope("v1", "ServiceAccount", raw)) == {
        "kind": "ServiceAccount",
        "apiVersion": "v1",
        "metadata": {"name": "reviews", "namespace": "ambient-apps"},
    }
    raw += b(3, b(1, "regcred")) + v(4, 0)
    assert decode(envelope("v1", "ServiceAccount", raw))["imagePullSecrets"] == [{"name": "regcred"}]
    assert decode(envelope("v1", "ServiceAccount", raw))["automountServiceAccountToken"] is False  # a pointer


def test_config_map_data_and_binary_data():
    raw = b(1, meta("cfg")) + entries(2, {"mode": "ambient", "empty": ""}) + entries(3, {"blob": b"\x00\xff"}) + v(4, 0)
    assert decode(envelope("v1", "ConfigMap", raw)) == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cfg"},
        "immutable": False,
        "data": {"empty": "", "mode": "ambient"},
        "binaryData": {"blob": "AP8="},
    }


def test_secret_generic_from_literal():
    # kubectl create secret generic creds --from-literal=user=admin --from-literal=pass=s3cr=t
    raw = b(1, meta("creds", "ambient-apps")) + entries(2, {"user": b"admin", "pass": b"s3cr=t"}) + b(3, "Opaque")
    assert decode(envelope("v1", "Secret", raw)) == {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "creds", "namespace": "ambient-apps"},
        "data": {"pass": "czNjcj10", "user": "YWRtaW4="},
        "type": "Opaque",
    }
    nil_value = b(2, b(1, "empty"))  # Go writes no value for a nil []byte: only the key
    assert decode(envelope("v1", "Secret", b(1, meta("e")) + nil_value))["data"] == {"empty": ""}
    raw = b(1, meta("s")) + entries(4, {"k": "v"}) + b(3, "") + v(5, 1)
    assert decode(envelope("v1", "Secret", raw)) == {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "s"},
        "immutable": True,
        "stringData": {"k": "v"},
    }


def container(name, image, extra=b"") -> bytes:
    """A Container with gogo's zero fields (workingDir, resources, termination*, pull policy, stdin/tty)."""
    return (
        b(1, name)
        + b(2, image)
        + b(5, "")
        + extra
        + b(8, b"")
        + b(13, "")
        + b(14, "")
        + v(16, 0)
        + v(17, 0)
        + v(18, 0)
        + b(20, "")
    )


def pod_spec(*containers: bytes, extra=b"") -> bytes:
    """A PodSpec with gogo's zero strings and bools (restartPolicy, dnsPolicy, hostNetwork...)."""
    return (
        b"".join(b(2, c) for c in containers)
        + b(3, "")
        + b(6, "")
        + b(8, "")
        + b(9, "")
        + b(10, "")
        + v(11, 0)
        + v(12, 0)
        + v(13, 0)
        + b(16, "")
        + b(17, "")
        + b(19, "")
        + b(24, "")
        + extra
    )


def test_kubectl_create_deployment():
    # kubectl create deployment httpbin -n ambient-apps --image=docker.io/kennethreitz/httpbin --port=80
    #   --replicas=2 -- gunicorn -b 0.0.0.0:80 httpbin:app
    labels = {"app": "httpbin"}
    port = b(1, "") + v(2, 0) + v(3, 80) + b(4, "") + b(5, "")
    command = b"".join(b(3, word) for word in ["gunicorn", "-b", "0.0.0.0:80", "httpbin:app"])
    main = container("httpbin", "docker.io/kennethreitz/httpbin", command + b(6, port))
    spec = (
        v(1, 2)
        + b(2, entries(1, labels))
        + b(3, b(1, meta(labels=labels)) + b(2, pod_spec(main)))
        + b(4, b(1, ""))
        + v(5, 0)
        + v(7, 0)
    )
    status = v(1, 0) + v(2, 0) + v(3, 0) + v(4, 0) + v(5, 0) + v(7, 0)
    raw = b(1, meta("httpbin", "ambient-apps", labels)) + b(2, spec) + b(3, status)
    assert decode(envelope("apps/v1", "Deployment", raw)) == {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "httpbin", "namespace": "ambient-apps", "labels": {"app": "httpbin"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "httpbin"}},
            "template": {
                "metadata": {"labels": {"app": "httpbin"}},
                "spec": {
                    "containers": [
                        {
                            "name": "httpbin",
                            "image": "docker.io/kennethreitz/httpbin",
                            "command": ["gunicorn", "-b", "0.0.0.0:80", "httpbin:app"],
                            "ports": [{"containerPort": 80}],
                            "resources": {},
                        }
                    ]
                },
            },
            "strategy": {},
        },
        "status": {},
    }


def test_deployment_with_probes_env_resources_and_rolling_update():
    http_get = b(1, "/status") + b(2, v(1, 1) + v(2, 0) + b(3, "http"))  # port: IntOrString "http"
    probe = b(1, b(2, http_get)) + v(2, 0) + v(4, 5)  # handler is inline in JSON
    exec_probe = b(1, b(1, b(1, "true"))) + v(6, 3)
    env = (
        b(7, b(1, "MODE") + b(2, "ambient"))
        + b(7, b(1, "POD_IP") + b(2, "") + b(3, b(1, b(1, "v1") + b(2, "status.podIP"))))
        + b(7, b(1, "TOKEN") + b(2, "") + b(3, b(4, b(1, b(1, "creds")) + b(2, "token") + v(3, 1))))
    )
    resources = b(8, entries(1, {"cpu": b(1, "500m"), "memory": b(1, "128Mi")}) + entries(2, {"cpu": b""}))
    main = b(1, "app") + b(2, "img") + env + resources + b(11, probe) + b(10, exec_probe)
    main += b(9, b(1, "data") + v(2, 1) + b(3, "/data"))
    toleration = b(1, "node.kubernetes.io/not-ready") + b(2, "Exists") + b(3, "") + b(4, "NoExecute") + v(5, 300)
    spec_extra = v(4, 30) + v(25, -5) + b(22, toleration) + b(7, b(1, "disk") + b(2, "ssd"))
    rolling = b(1, v(1, 0) + v(2, 0) + b(3, "")) + b(2, v(1, 1) + v(2, 0) + b(3, "25%"))
    spec = (
        v(1, 0)
        + b(3, b(1, meta()) + b(2, pod_spec(main, extra=spec_extra)))
        + b(4, b(1, "RollingUpdate") + b(2, rolling))
    )
    got = decode(envelope("apps/v1", "Deployment", b(1, meta("d")) + b(2, spec)))
    assert got["spec"]["replicas"] == 0  # a pointer: zero is kept
    assert got["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
    }
    pod = got["spec"]["template"]
    assert pod["metadata"] == {}
    assert {k: v_ for k, v_ in pod["spec"].items() if k != "containers"} == {
        "terminationGracePeriodSeconds": 30,
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [NOT_READY_TOLERATION],
        "priority": -5,
    }
    assert pod["spec"]["containers"] == [
        {
            "name": "app",
            "image": "img",
            "env": [
                {"name": "MODE", "value": "ambient"},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token", "optional": True}}},
            ],
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "0"}},
            "volumeMounts": [{"name": "data", "readOnly": True, "mountPath": "/data"}],
            "livenessProbe": {"exec": {"command": ["true"]}, "failureThreshold": 3},
            "readinessProbe": {"httpGet": {"path": "/status", "port": "http"}, "periodSeconds": 5},
        }
    ]


def test_unknown_fields_of_every_wire_type_are_skipped():
    unknown = v(99, 7) + tag(98, 5) + b"\x01\x02\x03\x04" + tag(97, 1) + bytes(8) + b(96, b(1, "nested"))
    raw = b(1, meta("n", extra=unknown)) + unknown + b(2, b"") + b(3, b"")
    assert decode(envelope("v1", "Namespace", raw + b(4, "later"))) == {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "n"},
        "spec": {},
        "status": {},
    }
    assert list(fields(unknown)) == [(99, 0, 7), (98, 5, 0x04030201), (97, 1, 0), (96, 2, b(1, "nested"))]


def test_the_url_fills_in_a_missing_type():
    body = MAGIC + b(2, b(1, meta("n")))
    assert decode(body, api_version="v1", kind="Namespace")["metadata"] == {"name": "n"}
    with pytest.raises(ProtobufError, match="no kind or apiVersion"):
        decode(body)


# ---- malformed and unsupported --------------------------------------------------------------------


def failure(body: bytes) -> str:
    with pytest.raises(ProtobufError) as info:
        decode(body)
    return str(info.value)


def namespace_with_meta(meta_bytes: bytes) -> bytes:
    return envelope("v1", "Namespace", b(1, meta_bytes))


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty body"),
        (b'{"kind":"Namespace"}', "does not start with the magic"),
        (MAGIC, "empty message after the magic"),
        (MAGIC + b"\x0a", "truncated varint"),
        (MAGIC + b"\x0a\x05ab", "length 5 runs past the end (2 bytes left)"),
        (MAGIC + b"\x08" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
        (MAGIC + b"\x0b", "groups are not used"),
        (MAGIC + b"\x0f", "invalid wire type 7"),
        (MAGIC + b"\x02\x00", "invalid field number 0"),
        (MAGIC + v(1, 5), "Unknown.typeMeta: expected length-delimited (wire type 2), got varint"),
        (namespace_with_meta(v(1, 5)), "Namespace.metadata.name: expected length-delimited"),
        (namespace_with_meta(b(7, "x")), "Namespace.metadata.generation: expected varint"),
        (namespace_with_meta(b(1, b"\xff\xfe")), "Namespace.metadata.name: string is not valid UTF-8"),
        (namespace_with_meta(b(11, b(1, b"\xc3"))), "Namespace.metadata.labels key: string is not valid UTF-8"),
        (namespace_with_meta(b(8, v(1, 10**15))), "Namespace.metadata.creationTimestamp: time out of range"),
        (envelope("v1", "Service", b""), "not supported for v1, Kind=Service"),
        (envelope("batch/v1", "Job", b""), "send JSON"),
        (MAGIC + b(1, b(1, "v1") + b(2, "Namespace")) + b(3, "gzip"), "unsupported contentEncoding 'gzip'"),
    ],
)
def test_malformed_bodies_are_refused_with_a_clear_message(body, message):
    assert message in failure(body)


def test_bad_nested_values():
    ios = b(3, b(1, meta()) + b(2, pod_spec(b(1, "c") + b(11, b(1, b(3, b(1, v(1, 2))))))))
    assert (
        "Deployment.spec.template.spec.containers[0].readinessProbe.handler.tcpSocket.port: IntOrString type"
        in failure(envelope("apps/v1", "Deployment", b(2, ios)))
    )
    quantity = b(3, b(2, pod_spec(b(1, "c") + b(8, entries(1, {"cpu": b(1, "")})))))
    assert "empty quantity" in failure(envelope("apps/v1", "Deployment", b(2, quantity)))
    truncated_inner = b(1, b"\x0a\x09short")  # metadata whose name claims 9 bytes but has 5
    assert "Namespace.metadata: field 1: length 9 runs past the end" in failure(
        envelope("v1", "Namespace", truncated_inner)
    )


def test_protobuf_error_is_a_value_error():
    assert issubclass(ProtobufError, ValueError)
