"""istioctl's verbs: `install`, `proxy-status`, `ztunnel-config`, `proxy-config`, `waypoint` and `x describe pod`
(the logic and the table formats live in lab/istioctl.py and lab/cli/describe_pod.py)."""
from __future__ import annotations

import json
import sys
import time

from lab.cli.common import CliError, duration, get_or_none
from lab.client import LabError


def cmd_istioctl(args, client) -> int:
    from lab import istioctl
    try:
        if args.istio_verb == "install":
            if not args.yes:
                raise CliError("error: this lab installs without asking only with -y (as `istioctl install -y`)")
            istioctl.install(client, args.set or [])
        elif args.istio_verb in ("proxy-status", "ps"):
            return _proxy_status(args, client, istioctl)
        elif args.istio_verb in ("ztunnel-config", "zc"):
            return _ztunnel_config(args, client, istioctl)
        elif args.istio_verb in ("proxy-config", "pc"):
            return _proxy_config(args, client, istioctl)
        elif args.istio_verb == "waypoint":
            return _waypoint(args, client, istioctl)
        elif args.istio_verb in ("x", "experimental"):
            if getattr(args, "x_verb", None) != "describe" or getattr(args, "describe_kind", None) not in ("pod", "po"):
                raise CliError("error: usage: lab istioctl x describe pod POD [-n NS]")
            from lab.cli.describe_pod import cmd_describe_pod
            return cmd_describe_pod(args, client)
        elif not args.istio_verb:
            raise CliError("error: a command is required: install, proxy-status, ztunnel-config, proxy-config, "
                           "waypoint or x describe; see lab istioctl --help")
        else:
            raise CliError(f"error: unknown istioctl command {args.istio_verb!r}; see lab istioctl --help")
    except istioctl.IstioctlError as e:
        raise CliError(str(e))
    return 0


def _proxy_status(args, client, istioctl) -> int:
    pods = client.call("get", kind="Pod", namespace="istio-system", selector="app=istiod")["items"]
    pods = [p for p in sorted(pods, key=lambda p: p["metadata"]["name"])
            if not p["metadata"].get("deletionTimestamp") and (p.get("status") or {}).get("phase") == "Running"]
    if not pods:
        raise CliError("Error: no running istiod pod in istio-system; install the mesh with "
                       "`lab istioctl install --set profile=ambient -y`")
    sources, errors = [], []
    for pod in pods:
        name = pod["metadata"]["name"]
        netns = (pod["metadata"].get("annotations") or {}).get("lab.ambient/netns")
        if not netns:
            errors.append(f"istiod pod {name} has no network namespace yet")
            continue
        try:
            doc = istioctl.fetch_syncz(netns, name)
        except istioctl.IstioctlError as e:
            errors.append(str(e))
            continue
        image = next((c.get("image", "") for c in pod["spec"].get("containers") or []
                      if c.get("name") == "discovery"), "")
        sources.append((name, istioctl.image_tag(image) or (doc.get("istiod") or {}).get("version"), doc))
    if not sources:
        raise CliError(errors[0] if errors else "Error: no istiod answered")
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps({name: doc for name, _, doc in sources}, indent=2))
    elif args.output not in (None, "", "short"):
        raise CliError(f'error: unknown output format "{args.output}"; one of short, json')
    else:
        print(istioctl.format_proxy_status(sources))
    return 0


