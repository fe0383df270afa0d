"""A dump as the inference reads it: every rule of every chain as kernel-canonical tokens, by position.

Owns: :class:`View` (family, table, chain → the rules' ``iptables-save`` tokens, in kernel order) and the
small token readers the generators' recognisers share. Never does: parse text (``netsim.netfilter``
does) or decide which generator wrote a rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from netsim.netfilter.model import Family, Ruleset
from netsim.netfilter.render import rule_tokens

ChainKey = tuple[Family, str, str]  # (family, table, chain)
Tokens = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class View:
    """Every chain's rules as ``iptables-save`` prints them (without ``-A CHAIN``), in kernel order."""

    chains: Mapping[ChainKey, tuple[Tokens, ...]]

    @classmethod
    def of(cls, rulesets: Mapping[Family, Ruleset]) -> View:
        chains: dict[ChainKey, tuple[Tokens, ...]] = {}
        for family, ruleset in rulesets.items():
            for table in ruleset.tables:
                for chain in table.chains:
                    chains[(family, table.name, chain.name)] = tuple(tuple(rule_tokens(r)) for r in chain.rules)
        return cls(chains)

    def rules(self, family: Family, table: str, chain: str) -> tuple[Tokens, ...]:
        return self.chains.get((family, table, chain), ())

    def has_chain(self, table: str, chain: str) -> bool:
        return any(t == table and c == chain for _, t, c in self.chains)

    def families(self) -> tuple[Family, ...]:
        return tuple(sorted({f for f, _, _ in self.chains}, key=lambda f: f.value))

    def all_rules(self) -> Iterator[tuple[ChainKey, int, Tokens]]:
        """(chain, 1-based position, tokens) of every rule."""
        for key, rules in self.chains.items():
            for position, tokens in enumerate(rules, 1):
                yield key, position, tokens

    @property
    def empty(self) -> bool:
        return not any(self.chains.values())


def value(tokens: Tokens, flag: str) -> str | None:
    """The argument after ``flag`` (negated or not), or None."""
    try:
        i = tokens.index(flag)
    except ValueError:
        return None
    return tokens[i + 1] if i + 1 < len(tokens) else None


def negated(tokens: Tokens, flag: str) -> bool:
    try:
        i = tokens.index(flag)
    except ValueError:
        return False
    return i > 0 and tokens[i - 1] == "!"


def target(tokens: Tokens) -> str | None:
    return value(tokens, "-j") or value(tokens, "-g")


def values(tokens: Tokens, flag: str) -> list[tuple[str, bool]]:
    """Every ``flag``'s argument, with whether a ``!`` precedes it."""
    return [(tokens[i + 1], i > 0 and tokens[i - 1] == "!")
            for i, tok in enumerate(tokens[:-1]) if tok == flag]


def line(chain: str, tokens: Tokens) -> str:
    return " ".join(("-A", chain, *tokens))


__all__ = ["ChainKey", "Tokens", "View", "line", "negated", "target", "value", "values"]
