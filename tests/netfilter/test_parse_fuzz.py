"""Invariant (STYLE §5): any ruleset text either parses or raises RulesetError, never anything else."""

from __future__ import annotations

import contextlib
from pathlib import Path

from conftest import CONFORMANCE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsim.errors import RulesetError
from netsim.netfilter import Family, parse_rule_args, parse_ruleset, render_save, tokenize

_KERNEL = CONFORMANCE / "istio-iptables" / "kernel"
SEEDS = [p.read_text() for p in sorted(_KERNEL.glob("*-save"))] if _KERNEL.is_dir() else []
SEEDS.append(
    "*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -p tcp -m multiport --dports 1,2 -j REDIRECT --to-ports 1\nCOMMIT\n"
)
WORDS = ["-A", "-I", "-N", "-j", "-g", "-m", "!", "-p", "tcp", "udp", "--dport", "--sport", "owner",
         "--uid-owner", "mark", "--mark", "0x539/0xffffffff", "COMMIT", "*nat", "*raw", ":OUTPUT", "ACCEPT",
         "[0:0]", "REDIRECT", "--to-ports", "TPROXY", "--on-port", "MARK", "--set-mark", "\"", "\\", "-s",
         "::1/128", "10.0.0.0/33", "65536", "1:", ":", "CT", "--zone", "conntrack", "--ctstate", "NEW,FOO",
         "comment", "--comment", "statistic", "--probability", "2", "ISTIO_X", "OUTPUT", "\n", " ", "-c", "x",
         "999", "-I OUTPUT 0", "--to-ports abc", "[1:x]"]


def _check(text: str, family: Family | None = None) -> None:
    try:
        ruleset = parse_ruleset(text, family)
    except RulesetError as e:
        assert "\n" not in str(e)
        return
    # what parses renders, and the rendering parses back to the same rules
    assert parse_ruleset(render_save(ruleset), ruleset.family) == ruleset


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), cut=st.integers(0, 5000), junk=st.lists(st.sampled_from(WORDS), max_size=6),
       where=st.integers(0, 5000))
def test_mutated_dumps_parse_or_raise_ruleset_error(seed: str, cut: int, junk: list[str], where: int) -> None:
    text = seed[: max(cut, len(seed) // 2)]
    pos = min(where, len(text))
    _check(text[:pos] + " ".join(junk) + text[pos:])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=12), st.sampled_from([Family.IPV4, Family.IPV6]))
def test_random_rule_arguments_parse_or_raise_ruleset_error(words: list[str], family: Family) -> None:
    with contextlib.suppress(RulesetError):
        parse_rule_args(tokenize(" ".join(words)), family)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_ruleset_error(text: str) -> None:
    _check(text)


def test_seeds_were_found() -> None:
    assert len(SEEDS) > 1 or not Path(CONFORMANCE).is_dir()


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=' \t\n\r\v"\\ab-', max_size=40))
def test_fast_tokenizer_splits_as_the_character_by_character_one(line: str) -> None:
    from netsim.netfilter.parse import _tokenize_chars

    assert tokenize(line) == _tokenize_chars(line)
    assert tokenize(line.replace("\\", "")) == _tokenize_chars(line.replace("\\", ""))
