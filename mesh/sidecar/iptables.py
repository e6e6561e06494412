"""istio-init's traffic interception for a sidecar pod, as nftables. Pure.

The `istio-init` container the injector adds runs `istio-iptables` with the pod's capture settings
(`-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020`). Istio turns
those flags into iptables nat rules in four chains of its own (ISTIO_INBOUND, ISTIO_IN_REDIRECT,
ISTIO_OUTPUT, ISTIO_REDIRECT) hooked from PREROUTING and OUTPUT (docs/sidecars.md, "Traffic
interception"). Here they live in one table, `ip istio_sidecar`, with the same chain names: the two
hooks are base chains at the nat priorities and Istio's chains are regular chains reached by
`jump`, so a packet walks the same rules in the same order. Every rule carries the iptables line
it stands for as its nft comment (`mesh.nft`, as `mesh.cni.rules` writes its table too).

How the proxy is told apart from the app: by socket owner. Envoy runs as uid/gid 1337, so its own
outbound connections leave untouched (`meta skuid 1337 return`), while the app's are redirected
to 15001; connections to the pod itself over `lo` from the proxy go back through the inbound
listener 15006 (the app → VIP → own pod case), except HBONE to 15008.

Only what the lab runs is translated: REDIRECT mode and IPv4. DNS capture, TPROXY, interface
exclusions and outbound-port inclusion are refused by `parse_args` rather than silently ignored.

The script is atomic (`table`, `delete table`, then the full definition in one `nft -f`
transaction), so running istio-init again replaces the table instead of adding to it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mesh import nft
from mesh.contract import HBONE_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT, PROXY_UID
from mesh.nft import Chain, Rule

TABLE = "istio_sidecar"
FAMILY = "ip"

LOOPBACK_CIDR = "127.0.0.1/32"  # istio-iptables' HostIPv4LoopbackCidr default
#: Envoy's inbound passthrough binds this address: the sidecar reaches its own app from it.
INBOUND_PASSTHROUGH_IP = "127.0.0.6"
INBOUND_PASSTHROUGH_SOURCE = f"{INBOUND_PASSTHROUGH_IP}/32"

# Istio's chain names.
INBOUND = "ISTIO_INBOUND"
IN_REDIRECT = "ISTIO_IN_REDIRECT"
OUTPUT_CHAIN = "ISTIO_OUTPUT"
REDIRECT = "ISTIO_REDIRECT"
USER_CHAINS = (INBOUND, REDIRECT, IN_REDIRECT, OUTPUT_CHAIN)  # in the order istio-iptables makes them


class FlagError(ValueError):
    """The istio-iptables command line cannot be honoured; the message says which flag and why."""


@dataclass(frozen=True)
class Config:
    """The settings istio-iptables reads from its flags (names as its flags' long forms)."""

    proxy_port: str = str(OUTBOUND_CAPTURE_PORT)  # -p --envoy-port
    inbound_capture_port: str = str(INBOUND_CAPTURE_PORT)  # -z --inbound-capture-port
    inbound_tunnel_port: str = str(HBONE_PORT)  # -e --inbound-tunnel-port
    proxy_uid: str = str(PROXY_UID)  # -u --proxy-uid (comma list)
    proxy_gid: str = ""  # -g --proxy-gid (comma list; defaults to the uid list)
    inbound_interception_mode: str = "REDIRECT"  # -m --istio-inbound-interception-mode
    outbound_ip_ranges_include: str = ""  # -i --istio-service-cidr ("*" = all)
    outbound_ip_ranges_exclude: str = ""  # -x --istio-service-exclude-cidr
    inbound_ports_include: str = ""  # -b --istio-inbound-ports ("*" = all)
    inbound_ports_exclude: str = ""  # -d --istio-local-exclude-ports
    outbound_ports_exclude: str = ""  # -o --istio-local-outbound-ports-exclude
    log_output_level: str = "default:info"  # --log_output_level
    dry_run: bool = False  # -n --dry-run

    @property
    def gids(self) -> list[str]:
        return split(self.proxy_gid) if self.proxy_gid else split(self.proxy_uid)


# Istio's chains are regular chains; the two hooks are base chains. iptables' nat PREROUTING hooks
# at dstnat (-100) and nat OUTPUT at -100; nft 1.0.6 only takes the `dstnat` keyword on
# prerouting, so output spells the number (as mesh.cni.rules does).
BASE_CHAINS = (Chain("PREROUTING", "nat", "prerouting", "dstnat"), Chain("OUTPUT", "nat", "output", "-100"))
CHAINS: tuple[Chain, ...] = (*(Chain(name) for name in USER_CHAINS), *BASE_CHAINS)


# --- flags ---------------------------------------------------------------------------------------

_SHORT = {
    "-p": "proxy_port",
    "-z": "inbound_capture_port",
    "-e": "inbound_tunnel_port",
    "-u": "proxy_uid",
    "-g": "proxy_gid",
    "-m": "inbound_interception_mode",
    "-i": "outbound_ip_ranges_include",
    "-x": "outbound_ip_ranges_exclude",
    "-b": "inbound_ports_include",
    "-d": "inbound_ports_exclude",
    "-o": "outbound_ports_exclude",
}
_LONG = {
    "--envoy-port": "proxy_port",
    "--inbound-capture-port": "inbound_capture_port",
    "--inbound-tunnel-port": "inbound_tunnel_port",
    "--proxy-uid": "proxy_uid",
    "--proxy-gid": "proxy_gid",
    "--istio-inbound-interception-mode": "inbound_interception_mode",
    "--istio-service-cidr": "outbound_ip_ranges_include",
    "--istio-service-exclude-cidr": "outbound_ip_ranges_exclude",
    "--istio-inbound-ports": "inbound_ports_include",
    "--istio-local-exclude-ports": "inbound_ports_exclude",
    "--istio-local-outbound-ports-exclude": "outbound_ports_exclude",
    "--log_output_level": "log_output_level",
}
_BOOLEAN = {"-n": "dry_run", "--dry-run": "dry_run"}
# Flags istio-iptables has whose behaviour the lab does not reproduce: refused, with the reason.
_UNSUPPORTED = {
    "-q": "outbound port inclusion",
    "--istio-outbound-ports": "outbound port inclusion",
    "-c": "interface exclusion",
    "--istio-exclude-interfaces": "interface exclusion",
    "-k": "kube-virt interfaces",
    "--kube-virt-interfaces": "kube-virt interfaces",
    "-t": "TPROXY marks",
    "--inbound-tproxy-mark": "TPROXY marks",
    "-r": "TPROXY route table",
    "--inbound-tproxy-route-table": "TPROXY route table",
    "--redirect-dns": "DNS capture",
    "--capture-all-dns": "DNS capture",
    "--dual-stack": "IPv6",
    "--drop-invalid": "the invalid-packet drop",
}


def split(value: str) -> list[str]:
    """istio-iptables' list split: comma separated, blanks dropped."""
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str]) -> Config:
    """Parse istio-iptables' command line (short flags take the next word; long ones also `=`)."""
    values: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _UNSUPPORTED:
            raise FlagError(f"istio-iptables: {name}: {_UNSUPPORTED[name]} is not supported in the lab")
        if name in _BOOLEAN:
            values[_BOOLEAN[name]] = inline.lower() not in ("false", "0") if eq else True
            i += 1
            continue
        key = _SHORT.get(name) if not eq else None
        key = key or _LONG.get(name)
        if key is None:
            raise FlagError(f"istio-iptables: unknown flag {arg!r}")
        if eq:
            values[key] = inline
            i += 1
        else:
            if i + 1 >= len(argv):
                raise FlagError(f"istio-iptables: flag {name} needs a value")
            values[key] = argv[i + 1]
            i += 2
    config = Config(**values)  # type: ignore[arg-type]
    _validate(config)
    return config


