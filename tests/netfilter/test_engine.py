"""The tracer's semantics, one kernel rule at a time (spec/netfilter.md sections named per test)."""

from __future__ import annotations

import itertools
from ipaddress import ip_address

import pytest

from netsim.errors import RulesetError
from netsim.netfilter import Chain, Family, Rule, Ruleset, Table, Target, parse_ruleset
from netsim.netfilter.engine import compile_ruleset, describe_failure, trace, trace_branches
from netsim.netfilter.packet import (
    Conntrack,
    CtState,
    FwmarkRoute,
    Listener,
    Netns,
    Origin,
    Packet,
    Proto,
    Socket,
)
from netsim.netfilter.render_trace import render_json, render_text, render_xtables
from netsim.netfilter.trace import Kind, Outcome

POD = "10.244.0.5"
NS = Netns.pod(f"{POD}/24", listeners=())


def out(dst: str = "10.0.0.5", dport: int = 80, uid: int = 1000, gid: int = 1000, **kw: object) -> Packet:
    src = kw.pop("src", POD if not ip_address(dst).is_loopback else dst)
    return Packet(src=ip_address(src), dst=ip_address(dst), sport=40000, dport=dport,  # type: ignore[arg-type]
                  socket=kw.pop("socket", Socket(uid=uid, gid=gid)), **kw)  # type: ignore[arg-type]


def inb(dport: int = 8080, src: str = "10.1.2.3", dst: str = POD, **kw: object) -> Packet:
    return Packet(src=ip_address(src), dst=ip_address(dst), sport=40000, dport=dport, origin=Origin.ARRIVING,
                  in_iface=kw.pop("in_iface", "eth0"), socket=None, **kw)  # type: ignore[arg-type]


def rules(text: str) -> str:
    return text.strip() + "\n"


def marked(chain: str, match: str, packet: Packet, netns: Netns = NS) -> bool:
    """Does ``-A chain <match> -j MARK --set-mark 1`` in mangle match the packet?"""
    rs = parse_ruleset(f"*mangle\n-A {chain} {match} -j MARK --set-mark 0x1\nCOMMIT\n", packet.family)
    t = trace(rs, packet, netns)
    return any(s.kind is Kind.RULE and s.matched for s in t.steps)


