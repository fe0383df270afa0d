"""The nft parser's shape cache (parse._Shapes): a listing read through it is the listing read token by token,
errors included, and the generated kube-proxy ruleset reads and traces as kube-proxy's rules do."""

from __future__ import annotations

import random
from collections.abc import Callable
from ipaddress import IPv4Address

import pytest
from kube_proxy_nft import (
    NODE_IP,
    cluster_ip,
    endpoint_ip,
    endpoints,
    kube_proxy_nft,
    kube_proxy_nft_transaction,
    node_port,
)

from netsim.errors import RulesetError
from netsim.netfilter.engine import trace
from netsim.netfilter.model import Family
from netsim.netfilter.nft import compile_nft, parse_nft
from netsim.netfilter.nft.model import NftRuleset, rule_text
from netsim.netfilter.nft.parse import DEFAULT_NAMES, _Parser
from netsim.netfilter.packet import Netns, Origin, Packet, Socket
from netsim.netfilter.trace import Outcome


def slow(text: str) -> object:
    return _Parser(text, DEFAULT_NAMES, fast=False).parse()


def test_kube_proxy_listing_reads_the_same_through_the_shape_cache() -> None:
    text = kube_proxy_nft(120)
    fast = parse_nft(text)
    assert fast == slow(text)
    rules = sum(len(c.rules) for t in fast.tables for c in t.chains)
    assert rules > 300


def test_handles_and_mixed_shapes_read_the_same() -> None:
    text = """table ip t { # handle 1
\tchain a { # handle 2
\t\ttype filter hook output priority filter; policy accept;
\t\tip daddr 10.0.0.1 tcp dport 80 jump b # handle 3
\t\tip daddr 10.0.0.2 tcp dport 80 jump c # handle 4
\t\tip daddr 10.0.0.3-10.0.0.9 accept # handle 5
\t\tip saddr 10.0.0.0/8 ip daddr 1.2.3.4 counter packets 3 bytes 180 drop # handle 6
\t\tip daddr { 1.1.1.1, 2.2.2.2 } meta l4proto tcp dnat to 10.1.1.1:8080 # handle 7
\t\tip daddr 1.1.1.3 meta l4proto tcp dnat to 10.1.1.2:8080 comment "x y" # handle 8
\t}
\tchain b { # handle 9
\t\tip saddr 10.9.9.9 return # handle 10
\t}
\tchain c { # handle 11
\t\tip saddr 10.9.9.8 return # handle 12
\t}
}
"""
    fast = parse_nft(text)
    assert fast == slow(text)
    assert fast.has_handles
    chain = fast.tables[0].chains[0]
    assert [r.handle for r in chain.rules] == [3, 4, 5, 6, 7, 8]
    assert [r.line for r in chain.rules] == [4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("bad", ["10.0.0.256", "10.0.01.2", "10.0.0"])
def test_a_bad_address_in_a_known_shape_is_the_full_parse_error(bad: str) -> None:
    text = kube_proxy_nft(5)
    good = f"ip saddr {endpoint_ip(3, 0)} jump mark-for-masquerade"
    assert good in text
    broken = text.replace(good, f"ip saddr {bad} jump mark-for-masquerade")
    with pytest.raises(RulesetError) as fast:
        parse_nft(broken)
    with pytest.raises(RulesetError) as full:
        slow(broken)
    assert str(fast.value) == str(full.value)
    assert f"line {text[:text.index(good)].count(chr(10)) + 1}:" in str(fast.value)


def test_a_jump_to_a_missing_chain_in_a_known_shape_is_refused() -> None:
    text = kube_proxy_nft(5).replace("jump mark-for-masquerade", "jump mark-for-masq", 1)
    with pytest.raises(RulesetError, match="jump mark-for-masq: no such chain"):
        parse_nft(text)


def test_kube_proxy_ruleset_dnats_a_cluster_ip_to_its_endpoint_and_rejects_a_service_without_one() -> None:
    rs = compile_nft(parse_nft(kube_proxy_nft(60)), Family.IPV4)
    ns = Netns.pod("10.244.0.5/24", listeners=None)
    i = 7
    assert endpoints(i) >= 1
    t = trace(rs, Packet(src=IPv4Address("10.244.0.5"), dst=IPv4Address(cluster_ip(i)), sport=40000, dport=80,
                         socket=Socket(uid=1000, gid=1000)), ns)
    assert str(t.dst.addr) == endpoint_ip(i, 0) and t.dst.port == 8080
    # a port the Service does not have: the vmap has no element, cluster-ips-check rejects it
    t = trace(rs, Packet(src=IPv4Address("10.244.0.5"), dst=IPv4Address(cluster_ip(i)), sport=40000, dport=81,
                         socket=Socket(uid=1000, gid=1000)), ns)
    assert t.outcome is Outcome.DROPPED
    # every 50th Service has no endpoints: no-endpoint-services sends it to reject-chain
    assert endpoints(49) == 0
    t = trace(rs, Packet(src=IPv4Address("10.244.0.5"), dst=IPv4Address(cluster_ip(49)), sport=40000, dport=80,
                         socket=Socket(uid=1000, gid=1000)), ns)
    assert t.outcome is Outcome.DROPPED
    np = node_port(10)
    assert np is not None
    t = trace(rs, Packet(src=IPv4Address("10.1.2.3"), dst=IPv4Address(NODE_IP), sport=40000, dport=np,
                         origin=Origin.ARRIVING, in_iface="eth0", socket=None), ns)
    assert str(t.dst.addr) == endpoint_ip(10, 0)


def _outcome(parse: Callable[[str], object], text: str) -> object:
    try:
        return parse(text)
    except RulesetError as e:
        return f"error: {e}"


def _mutants_read_the_same(text: str, rng: random.Random, rounds: int,
                           swap: Callable[[list[str], random.Random], None]) -> None:
    """``rounds`` copies of ``text`` with one to three lines' words changed by ``swap``: each reads through the
    shape cache as token by token (the same ruleset or the same error)."""
    base = text.splitlines()
    for _ in range(rounds):
        lines = list(base)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(lines))
            words = lines[i].split(" ")
            swap(words, rng)
            lines[i] = " ".join(words)
        mutant = "\n".join(lines) + "\n"
        assert _outcome(parse_nft, mutant) == _outcome(slow, mutant), mutant