def _validate(config: Config) -> None:
    mode = config.inbound_interception_mode
    if mode != "REDIRECT":
        raise FlagError(f"istio-iptables: -m {mode}: only REDIRECT interception is supported in the lab")
    for flag, value in (
        ("-p", config.proxy_port),
        ("-z", config.inbound_capture_port),
        ("-e", config.inbound_tunnel_port),
    ):
        _port(flag, value)
    for flag, value in (("-d", config.inbound_ports_exclude), ("-o", config.outbound_ports_exclude)):
        for port in split(value):
            _port(flag, port)
    if config.inbound_ports_include != "*":
        for port in split(config.inbound_ports_include):
            _port("-b", port)
    for flag, value in (("-u", config.proxy_uid), ("-g", config.proxy_gid)):
        for ident in split(value):
            if not ident.isdigit():
                raise FlagError(f"istio-iptables: {flag} {ident!r}: the lab needs numeric ids")
    if not split(config.proxy_uid):
        raise FlagError("istio-iptables: -u: the proxy uid is required")
    if config.outbound_ip_ranges_exclude.strip() == "*":
        raise FlagError("istio-iptables: -x '*': invalid value for OUTBOUND_IP_RANGES_EXCLUDE")
    for flag, value in (("-i", config.outbound_ip_ranges_include), ("-x", config.outbound_ip_ranges_exclude)):
        if value.strip() != "*":
            _cidrs(flag, value)


