"""One nftables table written as one atomic `nft -f` script, each rule the translation of an
iptables line. Pure.

Istio's redirections are iptables rules: istio-cni's in-pod ones (`mesh.cni.rules`) and
istio-init's for a sidecar (`mesh.sidecar.iptables`). The lab writes each as one nft table whose
rules carry the iptables line they stand for as their comment, so `nft list table` reads like
Istio's own output. The script starts with `table` (make sure it exists) and `delete table`, then
the full definition, all in one transaction: applying it again replaces the table instead of
appending rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: nft limits a rule comment to 128 bytes.
MAX_COMMENT = 128


@dataclass(frozen=True)
class Chain:
    """A base chain (its type, hook and priority) or, without a hook, a regular chain reached by `jump`."""

    name: str
    type: str = ""
    hook: str = ""  # "" for a regular chain
    priority: str = ""


@dataclass(frozen=True)
class Rule:
    """One nft rule and the iptables line (with its table) it is the translation of."""

    chain: str
    nft: str
    iptables: str


def _clear(family: str, table: str) -> list[str]:
    """Make the table exist, then delete it: a no-op-safe way to start from nothing."""
    return [f"table {family} {table}", f"delete table {family} {table}"]


def apply_script(family: str, table: str, chains: Iterable[Chain], rules: Iterable[Rule]) -> str:
    """The `nft -f` script that (re)defines the table atomically: the chains in order, each with
    its rules in order."""
    rules = list(rules)
    lines = _clear(family, table)
    lines.append(f"table {family} {table} {{")
    for chain in chains:
        lines.append(f"    chain {chain.name} {{")
        if chain.hook:
            lines.append(f"        type {chain.type} hook {chain.hook} priority {chain.priority}; policy accept;")
        for rule in rules:
            if rule.chain == chain.name:
                lines.append(f'        {rule.nft} comment "{rule.iptables}"')
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def remove_script(family: str, table: str) -> str:
    """The `nft -f` script that deletes the table, whether or not it exists."""
    return "\n".join(_clear(family, table)) + "\n"
