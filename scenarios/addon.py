"""The scenarios as a lab add-on (entry point `ambient_lab.addons: scenarios`, see lab/addons.py):
they give the `lab` command line its `scenario` verb."""

from __future__ import annotations

from scenarios.cli import add_cli_verbs

__all__ = ["add_cli_verbs"]