def _port(flag: str, value: str) -> None:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise FlagError(f"istio-iptables: {flag} {value!r}: not a port number")


def _cidrs(flag: str, value: str) -> list[ipaddress.IPv4Network]:
    nets = []
    for item in split(value):
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise FlagError(f"istio-iptables: {flag} {item!r}: not a CIDR") from None
        if net.version != 4:
            raise FlagError(f"istio-iptables: {flag} {item!r}: IPv6 is not supported in the lab")
        nets.append(net)
    return nets


# --- rules ---------------------------------------------------------------------------------------


def _nat(line: str) -> str:
    return f"nat: {line}"


def build_rules(config: Config) -> list[Rule]:
    """The rules istio-iptables writes for CONFIG, in its order (REDIRECT mode, IPv4)."""
    c = config
    loopback = LOOPBACK_CIDR.split("/")[0]
    rules = [
        # The tunnel port (HBONE into the sidecar) is never captured.
        Rule(
            INBOUND,
            f"tcp dport {c.inbound_tunnel_port} return",
            _nat(f"-A {INBOUND} -p tcp --dport {c.inbound_tunnel_port} -j RETURN"),
        ),
        Rule(
            REDIRECT,
            f"meta l4proto tcp redirect to :{c.proxy_port}",
            _nat(f"-A {REDIRECT} -p tcp -j REDIRECT --to-ports {c.proxy_port}"),
        ),
        Rule(
            IN_REDIRECT,
            f"meta l4proto tcp redirect to :{c.inbound_capture_port}",
            _nat(f"-A {IN_REDIRECT} -p tcp -j REDIRECT --to-ports {c.inbound_capture_port}"),
        ),
    ]
    if c.inbound_ports_include:
        rules.append(Rule("PREROUTING", f"meta l4proto tcp jump {INBOUND}", _nat(f"-A PREROUTING -p tcp -j {INBOUND}")))
        if c.inbound_ports_include == "*":
            for port in split(c.inbound_ports_exclude):
                rules.append(
                    Rule(INBOUND, f"tcp dport {port} return", _nat(f"-A {INBOUND} -p tcp --dport {port} -j RETURN"))
                )
            rules.append(
                Rule(INBOUND, f"meta l4proto tcp jump {IN_REDIRECT}", _nat(f"-A {INBOUND} -p tcp -j {IN_REDIRECT}"))
            )
        else:
            for port in split(c.inbound_ports_include):
                rules.append(
                    Rule(
                        INBOUND,
                        f"tcp dport {port} jump {IN_REDIRECT}",
                        _nat(f"-A {INBOUND} -p tcp --dport {port} -j {IN_REDIRECT}"),
                    )
                )
    rules.append(Rule("OUTPUT", f"meta l4proto tcp jump {OUTPUT_CHAIN}", _nat(f"-A OUTPUT -p tcp -j {OUTPUT_CHAIN}")))
    for port in split(c.outbound_ports_exclude):
        rules.append(
            Rule(OUTPUT_CHAIN, f"tcp dport {port} return", _nat(f"-A {OUTPUT_CHAIN} -p tcp --dport {port} -j RETURN"))
        )
    rules.append(
        Rule(
            OUTPUT_CHAIN,
            f'oifname "lo" ip saddr {INBOUND_PASSTHROUGH_IP} return',
            _nat(f"-A {OUTPUT_CHAIN} -o lo -s {INBOUND_PASSTHROUGH_SOURCE} -j RETURN"),
        )
    )
    include = [] if c.outbound_ip_ranges_include.strip() == "*" else _cidrs("-i", c.outbound_ip_ranges_include)
    include_has_loopback = any(net.network_address.is_loopback for net in include)
    for owner, meta, ids in (("uid", "skuid", split(c.proxy_uid)), ("gid", "skgid", c.gids)):
        for ident in ids:
            # The proxy calling its own pod (app -> VIP -> proxy -> this pod) goes through inbound.
            rules.append(
                Rule(
                    OUTPUT_CHAIN,
                    f'oifname "lo" ip daddr != {loopback} tcp dport != {c.inbound_tunnel_port}'
                    f" meta {meta} {ident} jump {IN_REDIRECT}",
                    _nat(
                        f"-A {OUTPUT_CHAIN} -o lo ! -d {LOOPBACK_CIDR} -p tcp ! --dport {c.inbound_tunnel_port}"
                        f" -m owner --{owner}-owner {ident} -j {IN_REDIRECT}"
                    ),
                )
            )
            # The app calling itself by its own address stays on lo.
            if not include_has_loopback:
                rules.append(
                    Rule(
                        OUTPUT_CHAIN,
                        f'oifname "lo" meta {meta} != {ident} return',
                        _nat(f"-A {OUTPUT_CHAIN} -o lo -m owner ! --{owner}-owner {ident} -j RETURN"),
                    )
                )
            # The proxy's own outbound connections are never sent back to it.
            rules.append(
                Rule(
                    OUTPUT_CHAIN,
                    f"meta {meta} {ident} return",
                    _nat(f"-A {OUTPUT_CHAIN} -m owner --{owner}-owner {ident} -j RETURN"),
                )
            )
    # Localhost (container to container, Envoy-aware apps) is left alone.
    rules.append(
        Rule(OUTPUT_CHAIN, f"ip daddr {loopback} return", _nat(f"-A {OUTPUT_CHAIN} -d {LOOPBACK_CIDR} -j RETURN"))
    )
    for net in _cidrs("-x", c.outbound_ip_ranges_exclude):
        rules.append(Rule(OUTPUT_CHAIN, f"ip daddr {net} return", _nat(f"-A {OUTPUT_CHAIN} -d {net} -j RETURN")))
    if c.outbound_ip_ranges_include.strip() == "*":
        rules.append(Rule(OUTPUT_CHAIN, f"jump {REDIRECT}", _nat(f"-A {OUTPUT_CHAIN} -j {REDIRECT}")))
    else:
        for net in include:
            rules.append(
                Rule(OUTPUT_CHAIN, f"ip daddr {net} jump {REDIRECT}", _nat(f"-A {OUTPUT_CHAIN} -d {net} -j {REDIRECT}"))
            )
    return rules


