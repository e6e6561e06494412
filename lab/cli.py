"""`lab`: the kubectl-shaped command line of ambient-lab.

Lab verbs (`up`, `down`, `status`) manage labs; the kubectl verbs talk to a running lab's API.
The lab is chosen with `--lab NAME` (or `AMBIENT_LAB`), default `default`. Errors print one line
and exit 1, as kubectl does.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from typing import Any

from lab import kinds, printers
from lab.client import LabClient, LabError
from lab.jsonpath import JSONPathError, render as render_jsonpath

DEFAULT_TOPOLOGY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "topologies", "default.yaml")


class CliError(Exception):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ref(kind: str, group: str | None, name: str) -> str:
    return f"{kind.lower()}{'.' + group if group else ''}/{name}"


def _read_sources(files: list[str]) -> list[tuple[str, str]]:
    out = []
    for f in files:
        if f == "-":
            out.append(("-", sys.stdin.read()))
        elif os.path.isdir(f):
            for entry in sorted(os.listdir(f)):
                if entry.endswith((".yaml", ".yml", ".json")):
                    p = os.path.join(f, entry)
                    with open(p) as fh:
                        out.append((p, fh.read()))
        else:
            try:
                with open(f) as fh:
                    out.append((f, fh.read()))
            except OSError as e:
                raise CliError(f'error: the path "{f}" does not exist' if e.errno == 2 else f"error: {f}: {e.strerror}")
    return out


# Lab lifecycle ---------------------------------------------------------------------------------
def cmd_up(args, client) -> int:
    from lab import launcher
    topo = args.topology or DEFAULT_TOPOLOGY
    t0 = time.monotonic()
    try:
        st = launcher.up(topo, args.name, progress=lambda p: print(f"  {p} ...", file=sys.stderr, flush=True))
    except launcher.LaunchError as e:
        raise CliError(f"error: {e}")
    print(f'lab "{st["name"]}" is ready in {time.monotonic() - t0:.1f}s: {len(st["nodes"])} nodes, '
          f'{st["ready_pods"]} system pods ready')
    print(f"  use it: lab get pods -A{'' if st['name'] == 'default' else ' --lab ' + st['name']}")
    return 0


def cmd_down(args, client) -> int:
    from lab import launcher
    name = args.name or args.lab
    t0 = time.monotonic()
    try:
        removed = launcher.down(name, progress=lambda p: print(f"  {p}", file=sys.stderr))
    except launcher.LaunchError as e:
        raise CliError(f"error: {e}")
    what = "stopped" if removed["graceful"] else ("killed" if removed["killed"] else "was not running")
    leftovers = ""
    if removed["netns"] or removed["dirs"]:
        leftovers = (f'; removed {len(removed["netns"])} leftover namespaces and '
                     f'{len(removed["dirs"])} leftover directories it had recorded')
    print(f'lab "{name}" {what}{leftovers} ({time.monotonic() - t0:.1f}s)')
    return 0


def cmd_status(args, client) -> int:
    st = client.call("status")
    if args.output == "json":
        print(json.dumps(st, indent=2))
        return 0
    print(f'lab {st["name"]}: {st["phase"]}, labd pid {st["pid"]}, up {st["uptime"]:.0f}s, '
          f'{st["pods"]} pods ({st["ready_pods"]} ready), {st["services"]} services')
    rows = [["NODE", "ROLE", "IP", "POD CIDR", "PODS", "NETNS"]]
    for n in st["nodes"]:
        rows.append([n["name"], n["role"], n["ip"], n["podCIDR"], str(n["pods"]), n["netns"]])
    print(_columns(rows))
    return 0


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# kubectl verbs ---------------------------------------------------------------------------------
def cmd_apply(args, client) -> int:
    if not args.filename:
        raise CliError("error: must specify one of -f and -k")
    combined = _read_sources(args.filename)
    # All-or-nothing across files too: validate everything in one request.
    text = "\n---\n".join(t for _, t in combined)
    src = ",".join(s for s, _ in combined)
    if args.namespace_set:
        text = _force_namespace(text, args.namespace)
    for r in client.call("apply", manifests=text, source=src):
        print(f'{_ref(r["kind"], r["group"], r["name"])} {r["action"]}')
    return 0


def _force_namespace(text: str, ns: str) -> str:
    """`apply -n NS`: objects without a namespace go to NS (kubectl's behaviour)."""
    import yaml
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        raise CliError(f"error: invalid YAML: {str(e).splitlines()[0]}") from None
    for d in docs:
        if isinstance(d, dict):
            md = d.setdefault("metadata", {})
            if isinstance(md, dict) and d.get("kind") not in ("Namespace", "Node") and not md.get("namespace"):
                md["namespace"] = ns
    return yaml.safe_dump_all(docs)


def cmd_delete(args, client) -> int:
    if args.filename:
        text = "\n---\n".join(t for _, t in _read_sources(args.filename))
        done = client.call("delete", manifests=text, source=",".join(args.filename),
                           ignore_not_found=args.ignore_not_found)
    else:
        if not args.args:
            raise CliError("error: You must provide one or more resources by argument or filename.")
        kind, names = _kind_and_names(args.args)
        if not names and not args.selector and not args.all:
            raise CliError("error: resource(s) were provided, but no name was specified")
        done = []
        for n in names or [None]:
            done += client.call("delete", kind=kind, name=n, namespace=_ns(args), selector=args.selector,
                                ignore_not_found=args.ignore_not_found)
    for r in done:
        print(f'{kinds.by_kind(r["kind"]).kind.lower()}{"." + r["group"] if r["group"] else ""} "{r["name"]}" deleted')
    if args.wait:
        for r in done:
            if r["kind"] in ("Pod", "Namespace"):
                _wait_gone(client, r["kind"], r["namespace"], r["name"], 120)
    return 0


def _wait_gone(client, kind, ns, name, timeout) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.call("get", kind=kind, name=name, namespace=ns)
        except LabError:
            return
        time.sleep(0.05)
    raise CliError(f'error: timed out waiting for {kind.lower()} "{name}" to be deleted')


def _kind_and_names(words: list[str]) -> tuple[str, list[str]]:
    first = words[0]
    if "/" in first:
        kind, name = kinds.split_type_name(first)
        names = [name] + [kinds.split_type_name(w)[1] or w for w in words[1:]]
        return kind, names
    return first, words[1:]


def _ns(args) -> str | None:
    return None if getattr(args, "all_namespaces", False) else args.namespace


def cmd_create(args, client) -> int:
    what = args.what
    if what in ("ns", "namespace"):
        if not args.name:
            raise CliError("error: exactly one NAME is required")
        manifest = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args.name}})
        existing = None
        try:
            existing = client.call("get", kind="Namespace", name=args.name, namespace=None)
        except LabError:
            pass
        if existing:
            raise CliError(f'Error from server (AlreadyExists): namespaces "{args.name}" already exists')
        client.call("apply", manifests=manifest, source="create")
        print(f"namespace/{args.name} created")
        return 0
    if what == "-f" or args.filename:
        return cmd_apply(args, client)
    raise CliError(f'error: unknown resource for create: "{what}"')


