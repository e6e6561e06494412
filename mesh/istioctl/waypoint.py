"""`istioctl waypoint`: list, status, generate, apply and delete waypoint Gateways."""

from __future__ import annotations

from collections.abc import Mapping

from mesh.contract import HBONE_PORT, REVISION_LABEL, USE_WAYPOINT_LABEL, WAYPOINT_FOR_LABEL
from mesh.istioctl.common import IstioctlError, table

# Which Gateways are waypoints and whom they serve is istiod's decision (mesh.istiod.waypoints);
# these helpers only present it.
WAYPOINT_CLASS = "istio-waypoint"
TRAFFIC_TYPES = ("service", "workload", "all", "none")
NAMESPACE_TRAFFIC = "namespace"  # an unlabelled waypoint in the article's implicit model
WAYPOINT_TYPE_HELP = (
    f"TRAFFIC TYPE is the Gateway's {WAYPOINT_FOR_LABEL} label. Without it: `namespace` when "
    f"nothing in the waypoint's namespace carries {USE_WAYPOINT_LABEL} (the article's model: "
    f"the waypoint serves every pod and Service of its namespace), else `service` (Istio's "
    f"default)"
)


def is_waypoint(gateway: dict) -> bool:
    """A Gateway of class istio-waypoint or istio with an HBONE listener on 15008."""
    from mesh.istiod.waypoints import is_waypoint as decide

    return decide(gateway)


def waypoint_traffic_type(gateway: dict, implicit_namespace: bool | None = None) -> str:
    """The label's value; unlabelled: `namespace` in an implicit namespace, else `service`. Without
    knowing the namespace (`implicit_namespace` None), a class `istio` Gateway counts as implicit."""
    label = ((gateway.get("metadata") or {}).get("labels") or {}).get(WAYPOINT_FOR_LABEL)
    if label:
        return label
    if implicit_namespace is None:
        implicit_namespace = (gateway.get("spec") or {}).get("gatewayClassName") != WAYPOINT_CLASS
    return NAMESPACE_TRAFFIC if implicit_namespace else "service"


def implicit_namespaces(namespaces: list[dict], labelled_objects: list[dict]) -> set[str]:
    """The namespaces where nothing (the namespace, a Service, a Pod) carries istio.io/use-waypoint."""
    names = {name for name in ((n.get("metadata") or {}).get("name") for n in namespaces) if name is not None}
    for obj in [*namespaces, *labelled_objects]:
        md = obj.get("metadata") or {}
        if USE_WAYPOINT_LABEL in (md.get("labels") or {}):
            names.discard(md.get("name") if obj.get("kind") == "Namespace" else md.get("namespace", "default"))
    return names


def gateway_condition(gateway: dict, ctype: str) -> dict | None:
    for c in (gateway.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def format_waypoint_list(gateways: list[dict], all_namespaces: bool = False, implicit: set[str] | None = None) -> str:
    """`waypoint list`: NAME REVISION TRAFFIC TYPE PROGRAMMED (NAMESPACE first with -A);
    `implicit`: the namespaces of the article's model (see `waypoint_traffic_type`)."""
    waypoints = sorted(
        (g for g in gateways if is_waypoint(g)),
        key=lambda g: (g["metadata"].get("namespace", ""), g["metadata"]["name"]),
    )
    if not waypoints:
        return "No waypoints found."
    head = ["NAME", "REVISION", "TRAFFIC TYPE", "PROGRAMMED"]
    rows = [(["NAMESPACE"] if all_namespaces else []) + head]
    for g in waypoints:
        md = g["metadata"]
        revision = (md.get("labels") or {}).get(REVISION_LABEL) or "default"
        programmed = (gateway_condition(g, "Programmed") or {}).get("status") or "Unknown"
        rows.append(
            ([md.get("namespace", "")] if all_namespaces else [])
            + [
                md["name"],
                revision,
                waypoint_traffic_type(g, None if implicit is None else md.get("namespace", "default") in implicit),
                programmed,
            ]
        )
    return table(rows)


def format_waypoint_status(gateways: list[dict], all_namespaces: bool = False) -> str:
    """`waypoint status`: one row per status condition of each waypoint Gateway."""
    waypoints = sorted(
        (g for g in gateways if is_waypoint(g)),
        key=lambda g: (g["metadata"].get("namespace", ""), g["metadata"]["name"]),
    )
    if not waypoints:
        return "No waypoints found."
    rows = [(["NAMESPACE"] if all_namespaces else []) + ["NAME", "STATUS", "TYPE", "REASON", "MESSAGE"]]
    for g in waypoints:
        md = g["metadata"]
        lead = [md.get("namespace", "")] if all_namespaces else []
        conditions = (g.get("status") or {}).get("conditions") or []
        if not conditions:
            rows.append(lead + [md["name"], "Unknown", "Programmed", "Pending", "istiod has not reported on it yet"])
        for c in conditions:
            rows.append(
                lead
                + [
                    md["name"],
                    str(c.get("status", "")),
                    c.get("type", ""),
                    c.get("reason", ""),
                    " ".join(str(c.get("message", "")).split()),
                ]
            )
    return table(rows)


def waypoint_gateway(name: str = "waypoint", namespace: str = "default", traffic_type: str | None = None) -> dict:
    """The Gateway `waypoint generate/apply` makes."""
    if traffic_type is not None and traffic_type not in TRAFFIC_TYPES:
        raise IstioctlError(f'Error: invalid traffic type "{traffic_type}"; one of {", ".join(TRAFFIC_TYPES)}')
    metadata: dict = {"name": name, "namespace": namespace}
    if traffic_type:
        metadata["labels"] = {WAYPOINT_FOR_LABEL: traffic_type}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": metadata,
        "spec": {
            "gatewayClassName": WAYPOINT_CLASS,
            "listeners": [{"name": "mesh", "port": HBONE_PORT, "protocol": "HBONE"}],
        },
    }


def waypoint_yaml(gateway: dict) -> str:
    import yaml

    return yaml.safe_dump(gateway, sort_keys=False, default_flow_style=False)


def deployment_ready(deployment: Mapping | None) -> bool:
    if not deployment:
        return False
    want = (deployment.get("spec") or {}).get("replicas", 1)
    return want > 0 and (deployment.get("status") or {}).get("readyReplicas", 0) >= want


def waypoint_ready(gateway: dict, deployment: Mapping | None) -> tuple[bool, str]:
    """Whether a waypoint is ready (Programmed True and its Deployment ready), and why not."""
    programmed = gateway_condition(gateway, "Programmed")
    if not programmed or programmed.get("status") != "True":
        why = (programmed or {}).get("message") or "istiod has not programmed it yet"
        return False, f"not programmed: {why}"
    if deployment is None:
        return False, f"no Deployment {gateway['metadata']['name']}"
    if not deployment_ready(deployment):
        st = deployment.get("status") or {}
        return False, (
            f"Deployment {deployment['metadata']['name']} has {st.get('readyReplicas', 0)}/"
            f"{(deployment.get('spec') or {}).get('replicas', 1)} ready"
        )
    return True, "ready"
