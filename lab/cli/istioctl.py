"""istioctl's verbs: `install --set profile=ambient -y` and `ztunnel-config` (the logic and the
table formats live in lab/istioctl.py)."""
from __future__ import annotations

import json

from lab.cli.common import CliError


def cmd_istioctl(args, client) -> int:
    from lab import istioctl
    try:
        if args.istio_verb == "install":
            if not args.yes:
                raise CliError("error: this lab installs without asking only with -y (as `istioctl install -y`)")
            istioctl.install(client, args.set or [])
        elif args.istio_verb in ("ztunnel-config", "zc"):
            return _ztunnel_config(args, client, istioctl)
        else:
            raise CliError(f"error: unknown istioctl command {args.istio_verb!r}")
    except istioctl.IstioctlError as e:
        raise CliError(str(e))
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
