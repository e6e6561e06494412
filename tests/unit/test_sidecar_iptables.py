"""istio-init's rules: istio-iptables' flags, the nft script rule by rule against Istio's iptables
lines (istio-iptables 1.24 output for the injector's default flags), and `nft -c`."""

from __future__ import annotations

import io
import re

import pytest

from mesh.nft import MAX_COMMENT
from mesh.sidecar import init, iptables
from tests.unit.nft_helpers import assert_nft_accepts

# The flags the injector gives istio-init (mesh.sidecar.injection; test_sidecar_injection checks them).
INJECTED_FLAGS = [
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
]

# What istio-iptables 1.24 writes for INJECTED_FLAGS (nat table, IPv4, no DNS capture), in order.
ISTIO_NAT = """\
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
""".splitlines()

# The nft translation of each line above, per chain, in order.
EXPECTED_CHAINS = {
    "ISTIO_INBOUND": [
        "tcp dport 15008 return",
        "tcp dport 15090 return",
        "tcp dport 15021 return",
        "tcp dport 15020 return",
        "meta l4proto tcp jump ISTIO_IN_REDIRECT",
    ],
    "ISTIO_REDIRECT": ["meta l4proto tcp redirect to :15001"],
    "ISTIO_IN_REDIRECT": ["meta l4proto tcp redirect to :15006"],
    "ISTIO_OUTPUT": [
        'oifname "lo" ip saddr 127.0.0.6 return',
        'oifname "lo" ip daddr != 127.0.0.1 tcp dport != 15008 meta skuid 1337 jump ISTIO_IN_REDIRECT',
        'oifname "lo" meta skuid != 1337 return',
        "meta skuid 1337 return",
        'oifname "lo" ip daddr != 127.0.0.1 tcp dport != 15008 meta skgid 1337 jump ISTIO_IN_REDIRECT',
        'oifname "lo" meta skgid != 1337 return',
        "meta skgid 1337 return",
        "ip daddr 127.0.0.1 return",
        "jump ISTIO_REDIRECT",
    ],
    "PREROUTING": ["meta l4proto tcp jump ISTIO_INBOUND"],
    "OUTPUT": ["meta l4proto tcp jump ISTIO_OUTPUT"],
}
BASE_CHAINS = {
    "PREROUTING": "type nat hook prerouting priority dstnat; policy accept;",
    "OUTPUT": "type nat hook output priority -100; policy accept;",
}


def parse_script(script: str) -> tuple[list[str], dict[str, dict]]:
    """The script's preamble lines and, per chain, its hook line and (nft, comment) rules."""
    preamble, chains, current = [], {}, None
    for line in script.splitlines():
        text = line.strip()
        if m := re.fullmatch(r"chain (\S+) \{", text):
            current = chains.setdefault(m.group(1), {"hook": None, "rules": []})
        elif text.startswith("type "):
            current["hook"] = text
        elif m := re.fullmatch(r'(.+) comment "(.+)"', text):
            current["rules"].append((m.group(1), m.group(2)))
        elif text == "}":
            current = None
        elif current is None and not text.startswith("table ip istio_sidecar {"):
            preamble.append(text)
    return preamble, chains


def test_the_rules_are_istios_for_the_injected_flags() -> None:
    rules = iptables.build_rules(iptables.parse_args(INJECTED_FLAGS))
    assert [r.iptables for r in rules] == [f"nat: {line}" for line in ISTIO_NAT]


def test_the_script_replaces_the_table_and_translates_each_line_in_its_chain() -> None:
    script = iptables.apply_script(iptables.parse_args(INJECTED_FLAGS))
    preamble, chains = parse_script(script)
    assert preamble == ["table ip istio_sidecar", "delete table ip istio_sidecar"]
    # Istio's chains are defined before the base chains that jump to them.
    assert list(chains) == [
        "ISTIO_INBOUND",
        "ISTIO_REDIRECT",
        "ISTIO_IN_REDIRECT",
        "ISTIO_OUTPUT",
        "PREROUTING",
        "OUTPUT",
    ]
    for name, chain in chains.items():
        assert chain["hook"] == BASE_CHAINS.get(name)
        assert [nft for nft, _ in chain["rules"]] == EXPECTED_CHAINS[name]
        for _, comment in chain["rules"]:
            assert comment.startswith(f"nat: -A {name} ")
    comments = {c for chain in chains.values() for _, c in chain["rules"]}
    assert comments == {f"nat: {line}" for line in ISTIO_NAT}


def test_comments_fit_nft_and_need_no_escaping() -> None:
    for flags in (
        INJECTED_FLAGS,
        ["-u", "1337,1338", "-g", "1339", "-i", "10.0.0.0/8", "-b", "80,8080", "-x", "10.96.0.0/12", "-o", "5432"],
    ):
        for rule in iptables.build_rules(iptables.parse_args(flags)):
            assert len(rule.iptables.encode()) < MAX_COMMENT
            assert '"' not in rule.iptables and "\n" not in rule.iptables


def test_the_log_shows_the_iptables_save_form() -> None:
    saved = iptables.iptables_save(iptables.parse_args(INJECTED_FLAGS))
    assert saved.splitlines() == [
        "* nat",
        "-N ISTIO_INBOUND",
        "-N ISTIO_REDIRECT",
        "-N ISTIO_IN_REDIRECT",
        "-N ISTIO_OUTPUT",
        *ISTIO_NAT,
        "COMMIT",
    ]


def test_remove_script() -> None:
    assert iptables.remove_script() == "table ip istio_sidecar\ndelete table ip istio_sidecar\n"


