"""What the policy model tests share: AuthorizationPolicy, PeerAuthentication and
RequestAuthentication objects to validate and parse, built from just their spec, and the field
paths of a rule's first source, operation and condition."""


def authz(spec, version="v1", **metadata):
    return {
        "apiVersion": f"security.istio.io/{version}",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "ns", **metadata},
        "spec": spec,
    }


def peer(spec, name="pa", namespace="ns", created=None):
    metadata = {"name": name, "namespace": namespace}
    if created:
        metadata["creationTimestamp"] = created
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": metadata, "spec": spec}


def request_authn(spec):
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": "ra", "namespace": "ns"},
        "spec": spec,
    }


def with_source(**source):
    return authz({"rules": [{"from": [{"source": source}]}]})


def with_operation(**operation):
    return authz({"rules": [{"to": [{"operation": operation}]}]})


def with_when(**condition):
    return authz({"rules": [{"when": [condition]}]})


SOURCE = "spec.rules[0].from[0].source"
OPERATION = "spec.rules[0].to[0].operation"
WHEN = "spec.rules[0].when[0]"
