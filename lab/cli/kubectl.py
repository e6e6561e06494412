"""kubectl's verbs against a running lab's API: apply, delete, create, label/annotate, get,
describe, exec, logs, scale, rollout, wait, events."""

from __future__ import annotations

import json
import os
import re
import sys
import time

from lab.apiserver import kinds
from lab.cli import printers
from lab.cli.common import (
    CliError,
    condition,
    duration,
    exists,
    get_or_none,
    kind_and_names,
    ns,
    read_sources,
    ref,
    utc_now,
    wait_gone,
)
from lab.cli.jsonpath import JSONPathError
from lab.cli.jsonpath import render as render_jsonpath
from lab.client import LabError


def cmd_apply(args, client) -> int:
    if not args.filename:
        raise CliError("error: must specify one of -f and -k")
    combined = read_sources(args.filename)
    # All-or-nothing across files too: validate everything in one request.
    text = "\n---\n".join(t for _, t in combined)
    src = ",".join(s for s, _ in combined)
    if args.namespace_set:
        text = _force_namespace(text, args.namespace)
    for r in client.call("apply", manifests=text, source=src):
        for warning in r.get("warnings", ()):
            print(f'Warning: {r["kind"]} {r["namespace"]}/{r["name"]}: {warning}', file=sys.stderr)
        print(f'{ref(r["kind"], r["group"], r["name"])} {r["action"]}')
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
            known = kinds.get(d["kind"]) if isinstance(d.get("kind"), str) else None
            if isinstance(md, dict) and (known is None or known.namespaced) and not md.get("namespace"):
                md["namespace"] = ns
    return yaml.safe_dump_all(docs)


def cmd_delete(args, client) -> int:
    if args.filename:
        text = "\n---\n".join(t for _, t in read_sources(args.filename))
        done = client.call(
            "delete", manifests=text, source=",".join(args.filename), ignore_not_found=args.ignore_not_found
        )
    else:
        if not args.args:
            raise CliError("error: You must provide one or more resources by argument or filename.")
        kind, names = kind_and_names(args.args)
        if not names and not args.selector and not args.all:
            raise CliError("error: resource(s) were provided, but no name was specified")
        done = []
        targets: list[str | None] = list(names) if names else [None]  # no name: by selector or --all
        for n in targets:
            done += client.call(
                "delete",
                kind=kind,
                name=n,
                namespace=ns(args),
                selector=args.selector,
                ignore_not_found=args.ignore_not_found,
            )
    for r in done:
        print(f'{kinds.qualified(r["kind"], r["group"])} "{r["name"]}" deleted')
    if args.wait:
        for r in done:
            if r["kind"] in ("Pod", "Namespace"):
                wait_gone(client, r["kind"], r["namespace"], r["name"], 120)
    return 0


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
        kind, type_name = kinds.split_type_name(words.pop(0))
        name = type_name or ""  # never None: the word has a "/"
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
    obj = client.call(
        "label" if field == "labels" else "annotate",
        kind=kind,
        name=name,
        namespace=args.namespace,
        changes=changes,
        overwrite=args.overwrite,
    )
    k = kinds.resolve(kind)
    verb = "labeled" if field == "labels" else "annotated"
    if before is not None and before["metadata"].get(field) == obj["metadata"].get(field):
        verb = "not " + verb
    elif any(v is None for v in changes.values()) and all(v is None for v in changes.values()):
        verb = "unlabeled" if field == "labels" else "annotated"
    print(f'{ref(k.kind, k.group, name)} {verb}')
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
    now = utc_now()
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
                outputs.append(render_jsonpath(out[len("jsonpath=") :], data))
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
            outputs.append(
                printers.table(
                    k.kind, objs, wide=out == "wide", all_namespaces=args.all_namespaces and k.namespaced, now=now
                )
            )
        else:
            raise CliError(
                f'error: unable to match a printer suitable for the output format "{out}", '
                f"allowed formats are: json,jsonpath,name,wide,yaml"
            )
    text = ("\n\n" if out in ("", "wide") else "\n").join(o.rstrip("\n") for o in outputs if o != "")
    if out.startswith("jsonpath="):
        sys.stdout.write("".join(outputs))
    elif text:
        print(text)
    return 0


