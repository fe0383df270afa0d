"""nftables: each expression and statement netsim evaluates, with a packet it matches and one it does not;
the reader's listing text, its errors, and the kernel's order across backends (spec/netfilter.md §1.1, §1.3).

Rules are wrapped in one base chain of an ``inet`` table; a packet "matches" when the trace shows the rule
as matched. Numbers and names are neutral (no Istio port, uid or chain).
"""

from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

import pytest
from conftest import CONFORMANCE

from netsim.errors import RulesetError
from netsim.netfilter.engine import combine, compile_ruleset, trace, trace_branches
from netsim.netfilter.matches import Names
from netsim.netfilter.model import Family
from netsim.netfilter.nft import compile_nft, parse_nft, rule_text, untraced
from netsim.netfilter.packet import (
    ACK,
    Conntrack,
    CtState,
    Listener,
    Netns,
    Origin,
    Packet,
    Proto,
    Socket,
)
from netsim.netfilter.parse import parse_ruleset
from netsim.netfilter.render_trace import render_json, render_nft_trace, render_xtables
from netsim.netfilter.trace import Kind, Outcome, Trace

NS = Netns.pod("10.0.0.5/24", "fd00::5/64", listeners=(Listener(port=9000, transparent=True), Listener(port=8080)))


def local(dst: str = "10.0.0.9", dport: int = 80, *, proto: Proto = Proto.TCP, uid: int = 1000, gid: int = 1000,
          sport: int = 40000, src: str | None = None, mark: int = 0) -> Packet:
    d = ip_address(dst)
    s = ip_address(src or ("10.0.0.5" if d.version == 4 else "fd00::5"))
    return Packet(family=Family(d.version), proto=proto, src=s, dst=d, sport=sport, dport=dport,
                  origin=Origin.LOCAL, socket=Socket(uid=uid, gid=gid), mark=mark)


def arriving(src: str = "10.0.0.1", dst: str = "10.0.0.5", dport: int = 80, *, proto: Proto = Proto.TCP,
             iface: str = "eth0", ct: Conntrack | None = None) -> Packet:
    s, d = ip_address(src), ip_address(dst)
    extra = {} if ct is None else {"ct": ct, "tcp_flags": ACK}
    return Packet(family=Family(d.version), proto=proto, src=s, dst=d, sport=40000, dport=dport,
                  origin=Origin.ARRIVING, in_iface=iface, **extra)  # type: ignore[arg-type]


def run(rule: str, packet: Packet, *, hook: str = "output", ctype: str = "filter", priority: int = 0,
        extra: str = "") -> Trace:
    text = (f"table inet t {{\n{extra}\n chain c {{ type {ctype} hook {hook} priority {priority}; policy accept;\n"
            f"  {rule}\n }}\n chain other {{\n  counter\n }}\n}}\n")
    return trace(compile_nft(parse_nft(text), packet.family), packet, NS)


def matched(rule: str, packet: Packet, **kw: object) -> bool:
    t = run(rule, packet, **kw)  # type: ignore[arg-type]
    return any(s.kind is Kind.RULE and s.matched and s.chain == "c" for s in t.steps)


SET = "set s4 { type ipv4_addr; flags interval; elements = { 10.0.0.0/30, 10.1.0.0-10.1.0.9 } }"
SVC = ("map svc { type ipv4_addr . inet_proto . inet_service : verdict; elements = { 10.0.0.9 . tcp . 80 : "
       "jump other, 10.0.0.9 . udp . 53 : drop } }")
PORTS = "set ports { type inet_service; elements = { 22, 80 } }"