def apply_script(config: Config) -> str:
    """The `nft -f` script that (re)defines the table atomically. Istio's chains come before the
    base chains that jump to them."""
    return nft.apply_script(FAMILY, TABLE, CHAINS, build_rules(config))


def remove_script() -> str:
    """The `nft -f` script that deletes the table, whether or not it exists."""
    return nft.remove_script(FAMILY, TABLE)


def iptables_save(config: Config) -> str:
    """What istio-init logs: the rules as the iptables lines they stand for, chain creation first."""
    lines = ["* nat", *(f"-N {name}" for name in USER_CHAINS)]
    lines += [r.iptables.removeprefix("nat: ") for r in build_rules(config)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def describe(config: Config) -> str:
    """istio-iptables' configuration dump, one `NAME=value` a line."""
    rows = {
        "PROXY_PORT": config.proxy_port,
        "PROXY_INBOUND_CAPTURE_PORT": config.inbound_capture_port,
        "PROXY_TUNNEL_PORT": config.inbound_tunnel_port,
        "PROXY_UID": config.proxy_uid,
        "PROXY_GID": ",".join(config.gids),
        "INBOUND_INTERCEPTION_MODE": config.inbound_interception_mode,
        "INBOUND_PORTS_INCLUDE": config.inbound_ports_include,
        "INBOUND_PORTS_EXCLUDE": config.inbound_ports_exclude,
        "OUTBOUND_IP_RANGES_INCLUDE": config.outbound_ip_ranges_include,
        "OUTBOUND_IP_RANGES_EXCLUDE": config.outbound_ip_ranges_exclude,
        "OUTBOUND_PORTS_EXCLUDE": config.outbound_ports_exclude,
    }
    return "\n".join(f"{k}={v}" for k, v in rows.items()) + "\n"
