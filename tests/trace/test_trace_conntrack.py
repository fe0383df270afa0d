"""Conntrack as an input (spec/netfilter.md §1.3, §1.5, §1.9; §2 item 4): a packet of an existing entry skips
nat and gets the entry's binding instead, replies get the inverse, zones hide entries; the ``netsim trace``
options that describe the entry; and, as root, the kernel's own trace of a redirected connection's later
packets and its reply (namespaces created and deleted here, tests/trace/kernel_diff.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import ip_address
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import require_root
from kernel_diff import XTABLES_MONITOR, Pair, monitoring, namespaces, pod_handle_positions, pod_netns, sh

from netsim.netfilter import Family, parse_ruleset
from netsim.netfilter.conntrack import entry_after, later_packet, reply_packet
from netsim.netfilter.engine import trace
from netsim.netfilter.packet import ACK, Conntrack, CtState, Netns, Origin, Packet, Proto, Socket
from netsim.netfilter.render_trace import render_text, render_xtables, trace_json
from netsim.netfilter.trace import Kind, Outcome, Trace

POD = "10.244.0.5"
NS = Netns.pod(f"{POD}/24", listeners=None)
REDIRECT = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 15006
-A OUTPUT -p tcp -m owner ! --uid-owner 1337 -m tcp --dport 80 -j REDIRECT --to-ports 15001
-A OUTPUT -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 15001 -j ACCEPT
COMMIT
"""
RS = parse_ruleset(REDIRECT)
LOOP = ip_address("127.0.0.1")


def app(dport: int = 80, proto: Proto = Proto.TCP, ct: Conntrack | None = None, **kw: object) -> Packet:
    return Packet(src=ip_address(POD), dst=ip_address("10.0.0.5"), sport=43210, dport=dport, proto=proto,
                  socket=Socket(uid=1000, gid=1000), ct=ct or Conntrack(), **kw)  # type: ignore[arg-type]


def nat_steps(t: Trace) -> list[object]:
    return [s for s in t.steps if s.table == "nat"]


def ct_steps(t: Trace) -> list[object]:
    return [s for s in t.steps if s.kind is Kind.CONNTRACK]


# ------------------------------------------------------------------------------------------ engine


def test_established_packet_of_redirected_connection_reaches_15001_without_nat() -> None:
    """§1.3: the entry's REDIRECT binding is applied by nf_nat_packet; no nat chain runs."""
    est = app(ct=Conntrack(state=CtState.ESTABLISHED, dnat_to=(LOOP, 15001)), tcp_flags=ACK)
    t = trace(RS, est, NS)
    assert (str(t.dst.addr), t.dst.port) == ("127.0.0.1", 15001)
    assert t.outcome is Outcome.DELIVERED and t.local_port == 15001 and t.looped
    assert nat_steps(t) == []
    (step,) = ct_steps(t)
    assert step.hook == "OUTPUT" and step.target == "DNAT" and step.verdict == "dst"
    assert "10.0.0.5:80 → 127.0.0.1:15001" in step.text and "no rule" in step.text
    # filter OUTPUT (after NAT_DST) already sees the rewritten destination; OUTPUT keeps OUT=eth0 (§1.10)
    xt = render_xtables(t).splitlines()
    assert xt[0] == "PACKET: OUT=eth0 SRC=10.244.0.5 DST=127.0.0.1 SPORT=43210 DPORT=15001"
    assert xt[1].startswith("TRACE: filter:OUTPUT:rule:1:ACCEPT")
    assert t.original_dst is not None and (str(t.original_dst.addr), t.original_dst.port) == ("10.0.0.5", 80)


def test_binding_applies_even_where_no_nat_chain_exists() -> None:
    """The manip runs at NAT_DST priority whether or not this ruleset has a nat OUTPUT chain."""
    rs = parse_ruleset("*filter\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -d 127.0.0.1/32 -j ACCEPT\nCOMMIT\n")
    t = trace(rs, app(ct=Conntrack(state=CtState.ESTABLISHED, dnat_to=(LOOP, 15001))), NS)
    assert t.dst.port == 15001 and [s.position for s in t.matched()] == [1]


def test_established_without_binding_keeps_its_destination_though_rules_now_redirect() -> None:
    """'a rule change does not affect established connections' (§1.3)."""
    t = trace(RS, app(ct=Conntrack(state=CtState.ESTABLISHED)), NS)
    assert t.dst.port == 80 and t.outcome is Outcome.SENT and not nat_steps(t) and not ct_steps(t)


