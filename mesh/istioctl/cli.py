"""`lab istioctl ...`: istioctl's verbs on the lab (`install`, `proxy-status`, `ztunnel-config`,
`proxy-config`, `waypoint`, `x describe pod`), added to the `lab` command line by the mesh add-on.

The logic and the table formats live in one module per verb beside this one.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time

from lab.client import LabError
from lab.client.cli import CliError, duration, get_or_none
from lab.client.contract import NETNS_ANNOTATION
from mesh.contract import DATAPLANE_MODE_AMBIENT, DATAPLANE_MODE_LABEL, ISTIO_NAMESPACE, USE_WAYPOINT_LABEL
from mesh.istioctl import install, proxy_config, proxy_status, waypoint, ztunnel_config
from mesh.istioctl.common import IstioctlError


def cmd_istioctl(args, client) -> int:
    try:
        if args.istio_verb == "install":
            if not args.yes:
                raise CliError("error: this lab installs without asking only with -y (as `istioctl install -y`)")
            install.install(client, args.set or [])
        elif args.istio_verb in ("proxy-status", "ps"):
            return _proxy_status(args, client)
        elif args.istio_verb in ("ztunnel-config", "zc"):
            return _ztunnel_config(args, client)
        elif args.istio_verb in ("proxy-config", "pc"):
            return _proxy_config(args, client)
        elif args.istio_verb == "waypoint":
            return _waypoint(args, client)
        elif args.istio_verb in ("x", "experimental"):
            if getattr(args, "x_verb", None) != "describe" or getattr(args, "describe_kind", None) not in ("pod", "po"):
                raise CliError("error: usage: lab istioctl x describe pod POD [-n NS]")
            from mesh.istioctl.describe_pod import cmd_describe_pod

            return cmd_describe_pod(args, client)
        elif not args.istio_verb:
            raise CliError(
                "error: a command is required: install, proxy-status, ztunnel-config, proxy-config, "
                "waypoint or x describe; see lab istioctl --help"
            )
        else:
            raise CliError(f"error: unknown istioctl command {args.istio_verb!r}; see lab istioctl --help")
    except IstioctlError as e:
        raise CliError(str(e))
    return 0


def _proxy_status(args, client) -> int:
    pods = client.call("get", kind="Pod", namespace=ISTIO_NAMESPACE, selector="app=istiod")["items"]
    pods = [
        p
        for p in sorted(pods, key=lambda p: p["metadata"]["name"])
        if not p["metadata"].get("deletionTimestamp") and (p.get("status") or {}).get("phase") == "Running"
    ]
    if not pods:
        raise CliError(
            "Error: no running istiod pod in istio-system; install the mesh with "
            "`lab istioctl install --set profile=ambient -y`"
        )
    sources, errors = [], []
    for pod in pods:
        name = pod["metadata"]["name"]
        netns = (pod["metadata"].get("annotations") or {}).get(NETNS_ANNOTATION)
        if not netns:
            errors.append(f"istiod pod {name} has no network namespace yet")
            continue
        try:
            doc = proxy_status.fetch_syncz(netns, name)
        except IstioctlError as e:
            errors.append(str(e))
            continue
        image = next(
            (c.get("image", "") for c in pod["spec"].get("containers") or [] if c.get("name") == "discovery"), ""
        )
        sources.append((name, install.image_tag(image) or (doc.get("istiod") or {}).get("version"), doc))
    if not sources:
        raise CliError(errors[0] if errors else "Error: no istiod answered")
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps({name: doc for name, _, doc in sources}, indent=2))
    elif args.output not in (None, "", "short"):
        raise CliError(f'error: unknown output format "{args.output}"; one of short, json')
    else:
        print(proxy_status.format_proxy_status(sources))
    return 0


def _ztunnel_config(args, client) -> int:
    namespaced_view = ztunnel_config.NAMESPACED_VIEWS.get(args.view)
    node_view = ztunnel_config.NODE_VIEWS.get(args.view)
    if namespaced_view is None and node_view is None and args.view != "all":
        raise CliError(
            f'error: unknown ztunnel-config view "{args.view}"; one of workloads, services, '
            f"policies, certificates, connections, all"
        )
    zts = client.call("get", kind="Pod", namespace=ISTIO_NAMESPACE, selector="app=ztunnel")["items"]
    if args.pod:
        zts = [p for p in zts if p["metadata"]["name"] == args.pod.split(".")[0]]
    elif args.node:
        zts = [p for p in zts if p["spec"].get("nodeName") == args.node]
    if not zts:
        raise CliError(
            "error: no ztunnel pod found" + (f" for {args.pod or args.node}" if args.pod or args.node else "")
        )
    dump = ztunnel_config.fetch_config_dump(args.lab, zts[0]["spec"]["nodeName"])
    if args.output == "json" or args.view == "all":
        print(json.dumps(dump, indent=2))
    elif node_view is not None:
        print(node_view(dump))
    elif namespaced_view is not None:
        print(namespaced_view(dump, None if args.all_namespaces else args.namespace_filter))
    return 0


# proxy-config -----------------------------------------------------------------------------------


def _pod_and_namespace(args) -> tuple[str, str]:
    name, ns = args.pod, args.namespace
    if "." in name and not args.namespace_set:
        name, ns = name.split(".", 1)
    return name, ns


def _proxy_config(args, client) -> int:
    from mesh.istioctl.describe_mode import AMBIENT, NONE, pod_mode

    view = proxy_config.PROXY_CONFIG_VIEWS.get(args.view)
    if view is None and args.view != "all":
        raise CliError(
            f'error: unknown proxy-config type "{args.view}"; one of listeners, clusters, routes, secret, all'
        )
    name, ns = _pod_and_namespace(args)
    pod = get_or_none(client, "Pod", name, ns)
    if pod is None:
        raise CliError(f'Error: pod "{name}" not found in namespace {ns}')
    namespace = get_or_none(client, "Namespace", ns, None) or {}
    mode = pod_mode(pod, (namespace.get("metadata") or {}).get("labels") or {})
    if mode.kind == AMBIENT:
        node = pod["spec"].get("nodeName", "")
        raise CliError(
            f"Error: pod {name}.{ns} runs no proxy of its own: it is in ambient mode, so the ztunnel on "
            f"node {node} captures its traffic (L4). See `lab istioctl ztunnel-config workloads "
            f"--node {node}`, and `lab istioctl x describe pod {name} -n {ns}` for the waypoint that "
            "serves it."
        )
    if mode.kind == NONE:
        raise CliError(f"Error: pod {name}.{ns} is {mode.text}: no proxy holds configuration for it")
    netns = (pod["metadata"].get("annotations") or {}).get(NETNS_ANNOTATION)
    if not netns:
        raise CliError(f"Error: pod {name}.{ns} has no network namespace yet")
    dump = proxy_config.fetch_proxy_config_dump(netns, f"{name}.{ns}")
    if args.output == "json":
        # view is None only for "all" (any other unknown name was refused above)
        section = dump if view is None else proxy_config.dump_section(dump, proxy_config.PROXY_CONFIG_SECTION[view])
        print(json.dumps(section, indent=2))
    elif args.output not in (None, "", "short"):
        raise CliError(f'error: unknown output format "{args.output}"; one of short, json')
    elif view is None:  # "all"
        print(proxy_config.format_proxy_all(dump))
    else:
        print(view(dump))
    return 0


# waypoint ---------------------------------------------------------------------------------------


def _waypoint(args, client) -> int:
    verb = getattr(args, "waypoint_verb", None)
    ns = None if getattr(args, "all_namespaces", False) else args.namespace
    if verb == "list":
        gateways = client.call("get", kind="Gateway", namespace=ns)["items"]
        print(waypoint.format_waypoint_list(gateways, args.all_namespaces, _implicit(client, ns)))
    elif verb == "status":
        gateways = client.call("get", kind="Gateway", namespace=ns)["items"]
        if args.name:
            gateways = [g for g in gateways if g["metadata"]["name"] == args.name]
            if not gateways:
                raise CliError(f"Error: waypoint {args.namespace}/{args.name} not found")
        print(waypoint.format_waypoint_status(gateways, args.all_namespaces))
    elif verb == "generate":
        print(waypoint.waypoint_yaml(waypoint.waypoint_gateway(args.name, args.namespace, args.traffic_type)), end="")
    elif verb == "apply":
        return _waypoint_apply(args, client)
    elif verb == "delete":
        return _waypoint_delete(args, client)
    else:
        raise CliError(
            "error: usage: lab istioctl waypoint list|status|generate|apply|delete; see lab istioctl waypoint --help"
        )
    return 0


def _implicit(client, ns) -> set[str]:
    namespaces = client.call("get", kind="Namespace", namespace=None)["items"]
    if ns is not None:
        namespaces = [n for n in namespaces if n["metadata"]["name"] == ns]
    labelled = []
    for kind in ("Service", "Pod"):
        labelled += client.call("get", kind=kind, namespace=ns, selector=USE_WAYPOINT_LABEL)["items"]
    return waypoint.implicit_namespaces(namespaces, labelled)


def _waypoint_apply(args, client) -> int:
    ns, name = args.namespace, args.name
    namespace = get_or_none(client, "Namespace", ns, None)
    if namespace is None:
        raise CliError(f'Error: namespace "{ns}" not found')
    ns_labels = namespace["metadata"].get("labels") or {}
    current = ns_labels.get(USE_WAYPOINT_LABEL)
    if args.enroll_namespace and current not in (None, name) and not args.overwrite:
        raise CliError(
            f'Error: namespace {ns} already uses waypoint "{current}" ({USE_WAYPOINT_LABEL}); '
            "pass --overwrite to replace it"
        )
    gateway = waypoint.waypoint_gateway(name, ns, args.traffic_type)
    client.call("apply", manifests=json.dumps(gateway), source="waypoint apply")
    print(f"\u2705 waypoint {ns}/{name} applied")
    if args.enroll_namespace:
        client.call(
            "label", kind="Namespace", name=ns, namespace=None, changes={USE_WAYPOINT_LABEL: name}, overwrite=True
        )
        print(f'\u2705 namespace {ns} labeled with "{USE_WAYPOINT_LABEL}: {name}"')
    if ns_labels.get(DATAPLANE_MODE_LABEL) != DATAPLANE_MODE_AMBIENT:
        print(
            f"\u26a0\ufe0f namespace {ns} is not in ambient mode (no {DATAPLANE_MODE_LABEL}=ambient label): "
            f"ztunnel does not capture its pods, so no traffic reaches the waypoint; "
            f"`lab label ns {ns} {DATAPLANE_MODE_LABEL}=ambient` enrolls it",
            file=sys.stderr,
        )
    if args.wait:
        _wait_ready(client, ns, name, duration(args.timeout, 90.0))
        print(f"\u2705 waypoint {ns}/{name} is ready!")
    return 0


def _wait_ready(client, ns: str, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    why = "not found"
    while time.monotonic() < deadline:
        gw = get_or_none(client, "Gateway", name, ns)
        if gw is not None:
            ok, why = waypoint.waypoint_ready(gw, get_or_none(client, "Deployment", name, ns))
            if ok:
                return
        time.sleep(0.1)
    raise CliError(
        f"Error: waypoint {ns}/{name} was not ready after {timeout:.0f}s: {why}; "
        f"see `lab istioctl waypoint status --name {name} -n {ns}`"
    )


def _waypoint_delete(args, client) -> int:
    ns = args.namespace
    if args.all:
        names = [
            g["metadata"]["name"]
            for g in client.call("get", kind="Gateway", namespace=ns)["items"]
            if waypoint.is_waypoint(g)
        ]
        if not names:
            print("No waypoints found.")
            return 0
    else:
        names = args.names or ["waypoint"]
    failed = False
    for name in names:
        gw = get_or_none(client, "Gateway", name, ns)
        if gw is None or not waypoint.is_waypoint(gw):
            print(f"Error: waypoint {ns}/{name} not found", file=sys.stderr)
            failed = True
            continue
        try:
            client.call("delete", kind="Gateway", name=name, namespace=ns)
        except LabError as e:
            print(f"Error: deleting waypoint {ns}/{name}: {e}", file=sys.stderr)
            failed = True
            continue
        print(f"waypoint {ns}/{name} deleted")
    return 1 if failed else 0


def add_cli_verbs(sub, _sub) -> None:
    """The `lab istioctl` verb and its commands (lab/addons.py calls this)."""
    sp = _sub(
        sub, "istioctl", "the istioctl verbs: install, proxy-status, ztunnel-config, proxy-config, waypoint, x describe"
    )
    sp.set_defaults(fn=cmd_istioctl)
    isub = sp.add_subparsers(dest="istio_verb", metavar="COMMAND", title="commands")
    ip = _sub(isub, "install", "install or upgrade the ambient profile (--set profile=ambient [--set tag=X] -y)")
    ip.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="profile=ambient; tag=X: Istio X (istiod, istio-cni and ztunnel roll to X, new pods get "
        "X sidecars, running app pods are not restarted)",
    )
    ip.add_argument("-y", "--skip-confirmation", dest="yes", action="store_true")

    sp_, zp, pp = (
        _sub(isub, name, help_, aliases=[alias])
        for name, alias, help_ in (
            (
                "proxy-status",
                "ps",
                "istiod's sync status of every proxy: NAME CLUSTER CDS LDS EDS RDS ECDS ISTIOD VERSION",
            ),
            (
                "ztunnel-config",
                "zc",
                "what a ztunnel knows: workloads, services, policies, certificates, connections, all",
            ),
            (
                "proxy-config",
                "pc",
                "what a pod's L7 proxy (a waypoint or sidecar) holds: listeners, clusters, routes, secret, all",
            ),
        )
    )
    sp_.epilog = textwrap.fill(proxy_status.PROXY_STATUS_HELP, 100)
    sp_.add_argument("-o", "--output", help="short (the table, the default) or json (each istiod's /debug/syncz)")

    zp.add_argument("view")
    zp.add_argument("pod", nargs="?", help="a ztunnel pod (default: the first)")
    zp.add_argument("--node", help="the ztunnel of this node")
    zp.add_argument("-o", "--output")
    zp.add_argument("-n", "--namespace", dest="namespace_filter", help="only this namespace")
    zp.add_argument("-A", "--all-namespaces", action="store_true")

    pp.add_argument("view", metavar="TYPE", help="listeners, clusters, routes, secret or all")
    pp.add_argument("pod", metavar="POD", help="the pod (POD or POD.NAMESPACE)")
    pp.add_argument("-n", "--namespace", default=None)
    pp.add_argument("-o", "--output", help="short (tables, the default) or json")

    wp = _sub(isub, "waypoint", "list, inspect, generate, apply and delete waypoints")
    wsub = wp.add_subparsers(dest="waypoint_verb", metavar="ACTION", title="actions")
    w = _sub(wsub, "list", "the waypoints: NAME REVISION TRAFFIC TYPE PROGRAMMED")
    w.epilog = textwrap.fill(waypoint.WAYPOINT_TYPE_HELP + ".", 100)
    w.add_argument("-n", "--namespace", default=None)
    w.add_argument("-A", "--all-namespaces", action="store_true")
    w = _sub(wsub, "status", "the status conditions istiod wrote on the waypoints' Gateways")
    w.add_argument("--name", help="only this waypoint")
    w.add_argument("-n", "--namespace", default=None)
    w.add_argument("-A", "--all-namespaces", action="store_true")
    for action, what in (
        ("generate", "print the waypoint Gateway's YAML"),
        ("apply", "apply a waypoint Gateway; istiod deploys the waypoint"),
    ):
        w = _sub(wsub, action, what)
        w.add_argument("--name", default="waypoint", help="the waypoint's name (default: waypoint)")
        w.add_argument(
            "--for",
            dest="traffic_type",
            choices=waypoint.TRAFFIC_TYPES,
            help="the traffic it serves (label istio.io/waypoint-for; unset: service)",
        )
        w.add_argument("-n", "--namespace", default=None)
        if action == "apply":
            w.add_argument(
                "--enroll-namespace", action="store_true", help="label the namespace istio.io/use-waypoint=NAME"
            )
            w.add_argument(
                "--overwrite",
                action="store_true",
                help="with --enroll-namespace: replace another waypoint the namespace uses",
            )
            w.add_argument(
                "-w",
                "--wait",
                action="store_true",
                help="wait until the waypoint is Programmed and its Deployment ready",
            )
            w.add_argument("--timeout", default="90s", help="how long --wait waits (default: 90s)")
    w = _sub(wsub, "delete", "delete waypoints (default: the one named waypoint)")
    w.add_argument("names", nargs="*", metavar="NAME")
    w.add_argument("--all", action="store_true", help="every waypoint of the namespace")
    w.add_argument("-n", "--namespace", default=None)

    xp = _sub(isub, "x", "experimental commands: describe pod", aliases=["experimental"])
    xsub = xp.add_subparsers(dest="x_verb", metavar="COMMAND", title="commands")
    dp = _sub(xsub, "describe", "what the mesh does with a pod: describe pod POD")
    dsub = dp.add_subparsers(dest="describe_kind", metavar="KIND", title="kinds")
    d = _sub(
        dsub,
        "pod",
        "mode, identity, ztunnel, waypoint, Services and the policies that apply, with where each is enforced",
        aliases=["po"],
    )
    d.add_argument("pod", metavar="POD", help="the pod (POD or POD.NAMESPACE)")
    d.add_argument("-n", "--namespace", default=None)