def cmd_describe(args, client) -> int:
    if not args.args:
        raise CliError("error: You must specify the type of resource to describe.")
    kind, names = kind_and_names(args.args)
    k = kinds.resolve(kind)
    ns = args.namespace if k.namespaced else None
    objs = (
        [client.call("get", kind=k.kind, name=n, namespace=ns) for n in names]
        if names
        else client.call("get", kind=k.kind, namespace=ns, selector=args.selector)["items"]
    )
    events = client.call("get", kind="Event", namespace=ns)["items"] if k.namespaced else []
    now = utc_now()
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
    # The API's prefix enters the pod's netns and, for a container with runAsUser, switches user.
    argv = [*target.get("argv", ["ip", "netns", "exec", target["netns"]]), *args.command]
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
            container = (
                pod["metadata"].get("annotations", {}).get("kubectl.kubernetes.io/default-container")
                or pod["spec"]["containers"][0]["name"]
            )
        prefix = f"[pod/{name}/{container or pod['spec']['containers'][0]['name']}] " if args.prefix else ""
        if args.follow and len(pods) == 1:
            for msg in client.stream(
                "logs", namespace=args.namespace, pod=name, container=container, follow=True, tail=args.tail
            ):
                sys.stdout.write(msg.get("data", ""))
                sys.stdout.flush()
            return 0
        text = client.call(
            "logs", namespace=args.namespace, pod=name, container=container, previous=args.previous, tail=args.tail
        )
        if prefix:
            text = "".join(prefix + line for line in text.splitlines(keepends=True))
        sys.stdout.write(text)
    return 0


def cmd_scale(args, client) -> int:
    kind, names = kind_and_names(args.args)
    if args.replicas is None:
        raise CliError("error: --replicas=COUNT is required")
    for n in names:
        client.call("scale", kind=kind, name=n, namespace=args.namespace, replicas=args.replicas)
        k = kinds.resolve(kind)
        print(f"{ref(k.kind, k.group, n)} scaled")
    return 0


def cmd_rollout(args, client) -> int:
    kind, names = kind_and_names(args.args)
    k = kinds.resolve(kind)
    for n in names:
        if args.action == "restart":
            client.call("rollout_restart", kind=kind, name=n, namespace=args.namespace)
            print(f"{ref(k.kind, k.group, n)} restarted")
        else:
            _rollout_status(client, k, n, args.namespace, duration(args.timeout))
    return 0


def _rollout_status(client, k, name, ns, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        obj = client.call("get", kind=k.kind, name=name, namespace=ns)
        st, spec = obj.get("status", {}), obj["spec"]
        if k.kind == "Deployment":
            want = spec.get("replicas", 1)
            done = (
                st.get("observedGeneration", 0) >= obj["metadata"].get("generation", 1)
                and st.get("updatedReplicas", 0) == want
                and st.get("readyReplicas", 0) == want
                and st.get("replicas", 0) == want
            )
        else:
            want = st.get("desiredNumberScheduled", 0)
            done = (
                st.get("updatedNumberScheduled", 0) == want
                and st.get("numberReady", 0) == want
                and st.get("currentNumberScheduled", 0) == want
            )
        if done:
            print(f'{k.kind.lower()} "{name}" successfully rolled out')
            return
        if time.monotonic() > deadline:
            raise CliError(f'error: timed out waiting for the condition on {k.plural}/{name}')
        time.sleep(0.1)


def cmd_wait(args, client) -> int:
    cond = args.for_
    if not cond:
        raise CliError("error: --for must be set")
    kind, names = kind_and_names(args.args) if args.args else ("pod", [])
    k = kinds.resolve(kind)
    ns = None if args.all_namespaces else args.namespace
    timeout = duration(args.timeout)
    deadline = time.monotonic() + timeout
    if cond == "delete":
        if not names:
            names = [
                o["metadata"]["name"]
                for o in client.call("get", kind=k.kind, namespace=ns, selector=args.selector)["items"]
            ]
        pending = list(names)
        while pending:
            pending = [n for n in pending if exists(client, k.kind, n, ns)]
            if pending and time.monotonic() > deadline:
                raise CliError(f"error: timed out waiting for the condition on {k.plural}/{pending[0]}")
            time.sleep(0.05)
        for n in names:
            print(f"{ref(k.kind, k.group, n)} condition met")
        return 0
    m = re.fullmatch(r"condition=([A-Za-z]+)(?:=(\w+))?", cond)
    if not m:
        raise CliError(f'error: unrecognized condition: "{cond}"')
    ctype, cvalue = m.group(1).lower(), (m.group(2) or "True").lower()
    while True:
        if names:
            objs = [o for o in (get_or_none(client, k.kind, n, ns) for n in names) if o is not None]
            complete = len(objs) == len(names)
        else:
            objs = client.call("get", kind=k.kind, namespace=ns, selector=args.selector)["items"]
            complete = bool(objs)
        met = complete and all(condition(o, ctype) == cvalue for o in objs)
        if met:
            for o in objs:
                print(f"{ref(k.kind, k.group, o['metadata']['name'])} condition met")
            return 0
        if time.monotonic() > deadline:
            if not objs:
                raise CliError("error: no matching resources found")
            bad = next(o for o in objs if condition(o, ctype) != cvalue)
            raise CliError(f"error: timed out waiting for the condition on {k.plural}/{bad['metadata']['name']}")
        time.sleep(0.05)


def cmd_events(args, client) -> int:
    args.args = ["events"]
    args.output = None
    return cmd_get(args, client)