def _ztunnel_config(args, client, istioctl) -> int:
    view = istioctl.ZTUNNEL_CONFIG_VIEWS.get(args.view)
    if view is None and args.view != "all":
        raise CliError(f'error: unknown ztunnel-config view "{args.view}"; one of workloads, services, '
                       f"policies, certificates, connections, all")
    zts = client.call("get", kind="Pod", namespace="istio-system", selector="app=ztunnel")["items"]
    if args.pod:
        zts = [p for p in zts if p["metadata"]["name"] == args.pod.split(".")[0]]
    elif args.node:
        zts = [p for p in zts if p["spec"].get("nodeName") == args.node]
    if not zts:
        raise CliError("error: no ztunnel pod found" + (f" for {args.pod or args.node}" if args.pod or args.node else ""))
    dump = istioctl.fetch_config_dump(args.lab, zts[0]["spec"]["nodeName"])
    if args.output == "json" or args.view == "all":
        print(json.dumps(dump, indent=2))
    elif args.view in ("certificate", "certificates", "certs", "cert", "connections", "cons"):
        print(view(dump))
    else:
        print(view(dump, None if args.all_namespaces else args.namespace_filter))
    return 0


# proxy-config -----------------------------------------------------------------------------------


def _pod_and_namespace(args) -> tuple[str, str]:
    name, ns = args.pod, args.namespace
    if "." in name and not args.namespace_set:
        name, ns = name.split(".", 1)
    return name, ns


def _proxy_config(args, client, istioctl) -> int:
    from lab.cli.describe_pod import AMBIENT, NONE, pod_mode
    view = istioctl.PROXY_CONFIG_VIEWS.get(args.view)
    if view is None and args.view != "all":
        raise CliError(f'error: unknown proxy-config type "{args.view}"; one of listeners, clusters, routes, '
                       f"secret, all")
    name, ns = _pod_and_namespace(args)
    pod = get_or_none(client, "Pod", name, ns)
    if pod is None:
        raise CliError(f'Error: pod "{name}" not found in namespace {ns}')
    namespace = get_or_none(client, "Namespace", ns, None) or {}
    mode = pod_mode(pod, (namespace.get("metadata") or {}).get("labels") or {})
    if mode.kind == AMBIENT:
        node = pod["spec"].get("nodeName", "")
        raise CliError(f"Error: pod {name}.{ns} runs no proxy of its own: it is in ambient mode, so the ztunnel on "
                       f"node {node} captures its traffic (L4). See `lab istioctl ztunnel-config workloads "
                       f"--node {node}`, and `lab istioctl x describe pod {name} -n {ns}` for the waypoint that "
                       "serves it.")
    if mode.kind == NONE:
        raise CliError(f"Error: pod {name}.{ns} is {mode.text}: no proxy holds configuration for it")
    netns = (pod["metadata"].get("annotations") or {}).get("lab.ambient/netns")
    if not netns:
        raise CliError(f"Error: pod {name}.{ns} has no network namespace yet")
    dump = istioctl.fetch_proxy_config_dump(netns, f"{name}.{ns}")
    if args.output == "json":
        section = dump if args.view == "all" else istioctl.dump_section(dump, istioctl.PROXY_CONFIG_SECTION[view])
        print(json.dumps(section, indent=2))
    elif args.output not in (None, "", "short"):
        raise CliError(f'error: unknown output format "{args.output}"; one of short, json')
    elif args.view == "all":
        print(istioctl.format_proxy_all(dump))
    else:
        print(view(dump))
    return 0


# waypoint ---------------------------------------------------------------------------------------


def _waypoint(args, client, istioctl) -> int:
    verb = getattr(args, "waypoint_verb", None)
    ns = None if getattr(args, "all_namespaces", False) else args.namespace
    if verb == "list":
        gateways = client.call("get", kind="Gateway", namespace=ns)["items"]
        print(istioctl.format_waypoint_list(gateways, args.all_namespaces, _implicit(client, ns, istioctl)))
    elif verb == "status":
        gateways = client.call("get", kind="Gateway", namespace=ns)["items"]
        if args.name:
            gateways = [g for g in gateways if g["metadata"]["name"] == args.name]
            if not gateways:
                raise CliError(f"Error: waypoint {args.namespace}/{args.name} not found")
        print(istioctl.format_waypoint_status(gateways, args.all_namespaces))
    elif verb == "generate":
        print(istioctl.waypoint_yaml(istioctl.waypoint_gateway(args.name, args.namespace, args.traffic_type)), end="")
    elif verb == "apply":
        return _waypoint_apply(args, client, istioctl)
    elif verb == "delete":
        return _waypoint_delete(args, client, istioctl)
    else:
        raise CliError("error: usage: lab istioctl waypoint list|status|generate|apply|delete; "
                       "see lab istioctl waypoint --help")
    return 0