# (rule, a packet it matches, one it does not, where the chain hooks, extra table lines)
CASES: list[tuple[str, Packet, Packet, str, str]] = [
    ("ip saddr 10.0.0.5", local(), local(src="10.0.0.6"), "output", ""),
    ("ip daddr 10.0.0.0/24", local(), local("10.0.1.9"), "output", ""),
    ("ip daddr != 10.0.0.9", local("10.0.0.8"), local(), "output", ""),
    ("ip daddr 10.0.0.8-10.0.0.10", local(), local("10.0.0.11"), "output", ""),
    ("ip daddr != 10.0.0.1 counter", local(), local("fd00::9"), "output", ""),  # dependency: IPv6 never matches
    ("ip6 daddr fd00::/64", local("fd00::9"), local(), "output", ""),
    ("ip6 saddr fd00::5", local("fd00::9"), local("fd00::9", src="fd00::6"), "output", ""),
    ("ip protocol udp", local(proto=Proto.UDP), local(), "output", ""),
    ("meta l4proto tcp", local(), local(proto=Proto.UDP), "output", ""),
    ("meta nfproto ipv6", local("fd00::9"), local(), "output", ""),
    ("tcp dport 80", local(), local(dport=81), "output", ""),
    ("tcp dport != 80", local(dport=81), local(dport=81, proto=Proto.UDP), "output", ""),  # udp: no tcp header
    ("tcp sport 40000-40010", local(), local(sport=39999), "output", ""),
    ("udp dport 53", local(dport=53, proto=Proto.UDP), local(dport=53), "output", ""),
    ("udp sport { 40000, 41000 }", local(proto=Proto.UDP), local(proto=Proto.UDP, sport=40001), "output", ""),
    ("th dport 80", local(proto=Proto.UDP), local(dport=8), "output", ""),
    ("tcp dport { 22, 80 }", local(), local(dport=443), "output", ""),
    ("tcp dport != { 22, 80 }", local(dport=443), local(), "output", ""),
    ("tcp dport @ports", local(), local(dport=443), "output", PORTS),
    ("tcp dport < 1024", local(), local(dport=2048), "output", ""),
    ("tcp flags syn", local(), arriving(ct=Conntrack(state=CtState.ESTABLISHED)), "output", ""),
    ("oifname \"eth0\"", local(), local("10.0.0.5"), "output", ""),
    ("oifname \"et*\"", local(), local("127.0.0.1"), "output", ""),
    ("iifname \"eth0\"", arriving(), arriving(iface="eth1"), "prerouting", ""),
    ("iifname != \"lo\"", arriving(), arriving(iface="lo"), "prerouting", ""),
    ("meta mark 0x7", local(mark=7), local(mark=8), "output", ""),
    ("mark and 0xff00 == 0x100", local(mark=0x1ff), local(mark=0x2ff), "output", ""),
    ("meta skuid 1000", local(), local(uid=1001), "output", ""),
    ("meta skuid != 1000", local(uid=1001), arriving(), "output/input", ""),  # no socket: the rule stops
    ("skgid 1000", local(), local(gid=1001), "output", ""),
    ("meta skgid 100-2000", local(), local(gid=5), "output", ""),
    ("ct state new", local(), arriving(ct=Conntrack(state=CtState.ESTABLISHED)), "output/input", ""),
    ("ct state established,related", arriving(ct=Conntrack(state=CtState.ESTABLISHED)), arriving(), "input", ""),
    ("ct state invalid", arriving(), arriving(), "prerouting/input", ""),  # raw priority: before conntrack
    ("ct mark 0x5", arriving(ct=Conntrack(state=CtState.ESTABLISHED, mark=5)),
     arriving(ct=Conntrack(state=CtState.ESTABLISHED, mark=6)), "input", ""),
    ("ct zone 0", arriving(), local(), "input/output", ""),  # nothing to read before conntrack (raw priority)
    ("fib daddr type local", arriving(), arriving(dst="10.0.0.77"), "prerouting", ""),
    ("fib daddr type != local", local(), local("10.0.0.5"), "output", ""),
    ("ip daddr @s4", local("10.0.0.2"), local("10.0.0.9"), "output", SET),
    ("ip daddr @s4", local("10.1.0.9"), local("10.1.0.10"), "output", SET),
    ("ip daddr . meta l4proto . th dport vmap @svc", local(), local(dport=81), "output", SVC),
    ("ip daddr . tcp dport { 10.0.0.9 . 80, 10.0.0.9 . 443 }", local(), local(dport=22), "output", ""),
    ("meta l4proto tcp counter log prefix \"x\" limit rate 10/second", local(), local(proto=Proto.UDP), "output", ""),
]


