"""A whole nftables ruleset as ``nft list ruleset`` prints it (nft 1.0.6): tables, their sets, their chains
with base-chain headers (standard priorities by name where nft names them), the rules in nft's normal form.

Owns: the listing text of an :class:`NftRuleset`, so that a ruleset netsim built can be compared with the
kernel's listing after ``nft -f``. Never does: parse (``parse.py``) or name any generator's tables.
Sets print their type and, if given in ``set_comments``, their comment (the reader keeps no set comments);
their elements are not printed (none of the rulesets compared so far holds any).
"""

from __future__ import annotations

from collections.abc import Mapping

from netsim.netfilter.nft.model import (
    NAMED_PRIORITIES,
    NAMED_PRIORITY_HOOKS,
    Chain,
    Kind,
    NamedSet,
    NftFamily,
    NftRuleset,
    Table,
    rule_text,
)

# name → (priority, the hooks nft prints it for) for the ip, ip6 and inet families (nft(8), "Table 6")
_STANDARD: tuple[tuple[str, int, tuple[str, ...] | None], ...] = tuple(
    (name, value, NAMED_PRIORITY_HOOKS.get(name)) for name, value in NAMED_PRIORITIES.items())
_TYPES = {Kind.IPV4: "ipv4_addr", Kind.IPV6: "ipv6_addr"}


def _priority(chain: Chain, family: NftFamily) -> str:
    if family in (NftFamily.IP, NftFamily.IP6, NftFamily.INET):
        for name, value, hooks in _STANDARD:
            if chain.priority == value and (hooks is None or chain.hook in hooks):
                return name
    return str(chain.priority)


def _set(s: NamedSet, comment: str | None) -> list[str]:
    kinds = " . ".join(_TYPES.get(k, k.value) for k in s.kinds)
    lines = [f"\tset {s.name} {{", f"\t\ttype {kinds}"]
    if s.interval:
        lines.append("\t\tflags interval")
    if comment is not None:
        lines.append(f'\t\tcomment "{comment}"')
    return [*lines, "\t}"]


def _chain(chain: Chain, family: NftFamily) -> list[str]:
    lines = [f"\tchain {chain.name} {{"]
    if chain.base:
        lines.append(f"\t\ttype {chain.type} hook {chain.hook} priority {_priority(chain, family)}; "
                     f"policy {chain.policy};")
    lines += [f"\t\t{rule_text(r)}" for r in chain.rules]
    return [*lines, "\t}"]


def render_table(table: Table, set_comments: Mapping[str, str] | None = None) -> str:
    blocks = [_set(s, (set_comments or {}).get(s.name)) for s in table.sets]
    blocks += [_chain(c, table.family) for c in table.chains]
    body: list[str] = []
    for i, block in enumerate(blocks):
        body += ([""] if i else []) + block
    return "\n".join([f"table {table.family.value} {table.name} {{", *body, "}"]) + "\n"


def render_listing(ruleset: NftRuleset, set_comments: Mapping[str, str] | None = None) -> str:
    """``nft list ruleset`` of ``ruleset`` (counters 0, no handles); ``set_comments``: set name → comment."""
    return "".join(render_table(t, set_comments) for t in ruleset.tables)


__all__ = ["render_listing", "render_table"]
