"""Parsing and rendering of ruleset text: round trips and iptables' canonical forms."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from conftest import CONFORMANCE, conformance_dir

from netsim.errors import RulesetError
from netsim.netfilter import Family, Names, parse_rule_args, parse_ruleset, render_save, rule_tokens, tokenize
from netsim.netfilter.render import inet_ntop, save_string

# The owner-group cases of the corpus were loaded with java=5001, ftp=5002 (see its README).
CORPUS_NAMES = Names(groups=(("root", 0), ("java", 5001), ("ftp", 5002)))


def _kernel_files() -> list[str]:
    folder = CONFORMANCE / "istio-iptables" / "kernel"
    return sorted(p.name for p in folder.glob("*-save")) if folder.is_dir() else ["<absent>"]


def _without_comments(text: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith("#"))


def _diff(expected: str, got: str) -> str:
    return "".join(difflib.unified_diff(expected.splitlines(True), got.splitlines(True), "expected", "netsim"))


@pytest.mark.parametrize("name", _kernel_files())
def test_kernel_dump_round_trips(name: str) -> None:
    path = conformance_dir("istio-iptables") / "kernel" / name
    text = path.read_text()
    family = Family.IPV6 if name.endswith("ip6tables-save") else Family.IPV4
    got = render_save(parse_ruleset(text, family, CORPUS_NAMES))
    expected = _without_comments(text)
    assert got == expected, _diff(expected, got)


# (input rule arguments, what iptables-save 1.8.9 printed for them on this kernel)
CANONICAL_V4 = [
    ("-p tcp --dport 80 -m owner --uid-owner 1000-2000 --gid-owner 5 -m comment --comment \"hello world\" -j ACCEPT",
     "-p tcp -m tcp --dport 80 -m owner --uid-owner 1000-2000 --gid-owner 5 -m comment --comment \"hello world\" "
     "-j ACCEPT"),
    ("-p tcp -m comment --comment simple -m tcp --dport 22 --sport 1:1024 -j DROP",
     "-p tcp -m comment --comment simple -m tcp --sport 1:1024 --dport 22 -j DROP"),
    ("-p tcp --syn -j ACCEPT", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"),
    ("-p tcp ! --syn -j ACCEPT", "-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"),
    ("-p tcp -m tcp --tcp-flags ALL NONE -j DROP", "-p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j DROP"),
    ("-p udp -m multiport --dports 53,1000:2000 -j RETURN", "-p udp -m multiport --dports 53,1000:2000 -j RETURN"),
    ("-p tcp -m multiport --dports 22,http -j ACCEPT", "-p tcp -m multiport --dports 22,80 -j ACCEPT"),
    ("-m conntrack --ctstate ESTABLISHED,RELATED,NEW,INVALID -j ACCEPT",
     "-m conntrack --ctstate INVALID,NEW,RELATED,ESTABLISHED -j ACCEPT"),
    ("-m mark --mark 0x10/0xff -j ACCEPT", "-m mark --mark 0x10/0xff -j ACCEPT"),
    ("-m mark --mark 5/0xffffffff -j ACCEPT", "-m mark --mark 0x5 -j ACCEPT"),
    ("-m connmark ! --mark 5 -j ACCEPT", "-m connmark ! --mark 0x5 -j ACCEPT"),
    ("-p icmp --icmp-type echo-request -j ACCEPT", "-p icmp -m icmp --icmp-type 8 -j ACCEPT"),
    ("-p icmp --icmp-type port-unreachable -j ACCEPT", "-p icmp -m icmp --icmp-type 3/3 -j ACCEPT"),
    ("-m addrtype ! --src-type LOCAL,UNICAST -j ACCEPT", "-m addrtype ! --src-type UNICAST,LOCAL -j ACCEPT"),
    ("-m statistic --mode random --probability 0.5 -j ACCEPT",
     "-m statistic --mode random --probability 0.50000000000 -j ACCEPT"),
    ("-s 10.1.2.3/8 ! -d 1.2.3.4 -i eth+ -j ACCEPT", "-s 10.0.0.0/8 ! -d 1.2.3.4/32 -i eth+ -j ACCEPT"),
    ("-s 10.0.0.0/255.255.0.0 -j ACCEPT", "-s 10.0.0.0/16 -j ACCEPT"),
    ("! -o lo ! -p udp -j ACCEPT", "! -o lo ! -p udp -j ACCEPT"),
    ("-p 47 -j ACCEPT", "-p gre -j ACCEPT"),
    ("-p all -j ACCEPT", "-j ACCEPT"),
    ("-p tcp --dport 80: -j ACCEPT", "-p tcp -m tcp --dport 80:65535 -j ACCEPT"),
    ("-p tcp --sport :80 -j ACCEPT", "-p tcp -m tcp --sport 0:80 -j ACCEPT"),
    ("-m owner --uid-owner root -j ACCEPT", "-m owner --uid-owner 0 -j ACCEPT"),
    ("-p tcp -m tcp ! --dport 53 -m owner ! --uid-owner 1 ! --gid-owner 2 --suppl-groups -j ACCEPT",
     "-p tcp -m tcp ! --dport 53 -m owner ! --uid-owner 1 ! --gid-owner 2 --suppl-groups -j ACCEPT"),
    ("-j REJECT", "-j REJECT --reject-with icmp-port-unreachable"),
    ("-j LOG --log-prefix \"x y\" --log-level 4", "-j LOG --log-prefix \"x y\""),
    ("-j LOG --log-prefix nospace --log-level 6 --log-uid", "-j LOG --log-prefix nospace --log-level 6 --log-uid"),
    ("-j NFLOG --nflog-group 0 --nflog-prefix \"a b\"", "-j NFLOG --nflog-prefix \"a b\""),
    ("-m comment --comment \"a\\\"b\" -j ACCEPT", "-m comment --comment \"a\\\"b\" -j ACCEPT"),
    ("-j MARK --set-mark 5", "-j MARK --set-xmark 0x5/0xffffffff"),
    ("-j MARK --set-mark 5/0xf", "-j MARK --set-xmark 0x5/0xf"),
    ("-j MARK --or-mark 4", "-j MARK --set-xmark 0x4/0x4"),
    ("-j MARK --and-mark 4", "-j MARK --set-xmark 0x0/0xfffffffb"),
    ("-j MARK --xor-mark 4", "-j MARK --set-xmark 0x4/0x0"),
    ("-j CONNMARK --set-mark 7", "-j CONNMARK --set-xmark 0x7/0xffffffff"),
    ("-j CONNMARK --save-mark --mask 0xff", "-j CONNMARK --save-mark --nfmask 0xff --ctmask 0xff"),
    ("-j CONNMARK --restore-mark", "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff"),
    ("-p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006",
     "-p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff"),
    ("-p tcp -j TPROXY --on-port 15006", "-p tcp -j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x0/0x0"),
    ("-p tcp -j REDIRECT --to-ports 15001-15002 --random", "-p tcp -j REDIRECT --to-ports 15001-15002 --random"),
    ("-p udp -j REDIRECT --to-port 15053", "-p udp -j REDIRECT --to-ports 15053"),
    ("-p tcp -j DNAT --to-destination 10.0.0.1:80", "-p tcp -j DNAT --to-destination 10.0.0.1:80"),
    ("-j CT --zone 1", "-j CT --zone 1"),
    ("-j CT --notrack", "-j CT --notrack"),
    ("-g BAR", "-g BAR"),
    # iptables-nft stores ports as nft comparisons and saves them back rewritten:
    ("-p tcp ! --sport 0:100 -j ACCEPT", "-p tcp -m tcp --sport 101:65535 -j ACCEPT"),
    ("-p tcp ! --dport 0:65534 -j ACCEPT", "-p tcp -m tcp --dport 65535 -j ACCEPT"),
    ("-p tcp ! --sport 1024:65535 -j ACCEPT", "-p tcp -m tcp ! --sport 1024:65535 -j ACCEPT"),
    ("-p tcp --sport 0:65535 -j ACCEPT", "-p tcp -m tcp -j ACCEPT"),
    ("-p udp ! --sport 0:65535 -j ACCEPT", "-p udp -j ACCEPT"),
    ("-p tcp ! --sport 0:65535 --dport 5 -j ACCEPT", "-p tcp -m tcp --dport 5 -j ACCEPT"),
    ("-p tcp --dport 0:0 -j ACCEPT", "-p tcp -m tcp --dport 0 -j ACCEPT"),
    ("", ""),
]


@pytest.mark.parametrize(("given", "saved"), CANONICAL_V4)
def test_rule_is_stored_as_iptables_saves_it(given: str, saved: str) -> None:
    rule = parse_rule_args(tokenize(given), Family.IPV4)
    assert " ".join(rule_tokens(rule)) == saved
    # and what iptables-save printed reads back to the same rule
    assert parse_rule_args(tokenize(saved), Family.IPV4) == rule


CANONICAL_V6 = [
    ("-o lo -s ::6 -j RETURN", "-s ::6/128 -o lo -j RETURN"),
    ("-d fd00:0::1/64 -p udp --dport 53 -j REDIRECT --to-port 15053",
     "-d fd00::/64 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053"),
    ("-p icmpv6 --icmpv6-type echo-request -j ACCEPT", "-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT"),
    ("-p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006",
     "-p tcp -j TPROXY --on-port 15006 --on-ip :: --tproxy-mark 0x539/0xffffffff"),
    ("-d ::127.0.0.53/128 -j RETURN", "-d ::127.0.0.53/128 -j RETURN"),
]


@pytest.mark.parametrize(("given", "saved"), CANONICAL_V6)
def test_ipv6_rule_is_stored_as_ip6tables_saves_it(given: str, saved: str) -> None:
    assert " ".join(rule_tokens(parse_rule_args(tokenize(given), Family.IPV6))) == saved


def test_glibc_address_text() -> None:
    from ipaddress import ip_address

    assert inet_ntop(ip_address("::7f00:35")) == "::127.0.0.53"
    assert inet_ntop(ip_address("::ffff:0:1")) == "::ffff:0.0.0.1"
    assert inet_ntop(ip_address("::1")) == "::1"
    assert inet_ntop(ip_address("::1:0:0")) == "::1:0:0"


def test_save_string_quotes_like_xtables() -> None:
    assert save_string("simple_1-x") == "simple_1-x"
    assert save_string("a/b") == '"a/b"'
    assert save_string("") == '""'
    assert save_string("a\\b'c\"") == '"a\\\\b\\\'c\\""'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("*nat\n-A OUTPUT -p tcp --dport 70000 -j RETURN\nCOMMIT\n", "line 2: -m tcp: invalid port/service `70000'"),
        ("*nat\n-A OUTPUT -x\nCOMMIT\n", "line 2: unknown option \"-x\""),
        ("*nat\n-A NOPE -j RETURN\nCOMMIT\n", "line 2: chain `NOPE' does not exist in table `nat'"),
        ("*nat\n-A OUTPUT -j ISTIO_MISSING\nCOMMIT\n", "line 3: Chain 'ISTIO_MISSING' does not exist"),
        ("*bogus\nCOMMIT\n", "line 1: table name 'bogus' invalid"),
        ("*nat\n-A OUTPUT -j RETURN\n", "line 3: COMMIT expected"),
        ("-A OUTPUT -j RETURN\n", "line 1: not in a table"),
        ("*nat\n-A OUTPUT -j RETURN\r\nCOMMIT\n", "line 2: Invalid target name `RETURN\\r'"),
        ("*nat\n-A OUTPUT ! -s 10.0.0.1,10.0.0.2 -j RETURN\nCOMMIT\n", "line 2: ! not allowed with multiple"),
        ("*nat\n-A OUTPUT -d pod.example -j RETURN\nCOMMIT\n", "line 2: `pod.example' is a host name"),
        ("*nat\n-A OUTPUT -c x y -j RETURN\nCOMMIT\n", "line 2: -c takes two numbers"),
        ("*nat\n-A OUTPUT -p 999 -j RETURN\nCOMMIT\n", "line 2: unknown protocol \"999\""),
        ("*nat\n-I OUTPUT 0 -j RETURN\nCOMMIT\n", "line 2: Invalid rule number `0'"),
        ("*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports abc\nCOMMIT\n", "line 2: invalid port range `abc'"),
    ],
)
def test_errors_name_the_line_and_the_text(text: str, message: str) -> None:
    with pytest.raises(RulesetError) as info:
        parse_ruleset(text, Family.IPV4)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_counters_and_policies_are_kept() -> None:
    text = (
        "*filter\n:INPUT DROP [5:300]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        "[3:180] -A INPUT -j ACCEPT\nCOMMIT\n"
    )
    ruleset = parse_ruleset(text)
    table = ruleset.table("filter")
    assert table is not None
    chain = table.chain("INPUT")
    assert chain is not None and chain.policy == "DROP" and chain.counters == (5, 300)
    assert chain.rules[0].counters == (3, 180)
    assert render_save(ruleset, counters=True) == text


def test_istio_spelling_and_restore_inserts() -> None:
    text = "* nat\n-N ISTIO_X\n-A ISTIO_X -j RETURN\n-A OUTPUT -j ISTIO_X\n-I OUTPUT 1 -o lo -j RETURN\nCOMMIT\n"
    nat = parse_ruleset(text).table("nat")
    assert nat is not None
    output = nat.chain("OUTPUT")
    assert output is not None
    assert [" ".join(rule_tokens(r)) for r in output.rules] == ["-o lo -j RETURN", "-j ISTIO_X"]


def test_family_is_guessed_from_addresses() -> None:
    assert parse_ruleset("*nat\n-A OUTPUT -d ::1/128 -j RETURN\nCOMMIT\n").family is Family.IPV6
    assert parse_ruleset("*nat\n-A OUTPUT -j RETURN\nCOMMIT\n").family is Family.IPV4


def test_corpus_path_is_next_to_the_checkout() -> None:
    assert Path(CONFORMANCE).name == "conformance"
