"""`lab istioctl waypoint ...` and the WAYPOINT column of `ztunnel-config`: tables from Gateway
objects, the generated Gateway, and apply/delete against a fake lab API."""

import json

import pytest
import yaml

from lab.cli import build_parser
from lab.cli.common import CliError
from lab.client import LabError
from mesh.istioctl import common, waypoint, ztunnel_config
from mesh.istioctl.cli import cmd_istioctl


def gateway(name, ns="ambient-apps", cls="istio-waypoint", label=None, conditions=None, listener=True):
    gw = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns, "labels": {"istio.io/waypoint-for": label} if label else {}},
        "spec": {
            "gatewayClassName": cls,
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]
            if listener
            else [{"name": "http", "port": 80, "protocol": "HTTP"}],
        },
    }
    if conditions is not None:
        gw["status"] = {"conditions": conditions}
    return gw


PROGRAMMED = [
    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"},
    {
        "type": "Programmed",
        "status": "True",
        "reason": "Programmed",
        "message": "Resource programmed, assigned to service(s) waypoint.ambient-apps.svc.cluster.local:15008",
    },
]


def test_list_columns_traffic_types_and_all_namespaces():
    gws = [
        gateway("waypoint", conditions=PROGRAMMED),
        gateway("wl", label="workload"),
        gateway("httpbin-ambient-waypoint", cls="istio"),
        gateway("ingress", listener=False),
    ]
    out = waypoint.format_waypoint_list(gws).splitlines()
    assert out[0].split("  ")[0:1] == ["NAME"] and "TRAFFIC TYPE" in out[0] and out[0].endswith("PROGRAMMED")
    rows = [line.split() for line in out[1:]]
    assert rows == [
        ["httpbin-ambient-waypoint", "default", "namespace", "Unknown"],
        ["waypoint", "default", "service", "True"],
        ["wl", "default", "workload", "Unknown"],
    ]
    wide = waypoint.format_waypoint_list(gws, all_namespaces=True).splitlines()
    assert wide[0].startswith("NAMESPACE") and wide[1].split()[0] == "ambient-apps"
    assert waypoint.format_waypoint_list([gateway("ingress", listener=False)]) == "No waypoints found."


def test_unlabelled_waypoints_follow_the_implicit_namespaces():
    gws = [gateway("waypoint"), gateway("old", cls="istio", ns="labelled")]
    rows = [r.split() for r in waypoint.format_waypoint_list(gws, True, implicit={"ambient-apps"}).splitlines()[1:]]
    assert rows == [
        ["ambient-apps", "waypoint", "default", "namespace", "Unknown"],
        ["labelled", "old", "default", "service", "Unknown"],
    ]
    namespaces = [
        {"kind": "Namespace", "metadata": {"name": "a"}},
        {"kind": "Namespace", "metadata": {"name": "b", "labels": {"istio.io/use-waypoint": "w"}}},
        {"kind": "Namespace", "metadata": {"name": "c"}},
    ]
    svc = {"kind": "Service", "metadata": {"name": "s", "namespace": "c", "labels": {"istio.io/use-waypoint": "w"}}}
    assert waypoint.implicit_namespaces(namespaces, [svc]) == {"a"}


def test_status_rows_from_conditions():
    out = waypoint.format_waypoint_status([gateway("waypoint", conditions=PROGRAMMED)]).splitlines()
    assert out[0].split() == ["NAME", "STATUS", "TYPE", "REASON", "MESSAGE"]
    assert out[1].split()[:4] == ["waypoint", "True", "Accepted", "Accepted"]
    assert out[2].split()[:4] == ["waypoint", "True", "Programmed", "Programmed"]
    assert out[2].endswith("waypoint.ambient-apps.svc.cluster.local:15008")
    pending = waypoint.format_waypoint_status([gateway("new")]).splitlines()[1].split()
    assert pending[:4] == ["new", "Unknown", "Programmed", "Pending"]


