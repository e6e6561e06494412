"""The in-pod nft rules: the rendered script, rule by rule against Istio's iptables lines, and `nft -c`."""

from __future__ import annotations

from mesh.cni import rules
from mesh.nft import MAX_COMMENT
from tests.unit.nft_helpers import assert_nft_accepts

# Istio's default.golden (docs/ambient-facts.md §3.2) without the DNS-capture lines, which the lab does not write.
ISTIO_INPOD_IPTABLES = [
    "mangle: -A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff",
    "mangle: -A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff -j CONNMARK --restore-mark"
    " --nfmask 0xffffffff --ctmask 0xffffffff",
    "nat: -A ISTIO_PRERT -s 169.254.7.127 -p tcp -m tcp -j ACCEPT",
    "nat: -A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff"
    " -j REDIRECT --to-ports 15006",
    "nat: -A ISTIO_OUTPUT -d 169.254.7.127 -p tcp -m tcp -j ACCEPT",
    "nat: -A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j ACCEPT",
    "nat: -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j ACCEPT",
    "nat: -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001",
]

EXPECTED = """\
table ip istio_inpod
delete table ip istio_inpod
table ip istio_inpod {
    chain mangle_prerouting {
        type filter hook prerouting priority mangle; policy accept;
        meta mark & 0xfff == 0x539 ct mark set ct mark & 0xfffff000 | 0x111 comment "%s"
    }
    chain mangle_output {
        type route hook output priority mangle; policy accept;
        ct mark & 0xfff == 0x111 meta mark set ct mark comment "%s"
    }
    chain nat_prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip saddr 169.254.7.127 ip protocol tcp accept comment "%s"
        ip daddr != 127.0.0.1 tcp dport != 15008 meta mark & 0xfff != 0x539 redirect to :15006 comment "%s"
    }
    chain nat_output {
        type nat hook output priority -100; policy accept;
        ip daddr 169.254.7.127 ip protocol tcp accept comment "%s"
        ip protocol tcp meta mark & 0xfff == 0x111 accept comment "%s"
        oifname "lo" ip daddr != 127.0.0.1 accept comment "%s"
        ip daddr != 127.0.0.1 ip protocol tcp meta mark & 0xfff != 0x539 redirect to :15001 comment "%s"
    }
}
""" % tuple(ISTIO_INPOD_IPTABLES)


def test_the_script_replaces_the_table_with_istios_rules_in_order() -> None:
    assert rules.apply_script() == EXPECTED


def test_every_istio_line_is_translated_once_in_its_own_table_and_hook() -> None:
    assert [r.iptables for r in rules.RULES] == ISTIO_INPOD_IPTABLES
    chains = {c.name: c for c in rules.CHAINS}
    for rule in rules.RULES:
        table, _, line = rule.iptables.partition(": ")
        chain = chains[rule.chain]
        assert rule.chain.startswith(table + "_")
        assert ("PRERT" in line) == (chain.hook == "prerouting")
        assert ("nat" == table) == (chain.type == "nat")


def test_comments_fit_nft_and_need_no_escaping() -> None:
    for rule in rules.RULES:
        assert len(rule.iptables.encode()) < MAX_COMMENT
        assert '"' not in rule.iptables and "\n" not in rule.iptables


def test_no_dns_capture() -> None:
    assert "15053" not in rules.apply_script() and "udp" not in rules.apply_script()


def test_remove_script_deletes_whether_or_not_the_table_exists() -> None:
    assert rules.remove_script() == "table ip istio_inpod\ndelete table ip istio_inpod\n"


def test_nft_accepts_both_scripts() -> None:
    assert_nft_accepts([rules.apply_script(), rules.remove_script()], "rules")
