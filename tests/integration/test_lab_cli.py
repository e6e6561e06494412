"""The `lab` command as a process, before any lab exists: what it refuses without touching anything."""

import subprocess
import sys

import pytest

from lab.testing import REPO


@pytest.mark.parametrize("name", ["..", "/", "Bad-Name", "a" * 20])
def test_lab_names_are_checked_before_anything_is_touched(name):
    r = subprocess.run(
        [sys.executable, "-m", "lab.cli", "down", "--name", name], capture_output=True, text=True, cwd=REPO
    )
    assert r.returncode == 1 and "must be 1-12 lowercase letters or digits" in r.stderr, r.stderr