MATCH_CASES = [
    # (name, chain, match, packet, expected)
    ("src", "OUTPUT", f"-s {POD}/32", out(), True),
    ("src-no", "OUTPUT", "-s 10.9.0.0/16", out(), False),
    ("src-neg", "OUTPUT", "! -s 10.9.0.0/16", out(), True),
    ("dst", "OUTPUT", "-d 10.0.0.0/8", out(), True),
    ("dst-no", "OUTPUT", "-d 127.0.0.1/32", out(), False),
    ("in", "PREROUTING", "-i eth0", inb(), True),
    ("in-wildcard", "PREROUTING", "-i eth+", inb(), True),
    ("in-no", "PREROUTING", "-i lo", inb(), False),
    ("out", "OUTPUT", "-o eth0", out(), True),
    ("out-lo-for-local", "OUTPUT", "-o lo", out(dst=POD), True),
    ("out-no", "OUTPUT", "-o lo", out(), False),
    ("out-neg", "OUTPUT", "! -o lo", out(), True),
    ("proto", "OUTPUT", "-p tcp", out(), True),
    ("proto-no", "OUTPUT", "-p udp", out(), False),
    ("proto-neg", "OUTPUT", "! -p udp", out(), True),
    ("dport", "OUTPUT", "-p tcp --dport 80", out(), True),
    ("dport-no", "OUTPUT", "-p tcp --dport 81", out(), False),
    ("dport-range", "OUTPUT", "-p tcp --dport 70:90", out(), True),
    ("dport-neg", "OUTPUT", "-p tcp ! --dport 80", out(), False),
    ("sport-udp", "OUTPUT", "-p udp --sport 40000", out(proto=Proto.UDP), True),
    ("sport-udp-no", "OUTPUT", "-p udp --sport 1", out(proto=Proto.UDP), False),
    ("multiport", "OUTPUT", "-p tcp -m multiport --dports 53,70:90", out(), True),
    ("multiport-no", "OUTPUT", "-p tcp -m multiport --dports 53,15008", out(), False),
    ("multiport-neg", "OUTPUT", "-p tcp -m multiport ! --dports 53,15008", out(), True),
    ("multiport-ports", "OUTPUT", "-p tcp -m multiport --ports 40000", out(), True),
    ("uid", "OUTPUT", "-m owner --uid-owner 1000", out(), True),
    ("uid-no", "OUTPUT", "-m owner --uid-owner 1337", out(), False),
    ("uid-range", "OUTPUT", "-m owner --uid-owner 900-1100", out(), True),
    ("uid-neg", "OUTPUT", "-m owner ! --uid-owner 1337", out(), True),
    ("gid", "OUTPUT", "-m owner --gid-owner 1000", out(), True),
    ("gid-no", "OUTPUT", "-m owner --gid-owner 1337", out(), False),
    ("gid-suppl", "OUTPUT", "-m owner --gid-owner 7 --suppl-groups",
     out(socket=Socket(uid=1, gid=1, groups=(7,))), True),
    ("gid-no-suppl", "OUTPUT", "-m owner --gid-owner 7", out(socket=Socket(uid=1, gid=1, groups=(7,))), False),
    # §1.6: without a socket "--uid-owner X" is false and "! --uid-owner X" true.
    ("uid-no-socket", "POSTROUTING", "-m owner --uid-owner 0", out(socket=None), False),
    ("uid-neg-no-socket", "POSTROUTING", "-m owner ! --uid-owner 0", out(socket=None), True),
    ("socket-exists-kernel", "OUTPUT", "-m owner --socket-exists", out(socket=Socket(kernel=True)), True),
    ("uid-kernel-socket", "OUTPUT", "-m owner --uid-owner 0", out(socket=Socket(kernel=True)), False),
    ("uid-neg-kernel-socket", "OUTPUT", "-m owner ! --uid-owner 0", out(socket=Socket(kernel=True)), True),
    ("mark", "OUTPUT", "-m mark --mark 0x10/0xf0", out(mark=0x1F), True),
    ("mark-no", "OUTPUT", "-m mark --mark 0x539", out(), False),
    ("mark-neg", "OUTPUT", "-m mark ! --mark 0x539", out(), True),
    ("connmark", "OUTPUT", "-m connmark --mark 0x539", out(ct=Conntrack(mark=0x539)), True),
    ("connmark-no", "OUTPUT", "-m connmark --mark 0x539", out(), False),
    ("ctstate", "OUTPUT", "-m conntrack --ctstate NEW", out(), True),
    ("ctstate-no", "OUTPUT", "-m conntrack --ctstate RELATED,ESTABLISHED", out(), False),
    ("ctstate-est", "OUTPUT", "-m conntrack --ctstate RELATED,ESTABLISHED",
     out(ct=Conntrack(state=CtState.ESTABLISHED)), True),
    ("ctstate-invalid", "PREROUTING", "-m conntrack --ctstate INVALID", inb(ct=Conntrack(state=CtState.INVALID)), True),
    ("state", "OUTPUT", "-m state --state NEW", out(), True),
    ("addrtype-local", "OUTPUT", "-m addrtype --dst-type LOCAL", out(dst="127.0.0.6"), True),
    ("addrtype-local-no", "OUTPUT", "-m addrtype --dst-type LOCAL", out(), False),
    ("addrtype-unicast", "OUTPUT", "-m addrtype --dst-type UNICAST", out(), True),
    ("addrtype-src-neg", "OUTPUT", "-m addrtype ! --src-type LOCAL", out(), False),
    ("comment", "OUTPUT", "-m comment --comment hello", out(), True),
    ("tcp-flags", "OUTPUT", "-p tcp --tcp-flags SYN,ACK SYN", out(), True),
    ("tcp-flags-no", "OUTPUT", "-p tcp --tcp-flags SYN,ACK ACK", out(), False),
    ("syn", "OUTPUT", "-p tcp --syn", out(), True),
    ("icmp", "OUTPUT", "-p icmp --icmp-type echo-request", out(proto=Proto.ICMP), True),
    ("icmp-no", "OUTPUT", "-p icmp --icmp-type echo-reply", out(proto=Proto.ICMP), False),
    ("icmp-any", "OUTPUT", "-p icmp --icmp-type any", out(proto=Proto.ICMP), True),
]