def _implicit(client, ns, istioctl) -> set[str]:
    namespaces = client.call("get", kind="Namespace", namespace=None)["items"]
    if ns is not None:
        namespaces = [n for n in namespaces if n["metadata"]["name"] == ns]
    labelled = []
    for kind in ("Service", "Pod"):
        labelled += client.call("get", kind=kind, namespace=ns, selector=istioctl.USE_WAYPOINT_LABEL)["items"]
    return istioctl.implicit_namespaces(namespaces, labelled)


def _waypoint_apply(args, client, istioctl) -> int:
    ns, name = args.namespace, args.name
    namespace = get_or_none(client, "Namespace", ns, None)
    if namespace is None:
        raise CliError(f'Error: namespace "{ns}" not found')
    ns_labels = namespace["metadata"].get("labels") or {}
    current = ns_labels.get(istioctl.USE_WAYPOINT_LABEL)
    if args.enroll_namespace and current not in (None, name) and not args.overwrite:
        raise CliError(f'Error: namespace {ns} already uses waypoint "{current}" ({istioctl.USE_WAYPOINT_LABEL}); '
                       "pass --overwrite to replace it")
    gateway = istioctl.waypoint_gateway(name, ns, args.traffic_type)
    client.call("apply", manifests=json.dumps(gateway), source="waypoint apply")
    print(f"\u2705 waypoint {ns}/{name} applied")
    if args.enroll_namespace:
        client.call("label", kind="Namespace", name=ns, namespace=None,
                    changes={istioctl.USE_WAYPOINT_LABEL: name}, overwrite=True)
        print(f'\u2705 namespace {ns} labeled with "{istioctl.USE_WAYPOINT_LABEL}: {name}"')
    if ns_labels.get(istioctl.DATAPLANE_MODE_LABEL) != "ambient":
        print(f"\u26a0\ufe0f namespace {ns} is not in ambient mode (no {istioctl.DATAPLANE_MODE_LABEL}=ambient label): "
              f"ztunnel does not capture its pods, so no traffic reaches the waypoint; "
              f"`lab label ns {ns} {istioctl.DATAPLANE_MODE_LABEL}=ambient` enrolls it", file=sys.stderr)
    if args.wait:
        _wait_ready(client, istioctl, ns, name, duration(args.timeout, 90.0))
        print(f"\u2705 waypoint {ns}/{name} is ready!")
    return 0


def _wait_ready(client, istioctl, ns: str, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    why = "not found"
    while time.monotonic() < deadline:
        gw = get_or_none(client, "Gateway", name, ns)
        if gw is not None:
            ok, why = istioctl.waypoint_ready(gw, get_or_none(client, "Deployment", name, ns))
            if ok:
                return
        time.sleep(0.1)
    raise CliError(f"Error: waypoint {ns}/{name} was not ready after {timeout:.0f}s: {why}; "
                   f"see `lab istioctl waypoint status --name {name} -n {ns}`")


def _waypoint_delete(args, client, istioctl) -> int:
    ns = args.namespace
    if args.all:
        names = [g["metadata"]["name"] for g in client.call("get", kind="Gateway", namespace=ns)["items"]
                 if istioctl.is_waypoint(g)]
        if not names:
            print("No waypoints found.")
            return 0
    else:
        names = args.names or ["waypoint"]
    failed = False
    for name in names:
        gw = get_or_none(client, "Gateway", name, ns)
        if gw is None or not istioctl.is_waypoint(gw):
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