@pytest.mark.parametrize(("rule", "yes", "no", "hook", "extra"), CASES,
                         ids=[f"{c[0]}#{i}" for i, c in enumerate(CASES)])
def test_expression_matches_one_packet_and_not_the_other(rule: str, yes: Packet, no: Packet, hook: str,
                                                          extra: str) -> None:
    prio = -300 if "ct state invalid" in rule or "ct zone" in rule else 0
    yes_hook, _, no_hook = hook.partition("/")
    assert matched(rule, yes, hook=yes_hook, extra=extra, priority=prio)
    assert not matched(rule, no, hook=no_hook or yes_hook, extra=extra, priority=prio)


# ---- statements


def test_meta_mark_set_and_ct_mark_set_mark_the_packet_and_connection() -> None:
    t = run("tcp dport 80 meta mark set 0x10 ct mark set meta mark", local())
    assert (t.mark, t.ctmark) == (0x10, 0x10)
    t = run("tcp dport 80 meta mark set 0x10 ct mark set meta mark", local(dport=81))
    assert (t.mark, t.ctmark) == (0, 0)
    t = run("meta mark set mark or 0x4000", local(mark=1))
    assert t.mark == 0x4001


def test_ct_zone_set_first_wins_and_notrack_untracks() -> None:
    t = run("udp dport 53 ct zone set 3 ct zone set 4", local(dport=53, proto=Proto.UDP), priority=-300)
    assert t.zone == 3
    assert run("udp dport 53 ct zone set 3", local(dport=54, proto=Proto.UDP), priority=-300).zone == 0
    assert run("tcp dport 80 notrack", local(), priority=-300).ctstate == "UNTRACKED"
    assert run("tcp dport 80 notrack", local(dport=81), priority=-300).ctstate == "NEW"


def test_verdicts_accept_drop_reject_and_chains() -> None:
    assert run("tcp dport 80 drop", local()).outcome is Outcome.DROPPED
    assert run("tcp dport 80 drop", local(dport=81)).outcome is Outcome.SENT
    t = run("tcp dport 80 reject with tcp reset", local())
    assert t.outcome is Outcome.DROPPED and "verdict drop" in render_nft_trace(t)
    t = run("tcp dport 80 jump other", local())
    assert [s.chain for s in t.steps if s.kind is Kind.RULE and s.matched] == ["c", "other"]
    assert "(verdict jump other)" in render_nft_trace(t)
    t = run("tcp dport 80 goto other", local())
    assert "(verdict goto other)" in render_nft_trace(t)
    t = run("tcp dport 80 return", local())
    assert "(verdict return)" in render_nft_trace(t) and "policy accept" in render_nft_trace(t)


def test_accept_ends_only_its_base_chain_drop_ends_the_packet() -> None:
    text = """table inet a { chain o { type filter hook output priority 0; tcp dport 80 accept; } }
table ip b { chain o { type filter hook output priority 10; policy accept; tcp dport 80 counter drop } }"""
    t = trace(compile_nft(parse_nft(text), Family.IPV4), local(), NS)
    assert t.outcome is Outcome.DROPPED
    assert [(s.table, s.verdict) for s in t.steps if s.matched and s.kind is Kind.RULE] == [("a", "ACCEPT"),
                                                                                          ("b", "DROP")]
    t6 = trace(compile_nft(parse_nft(text), Family.IPV6), local("fd00::9"), NS)  # table ip b: IPv4 only
    assert t6.outcome is Outcome.SENT


def test_base_chains_run_in_priority_order_across_tables() -> None:
    text = """table inet late { chain o { type filter hook output priority 20; counter } }
table inet early { chain o { type filter hook output priority -20; counter } }
table ip mid { chain o { type filter hook output priority filter; counter } }"""
    t = trace(compile_nft(parse_nft(text), Family.IPV4), local(), NS)
    assert [(s.table, s.base.priority if s.base else None) for s in t.steps if s.kind is Kind.TABLE] == \
        [("early", -20), ("mid", 0), ("late", 20)]


