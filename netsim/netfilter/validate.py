"""Load-time checks the kernel and iptables make, so a ruleset netsim accepts is one the kernel accepts.

Matches and targets declare the hooks (and tables) they may run in; the kernel checks a rule against
every hook its chain is reachable from, at the moment a rule is added or a jump makes a chain
reachable from a new hook (``xt_check_match``/``xt_check_target``; spec/netfilter.md §3 "Validation at
load"). Verified with iptables-restore 1.8.9 (nf_tables) here: owner only in OUTPUT/POSTROUTING, socket
only in PREROUTING/INPUT, REDIRECT/DNAT only in nat PREROUTING/OUTPUT, SNAT in nat POSTROUTING/INPUT,
MASQUERADE in nat POSTROUTING, TPROXY in mangle PREROUTING, REJECT in filter INPUT/FORWARD/OUTPUT,
CT only in raw, no DROP anywhere in nat, no ``-i`` in OUTPUT/POSTROUTING and no ``-o`` in
PREROUTING/INPUT (those two only for the built-in chains themselves, as iptables checks them).

Never evaluates packets, never does IO.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from netsim.errors import RulesetError
from netsim.netfilter.model import BUILTIN_CHAINS, Rule

_ALL_HOOKS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})

MATCH_HOOKS: dict[str, frozenset[str]] = {
    "owner": frozenset({"OUTPUT", "POSTROUTING"}),
    "socket": frozenset({"PREROUTING", "INPUT"}),
}
# target -> (the only table it loads in, or None for any; the hooks it may run in)
TARGET_PLACES: dict[str, tuple[str | None, frozenset[str]]] = {
    "REDIRECT": ("nat", frozenset({"PREROUTING", "OUTPUT"})),
    "DNAT": ("nat", frozenset({"PREROUTING", "OUTPUT"})),
    "SNAT": ("nat", frozenset({"POSTROUTING", "INPUT"})),
    "MASQUERADE": ("nat", frozenset({"POSTROUTING"})),
    "TPROXY": ("mangle", frozenset({"PREROUTING"})),
    "REJECT": ("filter", frozenset({"INPUT", "FORWARD", "OUTPUT"})),
    "CT": ("raw", _ALL_HOOKS),
    "NOTRACK": ("raw", _ALL_HOOKS),
}


def _hooks_text(hooks: frozenset[str] | set[str]) -> str:
    return "/".join(h for h in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING") if h in hooks)


def check_rule(table: str, chain: str, rule: Rule, hooks: frozenset[str] | set[str]) -> None:
    """Raise RulesetError if ``rule`` in ``table``/``chain``, reachable from ``hooks``, would be refused."""
    builtin = chain in BUILTIN_CHAINS.get(table, ())
    if builtin and rule.in_iface is not None and chain in ("OUTPUT", "POSTROUTING"):
        raise RulesetError(f"Can't use -i with {chain}")
    if builtin and rule.out_iface is not None and chain in ("PREROUTING", "INPUT"):
        raise RulesetError(f"Can't use -o with {chain}")
    target = rule.target
    if table == "nat" and target is not None and target.name == "DROP":
        raise RulesetError('the "nat" table is not intended for filtering, the use of DROP is therefore inhibited')
    for match in rule.matches:
        allowed = MATCH_HOOKS.get(match.module)
        if allowed is not None and not hooks <= allowed:
            raise RulesetError(f"-m {match.module} is valid only in {_hooks_text(allowed)}, but chain {chain} is "
                               f"reached from {_hooks_text(hooks - allowed)} (the kernel refuses the rule)")
    place = TARGET_PLACES.get(target.name) if target is not None else None
    if place is not None and target is not None:
        only_table, allowed = place
        if only_table is not None and table != only_table:
            raise RulesetError(f"-j {target.name} is valid only in the {only_table} table (the kernel refuses it "
                               f"in {table})")
        if not hooks <= allowed:
            raise RulesetError(f"-j {target.name} is valid only in {_hooks_text(allowed)}, but chain {chain} is "
                               f"reached from {_hooks_text(hooks - allowed)} (the kernel refuses the rule)")


def reach(table: str, rules: Mapping[str, Sequence[Rule]], start: str, hooks: frozenset[str],
          known: dict[str, frozenset[str]]) -> None:
    """Record that user chain ``start`` is reachable from ``hooks`` and check every rule that newly becomes
    reachable from a hook, following jumps and gotos. ``known`` maps user chain → hooks and is updated."""
    todo = [(start, hooks)]
    while todo:
        name, new = todo.pop()
        if name not in rules or name in BUILTIN_CHAINS.get(table, ()):
            continue
        old = known.get(name, frozenset())
        added = new - old
        if not added:
            continue
        known[name] = old | added
        for rule in rules[name]:
            check_rule(table, name, rule, added)
            if rule.target is not None and rule.target.name in rules:
                todo.append((rule.target.name, added))


def hooks_of(table: str, chain: str, known: Mapping[str, frozenset[str]]) -> frozenset[str]:
    if chain in BUILTIN_CHAINS.get(table, ()):
        return frozenset({chain})
    return known.get(chain, frozenset())


__all__ = ["MATCH_HOOKS", "TARGET_PLACES", "check_rule", "hooks_of", "reach"]
