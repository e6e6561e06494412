"""A mutating admission handler for tests/e2e/test_lab_admission.py, imported by labd by name
(`tests.e2e.admission_handler:admit`; labd runs with the repository as its working directory).

It adds a `sidecar` container listening on 15021 and the label `injected: "true"`, and refuses
pods labelled `refuse: "yes"`.
"""

from __future__ import annotations


def admit(pod: dict, namespace: dict, webhook: dict) -> dict | None:
    labels = pod["metadata"].setdefault("labels", {})
    if labels.get("refuse") == "yes":
        raise ValueError(f'pod {pod["metadata"]["name"]} asked to be refused')
    if any(c["name"] == "sidecar" for c in pod["spec"]["containers"]):
        return None
    pod["spec"]["containers"].append(
        {
            "name": "sidecar",
            "image": "ambient-lab/echo",
            "args": ["--port", "15021"],
            "ports": [{"containerPort": 15021, "name": "health"}],
        }
    )
    labels["injected"] = "true"
    return pod
