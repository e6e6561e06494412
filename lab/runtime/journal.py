"""The ownership journal: what a lab made, written down *before* it is made.

Each line is `{"op": "add"|"del", "type": "netns"|"dir"|"cgroup", "name": ...}` (a cgroup's name is
its directory, one per controller on cgroup v1). `outstanding()` replays the
lines into the set of objects that may still exist. `lab down` deletes exactly those, so a lab whose
daemon was killed mid-way is still torn down exactly, and nothing is ever found by pattern.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

TYPES = ("netns", "dir", "cgroup")


class Journal:
    """Append-only record. Appends are single `write` calls on an O_APPEND file: a crash leaves at
    worst a truncated last line, which `replay` ignores."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def _write(self, op: str, type_: str, name: str) -> None:
        assert type_ in TYPES, type_
        os.write(self._fd, (json.dumps({"op": op, "type": type_, "name": name}) + "\n").encode())

    def added(self, type_: str, name: str) -> None:
        self._write("add", type_, name)

    def removed(self, type_: str, name: str) -> None:
        self._write("del", type_, name)

    def close(self) -> None:
        os.close(self._fd)


def replay(lines: Iterable[str]) -> list[tuple[str, str]]:
    """Objects added and not removed, in creation order."""
    live: dict[tuple[str, str], None] = {}
    for line in lines:
        try:
            rec = json.loads(line)
            key = (rec["type"], rec["name"])
            op = rec["op"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line after a crash
        if op == "add":
            live[key] = None
        elif op == "del":
            live.pop(key, None)
    return list(live)


def outstanding(path: str) -> list[tuple[str, str]]:
    try:
        with open(path) as f:
            return replay(f)
    except FileNotFoundError:
        return []