def test_generate():
    gw = yaml.safe_load(waypoint.waypoint_yaml(waypoint.waypoint_gateway("waypoint", "ambient-apps", "service")))
    assert gw == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "waypoint", "namespace": "ambient-apps", "labels": {"istio.io/waypoint-for": "service"}},
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    }
    assert "labels" not in waypoint.waypoint_gateway()["metadata"]
    assert waypoint.is_waypoint(gw)
    with pytest.raises(common.IstioctlError):
        waypoint.waypoint_gateway(traffic_type="everything")


def test_ready_needs_programmed_and_the_deployment():
    gw = gateway("waypoint", conditions=PROGRAMMED)
    dep = {"metadata": {"name": "waypoint"}, "spec": {"replicas": 1}, "status": {"readyReplicas": 1}}
    assert waypoint.waypoint_ready(gw, dep) == (True, "ready")
    assert waypoint.waypoint_ready(gw, None) == (False, "no Deployment waypoint")
    assert not waypoint.waypoint_ready(gateway("waypoint"), dep)[0]
    assert not waypoint.waypoint_ready(gw, {**dep, "status": {}})[0]


def test_ztunnel_config_waypoint_column_shows_the_waypoints_name():
    ref = {
        "destination": "ambient-apps/waypoint.ambient-apps.svc.cluster.local",
        "address": "10.96.0.9",
        "hboneMtlsPort": 15008,
    }
    dump = {
        "workloads": [
            {
                "name": "h",
                "namespace": "ambient-apps",
                "addresses": ["10.244.1.2"],
                "node": "w1",
                "protocol": "HBONE",
                "waypoint": ref,
            }
        ],
        "services": [
            {"name": "h", "namespace": "ambient-apps", "addresses": ["10.96.0.4"], "waypoint": ref, "endpoints": {}},
            {"name": "s", "namespace": "ambient-apps", "addresses": ["10.96.0.5"], "endpoints": {}},
        ],
    }
    assert ztunnel_config.format_workloads(dump).splitlines()[1].split()[4] == "waypoint"
    services = ztunnel_config.format_services(dump).splitlines()
    assert services[1].split()[3] == "waypoint" and services[2].split()[3] == "None"
    assert ztunnel_config._waypoint({"waypoint": {"address": "10.96.0.9"}}) == "10.96.0.9"


class FakeLab:
    """The lab API calls the waypoint verbs make, over an in-memory store."""

    def __init__(self, objects):
        self.store = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
        self.calls = []

    def call(self, op, **kw):
        self.calls.append((op, kw))
        if op == "get":
            if kw.get("name"):
                key = (kw["kind"], kw.get("namespace"), kw["name"])
                if key not in self.store:
                    raise LabError(f'{kw["kind"]} "{kw["name"]}" not found')
                return self.store[key]
            items = [
                o
                for (k, ns, _), o in sorted(self.store.items())
                if k == kw["kind"] and (kw.get("namespace") is None or ns == kw["namespace"])
            ]
            if kw.get("selector"):
                items = [o for o in items if kw["selector"] in (o["metadata"].get("labels") or {})]
            return {"items": items}
        if op == "apply":
            obj = json.loads(kw["manifests"])
            key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
            if key in self.store and "status" in self.store[key]:
                obj["status"] = self.store[key]["status"]  # apply leaves the status alone
            self.store[key] = obj
            return [{"kind": obj["kind"], "name": obj["metadata"]["name"], "action": "created"}]
        if op == "label":
            obj = self.store[(kw["kind"], kw.get("namespace"), kw["name"])]
            obj["metadata"].setdefault("labels", {}).update(kw["changes"])
            return obj
        if op == "delete":
            del self.store[(kw["kind"], kw["namespace"], kw["name"])]
            return [{"kind": kw["kind"], "namespace": kw["namespace"], "name": kw["name"]}]
        raise AssertionError(op)


def run(lab, argv):
    args = build_parser().parse_args(["istioctl", *argv])
    args.namespace_set = args.namespace is not None
    args.namespace = args.namespace or "default"
    return cmd_istioctl(args, lab)


def ns(name, labels=None):
    return {"kind": "Namespace", "metadata": {"name": name, "namespace": None, "labels": labels or {}}}


