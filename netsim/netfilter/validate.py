"""Load-time checks the kernel and iptables make, so a ruleset netsim accepts is one the kernel accepts.

``iptables-restore`` (1.8.9, nf_tables backend, Linux 6.18; every rule below verified in a throw-away
namespace) refuses a file in three phases, and which line it names depends on the phase:

1. **While reading a line** (userspace): syntax, unknown options, bad values, and two header checks made
   by iptables itself: no ``-i`` in OUTPUT/POSTROUTING and no ``-o`` in PREROUTING/INPUT (built-in
   chains only), no DROP anywhere in nat (:func:`check_userspace`). The line is the one being read.
2. **At COMMIT, command by command** (userspace, ``nft_prepare``): ``-A``/``-I`` into a chain that does not
   exist yet names that rule's line; a jump or goto to a chain that does not exist *at that point of the
   file* is "Chain 'X' does not exist" named at the COMMIT line; ``-N`` of an existing chain; an ``-I``
   position past the end (``parse.py`` does these, they need the command order).
3. **In the kernel's batch** for that table: after every rule the kernel re-validates the table when it
   has to, so the line named is the first rule after which the table is invalid: a target in the wrong
   table, a match or target whose hooks exclude a hook its chain is reachable from (``xt_check_*``,
   ``nft_*_validate``: owner only in OUTPUT/POSTROUTING, socket only in PREROUTING/INPUT, REDIRECT/DNAT
   only in nat PREROUTING/OUTPUT, SNAT in nat POSTROUTING/INPUT, MASQUERADE in nat POSTROUTING, TPROXY
   in mangle PREROUTING, REJECT in filter, CT in raw), ``-m sctp``/``-m dccp`` without that ``-p``, a jump
   to a built-in chain (ENOENT), and a chain reached through :data:`MAX_JUMP_LEVEL` jumps from a base
   chain (``nft_chain_validate``: ``NFT_JUMP_STACK_SIZE``, "Too many links"). A jump loop reachable
   from a base chain is that last case (its path never ends); a loop among chains no base chain
   reaches loads. ``--test`` skips this phase for loops and depth (validation runs at commit only).

So after loading, no path from a base chain enters a chain twice and none is deeper than 15 user chains:
the engine's walk ends. Never evaluates packets, never does IO.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from netsim.errors import RulesetError
from netsim.netfilter.model import BUILTIN_CHAINS, Rule

_ALL_HOOKS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
# nf_tables' NFT_JUMP_STACK_SIZE: a base chain is level 0, each jump or goto adds one, and entering a
# chain at this level fails with EMLINK ("Too many links"), so at most 15 user chains nest.
MAX_JUMP_LEVEL = 16

MATCH_HOOKS: dict[str, frozenset[str]] = {
    "owner": frozenset({"OUTPUT", "POSTROUTING"}),
    "socket": frozenset({"PREROUTING", "INPUT"}),
}
# Matches the kernel loads only for their own protocol, not inverted (``.proto`` of xt_sctp, xt_dccp,
# xt_icmp…); tcp/udp only when left to the xt match (no options: with options iptables-nft checks -p).
MATCH_PROTO = {"sctp": "sctp", "dccp": "dccp", "icmp": "icmp", "icmp6": "ipv6-icmp", "tcp": "tcp", "udp": "udp"}
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


def check_userspace(table: str, chain: str, rule: Rule) -> None:
    """The checks iptables makes while it reads the rule (phase 1)."""
    builtin = chain in BUILTIN_CHAINS.get(table, ())
    if builtin and rule.in_iface is not None and chain in ("OUTPUT", "POSTROUTING"):
        raise RulesetError(f"Can't use -i with {chain}")
    if builtin and rule.out_iface is not None and chain in ("PREROUTING", "INPUT"):
        raise RulesetError(f"Can't use -o with {chain}")
    if table == "nat" and rule.target is not None and rule.target.name == "DROP":
        raise RulesetError('the "nat" table is not intended for filtering, the use of DROP is therefore inhibited')


def check_rule(table: str, chain: str, rule: Rule, hooks: frozenset[str] | set[str]) -> None:
    """Raise RulesetError if the kernel refuses ``rule`` in ``table``/``chain`` reachable from ``hooks``
    (phase 3; ``hooks`` empty checks what the kernel checks when the rule is added to a user chain)."""
    for net, neg in ((rule.src, rule.src_neg), (rule.dst, rule.dst_neg)):
        if neg and net is not None and net.prefixlen == 0:
            raise RulesetError("a negated /0 address matches nothing (the kernel refuses the rule: Invalid argument)")
    target = rule.target
    if target is not None and target.name in BUILTIN_CHAINS.get(table, ()):
        raise RulesetError(f"cannot jump to built-in chain {target.name} (the kernel refuses: No such file or "
                           f"directory)")
    for match in rule.matches:
        allowed = MATCH_HOOKS.get(match.module)
        if allowed is not None and not hooks <= allowed:
            raise RulesetError(f"-m {match.module} is valid only in {_hooks_text(allowed)}, but chain {chain} is "
                               f"reached from {_hooks_text(hooks - allowed)} (the kernel refuses the rule)")
        proto = MATCH_PROTO.get(match.module)
        if match.module in ("tcp", "udp") and match.options:
            proto = None
        if proto is not None and (rule.proto != proto or rule.proto_neg):
            raise RulesetError(f"-m {match.module} needs -p {proto} (the kernel refuses the rule: Invalid argument)")
    place = TARGET_PLACES.get(target.name) if target is not None else None
    if place is not None and target is not None:
        only_table, allowed = place
        if only_table is not None and table != only_table:
            raise RulesetError(f"-j {target.name} is valid only in the {only_table} table (the kernel refuses it "
                               f"in {table})")
        if not hooks <= allowed:
            raise RulesetError(f"-j {target.name} is valid only in {_hooks_text(allowed)}, but chain {chain} is "
                               f"reached from {_hooks_text(hooks - allowed)} (the kernel refuses the rule)")


def reachable_hooks(table: str, rules: Mapping[str, Sequence[Rule]]) -> dict[str, frozenset[str]]:
    """Each chain → the hooks it is reachable from (a built-in chain is its own hook)."""
    return _reachable(table, rules, _jumps(table, rules))


def _jumps(table: str, rules: Mapping[str, Sequence[Rule]]) -> dict[str, set[str]]:
    """Each chain → the user chains its rules jump or go to."""
    builtin = BUILTIN_CHAINS.get(table, ())
    return {name: {t.name for r in chain_rules if (t := r.target) is not None and t.name in rules
                   and t.name not in builtin} for name, chain_rules in rules.items()}


def _reachable(table: str, rules: Mapping[str, Sequence[Rule]],
               jumps: dict[str, set[str]]) -> dict[str, frozenset[str]]:
    builtin = BUILTIN_CHAINS.get(table, ())
    out: dict[str, int] = {}  # chain → the hooks seen, one bit per built-in chain (in the order chains are met)
    for bit, base in enumerate(builtin):
        if base not in rules:
            continue
        flag = 1 << bit
        todo = [base]
        while todo:
            name = todo.pop()
            seen = out.get(name, 0)
            if seen & flag:
                continue
            out[name] = seen | flag
            todo.extend(jumps[name])
    shared: dict[int, frozenset[str]] = {}  # one frozenset per set of hooks (thousands of chains share one)
    hooks: dict[str, frozenset[str]] = {}
    for name, mask in out.items():
        found = shared.get(mask)
        if found is None:
            found = shared[mask] = frozenset(base for bit, base in enumerate(builtin) if mask >> bit & 1)
        hooks[name] = found
    return hooks


def _too_deep(table: str, rules: Mapping[str, Sequence[Rule]]) -> str | None:
    """The path of jumps on which a chain is entered at MAX_JUMP_LEVEL (a loop or a deep nest), or None."""
    longest: dict[str, int] = {}  # user chain → most jumps below it (capped at MAX_JUMP_LEVEL)
    below: dict[str, str] = {}  # the chain on that longest path
    on_path: set[str] = set()
    builtin = BUILTIN_CHAINS.get(table, ())

    def depth(name: str) -> int:
        if name in longest:
            return longest[name]
        if name in on_path:
            return MAX_JUMP_LEVEL  # a loop: the path never ends
        on_path.add(name)
        best = 0
        for rule in rules[name]:
            t = rule.target
            if t is not None and t.name in rules and t.name not in builtin:
                d = min(1 + depth(t.name), MAX_JUMP_LEVEL)
                if d > best:
                    best, below[name] = d, t.name
            if best >= MAX_JUMP_LEVEL:
                break
        on_path.discard(name)
        longest[name] = best
        return best

    for base in builtin:
        if base in rules and depth(base) >= MAX_JUMP_LEVEL:
            path = [base]
            while len(path) <= MAX_JUMP_LEVEL and path[-1] in below:
                path.append(below[path[-1]])
            loop = len(set(path)) < len(path)
            shown = " → ".join(path[: path.index(path[-1]) + 1] if loop else path)
            if loop:
                return (f"jump loop: {shown} enters chain {path[-1]} again (the kernel refuses: Too many links)")
            return (f"jumps nest deeper than the kernel allows ({MAX_JUMP_LEVEL} levels: {shown}; the kernel "
                    f"refuses: Too many links)")
    return None


def _deep(table: str, rules: Mapping[str, Sequence[Rule]], jumps: Mapping[str, set[str]]) -> bool:
    """Whether :func:`_too_deep` finds a path (a loop, or jumps nested MAX_JUMP_LEVEL deep), from the jump sets
    :func:`_jumps` made (the longest path below a chain does not depend on the order of its rules; the path
    itself, for the message, does: :func:`_too_deep` names it)."""
    longest: dict[str, int] = {}
    on_path: set[str] = set()

    def depth(name: str) -> int:
        if name in longest:
            return longest[name]
        if name in on_path:
            return MAX_JUMP_LEVEL
        on_path.add(name)
        best = 0
        for t in jumps[name]:
            best = max(best, min(1 + depth(t), MAX_JUMP_LEVEL))
            if best >= MAX_JUMP_LEVEL:
                break
        on_path.discard(name)
        longest[name] = best
        return best

    return any(base in rules and depth(base) >= MAX_JUMP_LEVEL for base in BUILTIN_CHAINS.get(table, ()))


def table_problem(table: str, rules: Mapping[str, Sequence[Rule]]) -> str | None:
    """Why the kernel refuses this table as it stands (phase 3, whole table), or None if it loads."""
    try:
        for name, hooks in reachable_hooks(table, rules).items():
            for rule in rules[name]:
                check_rule(table, name, rule, hooks)
    except RulesetError as e:
        return e.message
    return _too_deep(table, rules)


def loads(table: str, rules: Mapping[str, Sequence[Rule]]) -> bool:
    """Whether the kernel takes the whole table, rule by rule and as a whole (a quick yes for the common case:
    every rule checked once, in the hooks its chain is reachable from, or its own, or none; a rule that
    passes there passes every check :func:`rule_problem` and :func:`table_problem` make)."""
    jumps = _jumps(table, rules)  # once, for the hooks and the depth
    hooks = _reachable(table, rules, jumps)
    none: frozenset[str] = frozenset()
    # what :func:`check_rule` looks at: a rule with none of it passes whatever its hooks (most of a big dump:
    # kube-proxy's jumps, comments and ``-m tcp --dport``), so only the others are checked
    targets = TARGET_PLACES.keys() | BUILTIN_CHAINS.get(table, ())
    modules = MATCH_HOOKS.keys() | MATCH_PROTO.keys()
    try:
        for name, chain_rules in rules.items():
            reached = hooks.get(name, none)
            for rule in chain_rules:
                if not (rule.src_neg or rule.dst_neg or (rule.target is not None and rule.target.name in targets)):
                    for match in rule.matches:
                        if match.module in modules and not (match.module in ("tcp", "udp") and match.options):
                            break
                    else:
                        continue
                check_rule(table, name, rule, reached)
    except RulesetError:
        return False
    return not _deep(table, rules, jumps)


def rule_problem(table: str, chain: str, rule: Rule) -> str | None:
    """Why the kernel refuses ``rule`` as it adds it to ``chain`` (its own hook for a built-in chain)."""
    hooks = frozenset({chain}) if chain in BUILTIN_CHAINS.get(table, ()) else frozenset()
    try:
        check_rule(table, chain, rule, hooks)
    except RulesetError as e:
        return e.message
    return None


__all__ = [
    "MATCH_HOOKS",
    "MAX_JUMP_LEVEL",
    "TARGET_PLACES",
    "check_rule",
    "check_userspace",
    "loads",
    "reachable_hooks",
    "rule_problem",
    "table_problem",
]