def _parse_label_changes(words: list[str]) -> dict[str, str | None]:
    changes: dict[str, str | None] = {}
    for w in words:
        if w.endswith("-") and "=" not in w:
            changes[w[:-1]] = None
        elif "=" in w:
            k, v = w.split("=", 1)
            changes[k] = v
        else:
            raise CliError(f"error: invalid label spec: {w}")
    return changes


def cmd_label(args, client, field: str = "labels") -> int:
    words = list(args.args)
    if not words:
        raise CliError("error: one or more resources must be specified as <resource> <name> or <resource>/<name>")
    if "/" in words[0]:
        kind, name = kinds.split_type_name(words.pop(0))
    else:
        if len(words) < 2:
            raise CliError("error: one or more resources must be specified as <resource> <name> or <resource>/<name>")
        kind, name = words.pop(0), words.pop(0)
    changes = _parse_label_changes(words)
    if not changes:
        raise CliError("error: at least one label update is required")
    before = None
    try:
        before = client.call("get", kind=kind, name=name, namespace=args.namespace)
    except LabError:
        pass
    obj = client.call("label" if field == "labels" else "annotate", kind=kind, name=name,
                      namespace=args.namespace, changes=changes, overwrite=args.overwrite)
    k = kinds.resolve(kind)
    verb = "labeled" if field == "labels" else "annotated"
    if before is not None and before["metadata"].get(field) == obj["metadata"].get(field):
        verb = "not " + verb
    elif any(v is None for v in changes.values()) and all(v is None for v in changes.values()):
        verb = "unlabeled" if field == "labels" else "annotated"
    print(f'{_ref(k.kind, k.group, name)} {verb}')
    return 0