def test_apply_enroll_and_wait(capsys):
    lab = FakeLab([ns("ambient-apps", {"istio.io/dataplane-mode": "ambient"})])
    assert run(lab, ["waypoint", "apply", "-n", "ambient-apps", "--enroll-namespace", "--for", "all"]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "\u2705 waypoint ambient-apps/waypoint applied",
        '\u2705 namespace ambient-apps labeled with "istio.io/use-waypoint: waypoint"',
    ]
    assert out.err == ""
    gw = lab.store[("Gateway", "ambient-apps", "waypoint")]
    assert gw["metadata"]["labels"] == {"istio.io/waypoint-for": "all"}
    assert lab.store[("Namespace", None, "ambient-apps")]["metadata"]["labels"]["istio.io/use-waypoint"] == "waypoint"
    gw["status"] = {"conditions": PROGRAMMED}
    lab.store[("Deployment", "ambient-apps", "waypoint")] = {
        "kind": "Deployment",
        "metadata": {"name": "waypoint", "namespace": "ambient-apps"},
        "spec": {"replicas": 1},
        "status": {"readyReplicas": 1},
    }
    assert run(lab, ["waypoint", "apply", "-n", "ambient-apps", "--name", "waypoint", "-w"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "\u2705 waypoint ambient-apps/waypoint is ready!"


def test_apply_warns_outside_ambient_and_refuses_to_replace_a_namespace_waypoint(capsys):
    lab = FakeLab([ns("plain", {"istio.io/use-waypoint": "other"})])
    with pytest.raises(CliError, match="--overwrite"):
        run(lab, ["waypoint", "apply", "-n", "plain", "--enroll-namespace"])
    assert ("Gateway", "plain", "waypoint") not in lab.store
    assert run(lab, ["waypoint", "apply", "-n", "plain", "--enroll-namespace", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "not in ambient mode" in err and "istio.io/dataplane-mode=ambient" in err
    with pytest.raises(CliError, match="not found"):
        run(lab, ["waypoint", "apply", "-n", "missing"])


def test_wait_times_out_with_the_reason():
    lab = FakeLab([ns("ambient-apps", {"istio.io/dataplane-mode": "ambient"})])
    with pytest.raises(CliError, match="not programmed"):
        run(lab, ["waypoint", "apply", "-n", "ambient-apps", "--wait", "--timeout", "0.2s"])


def test_list_status_and_delete_through_the_cli(capsys):
    lab = FakeLab(
        [
            ns("ambient-apps"),
            gateway("waypoint", conditions=PROGRAMMED),
            gateway("httpbin-ambient-waypoint", cls="istio"),
            gateway("ingress", listener=False),
        ]
    )
    run(lab, ["waypoint", "list", "-n", "ambient-apps"])
    rows = [r.split() for r in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [
        ["httpbin-ambient-waypoint", "default", "namespace", "Unknown"],
        ["waypoint", "default", "namespace", "True"],
    ]
    run(lab, ["waypoint", "list", "-n", "empty"])
    assert capsys.readouterr().out == "No waypoints found.\n"
    run(lab, ["waypoint", "status", "--name", "waypoint", "-n", "ambient-apps"])
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert run(lab, ["waypoint", "delete", "-n", "ambient-apps"]) == 0
    assert capsys.readouterr().out == "waypoint ambient-apps/waypoint deleted\n"
    assert run(lab, ["waypoint", "delete", "ingress", "-n", "ambient-apps"]) == 1
    assert run(lab, ["waypoint", "delete", "--all", "-n", "ambient-apps"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "waypoint ambient-apps/httpbin-ambient-waypoint deleted"
    assert ("Gateway", "ambient-apps", "ingress") in lab.store


def test_generate_through_the_cli(capsys):
    run(FakeLab([]), ["waypoint", "generate", "-n", "ambient-apps", "--for", "workload"])
    gw = yaml.safe_load(capsys.readouterr().out)
    assert gw["metadata"] == {
        "name": "waypoint",
        "namespace": "ambient-apps",
        "labels": {"istio.io/waypoint-for": "workload"},
    }
