"""`nft -c` in a scratch network namespace: what the tests of the nft scripts share (needs root)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable

import pytest

from lab.client import netns


def nft(ns: str, *args: str, script: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args], input=script, text=True, capture_output=True, timeout=10
    )


def assert_nft_accepts(scripts: Iterable[str], tag: str) -> None:
    """`nft -c -f -` takes every script, in a scratch namespace named after TAG, and changes nothing.
    Skips the test without root."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    name = f"al-c{os.getpid()}-{tag}"
    netns.create(name)
    try:
        for script in scripts:
            result = nft(name, "-c", "-f", "-", script=script)
            assert result.returncode == 0, result.stderr
        assert nft(name, "list", "ruleset").stdout == ""  # -c changed nothing
    finally:
        netns.remove(name)