def cmd_get(args, client) -> int:
    if not args.args:
        raise CliError("error: You must specify the type of resource to get.")
    kind_arg = args.args[0]
    names = args.args[1:]
    kind_list = kind_arg.split(",")
    if "/" in kind_arg:
        t, n = kinds.split_type_name(kind_arg)
        kind_list, names = [t], [n] + names
    outputs = []
    now = _now()
    out = args.output or ""
    for kind in kind_list:
        try:
            k = kinds.resolve(kind)
        except kinds.UnknownKind as e:
            raise CliError(f"error: {e}")
        ns = None if args.all_namespaces or not k.namespaced else args.namespace
        if names:
            objs = [client.call("get", kind=k.kind, name=n, namespace=ns) for n in names]
        else:
            objs = client.call("get", kind=k.kind, namespace=ns, selector=args.selector)["items"]
        if args.watch:
            raise CliError("error: --watch is not supported; use `lab wait`")
        single = bool(names) and len(names) == 1 and len(kind_list) == 1
        if out.startswith("jsonpath="):
            data = objs[0] if single else {"apiVersion": "v1", "kind": "List", "items": objs}
            try:
                outputs.append(render_jsonpath(out[len("jsonpath="):], data))
            except JSONPathError as e:
                raise CliError(str(e))
        elif out in ("json", "yaml"):
            data = objs[0] if single else {"apiVersion": "v1", "kind": "List", "items": objs}
            outputs.append(printers.to_json(data) if out == "json" else printers.to_yaml(data))
        elif out == "name":
            outputs.append(printers.names(k.kind, objs))
        elif out in ("", "wide"):
            if not objs:
                print(printers.no_resources(None if args.all_namespaces else ns), file=sys.stderr)
                continue
            outputs.append(printers.table(k.kind, objs, wide=out == "wide",
                                          all_namespaces=args.all_namespaces and k.namespaced, now=now))
        else:
            raise CliError(f'error: unable to match a printer suitable for the output format "{out}", '
                           f"allowed formats are: json,jsonpath,name,wide,yaml")
    text = ("\n\n" if out in ("", "wide") else "\n").join(o.rstrip("\n") for o in outputs if o != "")
    if out.startswith("jsonpath="):
        sys.stdout.write("".join(outputs))
    elif text:
        print(text)
    return 0


def cmd_describe(args, client) -> int:
    if not args.args:
        raise CliError("error: You must specify the type of resource to describe.")
    kind, names = _kind_and_names(args.args)
    k = kinds.resolve(kind)
    ns = args.namespace if k.namespaced else None
    objs = [client.call("get", kind=k.kind, name=n, namespace=ns) for n in names] if names else \
        client.call("get", kind=k.kind, namespace=ns, selector=args.selector)["items"]
    events = client.call("get", kind="Event", namespace=ns)["items"] if k.namespaced else []
    now = _now()
    chunks = []
    for obj in objs:
        mine = [e for e in events if e.get("involvedObject", {}).get("uid") == obj["metadata"].get("uid")]
        chunks.append(printers.describe(k.kind, obj, mine, now))
    print("\n\n".join(c.rstrip("\n") for c in chunks))
    return 0