@pytest.mark.parametrize(("name", "chain", "match", "packet", "expected"), MATCH_CASES, ids=[c[0] for c in MATCH_CASES])
def test_match(name: str, chain: str, match: str, packet: Packet, expected: bool) -> None:
    assert marked(chain, match, packet) is expected


def test_socket_match_needs_a_socket_bound_to_the_address() -> None:
    """xt_socket ignores a listener on the wildcard address unless --nowildcard (found by the kernel
    differential test on 1.0's `-m socket` DIVERT rule); an existing connection's own socket counts."""
    wildcard = Netns.pod(f"{POD}/24", listeners=(Listener(port=8080),))
    bound = Netns.pod(f"{POD}/24", listeners=(Listener(port=8080, addr=ip_address(POD)),))
    assert not marked("PREROUTING", "-p tcp -m socket", inb(), wildcard)
    assert marked("PREROUTING", "-p tcp -m socket --nowildcard", inb(), wildcard)
    assert marked("PREROUTING", "-p tcp -m socket", inb(), bound)
    assert marked("PREROUTING", "-p tcp -m socket", inb(ct=Conntrack(state=CtState.ESTABLISHED)), wildcard)
    assert not marked("PREROUTING", "-p tcp -m socket", inb(), NS)
    assert not marked("PREROUTING", "-p tcp -m socket --transparent", inb(), bound)


def test_unknown_match_is_reported_uncertain_and_assumed_to_match() -> None:
    rs = parse_ruleset("*mangle\n-A OUTPUT -m u32 --u32 0x0 -j MARK --set-mark 1\nCOMMIT\n")
    t = trace(rs, out(), NS)
    assert t.mark == 1
    assert t.uncertain and "u32" in t.uncertain[0]
    assert compile_ruleset(rs).unknown == ("mangle OUTPUT rule 1: -m u32 --u32 0x0",)


def test_unknown_target_is_reported_and_continues() -> None:
    rs = parse_ruleset("*mangle\n-A OUTPUT -j TOS --set-tos 0x10\n-A OUTPUT -j MARK --set-mark 2\nCOMMIT\n")
    t = trace(rs, out(), NS)
    assert t.mark == 2 and any("TOS" in u for u in t.uncertain)


def test_statistic_is_a_branch_not_a_guess() -> None:
    rs = parse_ruleset(rules("""
*nat
-A OUTPUT -p tcp -m statistic --mode random --probability 0.5 -j DNAT --to-destination 10.0.0.1:80
-A OUTPUT -p tcp -j DNAT --to-destination 10.0.0.2:80
COMMIT"""))
    traces = trace_branches(rs, out(), NS)
    assert [str(t.dst.addr) for t in traces] == ["10.0.0.1", "10.0.0.2"]
    assert traces[0].branches[0].taken and not traces[1].branches[0].taken
    assert traces[0].branches[0].position == 1


# ---------------------------------------------------------------- targets

def one(table: str, chain: str, rule: str, packet: Packet, netns: Netns = NS, extra: str = ""):  # type: ignore[no-untyped-def]
    rs = parse_ruleset(f"*{table}\n{extra}-A {chain} {rule}\nCOMMIT\n", packet.family)
    return trace(rs, packet, netns)


