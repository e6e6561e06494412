"""istio-init: `python -m mesh.proxy istio-iptables <flags>` writes a sidecar pod's interception.

The injected `istio-init` init container runs as root with NET_ADMIN in the pod's network namespace
(the kubelet starts every container there), parses istio-iptables' flags (`mesh.sidecar.iptables`),
feeds the nft script to `nft -f -` and prints what it applied, as istio-init's log shows the
resulting rules. Running it again replaces the table. `apply` can also target a named netns (tests).
"""

from __future__ import annotations

import subprocess
import sys
from typing import TextIO

from lab.client import netns
from mesh.sidecar import iptables

NFT_TIMEOUT_S = 30


class InitError(RuntimeError):
    """Applying the rules failed; the message names the step and nft's complaint."""


def apply(config: iptables.Config, netns_name: str | None = None) -> str:
    """Write CONFIG's table into the current netns, or NETNS_NAME's. Returns the script applied."""
    script = iptables.apply_script(config)
    _nft(["-f", "-"], script, netns_name, "apply the sidecar rules")
    return script


def remove(netns_name: str | None = None) -> None:
    """Delete the table, whether or not it exists."""
    _nft(["-f", "-"], iptables.remove_script(), netns_name, "remove the sidecar rules")


def _nft(args: list[str], script: str, netns_name: str | None, what: str) -> None:
    argv = ["nft", *args]
    where = f" in {netns_name}" if netns_name else ""
    try:
        done = netns.run(netns_name or None, argv, script, NFT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InitError(f"{what}{where}: {' '.join(argv)}: {e}") from e
    if done.returncode != 0:
        raise InitError(f"{what}{where}: {' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}")


def main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """istio-iptables' entry point: 0 when the rules are in place, 2 for bad flags, 1 for nft."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        config = iptables.parse_args(argv)
    except iptables.FlagError as e:
        print(f"error\t{e}", file=err, flush=True)
        return 2
    print("info\tIstio iptables configuration:\n" + iptables.describe(config), file=out, end="", flush=True)
    if config.dry_run:
        print("info\tdry run: not applying\n" + iptables.apply_script(config), file=out, end="", flush=True)
        return 0
    try:
        apply(config)
    except InitError as e:
        print(f"error\t{e}", file=err, flush=True)
        return 1
    print("info\tRunning iptables restore with:\n" + iptables.iptables_save(config), file=out, end="", flush=True)
    print(
        f"info\tApplied as nftables table {iptables.FAMILY} {iptables.TABLE}:\n" + iptables.apply_script(config),
        file=out,
        end="",
        flush=True,
    )
    return 0