def cmd_exec(args, client) -> int:
    if not args.command:
        raise CliError("error: you must specify at least one command for the container")
    target = client.call("exec", namespace=args.namespace, pod=args.pod, container=args.container)
    argv = ["ip", "netns", "exec", target["netns"], *args.command]
    if not args.stdin:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe("ip", argv, target["env"])
    except OSError as e:
        raise CliError(f"error: exec failed: {e}")
    return 126  # not reached


def _pods_for(client, ref: str, namespace: str) -> list[dict]:
    if "/" not in ref:
        return [client.call("get", kind="Pod", name=ref, namespace=namespace)]
    kind, name = kinds.split_type_name(ref)
    k = kinds.resolve(kind)
    if k.kind == "Pod":
        return [client.call("get", kind="Pod", name=name, namespace=namespace)]
    owner = client.call("get", kind=k.kind, name=name, namespace=namespace)
    sel = owner["spec"].get("selector", {}).get("matchLabels", {})
    selector = ",".join(f"{a}={b}" for a, b in sel.items())
    pods = client.call("get", kind="Pod", namespace=namespace, selector=selector)["items"]
    if not pods:
        raise CliError(f"error: no pods found for {ref}")
    return pods


def cmd_logs(args, client) -> int:
    if args.selector:
        pods = client.call("get", kind="Pod", namespace=args.namespace, selector=args.selector)["items"]
    elif args.target:
        pods = _pods_for(client, args.target, args.namespace)
        if len(pods) > 1:
            print(f"Found {len(pods)} pods, using pod/{pods[0]['metadata']['name']}", file=sys.stderr)
            pods = pods[:1]
    else:
        raise CliError("error: expected POD or TYPE/NAME, or -l SELECTOR")
    for pod in pods:
        name = pod["metadata"]["name"]
        container = args.container
        if container is None and len(pod["spec"]["containers"]) > 1 and not args.selector:
            container = pod["metadata"].get("annotations", {}).get("kubectl.kubernetes.io/default-container") \
                or pod["spec"]["containers"][0]["name"]
        prefix = f"[pod/{name}/{container or pod['spec']['containers'][0]['name']}] " if args.prefix else ""
        if args.follow and len(pods) == 1:
            for msg in client.stream("logs", namespace=args.namespace, pod=name, container=container,
                                     follow=True, tail=args.tail):
                sys.stdout.write(msg.get("data", ""))
                sys.stdout.flush()
            return 0
        text = client.call("logs", namespace=args.namespace, pod=name, container=container,
                           previous=args.previous, tail=args.tail)
        if prefix:
            text = "".join(prefix + line for line in text.splitlines(keepends=True))
        sys.stdout.write(text)
    return 0


def cmd_scale(args, client) -> int:
    kind, names = _kind_and_names(args.args)
    if args.replicas is None:
        raise CliError("error: --replicas=COUNT is required")
    for n in names:
        client.call("scale", kind=kind, name=n, namespace=args.namespace, replicas=args.replicas)
        k = kinds.resolve(kind)
        print(f"{_ref(k.kind, k.group, n)} scaled")
    return 0


def cmd_rollout(args, client) -> int:
    kind, names = _kind_and_names(args.args)
    k = kinds.resolve(kind)
    for n in names:
        if args.action == "restart":
            client.call("rollout_restart", kind=kind, name=n, namespace=args.namespace)
            print(f"{_ref(k.kind, k.group, n)} restarted")
        else:
            _rollout_status(client, k, n, args.namespace, _duration(args.timeout))
    return 0