def test_accept_ends_the_table_but_not_the_hook() -> None:
    rs = parse_ruleset(rules("""
*mangle
-A OUTPUT -j ACCEPT
-A OUTPUT -j MARK --set-mark 1
COMMIT
*filter
-A OUTPUT -j MARK --set-mark 2
COMMIT"""))
    t = trace(rs, out(), NS)
    assert t.mark == 2 and t.outcome is Outcome.SENT


def test_drop_and_reject_end_the_packet() -> None:
    assert one("filter", "OUTPUT", "-j DROP", out()).outcome is Outcome.DROPPED
    t = one("filter", "OUTPUT", "-p tcp --dport 80 -j REJECT", out())
    assert t.outcome is Outcome.DROPPED and t.decided_by is not None
    assert render_xtables(t, packets=False).splitlines()[0].startswith("TRACE: filter:OUTPUT:rule:1:DROP")
    assert one("filter", "OUTPUT", "-p tcp --dport 81 -j REJECT", out()).outcome is Outcome.SENT


def test_policy_drop() -> None:
    rs = parse_ruleset("*filter\n:OUTPUT DROP [0:0]\nCOMMIT\n")
    t = trace(rs, out(), NS)
    assert t.outcome is Outcome.DROPPED
    assert render_xtables(t, packets=False) == "TRACE: filter:OUTPUT:policy:DROP\n"


def test_return_and_fall_off_and_goto() -> None:
    """§1.8: RETURN pops; falling off a user chain returns; -g does not push."""
    rs = parse_ruleset(rules("""
*mangle
:A - [0:0]
:B - [0:0]
:C - [0:0]
-A OUTPUT -j A
-A OUTPUT -j MARK --set-mark 0x9
-A A -p tcp --dport 81 -j RETURN
-A A -g B
-A A -j MARK --set-mark 0x1
-A B -j C
-A C -p udp -j ACCEPT
COMMIT"""))
    t = trace(rs, out(), NS)
    lines = render_xtables(t, packets=False).splitlines()
    assert lines[:5] == [
        "TRACE: mangle:OUTPUT:rule:1:JUMP:A  -A OUTPUT -j A",
        "TRACE: mangle:A:rule:2:GOTO:B  -A A -g B",
        "TRACE: mangle:B:rule:1:JUMP:C  -A B -j C",
        "TRACE: mangle:OUTPUT:rule:2:CONTINUE  -A OUTPUT -j MARK --set-xmark 0x9/0xffffffff",
        "TRACE: mangle:OUTPUT:policy:ACCEPT",
    ]
    t81 = trace(rs, out(dport=81), NS)
    assert "TRACE: mangle:A:rule:1:RETURN  -A A -p tcp -m tcp --dport 81 -j RETURN" in render_xtables(t81)


def test_return_in_base_chain_applies_policy() -> None:
    rs = parse_ruleset("*filter\n:OUTPUT DROP [0:0]\n-A OUTPUT -j RETURN\n-A OUTPUT -j ACCEPT\nCOMMIT\n")
    assert trace(rs, out(), NS).outcome is Outcome.DROPPED


def test_mark_xor_semantics() -> None:
    t = one("mangle", "OUTPUT", "-j MARK --set-xmark 0x1/0xf", out(mark=0xF3))
    assert t.mark == 0xF1


def test_connmark_save_and_restore() -> None:
    rs = parse_ruleset(rules("""
*mangle
-A OUTPUT -j CONNMARK --restore-mark
-A OUTPUT -m mark --mark 0x539 -j MARK --set-mark 0x7
COMMIT"""))
    assert trace(rs, out(ct=Conntrack(mark=0x539)), NS).mark == 7
    assert trace(rs, out(), NS).mark == 0
    rs2 = parse_ruleset("*mangle\n-A OUTPUT -j MARK --set-mark 5\n-A OUTPUT -j CONNMARK --save-mark\n"
                        "-A OUTPUT -m connmark --mark 5 -j MARK --set-mark 6\nCOMMIT\n")
    assert trace(rs2, out(), NS).mark == 6


