"""How a dump's table lines are found (``dump._table_names``) and the parser's direct constructors
(``parse._positional``): both must give what the plain forms give."""

from __future__ import annotations

import random
import re
from dataclasses import fields

from netsim.netfilter import parse
from netsim.netfilter.dump import _table_names, split_families
from netsim.netfilter.model import Chain, Family, Match, Option, Rule

# the definition: a line that is "*table" once stripped (blanks before the "*" but no newline)
_TABLE_LINE = re.compile(r"^[^\S\n]*\*(.*)$", re.MULTILINE)


def test_table_names_match_the_line_definition_on_random_text() -> None:
    rng = random.Random(15)
    alphabet = ["*", "\n", " ", "\t", "\r", "a", "nat", "\x0b", "\x1c", "\u3000", "#"]
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        assert _table_names(text) == [m.group(1).strip() for m in _TABLE_LINE.finditer(text)], repr(text)


def test_table_names_skip_stars_inside_lines() -> None:
    text = "# a * comment\n  *nat \n-A X -m comment --comment \"*raw\" -j Y\n\t*filter\nx*mangle\n*"
    assert _table_names(text) == ["nat", "filter", ""]
    assert _table_names("*" * 100_000) == ["*" * 99_999]  # one line: read once


def test_a_table_seen_twice_starts_the_ipv6_part() -> None:
    v4 = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.0.0.1/32 -j ACCEPT\nCOMMIT\n"
    v6 = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s ::1/128 -j ACCEPT\nCOMMIT\n"
    parts = split_families(v4 + "  " + v6)
    assert [fam for fam, _ in parts] == [Family.IPV4, Family.IPV6]
    assert len(split_families(v4)) == 1


def test_positional_constructors_give_the_dataclass_objects() -> None:
    option = Option("--comment", ("a b",), False)
    match = Match("comment", (option,))
    rule = Rule(dst=parse._network("10.0.0.1", Family.IPV4), proto="tcp", matches=(match,), counters=(1, 2))
    values = [getattr(rule, f.name) for f in fields(Rule)]
    made = parse._new_rule(*values)
    assert made == rule and hash(made) == hash(rule) and repr(made) == repr(rule)
    assert parse._new_match("comment", (parse._new_option("--comment", ("a b",), False),)) == match
    assert parse._new_chain("X", None, (rule,), (0, 0)) == Chain("X", None, (rule,))
    try:
        made.proto = "udp"  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("a rule made directly is still frozen")