def test_unreplied_entry_new_with_binding_skips_nat() -> None:
    """A second UDP datagram before any answer is still NEW, yet nat is initialised: the binding is reused."""
    t = trace(RS, app(53, Proto.UDP, Conntrack(dnat_to=(LOOP, 15053))), NS)
    assert t.ctstate == "NEW" and t.dst.port == 15053 and not nat_steps(t) and len(ct_steps(t)) == 1
    assert t.decided_by == ct_steps(t)[0]


def test_reply_direction_is_de_natted() -> None:
    """§1.3: the reply from 15001 leaves POSTROUTING with the original destination as its source."""
    entry = Conntrack(state=CtState.ESTABLISHED, dnat_to=(LOOP, 15001), orig_dst=(ip_address("10.0.0.5"), 80))
    first = app()
    rep = reply_packet(first, entry, NS, Socket(uid=1337, gid=1337))
    assert rep.origin is Origin.LOCAL and (str(rep.src), rep.sport, str(rep.dst), rep.dport) == \
        ("127.0.0.1", 15001, POD, 43210) and rep.ct.reply
    t = trace(RS, rep, NS)
    assert (str(t.src.addr), t.src.port) == ("10.0.0.5", 80)
    assert t.outcome is Outcome.DELIVERED and t.local_port == 43210 and not nat_steps(t)
    (step,) = ct_steps(t)
    assert step.hook == "POSTROUTING" and step.verdict == "src" and "undoing" in step.text
    assert t.original_dst is None  # SO_ORIGINAL_DST is the listener's question, not the reply's


def test_reply_to_snat_gets_destination_back_at_prerouting() -> None:
    entry = Conntrack(state=CtState.ESTABLISHED, snat_to=(ip_address("10.244.0.99"), 5000),
                      orig_src=(ip_address(POD), 43210))
    rep = Packet(src=ip_address("10.0.0.5"), dst=ip_address("10.244.0.99"), sport=80, dport=5000,
                 origin=Origin.ARRIVING, in_iface="eth0", socket=None, ct=replace(entry, reply=True))
    t = trace(RS, rep, NS)
    assert (str(t.dst.addr), t.dst.port) == (POD, 43210) and ct_steps(t)[0].hook == "PREROUTING"


def test_ctdir_and_ctorig_see_the_direction() -> None:
    rs = parse_ruleset("*mangle\n-A OUTPUT -m conntrack --ctdir REPLY -j MARK --set-mark 0x1\n"
                       "-A OUTPUT -m conntrack --ctorigdst 10.0.0.5 -j MARK --set-mark 0x2\nCOMMIT\n")
    entry = Conntrack(state=CtState.ESTABLISHED, dnat_to=(LOOP, 15001), orig_dst=(ip_address("10.0.0.5"), 80))
    rep = reply_packet(app(), entry, NS, Socket(uid=1337, gid=1337))
    assert [s.position for s in trace(rs, rep, NS).matched()] == [1, 2]
    assert [s.position for s in trace(rs, app(), NS).matched()] == [2]


def test_zone_mismatch_makes_a_new_connection_that_sees_nat() -> None:
    """§1.9: the entry (and its binding) lives in zone 1; the packet looks in zone 2 and is NEW there."""
    rs = parse_ruleset("*raw\n-A OUTPUT -p udp --dport 53 -j CT --zone 2\nCOMMIT\n"
                       "*nat\n-A OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 15053\nCOMMIT\n")
    other = Conntrack(state=CtState.ESTABLISHED, zone=1, dnat_to=(ip_address("10.0.0.9"), 53))
    t = trace(rs, app(53, Proto.UDP, other), NS)
    assert t.zone == 2 and t.ctstate == "NEW" and t.dst.port == 15053 and str(t.dst.addr) == "127.0.0.1"
    assert not ct_steps(t) and [s for s in nat_steps(t) if s.kind is Kind.RULE]
    same = trace(rs, app(53, Proto.UDP, replace(other, zone=2)), NS)
    assert (str(same.dst.addr), same.dst.port) == ("10.0.0.9", 53) and not nat_steps(same)