def test_redirect_in_output_goes_to_loopback_and_reenters_without_nat() -> None:
    """§1.2(c), §1.4: REDIRECT → 127.0.0.1:port; POSTROUTING sees lo; nat PREROUTING not consulted."""
    rs = parse_ruleset(rules("""
*nat
-A PREROUTING -j DNAT --to-destination 10.9.9.9
-A OUTPUT -p tcp -j REDIRECT --to-ports 15001
COMMIT
*filter
-A OUTPUT -o eth0 -j MARK --set-mark 1
-A INPUT -i lo -j MARK --set-mark 2
COMMIT"""))
    t = trace(rs, out(), NS)
    assert (str(t.dst.addr), t.dst.port) == ("127.0.0.1", 15001)
    assert str(t.src.addr) == POD  # only the destination changes
    assert t.looped and t.local_port == 15001
    assert t.mark == 2  # filter OUTPUT still saw eth0 (§1.10), INPUT saw lo
    assert not any(s.table == "nat" and s.hook == "PREROUTING" and s.kind is Kind.RULE for s in t.steps)
    assert t.original_dst is not None and str(t.original_dst.addr) == "10.0.0.5"


def test_conntrack_dnat_state_and_original_tuple_after_redirect() -> None:
    rs = parse_ruleset(rules("""
*nat
-A OUTPUT -p tcp -j REDIRECT --to-ports 15001
COMMIT
*mangle
-A INPUT -m conntrack --ctstate DNAT --ctorigdst 10.0.0.5/32 --ctorigdstport 80 -j MARK --set-mark 0x3
-A INPUT -m conntrack --ctorigdst 10.0.0.6/32 -j MARK --set-mark 0x4
COMMIT"""))
    assert trace(rs, out(), NS).mark == 3


def test_redirect_in_prerouting_uses_primary_address() -> None:
    ns = Netns.pod(f"{POD}/24", "10.244.0.6/24", listeners=None)
    t = one("nat", "PREROUTING", "-p tcp -j REDIRECT --to-ports 15006", inb(dst="10.244.0.6"), ns)
    assert (str(t.dst.addr), t.dst.port) == (POD, 15006)
    assert t.outcome is Outcome.DELIVERED


def test_nat_only_for_the_first_packet() -> None:
    """§1.3: an established connection skips nat; UDP reusing a tuple keeps the first decision."""
    est = out(ct=Conntrack(state=CtState.ESTABLISHED))
    t = one("nat", "OUTPUT", "-p tcp -j REDIRECT --to-ports 15001", est)
    assert t.dst.port == 80 and t.outcome is Outcome.SENT
    assert not [s for s in t.steps if s.table == "nat"]


def test_local_destination_skips_nat_prerouting() -> None:
    """§1.2(c)4: app → own pod IP reaches the app even under inbound capture."""
    t = one("nat", "PREROUTING", "-p tcp -j REDIRECT --to-ports 15006", out(dst=POD, dport=8080))
    assert t.dst.port == 8080 and t.looped and t.outcome is Outcome.REFUSED


def test_dnat_snat_masquerade() -> None:
    t = one("nat", "OUTPUT", "-p tcp -j DNAT --to-destination 10.1.1.1:8443", out())
    assert (str(t.dst.addr), t.dst.port) == ("10.1.1.1", 8443)
    t = one("nat", "POSTROUTING", "-j SNAT --to-source 10.244.0.99", out())
    assert str(t.src.addr) == "10.244.0.99"
    t = one("nat", "POSTROUTING", "-o eth0 -j MASQUERADE", out(src="10.244.0.77"))
    assert str(t.src.addr) == POD


