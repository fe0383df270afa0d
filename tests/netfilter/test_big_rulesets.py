"""Building big rulesets: the collector is paused while a ruleset is parsed or compiled and restored after,
whatever happens; shared (memoised) parts give the same rules as parsing each on its own."""

from __future__ import annotations

import gc

import pytest

from netsim.errors import RulesetError
from netsim.netfilter import parse_rule_args, parse_ruleset, tokenize
from netsim.netfilter.engine import compile_ruleset

DUMP = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-SEP-B - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A OUTPUT -d 10.96.0.1/32 -p tcp -m comment --comment "ns/a:http" -m tcp --dport 80 -j KUBE-SEP-A
-A OUTPUT -d 10.96.0.2/32 -p tcp -m comment --comment "ns/b:http" -m tcp --dport 80 -j KUBE-SEP-B
-A KUBE-SEP-A -s 10.100.0.1/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.100.0.1:8080
-A KUBE-SEP-B -s 10.100.0.2/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-B -p tcp -m tcp -j DNAT --to-destination 10.100.0.2:8080
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
COMMIT
"""


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_restored_after_parsing_and_compiling(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        compile_ruleset(parse_ruleset(DUMP))
        assert gc.isenabled() is enabled
        with pytest.raises(RulesetError):
            parse_ruleset(DUMP.replace("--dport 80", "--dport 99999", 1))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def _lines_in_save_order() -> list[str]:
    (nat,) = parse_ruleset(DUMP).tables
    return [ln for c in nat.chains for ln in DUMP.splitlines() if ln.startswith(f"-A {c.name} ")]


def test_shared_parts_give_the_rules_parsed_one_by_one() -> None:
    rules = [r for t in parse_ruleset(DUMP).tables for c in t.chains for r in c.rules]
    assert rules == [parse_rule_args(tokenize(ln)[2:]) for ln in _lines_in_save_order()]
    # equal matches and targets are one object (what keeps a 40,000-rule dump small)
    assert rules[0].matches[1] is rules[1].matches[1]
    assert rules[3].target is rules[5].target


def test_compiled_rules_show_their_saved_text() -> None:
    crs = compile_ruleset(parse_ruleset(DUMP))
    shown = [r.text for chain in crs.tables["nat"].values() for r in chain.rules]
    assert shown == _lines_in_save_order()


# Values put in the shaped words of DUMP's first rule (address, comment, port, chain): good ones, and ones the
# shape cannot take or that are wrong, each of which must give what reading the rule on its own gives.
_SLOT_VALUES = {3: ["10.96.0.9/32", "0/0", "1.2.3", "10.1.2.3/255.0.255.0", "1.1.1.1,2.2.2.2", "localhost",
                    "pod.example", "1.2.3.4/33", "::1"],
                8: ["x", "two words", "", "a\\b", "--dport"],
                12: ["80", "0x50", "65536", "http", "10:5", "1:1024", "0:65535"],
                14: ["KUBE-SEP-B", "KUBE-MARK-MASQ", "A" * 29, "ACCEPT", "has space"]}


@pytest.mark.parametrize("slot", sorted(_SLOT_VALUES))
def test_a_rule_of_a_known_shape_reads_as_it_reads_alone(slot: int) -> None:
    from netsim.netfilter.model import Family
    from netsim.netfilter.parse import _parse_args, _parse_shaped

    template = tokenize(DUMP.splitlines()[6])[2:]
    cache: dict = {}  # type: ignore[type-arg]
    _parse_shaped(template, Family.IPV4, parse_rule_args.__defaults__[1], cache)  # type: ignore[index]
    assert [s for s in cache.values() if s is not None], "the template made a shape"
    for value in _SLOT_VALUES[slot] * 2:  # twice: the second time through the shape's memo of values
        args = [*template[:slot], value, *template[slot + 1:]]
        names = parse_rule_args.__defaults__[1]  # type: ignore[index]

        def read(shaped: bool, args: list[str] = args, names: object = names) -> object:
            try:
                if shaped:
                    return _parse_shaped(args, Family.IPV4, names, cache)  # type: ignore[arg-type]
                return _parse_args(args, Family.IPV4, names, None)  # type: ignore[arg-type]
            except RulesetError as e:
                return e.message

        assert read(True) == read(False), value


@pytest.mark.parametrize("seed", range(3))
def test_seeded_rules_of_known_shapes_read_as_they_read_alone(seed: int) -> None:
    """Rules of DUMP's shapes with values drawn from small sets (so a shape's memo of normalised matches and
    jump targets is hit again and again), some of them wrong: each reads as it reads on its own."""
    import random

    from netsim.netfilter.model import Family
    from netsim.netfilter.parse import DEFAULT_NAMES, _parse_args, _parse_shaped

    rng = random.Random(seed)
    templates = [tokenize(ln)[2:] for ln in DUMP.splitlines() if ln.startswith("-A ")]
    values = {"-d": ["10.96.0.9/32", "10.96.0.10/32", "0/0", "1.2.3.4/33"], "-s": ["10.100.0.3/32", "::1"],
              "--comment": ["a", "b", ""], "--dport": ["80", "443", "0x50", "65536", "1:1024"],
              "-j": ["KUBE-SEP-A", "KUBE-SEP-B", "KUBE-MARK-MASQ", "ACCEPT", "DROP", "has space"],
              "--to-destination": ["10.100.0.1:8080", "10.100.0.1:99999", "10.100.0.2"]}
    cache: dict = {}  # type: ignore[type-arg]

    def read(args: list[str], shaped: bool) -> object:
        try:
            if shaped:
                return _parse_shaped(args, Family.IPV4, DEFAULT_NAMES, cache)
            return _parse_args(args, Family.IPV4, DEFAULT_NAMES, None)
        except RulesetError as e:
            return e.message

    for _ in range(600):
        args = list(rng.choice(templates))
        for i in range(1, len(args)):
            if args[i - 1] in values and rng.random() < 0.8:
                args[i] = rng.choice(values[args[i - 1]])
        assert read(args, True) == read(args, False), args
