"""Who may ask the lab API what: root anything, other users only the public mesh root."""

from lab.apiserver.endpoint import allowed_unprivileged


def test_unprivileged_callers_get_only_the_mesh_root():
    assert allowed_unprivileged(
        {"op": "get", "kind": "ConfigMap", "namespace": "istio-system", "name": "istio-ca-root-cert"}
    )
    assert allowed_unprivileged({"op": "ping"})
    assert not allowed_unprivileged(
        {"op": "get", "kind": "Secret", "namespace": "istio-system", "name": "istio-ca-secret"}
    )
    assert not allowed_unprivileged({"op": "apply", "manifests": "..."})
    assert not allowed_unprivileged({"op": "exec", "namespace": "default", "pod": "x"})
    assert not allowed_unprivileged(
        {"op": "get", "kind": "ConfigMap", "namespace": "istio-system", "name": "istio-ca-root-cert", "extra": 1}
    )