def test_untracked_skips_nat_and_carries_no_binding() -> None:
    t = trace(RS, app(ct=Conntrack(state=CtState.UNTRACKED)), NS)
    assert t.dst.port == 80 and not nat_steps(t) and t.ctstate == "UNTRACKED" and t.original_dst is None
    with pytest.raises(ValueError, match="no conntrack entry"):
        Conntrack(state=CtState.UNTRACKED, dnat_to=(LOOP, 15001))
    with pytest.raises(ValueError, match="never NEW"):
        Conntrack(reply=True)
    with pytest.raises(ValueError, match="orig_dst"):
        Conntrack(state=CtState.ESTABLISHED, reply=True, dnat_to=(LOOP, 15001))


def test_new_packets_unchanged() -> None:
    """The first packet is traced as before: nat runs, no CONNTRACK step."""
    t = trace(RS, app(), NS)
    assert t.dst.port == 15001 and not ct_steps(t) and [s for s in nat_steps(t) if s.matched]


def test_entry_after_and_later_packet_reuse_the_first_decision() -> None:
    """istio#33480: the second query of a UDP 4-tuple reuses the first one's redirect, even after the
    rules changed (here: no nat rule at all any more)."""
    first = app(53, Proto.UDP)
    entry = entry_after(trace(RS, first, NS))
    assert entry is not None and entry.dnat_to == (LOOP, 15053) and entry.state is CtState.NEW and entry.confirmed
    no_nat = parse_ruleset("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    t = trace(no_nat, later_packet(first, entry), NS)
    assert t.dst.port == 15053 and len(ct_steps(t)) == 1
    assert entry_after(trace(RS, app(ct=Conntrack(state=CtState.UNTRACKED)), NS)) is None
    with pytest.raises(ValueError):
        entry_after(t)


COUNT_STATES = """*filter
:OUTPUT ACCEPT [0:0]
-A OUTPUT -m conntrack --ctstate ESTABLISHED -j DROP
-A OUTPUT -m state --state NEW -j ACCEPT
COMMIT
"""


@pytest.mark.parametrize("proto", [Proto.UDP, Proto.TCP])
def test_a_later_packet_before_any_reply_is_new_and_skips_nat(proto: Proto) -> None:
    """Kernel (checked in a namespace: three datagrams of one UDP flow, a SYN and its retransmissions, all
    counted under --ctstate NEW and --state NEW, the nat rule once): until a reply is seen, a connection's
    packets are NEW, though nat decided for the first only. netsim labelled them ESTABLISHED."""
    first = app(53, proto)
    rs = parse_ruleset(REDIRECT.replace("-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 15001 -j ACCEPT\n", "")
                       .replace("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
                                COUNT_STATES))
    entry = entry_after(trace(rs, first, NS), replied=False)
    assert entry is not None and entry.state is CtState.NEW
    second = later_packet(first, entry)
    assert second.tcp_flags == first.tcp_flags  # TCP: the SYN again (no SYN-ACK seen)
    t = trace(rs, second, NS)
    assert t.ctstate == "NEW" and t.outcome is not Outcome.DROPPED
    assert [s for s in t.steps if s.kind is Kind.RULE and s.matched and "--state NEW" in s.text]
    assert not [s for s in nat_steps(t) if s.kind is Kind.RULE]


def test_a_later_datagram_without_a_binding_keeps_its_null_binding() -> None:
    """The first datagram met no nat rule (null binding); rules added since do not redirect the second."""
    first = app(5353, Proto.UDP)
    no_nat = parse_ruleset("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")
    entry = entry_after(trace(no_nat, first, NS))
    assert entry is not None and entry.dnat_to is None and entry.state is CtState.NEW
    redirect_all = parse_ruleset("*nat\n-A OUTPUT -p udp -j REDIRECT --to-ports 15053\nCOMMIT\n")
    t = trace(redirect_all, later_packet(first, entry), NS)
    assert t.dst.port == 5353 and t.ctstate == "NEW"


def test_the_reply_makes_the_entry_established() -> None:
    first = app(53, Proto.UDP)
    entry = entry_after(trace(RS, first, NS))
    assert entry is not None
    t = trace(RS, reply_packet(first, entry, NS, Socket(uid=1337, gid=1337)), NS)
    assert t.ctstate == "ESTABLISHED" and t.packet.ct.reply


def test_json_and_text_show_the_conntrack_step() -> None:
    t = trace(RS, app(ct=Conntrack(state=CtState.ESTABLISHED, zone=3, mark=0x539, dnat_to=(LOOP, 15001))), NS)
    j = trace_json(t)
    assert j["packet"]["ct"] == {"zone": 3, "mark": 0x539, "reply": False, "dnat_to": "127.0.0.1:15001",
                                 "snat_to": None}
    # zone 3 ≠ the packet's zone 0: a NEW connection, nat runs
    assert j["final"]["ctstate"] == "NEW"
    t = trace(RS, app(ct=Conntrack(state=CtState.ESTABLISHED, mark=0x539, dnat_to=(LOOP, 15001))), NS)
    j = trace_json(t)
    steps = [s for s in j["steps"] if s["kind"] == "conntrack"]
    assert steps[0]["binding"] == "DNAT" and steps[0]["rewrites"] == "dst" and j["final"]["ctmark"] == 0x539
    assert "⇄ conntrack entry: destination 10.0.0.5:80 → 127.0.0.1:15001" in render_text(t)


# ------------------------------------------------------------------------------------------ CLI


def cli(*args: str) -> tuple[int, str]:
    from netsim.commands.trace import trace_cmd

    r = CliRunner().invoke(trace_cmd, ["--pod-ip", POD, *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ct") / "rules.iptables-save"
    path.write_text(REDIRECT)
    return str(path)


def test_cli_ct_state_and_dnat(rules_file: str) -> None:
    code, out = cli("--rules", rules_file, "--dst", "10.0.0.5:80", "--uid", "1000", "--ct-state", "established",
                    "--ct-dnat", "127.0.0.1:15001")
    assert code == 0, out
    assert "⇄ conntrack entry: destination 10.0.0.5:80 → 127.0.0.1:15001" in out
    assert "Captured by the sidecar's outbound listener 15001 via" in out
    code, out = cli("--rules", rules_file, "--dst", "10.0.0.5:80", "--uid", "1000", "--ct-state", "ESTABLISHED")
    assert code == 0 and "Bypasses the sidecar" in out and "carries no DNAT binding" in out
    # IP without a port: the binding keeps the destination port
    code, out = cli("--rules", rules_file, "--dst", "10.0.0.5:80", "--ct-state", "ESTABLISHED", "--ct-dnat",
                    "10.9.9.9", "--format", "json")
    assert json.loads(out)["hops"][0]["final"]["dst"] == "10.9.9.9" and code == 0


def test_cli_ct_zone_and_mark(rules_file: str) -> None:
    code, out = cli("--rules", rules_file, "--proto", "udp", "--dst", "10.0.0.5:53", "--ct-state", "ESTABLISHED",
                    "--ct-zone", "1", "--ct-mark", "0x539", "--ct-dnat", "127.0.0.1:15053", "--format", "json")
    hop = json.loads(out)["hops"][0]
    assert code == 0 and hop["packet"]["ct"]["zone"] == 1 and hop["packet"]["ct"]["mark"] == 0x539
    assert hop["final"]["ctstate"] == "NEW"  # zone 1 entry, packet in zone 0: nat ran and redirected
    assert hop["final"]["dport"] == 15053 and any(s["kind"] == "rule" and s["matched"] for s in hop["steps"])


def test_cli_untracked(rules_file: str) -> None:
    code, out = cli("--rules", rules_file, "--dst", "10.0.0.5:80", "--uid", "1000", "--ct-state", "UNTRACKED")
    assert code == 0 and "Bypasses the sidecar" in out and "conntrack: untracked" in out


def test_cli_ct_reply(rules_file: str) -> None:
    code, out = cli("--rules", rules_file, "--dst", "10.0.0.5:80", "--uid", "1000", "--ct-dnat", "127.0.0.1:15001",
                    "--ct-reply")
    assert code == 0, out
    assert "== Hop 1: reply from the sidecar (uid 1337)" in out
    assert "source 127.0.0.1:15001 → 10.0.0.5:80" in out and out.strip().splitlines()[-1].startswith(
        "Reply direction: delivered to the connection's socket at 10.244.0.5:43210, from 10.0.0.5:80")
    # inbound, redirected to 15006: the reply leaves eth0 from the app's port again
    code, out = cli("--rules", rules_file, "--from", "10.1.2.3:5555", "--dst", f"{POD}:8080", "--ct-dnat",
                    f"{POD}:15006", "--ct-reply", "--format", "json")
    j = json.loads(out)
    # a reply is not captured (nat is not consulted): the contract's "bypassed"; where it went is the hop's outcome
    assert code == 0 and j["verdict"] == "bypassed" and j["hops"][0]["verdict"] == "sent"
    assert j["decided_by"] is None and j["listener"] is None and j["hops"][0]["final"]["sport"] == 8080
    assert j["hops"][0]["final"]["dst"] == "10.1.2.3" and j["hops"][0]["final"]["dport"] == 5555


def test_cli_follow_up_udp_tuple_reuse(rules_file: str) -> None:
    code, out = cli("--rules", rules_file, "--proto", "udp", "--dst", "10.96.0.10:53", "--follow-up")
    assert code == 0, out
    first, second = out.split("==== Then a second packet of the same connection")
    assert "nat OUTPUT" in first and "REDIRECT --to-ports 15053" in first
    assert "(ESTABLISHED, zone 0, mark 0x0, DNAT to 127.0.0.1:15053)" in second
    assert "nat OUTPUT not consulted" in second and "⇄ conntrack entry" in second
    assert "Captured by the DNS proxy on port 15053 via the conntrack entry's DNAT binding" in second
    code, out = cli("--rules", rules_file, "--proto", "udp", "--dst", "10.96.0.10:53", "--follow-up",
                    "--format", "json")
    j = json.loads(out)
    assert j["entry"]["dnat_to"] == "127.0.0.1:15053" and j["second"]["verdict"] == "captured-dns"
    assert not [s for s in j["second"]["hops"][0]["steps"] if s["table"] == "nat"]
    code, out = cli("--rules", rules_file, "--dst", "10.0.0.5:80", "--uid", "1000", "--follow-up", "--format",
                    "xtables-trace")
    assert code == 0 and out.count("# first packet") == 1 and "# a second packet of the same connection" in out
    second_part = out.split("# a second packet")[1]
    assert "nat:" not in second_part and "DST=127.0.0.1 SPORT=43210 DPORT=15001" in second_part


def test_cli_follow_up_reply_and_no_entry(rules_file: str, tmp_path: Path) -> None:
    code, out = cli("--rules", rules_file, "--dst", "10.0.0.5:80", "--uid", "1000", "--follow-up", "--ct-reply")
    assert code == 0 and "==== Then the reply" in out and "undoing its DNAT binding" in out
    drop = tmp_path / "drop.rules"
    drop.write_text("*filter\n:OUTPUT DROP [0:0]\nCOMMIT\n")
    code, out = cli("--rules", str(drop), "--dst", "10.0.0.5:80", "--follow-up")
    assert code == 0 and "--follow-up: no second packet" in out and "==== Then" not in out


@pytest.mark.parametrize(("args", "message"), [
    (("--ct-state", "BOGUS"), "Invalid value for '--ct-state'"),
    (("--ct-zone", "70000"), "Invalid value for '--ct-zone'"),
    (("--ct-mark", "zz"), "--ct-mark 'zz': not a number"),
    (("--ct-mark", "0x1ffffffff"), "a mark is 32 bits"),
    (("--ct-dnat", "nohost:1"), "--ct-dnat 'nohost:1'"),
    (("--ct-dnat", "fd00::1"), "same IP version"),
    (("--ct-state", "UNTRACKED", "--ct-dnat", "127.0.0.1:15001"), "no conntrack entry to carry a binding"),
    (("--ct-state", "NEW", "--ct-reply"), "--ct-reply: a reply-direction packet"),
    (("--ct-zone", "1"), "a first packet (NEW) has none yet"),
    (("--ct-state", "INVALID", "--ct-mark", "1"), "an INVALID packet has none"),
    (("--follow-up", "--ct-state", "ESTABLISHED"), "--follow-up takes the entry from the connection's first"),
    (("--matrix", "--ct-state", "ESTABLISHED"), "--matrix traces first packets"),
    (("--pcap", "x.pcap", "--ct-mark", "1"), "--ct-mark: --pcap traces first packets"),
    (("--ct-reply", "--config", "."), "it does not apply to --ct-reply"),
    (("--follow-up", "--config", "."), "--config continues one captured connection"),
])
def test_cli_errors_are_one_line_exit_2(rules_file: str, args: tuple[str, ...], message: str) -> None:
    argv = ["--rules", rules_file, "--pod-ip", POD, *(() if "--matrix" in args else ("--dst", "10.0.0.5:80")), *args]
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", *argv], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and r.stderr.startswith("Error: ") and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ the kernel (root)

SPORT = 31999  # inside kernel_diff's probe range, far from the differential test's ports (it counts up)


def _trace_rules(text: str) -> str:
    """TRACE every packet of the probe's connection, both directions (not only the SYN)."""
    rules = [f"-A {chain} -p tcp -m tcp --{way} {SPORT} -j TRACE"
             for chain in ("PREROUTING", "OUTPUT") for way in ("sport", "dport")]
    head = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + "\n".join(rules) + "\nCOMMIT\n"
    return head + text


_EVENT = re.compile(r"^\s*(PACKET|TRACE): (\d+) ([0-9a-f]+) (.*?)\s*$")
_FLAGS = ("SYN", "ACK", "PSH", "FIN", "RST")


def _by_packet(text: str, positions: dict[tuple[str, str, int], int]) -> dict[tuple[str, frozenset[str]], list[str]]:
    """The monitor's events per packet of the connection: ("orig"|"reply", TCP flags) → netsim-form lines (the
    first packet seen with those flags in that direction)."""
    from netsim.lab.kerneltrace import packet_line, trace_line

    key_of: dict[str, tuple[str, frozenset[str]]] = {}
    first_id: dict[tuple[str, frozenset[str]], str] = {}
    out: dict[tuple[str, frozenset[str]], list[str]] = {}
    for line in text.splitlines():
        m = _EVENT.match(line)
        if not m:
            continue
        kind, _fam, tid, rest = m.groups()
        if kind == "PACKET":
            sp = re.search(r"\bID=(\d+) .*\bSPORT=(\d+) DPORT=(\d+)", rest)
            if sp is None:
                continue
            way = "orig" if int(sp.group(2)) == SPORT else "reply"
            key = (way, frozenset(f for f in _FLAGS if re.search(rf"\b{f}\b", rest.split("SPORT=")[1])))
            # Trace ids are reused across packets: a packet is its IP ID (kept on loopback re-entry). Only
            # the first packet with these flags in this direction counts (not the FIN's ACK after the data's).
            ip_id = first_id.setdefault(key, sp.group(1))
            key_of[tid] = key if ip_id == sp.group(1) else ("dup", key[1])
            if ip_id == sp.group(1):
                out.setdefault(key, []).append(packet_line(rest))
            continue
        key = key_of.get(tid)
        if key is None or key[0] == "dup":
            continue
        event = trace_line(rest, positions)
        if event is not None:
            out[key].append(event)
    return out


@pytest.fixture(scope="module")
def kernel_pair() -> Iterator[Pair]:
    require_root("iptables-restore", "nft", "xtables-monitor", "stdbuf")
    with namespaces() as p:
        yield p


@pytest.mark.root
def test_kernel_later_packets_and_reply_of_redirected_connection(kernel_pair: Pair) -> None:
    """As the kernel does it: the SYN runs nat OUTPUT (REDIRECT to 15001); the handshake's ACK and the data
    packet run no nat chain and still reach 127.0.0.1:15001 (the entry's binding); the SYN-ACK from 15001 leaves
    POSTROUTING as 10.0.0.5:80 (the inverse). netsim's xtables-trace for each equals the kernel's."""
    pair = kernel_pair
    text = _trace_rules(REDIRECT)
    sh("ip", "netns", "exec", pair.pod, "nft", "flush", "ruleset")
    sh("ip", "netns", "exec", pair.pod, "iptables-restore", stdin=text)
    positions = pod_handle_positions(pair.pod, Family.IPV4)
    client = (f"import os, socket, time\nos.setgroups([]); os.setgid(1000); os.setuid(1000)\n"
              f"s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              f"s.bind(('{POD}', {SPORT})); s.connect(('10.0.0.5', 80)); time.sleep(0.2); s.send(b'x')\n"
              "time.sleep(0.3); s.close()\n")
    with monitoring(pair.pod, XTABLES_MONITOR) as monitor:
        time.sleep(0.5)  # the monitor subscribes
        sh("ip", "netns", "exec", pair.pod, sys.executable, "-c", client)
        time.sleep(0.8)
    lines = monitor.lines
    kernel = _by_packet("".join(lines), positions)
    rs = parse_ruleset(text)
    ns = pod_netns()
    first = app()
    first = replace(first, sport=SPORT)
    t1 = trace(rs, first, ns)
    entry = entry_after(t1)
    assert entry is not None and entry.dnat_to == (LOOP, 15001)
    cases = {
        ("orig", frozenset({"SYN"})): first,
        ("orig", frozenset({"ACK"})): later_packet(first, entry),
        ("orig", frozenset({"ACK", "PSH"})): later_packet(first, entry),
        ("reply", frozenset({"SYN", "ACK"})): reply_packet(first, entry, ns, Socket(uid=0, gid=0)),
        ("reply", frozenset({"ACK"})): reply_packet(first, entry, ns, Socket(uid=0, gid=0)),
    }
    assert set(cases) <= set(kernel), f"packets seen: {sorted(kernel)}\n{''.join(lines)[:3000]}"
    for key, packet in cases.items():
        want = render_xtables(trace(rs, packet, ns)).splitlines()
        assert kernel[key] == want, f"{key}:\nkernel {kernel[key]}\nnetsim {want}"
        if key != ("orig", frozenset({"SYN"})):
            assert not [ln for ln in kernel[key] if ln.startswith("TRACE: nat:")]
    ack = kernel[("orig", frozenset({"ACK"}))]
    assert any("DST=127.0.0.1" in ln and "DPORT=15001" in ln for ln in ack), ack
    synack = kernel[("reply", frozenset({"SYN", "ACK"}))]
    assert any("SRC=10.0.0.5" in ln and "SPORT=80" in ln for ln in synack), synack



def test_ipv6_binding_and_reply() -> None:
    rs = parse_ruleset("*nat\n-A OUTPUT -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 15001\nCOMMIT\n",
                       Family.IPV6)
    ns = Netns.pod("fd00:244::5/64", listeners=None)
    first = Packet(family=Family.IPV6, src=ip_address("fd00:244::5"), dst=ip_address("fd00::5"), sport=43210,
                   dport=80, socket=Socket(uid=1000, gid=1000))
    entry = entry_after(trace(rs, first, ns))
    assert entry is not None and entry.dnat_to == (ip_address("::1"), 15001)
    t = trace(rs, later_packet(first, entry), ns)
    assert t.dst.port == 15001 and "[fd00::5]:80 → [::1]:15001" in ct_steps(t)[0].text
    t = trace(rs, reply_packet(first, entry, ns, Socket(uid=1337, gid=1337)), ns)
    assert (str(t.src.addr), t.src.port) == ("fd00::5", 80) and t.outcome is Outcome.DELIVERED


@pytest.mark.root
def test_the_kernel_counts_unreplied_packets_as_new(netns: str) -> None:
    """Three datagrams of one UDP flow with no reply: all NEW to --ctstate and --state, nat consulted once;
    netsim's second datagram agrees."""
    rules = ("*nat\n-A OUTPUT -p udp -m udp --dport 9999\nCOMMIT\n*filter\n"
             "-A OUTPUT -p udp -m udp --dport 9999 -m conntrack --ctstate NEW\n"
             "-A OUTPUT -p udp -m udp --dport 9999 -m state --state NEW\n"
             "-A OUTPUT -p udp -m udp --dport 9999 -m conntrack --ctstate ESTABLISHED\nCOMMIT\n")
    subprocess.run(["ip", "netns", "exec", netns, "iptables-restore"], input=rules, text=True, check=True)
    subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c",
                    "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                    "s.bind(('127.0.0.1', 40001))\nfor _ in range(3): s.sendto(b'x', ('127.0.0.9', 9999))\n"],
                   check=True)
    save = subprocess.run(["ip", "netns", "exec", netns, "iptables-save", "-c"], capture_output=True, text=True,
                          check=True).stdout
    counts = [int(ln[1:].split(":")[0]) for ln in save.splitlines() if ln.startswith("[") and "9999" in ln]
    ct_new, state_new, ct_est, nat = counts  # iptables-save prints filter before nat
    assert (nat, ct_new, state_new, ct_est) == (1, 3, 3, 0)
    rs = parse_ruleset(rules)
    ns = Netns.pod("10.244.0.5/24", listeners=None)
    first = Packet(src=ip_address("127.0.0.1"), dst=ip_address("127.0.0.9"), sport=40001, dport=9999,
                   proto=Proto.UDP, socket=Socket(uid=0, gid=0))
    entry = entry_after(trace(rs, first, ns))
    assert entry is not None
    assert trace(rs, later_packet(first, entry), ns).ctstate == "NEW"
