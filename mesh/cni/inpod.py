"""Write and remove a pod's in-pod redirection inside its network namespace (docs/ambient-facts.md §3.2).

Three kernel objects make a pod "captured": the nft table `ip istio_inpod` (`mesh.cni.rules`), the
policy rule `fwmark 0x111/0xfff pref 32764 lookup 100`, and the route `local 0.0.0.0/0 dev lo table
100`. Every function here is synchronous, idempotent and safe to run in several trio worker threads
at once: the thread switches into the pod's namespace only for a few netlink messages or to spawn
`nft` (a child starts in its creator's namespace), and always switches back.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import subprocess
from collections.abc import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lab.client import netns
from mesh.cni import rules

NFT_TIMEOUT_S = 30
LOOPBACK_IFINDEX = 1  # `lo` is index 1 in every network namespace
RT_SCOPE_HOST = 254  # a `local` route has host scope; pyroute2 does not infer it from the type
RTN_LOCAL = 2


class InpodError(RuntimeError):
    """Writing or removing a pod's redirection failed; the message names the namespace and step."""


def enroll(netns_name: str) -> None:
    """Capture the pod's traffic: policy route first (so replies can reach ztunnel), then the table.

    Applying again converges: the route is replaced, the rule is added only if missing, and the nft
    script redefines the whole table in one transaction."""
    with _rtnl(netns_name, "add the inpod policy route") as ipr:
        ipr.route("replace", **_ROUTE)
        if not _find_rules(ipr):
            ipr.rule("add", **_RULE)
    _nft(netns_name, "apply the inpod rules", ["-f", "-"], rules.apply_script())


def unenroll(netns_name: str) -> None:
    """Release the pod: table first (stop capturing), then the policy rule and route.

    A namespace that no longer exists has nothing left to remove."""
    if not netns.exists(netns_name):
        return
    _nft(netns_name, "remove the inpod rules", ["-f", "-"], rules.remove_script())
    with _rtnl(netns_name, "remove the inpod policy route") as ipr:
        for _ in _find_rules(ipr):
            _ignoring(errno.ENOENT, lambda: ipr.rule("del", **_RULE))
        _ignoring(errno.ESRCH, lambda: ipr.route("del", **_ROUTE))


def is_enrolled(netns_name: str) -> bool:
    """True when all three objects are in place."""
    if not netns.exists(netns_name):
        return False
    with _rtnl(netns_name, "read the inpod policy route") as ipr:
        routed = bool(_find_rules(ipr)) and bool(_find_routes(ipr))
    return (
        routed
        and _nft(netns_name, "list the inpod table", ["list", "table", rules.FAMILY, rules.TABLE], check=False) == 0
    )


_RULE = dict(
    family=socket.AF_INET,
    fwmark=rules.INPOD_TPROXY_MARK,
    fwmask=rules.INPOD_MASK,
    priority=rules.RULE_PRIORITY,
    table=rules.ROUTE_TABLE,
)
_ROUTE = dict(
    family=socket.AF_INET,
    dst="0.0.0.0/0",
    type="local",
    oif=LOOPBACK_IFINDEX,
    table=rules.ROUTE_TABLE,
    scope=RT_SCOPE_HOST,
)


def _find_rules(ipr: IPRoute) -> list:
    return [
        r
        for r in ipr.get_rules(family=socket.AF_INET)
        if r.get("priority") == rules.RULE_PRIORITY
        and r.get("fwmark") == rules.INPOD_TPROXY_MARK
        and r.get("fwmask") == rules.INPOD_MASK
        and r.get("table") == rules.ROUTE_TABLE
    ]


def _find_routes(ipr: IPRoute) -> list:
    return [
        r
        for r in ipr.get_routes(family=socket.AF_INET, table=rules.ROUTE_TABLE)
        if r["dst_len"] == 0 and r.get("oif") == LOOPBACK_IFINDEX and r["type"] == RTN_LOCAL
    ]


def _ignoring(code: int, request) -> None:
    try:
        request()
    except NetlinkError as e:
        if e.code != code:
            raise


@contextlib.contextmanager
def _rtnl(netns_name: str, what: str) -> Iterator[IPRoute]:
    """An IPRoute whose netlink socket lives in the pod namespace; errors name WHAT and the pod."""
    try:
        with netns.iproute(netns_name) as ipr:
            yield ipr
    except (NetlinkError, OSError) as e:
        raise InpodError(f"{what} in {netns_name}: {e}") from e


def _nft(netns_name: str, what: str, args: list[str], script: str = "", check: bool = True) -> int:
    """Run nft in the pod namespace (spawned while switched in, fed after switching back)."""
    argv = ["nft", *args]
    try:
        done = netns.run(netns_name, argv, script, NFT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InpodError(f"{what} in {netns_name}: {' '.join(argv)}: {e}") from e
    if check and done.returncode != 0:
        raise InpodError(
            f"{what} in {netns_name}: {' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return done.returncode