def test_nat_redirect_dnat_snat_masquerade() -> None:
    t = run("tcp dport 80 redirect to :8080", local(), ctype="nat", priority=-100)
    assert (str(t.dst.addr), t.dst.port, t.outcome) == ("127.0.0.1", 8080, Outcome.DELIVERED)
    assert "redirect to :8080 # handle 1 (verdict accept)" in render_nft_trace(t)
    assert run("tcp dport 80 redirect to :8080", local(dport=81), ctype="nat").dst.port == 81
    t = run("tcp dport 80 dnat ip to 10.0.0.7:90", local(), ctype="nat", priority=-100)
    assert (str(t.dst.addr), t.dst.port) == ("10.0.0.7", 90)
    assert run("tcp dport 80 dnat ip to 10.0.0.7", local(dport=81), ctype="nat").dst.port == 81
    t = run("oifname \"eth0\" snat ip to 10.0.0.200", local(), hook="postrouting", ctype="nat", priority=100)
    assert str(t.src.addr) == "10.0.0.200"
    assert str(run("oifname \"eth1\" snat ip to 10.0.0.200", local(), hook="postrouting", ctype="nat").src.addr) == \
        "10.0.0.5"
    t = run("masquerade", local(src="10.0.0.99"), hook="postrouting", ctype="nat", priority=100)
    assert str(t.src.addr) == "10.0.0.5"


def test_nat_once_the_first_binding_wins_across_nat_chains() -> None:
    text = """table ip first { chain o { type nat hook output priority -110; tcp dport 80 dnat to 10.0.0.7 } }
table inet second { chain o { type nat hook output priority -90; tcp dport 80 dnat ip to 10.0.0.8 } }"""
    t = trace(compile_nft(parse_nft(text), Family.IPV4), local(), NS)
    assert str(t.dst.addr) == "10.0.0.7"
    assert [s.table for s in t.steps if s.kind is Kind.TABLE] == ["first"]  # the second nat chain is skipped
    # not the connection's first packet: no nat chain runs at all
    est = replace(local(), ct=Conntrack(state=CtState.ESTABLISHED), tcp_flags=ACK)
    t = trace(compile_nft(parse_nft(text), Family.IPV4), est, NS)
    assert str(t.dst.addr) == "10.0.0.9" and not [s for s in t.steps if s.kind is Kind.TABLE]


def test_nat_chains_run_at_nf_nat_priority_whatever_their_own() -> None:
    # a nat chain at priority -200 still runs after a filter chain at -150 (nf_nat's hook is at -100)
    text = """table inet n { chain o { type nat hook output priority -200; counter } }
table inet f { chain o { type filter hook output priority -150; counter } }"""
    t = trace(compile_nft(parse_nft(text), Family.IPV4), local(), NS)
    assert [s.table for s in t.steps if s.kind is Kind.TABLE] == ["f", "n"]


def test_tproxy_assigns_a_transparent_socket_else_the_rule_stops() -> None:
    rule = "meta l4proto tcp tproxy ip to :9000 meta mark set 0x1 accept"
    t = run(rule, arriving(dst="10.0.0.77"), hook="prerouting", priority=-150)
    assert t.transparent_socket and t.mark == 1
    t = run("meta l4proto tcp tproxy ip to :8080 meta mark set 0x1 accept", arriving(dst="10.0.0.77"),
            hook="prerouting", priority=-150)
    assert not t.transparent_socket and t.mark == 0  # not transparent: NFT_BREAK, no drop, no mark
    assert not [s for s in t.steps if s.kind is Kind.RULE and s.matched]


def test_verdict_map_jumps_to_the_elements_chain_and_else_continues() -> None:
    t = run("ip daddr . meta l4proto . th dport vmap @svc", local(), extra=SVC)
    assert next((s.chain, s.verdict, s.target) for s in t.steps if s.kind is Kind.RULE and s.matched) == \
        ("c", "JUMP", "other")
    t = run("ip daddr . meta l4proto . th dport vmap @svc", local(dport=53, proto=Proto.UDP), extra=SVC)
    assert t.outcome is Outcome.DROPPED
    t = run("tcp dport vmap { 80 : accept, 81 : drop }", local(dport=81))
    assert t.outcome is Outcome.DROPPED


