"""The generic netfilter model: rulesets, tables, chains, rules, matches and targets.

Values here are immutable and already normalised the way the kernel stores them, so that rendering
them (``render.py``) prints exactly what ``iptables-save`` prints. Nothing here knows about Istio.

A rule's match and target options are kept as canonical tokens per extension module (the registry in
``matches.py`` / ``targets.py`` normalises them on the way in), which is how iptables itself
round-trips extensions it knows and keeps those it does not.
"""

from __future__ import annotations

import enum
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Network = IPv4Network | IPv6Network


class MaskedNetwork:
    """An address with a non-contiguous mask, as ``-s 10.0.0.0/255.0.255.0`` stores it: the kernel compares
    ``(addr & mask) == value`` whatever the mask, and iptables-save prints the mask instead of a length
    (``10.0.2.0/255.0.255.0``; verified). ``ipaddress`` refuses such networks, so these subclasses set their
    fields directly: ``network_address`` is the masked address, ``netmask`` the mask, and ``prefixlen`` the
    number of mask bits (never 0 nor the full length, which are contiguous), so ``net.prefixlen == 0`` and
    ``== max_prefixlen`` keep meaning "any" and "one host"; ``addr in net`` compares under the mask."""

    def __str__(self) -> str:
        return f"{self.__dict__['network_address']}/{self.__dict__['netmask']}"


class MaskedIPv4Network(MaskedNetwork, IPv4Network):
    def __init__(self, address: int, mask: int) -> None:
        self.__dict__.update(network_address=IPv4Address(address & mask), netmask=IPv4Address(mask),
                             _prefixlen=mask.bit_count())


class MaskedIPv6Network(MaskedNetwork, IPv6Network):
    def __init__(self, address: int, mask: int) -> None:
        self.__dict__.update(network_address=IPv6Address(address & mask), netmask=IPv6Address(mask),
                             _prefixlen=mask.bit_count())


class Family(enum.Enum):
    IPV4 = 4
    IPV6 = 6

    @property
    def save_command(self) -> str:
        return "iptables-save" if self is Family.IPV4 else "ip6tables-save"

    @property
    def restore_command(self) -> str:
        return "iptables-restore" if self is Family.IPV4 else "ip6tables-restore"


# Built-in chains per table, in the order iptables-save prints them (hook order).
BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
TABLES = tuple(BUILTIN_CHAINS)


@dataclass(frozen=True, slots=True)
class Option:
    """One option of a match or target, e.g. ``! --dport 53`` → Option("--dport", ("53",), True)."""

    name: str
    args: tuple[str, ...] = ()
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Match:
    """``-m module options…`` (an implicit protocol match is stored as an explicit one)."""

    module: str
    options: tuple[Option, ...] = ()

    def option(self, name: str) -> Option | None:
        for opt in self.options:
            if opt.name == name:
                return opt
        return None


@dataclass(frozen=True, slots=True)
class Target:
    """``-j NAME options…`` or ``-g CHAIN``; ``name`` is a verdict, an extension or a user chain."""

    name: str
    options: tuple[Option, ...] = ()
    goto: bool = False

    def option(self, name: str) -> Option | None:
        for opt in self.options:
            if opt.name == name:
                return opt
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One rule. The address/interface/protocol fields are iptables' fixed header; a ``*_neg`` flag
    is a leading ``!``. ``target`` is None for a rule without ``-j`` (counting only)."""

    src: Network | None = None
    src_neg: bool = False
    dst: Network | None = None
    dst_neg: bool = False
    in_iface: str | None = None
    in_neg: bool = False
    out_iface: str | None = None
    out_neg: bool = False
    proto: str | None = None
    proto_neg: bool = False
    fragment: bool | None = None  # -f (True) / ! -f (False), IPv4 only
    matches: tuple[Match, ...] = ()
    target: Target | None = None
    counters: tuple[int, int] | None = None  # [packets:bytes] from iptables-save -c


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    policy: str | None = None  # ACCEPT/DROP for built-in chains, None for user chains
    rules: tuple[Rule, ...] = ()
    counters: tuple[int, int] = (0, 0)

    @property
    def builtin(self) -> bool:
        return self.policy is not None


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    chains: tuple[Chain, ...] = ()

    def chain(self, name: str) -> Chain | None:
        for c in self.chains:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True, slots=True)
class Ruleset:
    """All tables of one address family, in the order they were read or made."""

    family: Family = Family.IPV4
    tables: tuple[Table, ...] = ()

    def table(self, name: str) -> Table | None:
        for t in self.tables:
            if t.name == name:
                return t
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleOp:
    """One rule line of an ``iptables-restore --noflush`` payload: ``-A chain …`` or ``-I chain n …``.

    ``args`` keeps the rule's tokens as written (Istio's dry-run golden prints them verbatim);
    ``rule`` is the same rule parsed and normalised (what the kernel stores).
    """

    table: str
    chain: str
    args: tuple[str, ...]
    rule: Rule
    position: int | None = None  # None: append; n: insert at 1-based position n


@dataclass(frozen=True, slots=True)
class RestorePayload:
    """An ``iptables-restore --noflush`` input for one family: its rule lines in emission order.
    The user chains it declares follow from the ops (a chain is declared where first used)."""

    family: Family
    ops: tuple[RuleOp, ...] = ()


_paused = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a big ruleset's objects are built (parsed or compiled), and
    what was built moved out of the collector's sight afterwards (``gc.freeze``, as the DNS server does
    for its tables). With the collector on, the ~700,000 objects of a 40,000-rule dump set off collections
    that walk everything built so far, and the first collection after it walks them all once more: 40 %
    of the time. These objects hold no reference cycles, so reference counting still frees them when they
    are dropped. Nests; the collector's state is restored on the way out."""
    global _paused
    was = gc.isenabled()
    gc.disable()
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1
        if not _paused:
            gc.freeze()
        if was:
            gc.enable()


__all__ = [
    "BUILTIN_CHAINS",
    "TABLES",
    "Chain",
    "Family",
    "MaskedIPv4Network",
    "MaskedIPv6Network",
    "MaskedNetwork",
    "Match",
    "Network",
    "Option",
    "RestorePayload",
    "Rule",
    "RuleOp",
    "Ruleset",
    "Table",
    "Target",
    "gc_paused",
]
