"""What the `lab` verbs share: the error type, argument helpers, small formatting helpers."""

from __future__ import annotations

import datetime as dt
import os
import sys
import time

from lab.apiserver import kinds
from lab.client import LabError
from lab.client.cli import CliError, duration, get_or_none  # noqa: F401 (the verbs' shared helpers)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ref(kind: str, group: str | None, name: str) -> str:
    """`deployment.apps/httpbin`, as kubectl names an object it acted on."""
    return f"{kinds.qualified(kind, group)}/{name}"


def read_sources(files: list[str]) -> list[tuple[str, str]]:
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


def columns(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def kind_and_names(words: list[str]) -> tuple[str, list[str]]:
    first = words[0]
    if "/" in first:
        kind, type_name = kinds.split_type_name(first)
        name = type_name or ""  # never None: FIRST has a "/"
        names = [name] + [kinds.split_type_name(w)[1] or w for w in words[1:]]
        return kind, names
    return first, words[1:]


def ns(args) -> str | None:
    return None if getattr(args, "all_namespaces", False) else args.namespace


def exists(client, kind, name, ns) -> bool:
    return get_or_none(client, kind, name, ns) is not None


def condition(obj: dict, ctype: str) -> str:
    for c in obj.get("status", {}).get("conditions", []) or []:
        if c.get("type", "").lower() == ctype:
            return str(c.get("status", "")).lower()
    return "unknown"


def wait_gone(client, kind, ns, name, timeout) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.call("get", kind=kind, name=name, namespace=ns)
        except LabError:
            return
        time.sleep(0.05)
    raise CliError(f'error: timed out waiting for {kind.lower()} "{name}" to be deleted')