def test_numgen_and_unknown_expressions_make_the_trace_uncertain() -> None:
    t = run("numgen random mod 2 vmap { 0 : jump other, 1 : accept }", local())
    assert t.uncertain and "numgen" in t.uncertain[0] and "drew 0" in t.uncertain[0]
    t = run("ct original ip daddr 10.0.0.9 accept", local())
    assert any("ct original ip daddr" in u for u in t.uncertain)
    rs = parse_nft("table inet t { chain c { type filter hook output priority 0; ct helper \"ftp\" accept } }")
    assert compile_nft(rs, Family.IPV4).unknown == ("inet t c rule 1 (line 1): ct helper ftp",)


# ---- reader


def test_listing_text_is_nfts_normal_form() -> None:
    rs = parse_nft("add table inet t\nadd chain inet t c\n"
                   "add rule inet t c oifname lo meta l4proto tcp ip daddr != 127.0.0.1/32 tcp dport != { 53, 22 } "
                   "skuid 7 counter jump c2\nadd chain inet t c2\n"
                   "add rule inet t c2 meta l4proto tcp mark 7 counter ct mark set mark\n"
                   "add rule inet t c2 ct state related,established counter accept\n")
    # (c2 declared after the rule that jumps to it: the transaction is checked as a whole)
    texts = [rule_text(r) for c in rs.tables[0].chains for r in c.rules]
    assert texts == [
        'oifname "lo" ip daddr != 127.0.0.1 tcp dport != { 22, 53 } meta skuid 7 counter packets 0 bytes 0 jump c2',
        "meta l4proto tcp meta mark 0x00000007 counter packets 0 bytes 0 ct mark set meta mark",
        "ct state established,related counter packets 0 bytes 0 accept",
    ]


def test_list_ruleset_with_handles_and_named_priorities() -> None:
    text = """table inet t { # handle 4
\tset s { # handle 2
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.0/8,
\t\t\t     192.168.0.0/16 }
\t}
\tchain pre { # handle 1
\t\ttype nat hook prerouting priority dstnat + 10; policy accept;
\t\tip saddr @s counter packets 3 bytes 180 return # handle 7
\t\tmeta l4proto tcp redirect to :8080 # handle 9
\t}
}
table bridge br { chain c { type filter hook input priority 0; } }
"""
    rs = parse_nft(text)
    assert rs.has_handles
    pre = rs.tables[0].chain("pre")
    assert pre is not None and (pre.priority, pre.type, [r.handle for r in pre.rules]) == (-90, "nat", [7, 9])
    t = trace(compile_nft(rs, Family.IPV4), arriving(src="10.2.3.4"), NS)
    assert "# handle 7 (verdict return)" in render_nft_trace(t)
    assert untraced(rs) == ["table bridge br: the bridge family is not traced"]


@pytest.mark.parametrize(("text", "message"), [
    ("add rule inet t c accept", "line 1: no table `inet t'"),
    ("add table inet t\nadd chain inet t c\nadd rule inet t c jump nowhere", "line 3: jump nowhere: no such chain"),
    ("table inet t { chain c { ip daddr 10.0.0.300 accept } }", "line 1: `10.0.0.300' is not an IPv4 address"),
    ("table inet t { chain c { type filter hook output priority 0;", "unclosed"),
    ("table inet t { chain c { type nat hook forward priority 0; } }", "a nat chain cannot hook forward"),
    ("frobnicate table inet t", "line 1: unknown or unsupported command `frobnicate'"),
    ("table inet t { chain c { type filter hook input priority bogus; } }", "unknown priority name `bogus'"),
    ("table inet t {\n chain c {\n tcp dport 99999 accept\n }\n}", "line 3: port `99999' out of range"),
])
def test_bad_input_is_one_located_error(text: str, message: str) -> None:
    with pytest.raises(RulesetError) as e:
        parse_nft(text)
    assert message in str(e.value)


# ---- several backends in one namespace


