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