# --- flags ---------------------------------------------------------------------------------------


def test_flag_parsing() -> None:
    c = iptables.parse_args(INJECTED_FLAGS)
    assert (c.proxy_port, c.inbound_capture_port, c.inbound_tunnel_port) == ("15001", "15006", "15008")
    assert (c.proxy_uid, c.gids, c.inbound_interception_mode) == ("1337", ["1337"], "REDIRECT")
    assert (c.outbound_ip_ranges_include, c.outbound_ip_ranges_exclude) == ("*", "")
    assert (c.inbound_ports_include, c.inbound_ports_exclude) == ("*", "15090,15021,15020")
    assert c.log_output_level == "default:info" and not c.dry_run
    long = iptables.parse_args(
        [
            "--envoy-port=15101",
            "--proxy-uid",
            "1000",
            "--proxy-gid=2000",
            "-n",
            "--istio-local-outbound-ports-exclude",
            "5432,6379",
            "-e",
            "15009",
        ]
    )
    assert (long.proxy_port, long.proxy_uid, long.gids, long.dry_run) == ("15101", "1000", ["2000"], True)
    assert (long.outbound_ports_exclude, long.inbound_tunnel_port) == ("5432,6379", "15009")
    assert iptables.parse_args([]) == iptables.Config()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "unknown flag '--bogus'"),
        (["-Z", "1"], "unknown flag '-Z'"),
        (["-p"], "-p needs a value"),
        (["-m", "TPROXY"], "only REDIRECT"),
        (["-p", "http"], "not a port number"),
        (["-d", "15090,x"], "not a port number"),
        (["-b", "70000"], "not a port number"),
        (["-u", "istio-proxy"], "numeric ids"),
        (["-i", "10.0.0.0/33"], "not a CIDR"),
        (["-x", "*"], "invalid value"),
        (["-i", "fd00::/8"], "IPv6"),
        (["--redirect-dns"], "DNS capture is not supported"),
        (["-q", "80"], "outbound port inclusion is not supported"),
        (["-c", "eth1"], "interface exclusion is not supported"),
    ],
)
def test_flags_that_cannot_be_honoured_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(iptables.FlagError, match=re.escape(message)):
        iptables.parse_args(argv)


def test_narrower_captures() -> None:
    """Listed inbound ports, listed outbound ranges with exclusions, outbound port exclusions."""
    rules = iptables.build_rules(
        iptables.parse_args(["-b", "80,8080", "-i", "10.96.0.0/12,10.244.0.0/16", "-x", "10.96.0.10/32", "-o", "5432"])
    )
    lines = [r.iptables.removeprefix("nat: ") for r in rules]
    assert "-A ISTIO_INBOUND -p tcp --dport 80 -j ISTIO_IN_REDIRECT" in lines
    assert "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT" in lines
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" not in lines
    assert lines.index("-A ISTIO_OUTPUT -p tcp --dport 5432 -j RETURN") < lines.index(
        "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN"
    )
    assert lines[-3:] == [
        "-A ISTIO_OUTPUT -d 10.96.0.10/32 -j RETURN",
        "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT",
        "-A ISTIO_OUTPUT -d 10.244.0.0/16 -j ISTIO_REDIRECT",
    ]
    nothing = [r.iptables for r in iptables.build_rules(iptables.parse_args(["-b", "", "-i", ""]))]
    assert not any("PREROUTING" in line or "-j ISTIO_REDIRECT" in line for line in nothing)
    # Capturing loopback explicitly drops the "app to itself over lo" RETURNs.
    looped = [r.iptables for r in iptables.build_rules(iptables.parse_args(["-i", "127.0.0.1/32"]))]
    assert not any("! --uid-owner" in line for line in looped)


def test_init_main_prints_the_rules_or_the_flag_error() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert init.main(["--bogus"], out, err) == 2
    assert "unknown flag '--bogus'" in err.getvalue() and out.getvalue() == ""
    out = io.StringIO()
    assert init.main([*INJECTED_FLAGS, "--dry-run"], out, err) == 0
    assert "PROXY_PORT=15001" in out.getvalue()
    assert 'comment "nat: -A ISTIO_OUTPUT -j ISTIO_REDIRECT"' in out.getvalue()


# --- nft -----------------------------------------------------------------------------------------


def test_nft_accepts_the_scripts() -> None:
    scripts = [
        iptables.apply_script(iptables.parse_args(flags))
        for flags in (
            INJECTED_FLAGS,
            [
                "-b",
                "80,8080",
                "-i",
                "10.96.0.0/12",
                "-x",
                "10.96.0.10/32",
                "-o",
                "5432",
                "-u",
                "1337,1338",
                "-g",
                "1339",
            ],
            [],
        )
    ]
    assert_nft_accepts([*scripts, iptables.remove_script()], "sidecar-rules")


def test_the_proxyv2_entry_point_dispatches_istio_iptables(capsys) -> None:
    from mesh.proxy.__main__ import PLACEMENTS, main

    assert main(["istio-iptables", "--bogus"]) == 2
    assert "unknown flag '--bogus'" in capsys.readouterr().err
    assert main(["istio-iptables", *INJECTED_FLAGS, "-n"]) == 0
    assert "-A ISTIO_OUTPUT" in capsys.readouterr().out
    assert "sidecar" in PLACEMENTS and "waypoint" in PLACEMENTS
    assert main(["proxy", "nowhere"]) == 2
    assert main(["proxy", "waypoint", "--extra"]) == 2
