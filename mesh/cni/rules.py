"""Istio's in-pod redirection rules (docs/ambient-facts.md §3.2, the REDIRECT flavour) as nftables. Pure.

Istio writes these with iptables into the pod's mangle and nat tables (golden file
`cni/pkg/iptables/testdata/default.golden`). Here they live in one table, `ip istio_inpod`, with one
base chain per iptables table and hook, at the priority iptables uses for that table, so the
packet sees the same rules in the same order. Every rule carries the iptables line it stands for
as its nft comment, so `nft list table ip istio_inpod` in a pod reads like the golden file.

DNS capture (the udp/tcp 53 → 15053 REDIRECTs and the raw-table CT zones) is not written: the lab
runs with Istio's default `DNS_CAPTURE=false` semantics for ztunnel.

The script is atomic (`mesh.nft`: `table`, `delete table`, then the full definition, all in one
`nft -f` transaction), so applying it again replaces the table instead of appending rules.
Alongside the table the pod needs a policy route (`ip rule fwmark 0x111/0xfff pref 32764 lookup
100` + `local 0.0.0.0/0 dev lo table 100`), which `mesh.cni.inpod` adds with netlink.
"""

from __future__ import annotations

from mesh import nft
from mesh.contract import HBONE_PORT, INBOUND_CAPTURE_PORT, INPOD_MARK, OUTBOUND_CAPTURE_PORT
from mesh.nft import Chain, Rule

TABLE = "istio_inpod"
FAMILY = "ip"

#: Connmark that routes replies to ztunnel's spoofed inbound sockets back to it (InpodTProxyMark).
INPOD_TPROXY_MARK = 0x111
#: Istio's marks only use the low 12 bits, leaving the rest to other tools.
INPOD_MASK = 0xFFF
#: kubelet probes are SNATed to this address on the node; they bypass the redirection.
PROBE_SNAT_IP = "169.254.7.127"
LOCALHOST = "127.0.0.1"

# ztunnel's in-pod listeners, as the rules name them (INPOD_MARK, too, is the contract's).
ZTUNNEL_OUTBOUND_PORT = OUTBOUND_CAPTURE_PORT
ZTUNNEL_INBOUND_PLAINTEXT_PORT = INBOUND_CAPTURE_PORT
ZTUNNEL_INBOUND_HBONE_PORT = HBONE_PORT

#: The policy route for connmarked replies (Istio's RouteTableInbound and its rule priority).
ROUTE_TABLE = 100
RULE_PRIORITY = 32764


def _mark_is(value: int) -> str:
    return f"meta mark & {INPOD_MASK:#x} == {value:#x}"


def _mark_is_not(value: int) -> str:
    return f"meta mark & {INPOD_MASK:#x} != {value:#x}"


_KEEP_HIGH_BITS = 0xFFFFFFFF & ~INPOD_MASK

# One base chain per iptables table and built-in chain it replaces. iptables' `mangle` table hooks
# at priority -150 and `nat` OUTPUT at -100 ("mangle" and "dstnat"; nft 1.0.6 only accepts the
# `dstnat` keyword on prerouting, so output spells the number). mangle OUTPUT is a `route` chain:
# after it changes the mark, the kernel routes the packet again, which is what sends replies marked
# 0x111 to table 100.
CHAINS: tuple[Chain, ...] = (
    Chain("mangle_prerouting", "filter", "prerouting", "mangle"),
    Chain("mangle_output", "route", "output", "mangle"),
    Chain("nat_prerouting", "nat", "prerouting", "dstnat"),
    Chain("nat_output", "nat", "output", "-100"),
)

RULES: tuple[Rule, ...] = (
    # Packets from ztunnel's inbound sockets (mark 0x539) tag their connection 0x111 ...
    Rule(
        "mangle_prerouting",
        f"{_mark_is(INPOD_MARK)} ct mark set ct mark & {_KEEP_HIGH_BITS:#x} | {INPOD_TPROXY_MARK:#x}",
        "mangle: -A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff",
    ),
    # ... so the app's replies on that connection carry mark 0x111 and route to table 100 (lo).
    Rule(
        "mangle_output",
        f"ct mark & {INPOD_MASK:#x} == {INPOD_TPROXY_MARK:#x} meta mark set ct mark",
        "mangle: -A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark"
        " --nfmask 0xffffffff --ctmask 0xffffffff",
    ),
    # kubelet probes, SNATed on the node, reach the app directly.
    Rule(
        "nat_prerouting",
        f"ip saddr {PROBE_SNAT_IP} ip protocol tcp accept",
        f"nat: -A ISTIO_PRERT -s {PROBE_SNAT_IP} -p tcp -m tcp -j ACCEPT",
    ),
    # Inbound TCP goes to ztunnel's plaintext port, except HBONE (15008) and ztunnel's own packets.
    Rule(
        "nat_prerouting",
        f"ip daddr != {LOCALHOST} tcp dport != {ZTUNNEL_INBOUND_HBONE_PORT} {_mark_is_not(INPOD_MARK)}"
        f" redirect to :{ZTUNNEL_INBOUND_PLAINTEXT_PORT}",
        "nat: -A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff"
        " -j REDIRECT --to-ports 15006",
    ),
    # Replies to probes leave untouched.
    Rule(
        "nat_output",
        f"ip daddr {PROBE_SNAT_IP} ip protocol tcp accept",
        f"nat: -A ISTIO_OUTPUT -d {PROBE_SNAT_IP} -p tcp -m tcp -j ACCEPT",
    ),
    # Replies to connections ztunnel delivered inbound are not outbound traffic.
    Rule(
        "nat_output",
        f"ip protocol tcp {_mark_is(INPOD_TPROXY_MARK)} accept",
        "nat: -A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT",
    ),
    # Traffic to the pod's own addresses stays in the pod.
    Rule(
        "nat_output",
        f'oifname "lo" ip daddr != {LOCALHOST} accept',
        "nat: -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT",
    ),
    # Every other outbound TCP connection goes to ztunnel's outbound port.
    Rule(
        "nat_output",
        f"ip daddr != {LOCALHOST} ip protocol tcp {_mark_is_not(INPOD_MARK)} redirect to :{ZTUNNEL_OUTBOUND_PORT}",
        "nat: -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001",
    ),
)


def apply_script() -> str:
    """The `nft -f` script that (re)defines the table atomically."""
    return nft.apply_script(FAMILY, TABLE, CHAINS, RULES)


def remove_script() -> str:
    """The `nft -f` script that deletes the table, whether or not it exists."""
    return nft.remove_script(FAMILY, TABLE)