IPT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -p tcp --dport 80 -j REDIRECT --to-ports 8080
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p tcp --dport 8080 -j ACCEPT
COMMIT
"""


def test_iptables_and_nft_chains_interleave_by_priority_and_nat_binds_once() -> None:
    nft = """table inet mine {
  chain early { type filter hook output priority -160; counter }
  chain nat2 { type nat hook output priority -50; tcp dport 80 dnat ip to 10.0.0.7 }
  chain late { type filter hook output priority 10; tcp dport 8080 counter drop }
}"""
    ipt = compile_ruleset(parse_ruleset(IPT))
    crs = combine([ipt, compile_nft(parse_nft(nft), Family.IPV4)])
    t = trace(crs, local(), NS)
    order = [(s.base.backend, s.table, s.chain) for s in t.steps if s.kind is Kind.TABLE and s.base]
    # the iptables nat table (-100) binds first: the nft nat chain (-50) is skipped for this connection
    assert order[:4] == [("nft", "mine", "early"), ("iptables-nft", "nat", "OUTPUT"),
                         ("iptables-nft", "filter", "OUTPUT"), ("nft", "mine", "late")]
    assert t.outcome is Outcome.DROPPED and (str(t.dst.addr), t.dst.port) == ("127.0.0.1", 8080)
    assert t.decided_by is not None and t.decided_by.base is not None and t.decided_by.base.backend == "nft"
    # each kernel renderer shows its own backend's chains
    assert "mine" not in render_xtables(t) and "nat:OUTPUT:rule:1:ACCEPT" in render_xtables(t)
    assert "iptables" not in render_nft_trace(t) and "trace id ID inet mine late rule" in render_nft_trace(t)
    js = render_json(t)
    assert '"backend": "nft"' in js and '"priority": 10' in js and '"family": "inet"' in js


JSON = """{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "kp", "handle": 1}},
{"map": {"family": "ip", "name": "svc", "table": "kp", "type": ["ipv4_addr", "inet_proto", "inet_service"],
  "handle": 8, "map": "verdict", "elem": [[{"concat": ["10.96.0.10", "tcp", 53]}, {"goto": {"target": "s1"}}]]}},
{"chain": {"family": "ip", "table": "kp", "name": "s1", "handle": 1}},
{"chain": {"family": "ip", "table": "kp", "name": "out", "handle": 4, "type": "nat", "hook": "output", "prio": -100,
  "policy": "accept"}},
{"rule": {"family": "ip", "table": "kp", "chain": "s1", "handle": 12, "expr": [{"match": {"op": "==",
  "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "10.1.0.1", "port": 53}}]}},
{"rule": {"family": "ip", "table": "kp", "chain": "out", "handle": 14, "expr": [{"vmap": {"key": {"concat": [
  {"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}},
  {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@svc"}}]}},
{"rule": {"family": "ip", "table": "kp", "chain": "out", "handle": 15, "expr": [{"match": {"op": "==",
  "left": {"&": [{"meta": {"key": "mark"}}, 16384]}, "right": 16384}}, {"counter": {"packets": 3, "bytes": 9}},
  {"xt": {"type": "target", "name": "CT"}}, {"drop": null}]}}]}"""


def test_json_ruleset_reads_as_its_text_and_traces() -> None:
    from netsim.netfilter.nft.json_input import parse_nft_any

    rs = parse_nft_any(JSON)
    assert rs.has_handles
    assert [(r.handle, rule_text(r)) for c in rs.tables[0].chains for r in c.rules] == [
        (12, "meta l4proto tcp dnat to 10.1.0.1:53"),
        (14, "ip daddr . meta l4proto . th dport vmap @svc"),
        (15, "meta mark & 0x00004000 == 0x00004000 counter packets 0 bytes 0 xt drop"),
    ]
    t = trace(compile_nft(rs, Family.IPV4), local("10.96.0.10", 53), NS)
    assert (str(t.dst.addr), t.dst.port) == ("10.1.0.1", 53)
    assert "trace id ID ip kp s1 rule meta l4proto tcp dnat to 10.1.0.1:53 # handle 12 (verdict accept)" in \
        render_nft_trace(t)
    t = trace(compile_nft(rs, Family.IPV4), local("10.96.0.10", 54, mark=0x4000), NS)
    assert t.outcome is Outcome.DROPPED and any("xt" in u for u in t.uncertain)
    with pytest.raises(RulesetError, match="not an nft -j ruleset"):
        parse_nft_any('{"tables": []}')


def _listing_rules(text: str) -> list[str]:
    return [re.sub(r"packets \d+ bytes \d+", "packets 0 bytes 0", ln.strip()) for ln in text.splitlines()
            if ln.startswith("\t\t") and not ln.strip().startswith(("type ", "elements", "flags"))]


KERNEL_LISTINGS = sorted((CONFORMANCE / "istio-iptables" / "kernel").glob("*.nft-list"))


@pytest.mark.parametrize("listing", KERNEL_LISTINGS, ids=[p.stem for p in KERNEL_LISTINGS])
def test_each_goldens_rules_print_as_the_kernel_listed_them(listing: Path) -> None:
    """The corpus's ``nft list ruleset`` after ``nft -f`` of each Istio nftables golden (names java=5001,
    ftp=5002): netsim's listing text of the golden's rules is the kernel's, rule for rule."""
    golden = CONFORMANCE / "istio-iptables" / f"{listing.stem}.nftables.golden"
    names = Names(groups=(("java", 5001), ("ftp", 5002)))
    rs = parse_nft(golden.read_text(), names)
    assert [rule_text(r) for t in rs.tables for c in t.chains for r in c.rules] == \
        _listing_rules(listing.read_text())


def test_unknown_owner_name_is_an_error_as_nft_gives() -> None:
    with pytest.raises(RulesetError, match="Group `java' does not exist"):
        parse_nft("table inet t { chain c { skgid != java return } }")


@pytest.mark.parametrize(("save", "nft"), [
    ("-A X ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 8008 -m owner --uid-owner 7 -j Y",
     'oifname "lo" ip daddr != 127.0.0.1 tcp dport != 8008 skuid 7 counter packets 0 bytes 0 jump Y'),
    ("-A X ! -d 127.0.0.1/32 -o lo -p tcp -m multiport ! --dports 53,8008 -m owner --uid-owner 7 -j Y",
     'oifname "lo" meta l4proto tcp ip daddr != 127.0.0.1 tcp dport != { 53, 8008 } skuid 7 counter packets 0 '
     "bytes 0 jump Y"),
    ("-A X -s 127.0.0.9/32 -i lo -p tcp -j RETURN",
     'iifname "lo" meta l4proto tcp ip saddr 127.0.0.9 counter packets 0 bytes 0 return'),
    ("-A X -p tcp -m mark --mark 0x7 -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff",
     "meta l4proto tcp meta mark 0x00000007 counter packets 0 bytes 0 ct mark set mark"),
    ("-A X -p tcp -m connmark --mark 0x7 -j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
     "meta l4proto tcp ct mark 0x7 counter packets 0 bytes 0 meta mark set ct mark"),
    ("-A X -j MARK --set-xmark 0x7/0xffffffff", "counter packets 0 bytes 0 meta mark set 0x7"),
    ("-A X -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j Y",
     "meta l4proto tcp ct state related,established counter packets 0 bytes 0 jump Y"),
    ("-A X -p udp -m udp --dport 53 -j CT --zone 2", "udp dport 53 counter packets 0 bytes 0 xt target CT"),
    ("-A X -p tcp -j REDIRECT --to-ports 8001", "meta l4proto tcp counter packets 0 bytes 0 redirect to :8001"),
    ("-A X -d ::1/128 -j RETURN", "ip6 daddr ::1 counter packets 0 bytes 0 return"),
])
def test_iptables_nft_rule_in_nfts_words(save: str, nft: str) -> None:
    from netsim.netfilter.nft.xlate import iptables_nft_text
    from netsim.netfilter.parse import parse_rule_args, tokenize

    family = Family.IPV6 if "::" in save else Family.IPV4
    assert iptables_nft_text(parse_rule_args(tokenize(save)[2:], family)) == nft


# ---- numgen: branches, as -m statistic


def _numgen_traces(rule: str, packet: Packet, extra: str = "") -> tuple[Trace, ...]:
    text = (f"table ip t {{\n{extra}\n chain c {{ type filter hook output priority 0; policy accept;\n  {rule}\n }}\n"
            " chain e0 { counter }\n chain e1 { drop }\n chain e2 { counter }\n}\n")
    return trace_branches(compile_nft(parse_nft(text), packet.family), packet, NS)


def test_numgen_vmap_is_one_branch_per_value() -> None:
    traces = _numgen_traces("numgen random mod 3 vmap { 0 : goto e0, 1 : goto e1, 2 : goto e2 }", local())
    assert len(traces) == 3
    went = [next(s.target for s in t.steps if s.kind is Kind.RULE and s.matched and s.chain == "c") for t in traces]
    assert went == ["e0", "e1", "e2"]
    assert [t.outcome for t in traces] == [Outcome.SENT, Outcome.DROPPED, Outcome.SENT]
    for k, t in enumerate(traces):
        assert t.branches and all(b.chain == "c" and b.position == 1 for b in t.branches)
        assert any(f"drew {k}" in u for u in t.uncertain), t.uncertain
    # one value: no draw, no branch
    [one] = _numgen_traces("numgen random mod 1 vmap { 0 : goto e1 }", local())
    assert one.outcome is Outcome.DROPPED and not one.branches


def test_numgen_match_matches_on_its_value_and_not_on_another() -> None:
    yes, no = _numgen_traces("numgen random mod 2 == 1 drop", local())
    assert yes.outcome is Outcome.SENT and no.outcome is Outcome.DROPPED  # drew 0: no match; drew 1: match
    assert [b.taken for b in yes.branches] == [True] and [b.taken for b in no.branches] == [False]


def test_a_statement_before_a_match_takes_effect_whether_or_not_the_match_holds() -> None:
    # meta mark set before tcp dport: the kernel sets the mark, then the match fails (no verdict)
    rule = "meta mark set 0x00000007 tcp dport 81 drop"
    t = run(rule, local(dport=80))
    assert t.outcome is Outcome.SENT and t.mark == 7
    t = run(rule, local(dport=81))
    assert t.outcome is Outcome.DROPPED and t.mark == 7
    # after the match it is applied only when the rule matched
    t = run("tcp dport 81 meta mark set 0x00000007 accept", local(dport=80))
    assert t.mark == 0
    t = run("tcp dport 81 meta mark set 0x00000007 accept", local(dport=81))
    assert t.mark == 7
    # a statement feeds a later match of the same rule
    assert matched("meta mark set 0x00000005 meta mark 0x00000005 accept", local())
    assert not matched("meta mark set 0x00000005 meta mark 0x00000006 accept", local())


def test_a_filter_chain_at_nf_nats_priority_runs_by_when_nat_was_first_registered() -> None:
    # nf_nat's hook (-100) is registered with the first nat chain; of equal priorities the later registered
    # runs first. A filter chain at -100 loaded before any nat chain runs after the nat chains...
    nat = "table ip n { chain o { type nat hook output priority -100; counter } }"
    nat2 = "table ip n2 { chain o { type nat hook output priority 0; counter } }"
    flt = "table ip f { chain o { type filter hook output priority -100; counter } }"

    def order(text: str) -> list[str]:
        t = trace(compile_nft(parse_nft(text), Family.IPV4), local(), NS)
        return [s.table for s in t.steps if s.kind is Kind.TABLE]

    assert order(f"{flt}\n{nat}") == ["n", "f"]
    # ... one loaded after the first nat chain before them, even when another nat chain comes later
    assert order(f"{nat}\n{flt}") == ["f", "n"]
    assert order(f"{nat}\n{flt}\n{nat2}") == ["f", "n", "n2"]
    # across backends (combine keeps the load order of each part): iptables-nft's nat table loaded first
    ipt = compile_ruleset(parse_ruleset("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -j RETURN\nCOMMIT\n"))
    t = trace(combine([ipt, compile_nft(parse_nft(flt), Family.IPV4)]), local(), NS)
    assert [s.table for s in t.steps if s.kind is Kind.TABLE][:2] == ["f", "nat"]