@pytest.mark.parametrize(("chain", "rule", "packet", "expected"), [
    # nf_nat keeps a port already inside the target's range and otherwise takes the range's first (§1.3, §1.4)
    ("OUTPUT", "-p tcp -j DNAT --to-destination 10.1.1.1:8000-8100", out(dport=8050), ("dst", "10.1.1.1", 8050)),
    ("OUTPUT", "-p tcp -j DNAT --to-destination 10.1.1.1:8000-8100", out(dport=80), ("dst", "10.1.1.1", 8000)),
    ("OUTPUT", "-p tcp -j DNAT --to-destination 10.1.1.1", out(dport=80), ("dst", "10.1.1.1", 80)),
    ("OUTPUT", "-p tcp -j REDIRECT --to-ports 15000-15010", out(dport=15005), ("dst", "127.0.0.1", 15005)),
    ("OUTPUT", "-p tcp -j REDIRECT --to-ports 15000-15010", out(dport=80), ("dst", "127.0.0.1", 15000)),
    ("POSTROUTING", "-p tcp -j SNAT --to-source 10.244.0.99:2000-3000", out(), ("src", "10.244.0.99", 2000)),
    ("POSTROUTING", "-p tcp -j SNAT --to-source 10.244.0.99:30000-50000", out(), ("src", "10.244.0.99", 40000)),
    ("POSTROUTING", "-p tcp -o eth0 -j MASQUERADE --to-ports 1024-2048", out(src="10.244.0.77"), ("src", POD, 1024)),
], ids=["dnat-in-range", "dnat-first", "dnat-no-port", "redirect-in-range", "redirect-first", "snat-first",
        "snat-in-range", "masquerade-ports"])
def test_nat_ports_stay_in_range_else_take_the_first(chain: str, rule: str, packet: Packet,
                                                     expected: tuple[str, str, int]) -> None:
    t = one("nat", chain, rule, packet)
    field, addr, port = expected
    ep = t.dst if field == "dst" else t.src
    assert (str(ep.addr), ep.port) == (addr, port)
    assert t.decided_by is not None and t.decided_by.verdict == "ACCEPT"


def test_redirect_and_masquerade_without_a_device_address_drop() -> None:
    """§1.4: REDIRECT in PREROUTING needs the incoming device's address, MASQUERADE the outgoing one's."""
    bare = Netns.pod(listeners=())
    t = one("nat", "PREROUTING", "-p tcp -j REDIRECT --to-ports 15006", inb(), bare)
    assert t.outcome is Outcome.DROPPED and t.decided_by is not None and t.decided_by.verdict == "DROP"
    t = one("nat", "POSTROUTING", "-o eth0 -j MASQUERADE", out(), bare)
    assert t.outcome is Outcome.DROPPED and str(t.src.addr) == POD


def test_a_packet_of_the_other_family_is_a_ruleset_error() -> None:
    rs = parse_ruleset("*nat\n-A OUTPUT -j RETURN\nCOMMIT\n")
    with pytest.raises(RulesetError, match="an IPv6 packet cannot be traced through an IPv4 ruleset"):
        trace(rs, out(dst="fd00::5", src="fd00::1", family=Family.IPV6), NS)


def test_compile_refuses_a_jump_to_a_missing_chain() -> None:
    rule = Rule(target=Target("NOWHERE"))
    rs = Ruleset(Family.IPV4, (Table("nat", (Chain("OUTPUT", "ACCEPT", (rule,)),)),))
    with pytest.raises(RulesetError, match="nat OUTPUT rule 1: no chain `NOWHERE'"):
        compile_ruleset(rs)


