"""What a command-line tool on the lab API needs: one error type that prints as one line and exits 1,
durations as kubectl writes them, and a get that answers None for "not found".

The `lab` verbs and the verbs add-ons give it (the mesh's `istioctl`) share these.
"""

from __future__ import annotations

import re

from lab.client import LabError


class CliError(Exception):
    """Printed as it is (one line, to stderr) and exit status 1."""


def duration(text: str | None, default: float = 30.0) -> float:
    if not text:
        return default
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text.strip())
    if not m:
        raise CliError(f'error: invalid duration "{text}"')
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def get_or_none(client, kind, name, ns):
    try:
        return client.call("get", kind=kind, name=name, namespace=ns)
    except LabError:
        return None
