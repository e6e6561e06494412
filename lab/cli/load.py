"""`lab load`: HTTP load from inside a pod (lab.load), as a short table or the JSON report."""

from __future__ import annotations

from lab.apiserver import kinds
from lab.cli.common import CliError, duration
from lab.load import LoadError, run


def _pod(client, ref: str, namespace: str) -> str:
    """POD, or the first running pod of TYPE/NAME (deploy/sleep)."""
    if "/" not in ref:
        return ref
    kind, type_name = kinds.split_type_name(ref)
    name = type_name or ""  # never None: REF has a "/"
    k = kinds.resolve(kind)
    if k.kind == "Pod":
        return name
    owner = client.call("get", kind=k.kind, name=name, namespace=namespace)
    selector = ",".join(f"{a}={b}" for a, b in owner["spec"].get("selector", {}).get("matchLabels", {}).items())
    pods = client.call("get", kind="Pod", namespace=namespace, selector=selector)["items"]
    running = [
        p for p in pods if p.get("status", {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]
    if not running:
        raise CliError(f"error: no running pods found for {ref}")
    return running[0]["metadata"]["name"]


def cmd_load(args, client) -> int:
    if args.output not in (None, "json", "table"):
        raise CliError(f"error: -o {args.output}: expected json (the text table is the default)")
    pod = _pod(client, args.from_, args.namespace)
    try:
        report = run(
            client,
            args.namespace,
            pod,
            args.url,
            qps=args.qps,
            duration=duration(args.duration),
            connections=args.connections,
            timeout=duration(args.timeout),
            headers=args.header,
            method=args.method,
            container=args.container,
        )
    except LoadError as e:
        msg = str(e)
        raise CliError(msg if msg.startswith("error") else f"error: {msg}") from None
    print(report.to_json(indent=2) if args.output == "json" else report.table())
    return 0