def test_ct_zone_first_wins_and_notrack_skips_nat() -> None:
    """§1.9: later CT targets are ignored; untracked packets never see nat."""
    rs = parse_ruleset("*raw\n-A OUTPUT -j CT --zone 1\n-A OUTPUT -j CT --zone 2\nCOMMIT\n")
    assert trace(rs, out(), NS).zone == 1
    rs = parse_ruleset("*raw\n-A OUTPUT -j CT --notrack\nCOMMIT\n*nat\n-A OUTPUT -j DNAT --to-destination 1.1.1.1\n"
                       "COMMIT\n")
    t = trace(rs, out(), NS)
    assert t.ctstate == "UNTRACKED" and str(t.dst.addr) == "10.0.0.5"
    # a non-default zone hides the entry from SO_ORIGINAL_DST (§1.5)
    rs = parse_ruleset("*raw\n-A OUTPUT -j CT --zone 2\nCOMMIT\n")
    assert trace(rs, out(), NS).original_dst is None


def test_existing_entry_in_another_zone_is_a_new_connection() -> None:
    """§1.9 / istio#33469: an app query whose tuple exists in zone 1 is NEW in zone 2 and sees nat."""
    rs = parse_ruleset("*raw\n-A OUTPUT -p udp --dport 53 -j CT --zone 2\nCOMMIT\n"
                       "*nat\n-A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 15053\nCOMMIT\n")
    est = out(dport=53, proto=Proto.UDP, ct=Conntrack(state=CtState.ESTABLISHED, zone=1))
    t = trace(rs, est, NS)
    assert t.zone == 2 and t.ctstate == "NEW" and t.dst.port == 15053
    same_zone = out(dport=53, proto=Proto.UDP, ct=Conntrack(state=CtState.ESTABLISHED, zone=2))
    assert trace(rs, same_zone, NS).dst.port == 53  # the cached decision (§1.3): nat not consulted


def test_log_nflog_trace_continue() -> None:
    for target in ("LOG --log-prefix x", "NFLOG", "TRACE"):
        rs = parse_ruleset(f"*raw\n-A OUTPUT -j {target}\n-A OUTPUT -j CT --zone 3\nCOMMIT\n")
        t = trace(rs, out(), NS)
        assert t.zone == 3
        first = render_xtables(t, packets=False).splitlines()[0]
        assert first.startswith("TRACE: raw:OUTPUT:rule:1:CONTINUE  -A OUTPUT -j ")


def test_tproxy_needs_a_transparent_listener_and_a_fwmark_route() -> None:
    """§1.7: no transparent socket → DROP; a non-local destination needs ip rule fwmark → local."""
    rule = "-p tcp -j TPROXY --on-port 15006 --tproxy-mark 0x539/0xffffffff"
    none = one("mangle", "PREROUTING", rule, inb())
    assert none.outcome is Outcome.DROPPED and "TPROXY" in none.reason
    opaque = Netns.pod(f"{POD}/24", listeners=(Listener(port=15006),))
    assert one("mangle", "PREROUTING", rule, inb(), opaque).outcome is Outcome.DROPPED
    ok = Netns.pod(f"{POD}/24", listeners=(Listener(port=15006, transparent=True),))
    t = one("mangle", "PREROUTING", rule, inb(), ok)
    assert t.outcome is Outcome.DELIVERED and t.local_port == 15006 and t.mark == 0x539
    assert t.dst.port == 8080  # nothing rewritten
    remote = one("mangle", "PREROUTING", rule, inb(dst="10.0.0.77", dport=90), ok)
    assert remote.outcome is Outcome.DROPPED and "forwarding is off" in remote.reason
    routed = Netns.pod(f"{POD}/24", listeners=ok.listeners, fwmark_routes=(FwmarkRoute(mark=0x539),))
    assert one("mangle", "PREROUTING", rule, inb(dst="10.0.0.77", dport=90), routed).outcome is Outcome.DELIVERED


def test_failed_condition_is_explained() -> None:
    rs = parse_ruleset("*nat\n-A OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN\n"
                       "-A OUTPUT -m owner --uid-owner 1337 -j RETURN\nCOMMIT\n")
    steps = [s for s in trace(rs, out(), NS).steps if s.kind is Kind.RULE]
    assert describe_failure(steps[0], Family.IPV4) == "-o lo: the packet leaves via eth0"
    assert describe_failure(steps[1], Family.IPV4) == \
        "-m owner --uid-owner 1337: the socket belongs to uid 1000, gid 1000"