def _rollout_status(client, k, name, ns, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        obj = client.call("get", kind=k.kind, name=name, namespace=ns)
        st, spec = obj.get("status", {}), obj["spec"]
        if k.kind == "Deployment":
            want = spec.get("replicas", 1)
            done = (st.get("observedGeneration", 0) >= obj["metadata"].get("generation", 1)
                    and st.get("updatedReplicas", 0) == want and st.get("readyReplicas", 0) == want
                    and st.get("replicas", 0) == want)
        else:
            want = st.get("desiredNumberScheduled", 0)
            done = st.get("updatedNumberScheduled", 0) == want and st.get("numberReady", 0) == want \
                and st.get("currentNumberScheduled", 0) == want
        if done:
            print(f'{k.kind.lower()} "{name}" successfully rolled out')
            return
        if time.monotonic() > deadline:
            raise CliError(f'error: timed out waiting for the condition on {k.plural}/{name}')
        time.sleep(0.1)


def _duration(text: str | None, default: float = 30.0) -> float:
    if not text:
        return default
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise CliError(f'error: invalid duration "{text}"')
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def cmd_wait(args, client) -> int:
    cond = args.for_
    if not cond:
        raise CliError("error: --for must be set")
    kind, names = _kind_and_names(args.args) if args.args else ("pod", [])
    k = kinds.resolve(kind)
    ns = None if args.all_namespaces else args.namespace
    timeout = _duration(args.timeout)
    deadline = time.monotonic() + timeout
    if cond == "delete":
        if not names:
            names = [o["metadata"]["name"] for o in
                     client.call("get", kind=k.kind, namespace=ns, selector=args.selector)["items"]]
        pending = list(names)
        while pending:
            pending = [n for n in pending if _exists(client, k.kind, n, ns)]
            if pending and time.monotonic() > deadline:
                raise CliError(f"error: timed out waiting for the condition on {k.plural}/{pending[0]}")
            time.sleep(0.05)
        for n in names:
            print(f"{_ref(k.kind, k.group, n)} condition met")
        return 0
    m = re.fullmatch(r"condition=([A-Za-z]+)(?:=(\w+))?", cond)
    if not m:
        raise CliError(f'error: unrecognized condition: "{cond}"')
    ctype, cvalue = m.group(1).lower(), (m.group(2) or "True").lower()
    while True:
        if names:
            objs = [o for o in (_get_or_none(client, k.kind, n, ns) for n in names) if o is not None]
            complete = len(objs) == len(names)
        else:
            objs = client.call("get", kind=k.kind, namespace=ns, selector=args.selector)["items"]
            complete = bool(objs)
        met = complete and all(_condition(o, ctype) == cvalue for o in objs)
        if met:
            for o in objs:
                print(f"{_ref(k.kind, k.group, o['metadata']['name'])} condition met")
            return 0
        if time.monotonic() > deadline:
            if not objs:
                raise CliError(f"error: no matching resources found")
            bad = next(o for o in objs if _condition(o, ctype) != cvalue)
            raise CliError(f"error: timed out waiting for the condition on {k.plural}/{bad['metadata']['name']}")
        time.sleep(0.05)


def _exists(client, kind, name, ns) -> bool:
    return _get_or_none(client, kind, name, ns) is not None


def _get_or_none(client, kind, name, ns):
    try:
        return client.call("get", kind=kind, name=name, namespace=ns)
    except LabError:
        return None


def _condition(obj: dict, ctype: str) -> str:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type", "").lower() == ctype:
            return str(c.get("status", "")).lower()
    return "unknown"


def cmd_capture(args, client) -> int:
    """tcpdump on a pod's eth0 (or a node's, with node/NAME): the wire as the kernel sees it."""
    if args.target.startswith(("node/", "no/")):
        node = args.target.split("/", 1)[1]
        netns = f"al-{args.lab}-node-{node}"
        client.call("get", kind="Node", name=node, namespace=None)
    else:
        pod = client.call("get", kind="Pod", name=args.target, namespace=args.namespace)
        netns = pod["metadata"].get("annotations", {}).get("lab.ambient/netns")
        if not netns:
            raise CliError(f"error: pod {args.target} has no network namespace yet")
    argv = ["ip", "netns", "exec", netns, "tcpdump", "-U", "-n", "-i", args.interface]
    if args.write:
        argv += ["-w", args.write]
    if args.count:
        argv += ["-c", str(args.count)]
    argv += args.filter
    sys.stdout.flush()
    os.execvp("ip", argv)
    return 126  # not reached


def cmd_graph(args, client) -> int:
    """The lab as a Mermaid graph (renders on GitHub): nodes, their pods, Services."""
    st = client.call("status")
    pods = client.call("get", kind="Pod", namespace=None)["items"]
    lines = ["graph LR", '  fabric(("fabric br0"))']
    for n in st["nodes"]:
        nid = "n_" + re.sub(r"\W", "_", n["name"])
        lines.append(f'  {nid}["{n["name"]}<br/>{n["ip"]}<br/>{n["podCIDR"]}"] --- fabric')
        for p in pods:
            if p["spec"].get("nodeName") != n["name"] or p["spec"].get("hostNetwork"):
                continue
            pid = "p_" + re.sub(r"\W", "_", p["metadata"]["namespace"] + "_" + p["metadata"]["name"])
            ip = p.get("status", {}).get("podIP", "")
            lines.append(f'  {pid}("{p["metadata"]["namespace"]}/{p["metadata"]["name"]}<br/>{ip}") --- {nid}')
    print("\n".join(lines))
    return 0


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


def cmd_events(args, client) -> int:
    args.args = ["events"]
    args.output = None
    return cmd_get(args, client)


# Parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lab", description="ambient-lab: an Istio ambient mesh lab in network namespaces")
    p.add_argument("--lab", default=os.environ.get("AMBIENT_LAB", "default"), help="which lab to talk to")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    def ns_flags(sp, all_ns=True):
        sp.add_argument("-n", "--namespace", default=None)
        if all_ns:
            sp.add_argument("-A", "--all-namespaces", action="store_true")

    sp = sub.add_parser("up", help="start a lab and wait until it is ready")
    sp.add_argument("topology", nargs="?")
    sp.add_argument("--name")
    sp.set_defaults(fn=cmd_up, needs_lab=False)
    sp = sub.add_parser("down", help="tear a lab down (also after a crash)")
    sp.add_argument("--name")
    sp.set_defaults(fn=cmd_down, needs_lab=False)
    sp = sub.add_parser("status", help="the lab's nodes and state")
    sp.add_argument("-o", "--output")
    sp.set_defaults(fn=cmd_status)

    sp = sub.add_parser("apply", help="apply Kubernetes/Istio YAML (all-or-nothing)")
    sp.add_argument("-f", "--filename", action="append", default=[])
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_apply)
    sp = sub.add_parser("delete")
    sp.add_argument("args", nargs="*")
    sp.add_argument("-f", "--filename", action="append", default=[])
    sp.add_argument("-l", "--selector")
    sp.add_argument("--all", action="store_true")
    sp.add_argument("--ignore-not-found", action="store_true")
    sp.add_argument("--wait", default=True, type=lambda s: s.lower() != "false")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_delete)
    sp = sub.add_parser("create")
    sp.add_argument("what")
    sp.add_argument("name", nargs="?")
    sp.add_argument("-f", "--filename", action="append", default=[])
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_create)
    for verb, field in (("label", "labels"), ("annotate", "annotations")):
        sp = sub.add_parser(verb)
        sp.add_argument("args", nargs="+")
        sp.add_argument("--overwrite", action="store_true")
        ns_flags(sp, False)
        sp.set_defaults(fn=(lambda f: lambda a, c: cmd_label(a, c, f))(field))
    sp = sub.add_parser("get")
    sp.add_argument("args", nargs="*")
    sp.add_argument("-l", "--selector")
    sp.add_argument("-o", "--output")
    sp.add_argument("-w", "--watch", action="store_true")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_get)
    sp = sub.add_parser("describe")
    sp.add_argument("args", nargs="+")
    sp.add_argument("-l", "--selector")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_describe)
    sp = sub.add_parser("exec")
    sp.add_argument("-i", "--stdin", action="store_true")
    sp.add_argument("-t", "--tty", action="store_true")
    sp.add_argument("-c", "--container")
    ns_flags(sp, False)
    sp.add_argument("pod")
    sp.add_argument("command", nargs="*")
    sp.set_defaults(fn=cmd_exec)
    sp = sub.add_parser("logs")
    sp.add_argument("target", nargs="?")
    sp.add_argument("-c", "--container")
    sp.add_argument("-l", "--selector")
    sp.add_argument("-f", "--follow", action="store_true")
    sp.add_argument("-p", "--previous", action="store_true")
    sp.add_argument("--tail", type=int)
    sp.add_argument("--prefix", action="store_true")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_logs)
    sp = sub.add_parser("scale")
    sp.add_argument("args", nargs="+")
    sp.add_argument("--replicas", type=int)
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_scale)
    sp = sub.add_parser("rollout")
    sp.add_argument("action", choices=["restart", "status"])
    sp.add_argument("args", nargs="+")
    sp.add_argument("--timeout", default="120s")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_rollout)
    sp = sub.add_parser("wait")
    sp.add_argument("args", nargs="*")
    sp.add_argument("--for", dest="for_")
    sp.add_argument("-l", "--selector")
    sp.add_argument("--timeout", default="30s")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_wait)
    sp = sub.add_parser("istioctl", help="istioctl verbs: install, ztunnel-config, x describe, waypoint")
    isub = sp.add_subparsers(dest="istio_verb", metavar="COMMAND")
    ip = isub.add_parser("install", help="install the ambient profile")
    ip.add_argument("--set", action="append")
    ip.add_argument("-y", "--skip-confirmation", dest="yes", action="store_true")
    for verb in ("ztunnel-config", "zc"):
        zp = isub.add_parser(verb, help="what a ztunnel knows: workloads, services, policies, certificates, connections")
        zp.add_argument("view")
        zp.add_argument("pod", nargs="?", help="a ztunnel pod (default: the first)")
        zp.add_argument("--node", help="the ztunnel of this node")
        zp.add_argument("-o", "--output")
        zp.add_argument("-n", "--namespace", dest="namespace_filter", help="only this namespace")
        zp.add_argument("-A", "--all-namespaces", action="store_true")
    sp.set_defaults(fn=cmd_istioctl)

    sp = sub.add_parser("capture", help="tcpdump in a pod's (or node/NAME's) network namespace")
    sp.add_argument("target")
    sp.add_argument("-i", "--interface", default="eth0")
    sp.add_argument("-w", "--write")
    sp.add_argument("-c", "--count", type=int, help="stop after this many packets")
    sp.add_argument("filter", nargs="*")
    ns_flags(sp, False)
    sp.set_defaults(fn=cmd_capture)
    sp = sub.add_parser("graph", help="the lab as a Mermaid graph")
    sp.set_defaults(fn=cmd_graph)

    sp = sub.add_parser("events")
    sp.add_argument("-l", "--selector")
    sp.add_argument("-w", "--watch", action="store_true")
    ns_flags(sp)
    sp.set_defaults(fn=cmd_events)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `exec POD [flags] -- CMD...`: everything after `--` is the command, flags included.
    # `capture POD [flags] -- FILTER...` likewise passes the tcpdump filter through.
    rest = None
    for verb in ("exec", "capture"):
        if verb in argv and "--" in argv[argv.index(verb):]:
            cut = argv.index("--", argv.index(verb))
            argv, rest = argv[:cut], argv[cut + 1:]
            break
    args = parser.parse_args(argv)
    if rest is not None:
        if args.verb == "exec":
            args.command = list(args.command) + rest
        else:
            args.filter = list(args.filter) + rest
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    if hasattr(args, "namespace"):
        args.namespace_set = args.namespace is not None
        if args.namespace is None:
            args.namespace = "default"
    try:
        client = LabClient(args.lab)
        code = args.fn(args, client)
    except CliError as e:
        print(str(e), file=sys.stderr)
        return 1
    except LabError as e:
        msg = str(e)
        print(msg if msg.startswith(("error", "Error")) else f"error: {msg}", file=sys.stderr)
        return 1
    except (kinds.UnknownKind, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (TimeoutError, ConnectionError) as e:
        print(f"error: the lab API did not answer: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