_WEIRD = ["1.2.3.4/33", "1.2.3", "01.2.3.4", "1.2.3.4:99999", "256.1.1.1", "1.2.3.4,", "1.2.3.4-1.2.3.1",
          "::ffff:1.2.3.4", "1.2.3.4.5", "nosuch-chain", "0.0.0.0", "1.2.3.4:0", "x", "{", "}", "jump", "goto",
          ",", '"s"', "# handle 7", "@cluster-ips", "type", "elements", "chain"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_listings_read_the_same_through_the_shape_cache(seed: int) -> None:
    """Words of a kube-proxy listing swapped for odd ones (bad addresses, stray braces, keywords, strings,
    handles): the result, or the error, is the token-by-token parse's, and never anything but a RulesetError."""
    def swap(words: list[str], rng: random.Random) -> None:
        words[rng.randrange(len(words))] = rng.choice(_WEIRD)

    _mutants_read_the_same(kube_proxy_nft(8), random.Random(seed), 150, swap)


@pytest.mark.parametrize(("text", "line"), [
    ("table ip t {\n chain c {\n  jump\n }\n}\n", 3),
    ("add table ip t\nadd chain ip t c\nadd rule ip t c meta l4proto tcp dnat to\n", 3),
    ("table ip t {\n chain c {\n  type\n }\n}\n", 3),
])
def test_a_rule_or_chain_cut_short_is_one_error_with_its_line(text: str, line: int) -> None:
    # (these raised IndexError before: a traceback instead of nft's syntax error)
    for parse in (parse_nft, slow):
        with pytest.raises(RulesetError, match=f"^line {line}: "):
            parse(text)


@pytest.mark.parametrize(("hook", "name", "refused"), [
    ("output", "dstnat", True), ("input", "srcnat", True), ("postrouting", "dstnat", True),
    ("prerouting", "srcnat", True), ("prerouting", "dstnat", False), ("postrouting", "srcnat", False),
    ("output", "filter", False), ("input", "mangle", False),
])
def test_dstnat_and_srcnat_only_on_their_own_hooks(hook: str, name: str, refused: bool) -> None:
    # nft: "invalid priority expression value in this context" (checked with nft -c for each hook)
    text = f"table inet t {{\n chain c {{\n  type filter hook {hook} priority {name} - 10; policy accept;\n }}\n}}\n"
    if refused:
        with pytest.raises(RulesetError, match=f"^line 3: priority {name} on hook {hook}"):
            parse_nft(text)
    else:
        assert parse_nft(text).tables[0].chains[0].priority == {"dstnat": -100, "srcnat": 100, "filter": 0,
                                                               "mangle": -150}[name] - 10


def _same_ruleset(a: NftRuleset, b: NftRuleset) -> bool:
    """Equal but for lines (a transaction's lines are not its listing's)."""
    def norm(rs: NftRuleset) -> object:
        return [(t.family, t.name, sorted((c.name, c.type, c.hook, c.priority, c.policy,
                                           [rule_text(r) for r in c.rules]) for c in t.chains),
                 sorted(((s.name, s.kinds, s.elements.items, s.elements.data, s.is_map) for s in t.sets), key=str))
                for t in rs.tables]

    return norm(a) == norm(b)


def test_a_kube_proxy_transaction_reads_as_its_listing_and_as_token_by_token() -> None:
    text = kube_proxy_nft_transaction(120)
    fast = parse_nft(text)
    assert fast == slow(text)
    assert _same_ruleset(fast, parse_nft(kube_proxy_nft(120)))
    svc = next(s for s in fast.tables[0].sets if s.name == "service-ips")
    assert len(svc.elements.items) == len(svc.elements.data) == sum(1 for i in range(120) if endpoints(i))


_TX_WEIRD = [*_WEIRD, "ip", "inet", "index", "position", "handle", "0", "insert", "create", "element", "rule", ";",
             "", "  ", "\t", "{ 1.2.3.4 }", "@x"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_transactions_read_the_same_through_the_shape_cache(seed: int) -> None:
    """Words of a kube-proxy transaction (add rule/element/chain commands) swapped for odd ones, lines
    inserted with another verb: the result, or the error, is the token-by-token parse's."""
    def swap(words: list[str], rng: random.Random) -> None:
        if rng.random() < 0.2:
            words[0] = rng.choice(["insert", "create", "add"])
        else:
            words[rng.randrange(len(words))] = rng.choice(_TX_WEIRD)

    _mutants_read_the_same(kube_proxy_nft_transaction(6), random.Random(seed), 200, swap)


def test_insert_and_index_in_a_transaction_keep_their_order() -> None:
    text = ("add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr 10.0.0.1 accept\n"
            "insert rule ip t c ip daddr 10.0.0.2 accept\nadd rule ip t c index 0 ip daddr 10.0.0.3 drop\n"
            "add rule ip t c ip daddr 10.0.0.4 jump d\nadd chain ip t d\n"
            "add set ip t s { type ipv4_addr ; }\nadd element ip t s { 10.1.0.1, 10.1.0.2 }\n"
            "add element ip t s { 10.1.0.3 }\n")
    fast = parse_nft(text)
    assert fast == slow(text)
    chain = fast.tables[0].chains[0]
    assert [rule_text(r) for r in chain.rules] == ["ip daddr 10.0.0.2 accept", "ip daddr 10.0.0.3 drop",
                                                   "ip daddr 10.0.0.1 accept", "ip daddr 10.0.0.4 jump d"]
    assert len(fast.tables[0].sets[0].elements.items) == 3
    # a set defined again starts from its own elements, as before the elements were joined at the end
    again = parse_nft(text + "add set ip t s { type ipv4_addr ; }\nadd element ip t s { 10.1.0.9 }\n")
    assert again.tables[0].sets[0].elements.items == (((0x0A010009, 0x0A010009),),)