def test_index_skips_rules_for_other_destinations() -> None:
    lines = "".join(f"-A OUTPUT -d 10.96.{i // 256}.{i % 256}/32 -p tcp --dport 80 -j DNAT "
                    f"--to-destination 10.1.0.{i % 250 + 1}:8080\n" for i in range(100))
    rs = parse_ruleset(f"*nat\n{lines}COMMIT\n")
    t = trace(rs, out(dst="10.96.0.42"), NS)
    assert (str(t.dst.addr), t.dst.port) == ("10.1.0.43", 8080)
    skipped = [s for s in t.steps if s.kind is Kind.SKIPPED]
    assert skipped and skipped[0].position == 1 and skipped[0].end == 42


def test_base_chains_that_do_not_exist_print_nothing() -> None:
    rs = parse_ruleset("*nat\n-A OUTPUT -j ACCEPT\nCOMMIT\n")
    crs = compile_ruleset(rs, base_chains={("nat", "OUTPUT")})
    lines = render_xtables(trace(crs, out(), NS), packets=False).splitlines()
    assert lines == ["TRACE: nat:OUTPUT:rule:1:ACCEPT  -A OUTPUT -j ACCEPT"]
    lines_all = render_xtables(trace(rs, out(), NS), packets=False).splitlines()
    assert lines_all[-1] == "TRACE: nat:POSTROUTING:policy:ACCEPT"


def test_renderers() -> None:
    rs = parse_ruleset("*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n")
    t = trace(rs, out(), NS)
    assert "Result: " in render_text(t)
    assert '"verdict": "refused"' in render_json(t)
    assert render_xtables(t).splitlines()[0] == "PACKET: OUT=eth0 SRC=10.244.0.5 DST=10.0.0.5 SPORT=40000 DPORT=80"


def test_family_mismatch_is_an_error() -> None:
    from netsim.errors import RulesetError

    rs = parse_ruleset("*nat\n-A OUTPUT -j ACCEPT\nCOMMIT\n")
    with pytest.raises(RulesetError):
        trace(rs, Packet(family=Family.IPV6, src=ip_address("::1"), dst=ip_address("::1")), NS)


@pytest.mark.parametrize("goto", [False, True])
def test_a_jump_loop_built_by_hand_is_an_error_not_a_hang(goto: bool) -> None:
    """parse.py refuses jump loops as the kernel does; a Ruleset built by hand still cannot hang the walk."""
    loop = Chain("LOOP", None, (Rule(target=Target("LOOP", goto=goto)),))
    rs = Ruleset(Family.IPV4, (Table("filter", (Chain("OUTPUT", "ACCEPT", (Rule(target=Target("LOOP")),)),
                                                 loop)),))
    with pytest.raises(RulesetError, match="chain LOOP entered at jump level 16"):
        trace(rs, out(), NS)


def test_fifteen_nested_chains_are_walked() -> None:
    names = [f"C{i}" for i in range(1, 16)]
    text = "\n".join(["*filter", *[f":{c} - [0:0]" for c in names], "-A OUTPUT -j C1",
                      *[f"-A {a} -j {b}" for a, b in itertools.pairwise(names)], "-A C15 -j DROP", "COMMIT", ""])
    assert trace(parse_ruleset(text), out(), NS).outcome is Outcome.DROPPED


def test_udp_range_written_backwards_loads_and_matches_nothing() -> None:
    rs = parse_ruleset("*filter\n-A OUTPUT -p udp --dport 90:70 -j DROP\nCOMMIT\n")
    assert trace(rs, out(dport=80, proto=Proto.UDP), NS).outcome is not Outcome.DROPPED
