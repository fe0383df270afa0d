"""The traversal engine: one packet through the hooks, tables and chains, exactly as the kernel walks them.

Rules this module keeps (each names its section in ``shared/spec/netfilter.md``):

1. Hook order and tables per hook (§1.1): PREROUTING raw → [conntrack] → mangle → nat(DNAT);
   INPUT mangle → filter → security → nat(SNAT); FORWARD mangle → filter → security; OUTPUT raw →
   [conntrack] → mangle → nat(DNAT) → filter → security; POSTROUTING mangle → nat(SNAT).
   A base chain that does not exist registers no hook and prints nothing (§4).
2. The four paths (§1.2): locally generated (OUTPUT, POSTROUTING, then loopback re-entry when routed
   to ``lo``), arriving (PREROUTING, then INPUT or FORWARD). Routing is decided before OUTPUT and
   the OUTPUT hook keeps that device even after mangle/nat reroute; POSTROUTING sees the new one
   (§1.10, §1.12).
3. NAT once (§1.3, ``nf_nat_inet_fn``): nat chains run only for a NEW connection and once per manip
   type (DST at PREROUTING/OUTPUT, SRC at INPUT/POSTROUTING). A looped packet keeps its conntrack, so
   on re-entry via ``lo`` nat is never consulted and CT targets are no-ops (§1.2(c), §1.9). A packet
   of an existing entry gets the entry's binding instead (``nf_nat_packet``), at the nat priority of
   the same hooks; a reply-direction packet the inverse (a CONNTRACK step, never a rule).
4. REDIRECT (§1.4): OUTPUT → 127.0.0.1 / ::1, PREROUTING → the incoming device's primary address,
   none → DROP; only the destination changes. NAT targets return ACCEPT and end the table.
5. Owner (§1.6, ``xt_owner.c``): no socket → ``(match ^ invert) == 0``; a kernel socket without a
   file → the same for uid/gid while ``--socket-exists`` holds.
6. TPROXY (§1.7, ``tproxy_tg4``): a listener on (``--on-ip`` or the incoming device's primary
   address, ``--on-port`` or dport) that is transparent → mark, assign socket, ACCEPT; else DROP.
   Delivery needs a local destination or an ``ip rule fwmark`` → local route.
7. Verdicts (§1.8): ACCEPT ends the table at this hook, DROP/REJECT end the packet, RETURN pops
   (in a base chain it applies the policy), falling off a user chain returns, ``-g`` does not push.
8. CT first wins (§1.9, ``xt_ct_target``): a packet that already has a conntrack or template
   ignores later CT targets; the conntrack lookup happens in the template's zone.
9. Anything netsim does not know (a match, a target, a listener, a ``statistic`` draw) is never
   guessed silently: the step and the trace carry the assumption made (§3 "Unknown matches").

Theory of operation: :func:`compile_ruleset` turns a :class:`Ruleset` into per-chain lists of rule
predicates once (with a destination-address index for long chains, so a 10,000-service chain costs
about what a short one does); :func:`trace` runs a small mutable walker over it and freezes what it
saw into a :class:`Trace`. Never does IO, never knows about Istio.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Literal, NamedTuple, overload

from netsim.errors import RulesetError
from netsim.netfilter.matches import ICMP6_TYPES, ICMP_TYPES, icmp_type, port_range, value_mask
from netsim.netfilter.model import BUILTIN_CHAINS, Chain, Family, Match, Rule, Ruleset, Target, gc_paused
from netsim.netfilter.packet import (
    Address,
    Conntrack,
    CtState,
    Listener,
    Netns,
    Origin,
    Packet,
    Proto,
)
from netsim.netfilter.render import format_network, match_tokens, render_rule
from netsim.netfilter.trace import BaseChain, Branch, Endpoint, Kind, Outcome, Step, Trace
from netsim.netfilter.validate import MAX_JUMP_LEVEL

# §1.1: tables per hook in priority order (lower priority value first).
HOOK_TABLES: dict[str, tuple[str, ...]] = {
    "PREROUTING": ("raw", "mangle", "nat"),
    "INPUT": ("mangle", "filter", "security", "nat"),
    "FORWARD": ("mangle", "filter", "security"),
    "OUTPUT": ("raw", "mangle", "nat", "filter", "security"),
    "POSTROUTING": ("mangle", "nat"),
}
# nf_nat manip type per hook: DST at PREROUTING/OUTPUT, SRC at INPUT/POSTROUTING (§1.3).
_NAT_DST_HOOKS = frozenset({"PREROUTING", "OUTPUT"})
# enum nf_ip_hook_priorities (§1.1): the iptables tables' fixed priorities, conntrack's, and nat's. Every nat
# chain of a hook (nft or iptables) runs inside nf_nat's one hook at NAT_DST/NAT_SRC, the chains ordered by
# their own priorities (nf_nat_register_fn inserts them into one list); other chains run at their own.
TABLE_PRIORITY: dict[str, int] = {"raw": -300, "mangle": -150, "filter": 0, "security": 50}
PRI_CONNTRACK, PRI_NAT_DST, PRI_NAT_SRC = -200, -100, 100

# A chain shorter than this is scanned rule by rule; longer ones get a destination index.
INDEX_MIN_RULES = 16
# Bound on the statistic branches :func:`trace_branches` explores (2^6 paths); kube-proxy chains
# meet one statistic rule per endpoint, so a probe rarely meets more than a few.
MAX_BRANCH_TRACES = 64
# The walk of one table follows jumps and gotos at most MAX_JUMP_LEVEL deep (validate.MAX_JUMP_LEVEL, the
# kernel's NFT_JUMP_STACK_SIZE). parse.py refuses a ruleset with a deeper path or a jump loop, as the kernel
# does, so this only guards against a Ruleset built by hand: an error instead of a walk that never ends.

_TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG")

# Verdicts as the kernel's trace prints them.
CONTINUE, ACCEPT, DROP, RETURN, JUMP, GOTO, QUEUE = "CONTINUE", "ACCEPT", "DROP", "RETURN", "JUMP", "GOTO", "QUEUE"


# ------------------------------------------------------------------------------------------ walker state


class _State:
    """The packet as it is being walked (mutable, private); everything the matches read."""

    __slots__ = (
        "bound",
        "branches",
        "choices",
        "ct_attached",
        "ct_in",
        "ctmark",
        "ctstate",
        "decider",
        "dnat",
        "dport",
        "drop_reason",
        "dst",
        "dst_bind",
        "explain",
        "fam_no",
        "family",
        "flags",
        "hook",
        "icmp_code",
        "icmp_type",
        "in_iface",
        "jump_to",
        "loopback",
        "mark",
        "nat_dst_done",
        "nat_src_done",
        "netns",
        "nsinfo",
        "orig",
        "out_iface",
        "pass_no",
        "picked",
        "proto",
        "reply",
        "snat",
        "socket",
        "sport",
        "src",
        "src_bind",
        "steps",
        "tproxy_port",
        "tproxy_transparent",
        "uncertain",
        "v6",
        "zone",
    )

    def __init__(self, packet: Packet, netns: Netns, nsinfo: _NsInfo, choices: Sequence[bool], explain: bool):
        self.family = family = packet.family
        # enum values read as ``_value_``, without the ``value`` property (hot path)
        self.fam_no = family._value_  # the snapshot's
        self.v6 = family is Family.IPV6
        self.proto = packet.proto._value_
        self.src = int(packet.src)
        self.dst = int(packet.dst)
        self.sport = packet.sport
        self.dport = packet.dport
        self.in_iface: str | None = packet.in_iface
        self.out_iface: str | None = packet.out_iface
        self.mark = packet.mark
        self.flags = packet.tcp_flags
        self.icmp_type = packet.icmp_type
        self.icmp_code = packet.icmp_code
        self.socket = packet.socket
        ct = packet.ct
        self.ct_in = ct
        self.ctstate = ct.state._value_
        self.zone = 0
        self.ctmark = ct.mark
        self.dnat = ct.dnat
        self.snat = ct.snat
        self.ct_attached = False  # skb->_nfct != 0 (template or entry)
        self.orig = (self.src, self.dst, self.sport, self.dport)
        # (address, port) the entry's binding writes at a DST-manip / SRC-manip hook (nf_nat_packet)
        self.dst_bind: tuple[int, int] | None
        self.src_bind: tuple[int, int] | None
        self.dst_bind = self.src_bind = None
        if ct.dnat_to is None and ct.snat_to is None and not ct.reply:
            self.nat_dst_done = self.nat_src_done = ct.exists
            self.bound = self.reply = False
        else:
            self.nat_dst_done = self.nat_src_done = True
            self.reply = ct.reply
            self._bind(ct)
        self.loopback = False
        self.hook = ""
        self.netns = netns
        self.nsinfo = nsinfo
        self.pass_no = 0
        self.tproxy_port: int | None = None
        self.tproxy_transparent = False
        self.steps: list[Step] = []
        self.uncertain: list[str] = []
        self.branches: list[Branch] = []
        self.choices = choices  # read only
        self.explain = explain
        self.decider: Step | None = None
        self.jump_to = ""  # the chain a verdict map's element jumps to
        self.picked = CONTINUE  # and its verdict
        self.drop_reason: str | None = None  # a drop no rule decided (the re-routing after nat)

    def _bind(self, ct: Conntrack) -> None:
        def ep(b: tuple[Address, int] | None) -> tuple[int, int] | None:
            return None if b is None else (int(b[0]), b[1])

        if ct.dnat_to is not None:
            self.dnat = True
        if ct.snat_to is not None:
            self.snat = True
        if not ct.reply:
            self.dst_bind, self.src_bind = ep(ct.dnat_to), ep(ct.snat_to)
        else:
            # nf_nat_manip_pkt: the target is the inverse of the other direction's tuple, so a reply
            # gets the original destination back as its source and the original source as its
            # destination; the ORIGINAL tuple (what --ctorig* match) is those, else the reply's own.
            if ct.dnat_to is not None:
                self.src_bind = ep(ct.orig_dst)
            if ct.snat_to is not None:
                self.dst_bind = ep(ct.orig_src)
            osrc = ep(ct.orig_src) if ct.snat_to is not None else (self.dst, self.dport)
            odst = ep(ct.orig_dst) if ct.dnat_to is not None else (self.src, self.sport)
            assert osrc is not None and odst is not None
            self.orig = (osrc[0], odst[0], osrc[1], odst[1])
        self.bound = self.dst_bind is not None or self.src_bind is not None

    def addr(self, value: int) -> Address:
        return _to_addr(self.v6, value)

    def ip(self, value: int) -> str:
        return _ip_str(self.v6, value)

    def primary(self, iface: str | None) -> int | None:
        """The device's primary address of the packet's family (``Netns.primary_address``), None for none."""
        return self.nsinfo.primary.get((iface, self.v6))

    def snapshot(self) -> tuple[object, ...]:
        # Raw ints: converted to addresses only when a renderer prints the PACKET line.
        return (self.in_iface, self.out_iface, self.loopback, self.src, self.dst,
                self.sport, self.dport, self.mark, self.proto, self.fam_no)


@functools.lru_cache(maxsize=4096)
def _to_addr(v6: bool, value: int) -> Address:
    return IPv6Address(value) if v6 else IPv4Address(value)


@functools.lru_cache(maxsize=4096)
def _endpoint(v6: bool, value: int, port: int) -> Endpoint:
    """A trace's endpoint (immutable: equal ones are shared, as :func:`_to_addr`'s addresses are)."""
    return Endpoint(_to_addr(v6, value), port)


@functools.lru_cache(maxsize=4096)
def _ip_str(v6: bool, value: int) -> str:
    return str(_to_addr(v6, value))


# Steps of the hot path are built as plain tuples of Step's 15 fields in order (``Step(...)`` is a Python-level
# ``__new__``; this is the C one): pass_no, hook, table, chain, kind, position, text, matched, verdict, target,
# failed, uncertain, end, packet, base.
_tuple_new = tuple.__new__
if Step._fields != ("pass_no", "hook", "table", "chain", "kind", "position", "text", "matched", "verdict", "target",
                    "failed", "uncertain", "end", "packet", "base"):
    raise RuntimeError("trace.Step's fields changed: update the engine's tuples")
# A Trace is frozen: built as an empty instance given its whole ``__dict__`` in one C call (its ``__init__`` would
# make 19 ``object.__setattr__`` calls); :func:`trace` names every field, in order.
_object_new, _object_setattr = object.__new__, object.__setattr__
_TRACE_FIELDS = ("packet", "steps", "outcome", "src", "dst", "in_iface", "out_iface", "mark", "zone", "ctstate",
                 "looped", "local_port", "transparent_socket", "original_dst", "decided_by", "reason", "uncertain",
                 "branches", "ctmark")
if tuple(f.name for f in fields(Trace)) != _TRACE_FIELDS or hasattr(Trace, "__slots__"):
    raise RuntimeError("trace.Trace's fields changed: update the engine's trace()")


# Enum members bound once: attribute access on an Enum class goes through a descriptor (hot path).
_RULE, _POLICY, _SKIPPED, _TABLE, _NOTE = Kind.RULE, Kind.POLICY, Kind.SKIPPED, Kind.TABLE, Kind.NOTE
_CONNTRACK = Kind.CONNTRACK
_NEW, _LOCAL = CtState.NEW, Origin.LOCAL
_NAT_KINDS = frozenset({"REDIRECT", "DNAT", "SNAT", "MASQUERADE"})
# Packet fields a failed check reports as they are (others need _value_of).
_PLAIN_ATTRS = frozenset({"src", "dst", "in_iface", "out_iface", "proto", "sport", "dport", "mark", "ctmark",
                          "family"})


@dataclass(frozen=True, slots=True)
class _NsInfo:
    """Precomputed facts about a Netns: local addresses as ints, subnet broadcasts, primary addresses, and its
    listeners by (port, protocol) in their order (None: listeners unknown)."""

    local4: frozenset[int]
    local6: frozenset[int]
    bcast4: frozenset[int]
    listen: dict[tuple[int, str], tuple[Listener, ...]] | None
    primary: dict[tuple[str | None, bool], int]  # (device, v6) → Netns.primary_address as an int

    @classmethod
    def of(cls, ns: Netns) -> _NsInfo:
        l4: set[int] = set()
        l6: set[int] = set()
        b4: set[int] = set()
        for dev in ns.interfaces:
            for ifa in dev.addresses:
                if ifa.version == 4:
                    l4.add(int(ifa.ip))
                    if ifa.network.prefixlen < 31:
                        b4.add(int(ifa.network.broadcast_address))
                else:
                    l6.add(int(ifa.ip))
        listen: dict[tuple[int, str], tuple[Listener, ...]] | None = None
        if ns.listeners is not None:
            listen = {}
            for lst in ns.listeners:
                key = (lst.port, lst.proto.value)
                listen[key] = (*listen.get(key, ()), lst)
        primary: dict[tuple[str | None, bool], int] = {
            (dev.name, fam is Family.IPV6): int(addr) for dev in ns.interfaces for fam in Family
            if (addr := ns.primary_address(dev.name, fam)) is not None}
        return cls(frozenset(l4), frozenset(l6), frozenset(b4), listen, primary)

    def is_local(self, family: Family, addr: int) -> bool:
        if family is Family.IPV4:
            return (addr >> 24) == 127 or addr in self.local4
        return addr == 1 or addr in self.local6


_NS_CACHE: dict[int, tuple[Netns, _NsInfo]] = {}


def _nsinfo(ns: Netns) -> _NsInfo:
    hit = _NS_CACHE.get(id(ns))
    if hit is not None and hit[0] is ns:
        return hit[1]
    info = _NsInfo.of(ns)
    if len(_NS_CACHE) > 64:
        _NS_CACHE.clear()
    _NS_CACHE[id(ns)] = (ns, info)
    return info


# ------------------------------------------------------------------------------------------ compiled rules

# A check returns True (holds), False (fails) or None (netsim cannot tell: assumed to hold, reported).


class _Check:
    __slots__ = ("attr", "fn", "label")

    def __init__(self, fn: Callable[..., bool | None], label: str, attr: str):
        self.fn = fn
        self.label = label  # the condition as iptables-save prints it, e.g. "-o lo" or "-m owner --uid-owner 1000"
        self.attr = attr  # which packet field decided it (for "why it failed")


@dataclass(frozen=True, slots=True)
class _Ctx:
    family: Family
    table: str
    chain: str


class _CRule:
    __slots__ = ("_text", "act", "chain", "checks", "const", "dst_key", "has_branch", "kind", "position", "rule",
                 "target", "uncertain_target")

    def __init__(self, rule: Rule | None, position: int, chain: str, checks: tuple[_Check, ...], kind: str,
                 act: _Action, target: str, dst_key: int | None, uncertain_target: str, text: str | None = None):
        self.rule = rule  # None for a rule another backend compiled (its ``text`` given)
        self.position = position
        self.chain = chain
        self._text: str | None = text
        self.checks = checks
        self.kind = kind  # ACCEPT, DNAT, JUMP, … (JUMP/GOTO: ``target`` is the chain)
        self.act = act  # applies the target, returns the kernel's trace verdict
        # the verdict ``act`` always returns, doing nothing else (a plain accept, jump, …): not called (nft's
        # compiler sets it for its rules)
        self.const = _CONST_ACTS.get(act, "")
        self.target = target
        self.dst_key = dst_key
        self.uncertain_target = uncertain_target
        self.has_branch = any(c.attr == "statistic" for c in checks)

    @property
    def text(self) -> str:
        """The rule as ``iptables-save`` prints it (rendered when a trace first shows it: a big ruleset's
        rules are mostly never shown)."""
        text = self._text
        if text is None:
            assert self.rule is not None
            text = self._text = render_rule(self.chain, self.rule)
        return text


class LazyRules(Sequence["_CRule"]):
    """A chain's rules, each compiled by ``compile(k)`` when a trace first reaches rule ``k`` (a 40,000-rule
    dump, or a kube-proxy nftables ruleset of 60,000 rules in 30,000 chains, is mostly rules no packet of a
    trace meets: an indexed chain only ever looks at the rules for the packet's destination). Once every rule
    is compiled, ``owner`` (the chain, when set) gets them as a plain list."""

    __slots__ = ("_compile", "_done", "_left", "owner")

    def __init__(self, count: int, compile: Callable[[int], _CRule]) -> None:
        self._compile = compile
        self._done: list[_CRule | None] = [None] * count
        self._left = count
        self.owner: _CChain | None = None

    def __len__(self) -> int:
        return len(self._done)

    @overload
    def __getitem__(self, i: int) -> _CRule: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[_CRule]: ...

    def __getitem__(self, i: int | slice) -> _CRule | Sequence[_CRule]:
        if isinstance(i, slice):
            return [self[k] for k in range(len(self))[i]]
        done = self._done[i]
        if done is None:
            k = i % len(self._done)
            done = self._done[k] = self._compile(k)
            self._left -= 1
            if not self._left and self.owner is not None:
                self.owner.rules = self._done  # type: ignore[assignment]
        return done


def _compile_at(chain: Chain, ctx: _Ctx, memo: _Memo, k: int) -> _CRule:
    return _compile_rule(chain.rules[k], k + 1, chain.name, ctx, memo)


class _CChain:
    __slots__ = ("every", "exists", "generic", "index", "jump", "name", "policy", "rules")

    def __init__(self, name: str, policy: str | None, rules: Sequence[_CRule], exists: bool,
                 dst_keys: Sequence[int | None] | None = None):
        self.name = name
        self.policy = policy
        self.rules = rules
        self.exists = exists
        self.index: dict[int, list[int]] | None = None
        self.generic: list[int] = []
        self.every = range(len(rules))  # the candidates of a chain without an index (its length never changes)
        # a base chain's one unconditional jump, False when it is not that (None: not known yet; the rule compiles
        # when a trace first walks the chain): see _run_table
        self.jump: _CRule | Literal[False] | None = None
        if len(rules) >= INDEX_MIN_RULES:
            index: dict[int, list[int]] = {}
            keys = dst_keys if dst_keys is not None else [r.dst_key for r in rules]
            for i, key in enumerate(keys):
                if key is None:
                    self.generic.append(i)
                else:
                    index.setdefault(key, []).append(i)
            if len(self.generic) < len(rules):
                self.index = index

    def candidates(self, dst: int) -> Sequence[int]:
        """Rule indexes that can match a packet to ``dst``, in order (all of them without an index)."""
        if self.index is None:
            return self.every
        specific = self.index.get(dst)
        if not specific:
            return self.generic
        if not self.generic:
            return specific
        return sorted(specific + self.generic)  # both short: C sort beats a heapq.merge generator


class HookEntry(NamedTuple):
    """One base chain on a hook: who wrote it and where it runs, its compiled chain, and its table's chains."""

    base: BaseChain
    chain: _CChain
    chains: Mapping[str, _CChain]


def _run_priority(e: HookEntry) -> tuple[int, int]:
    """Where the kernel runs a base chain in its hook: nat chains inside nf_nat's hook (see TABLE_PRIORITY)."""
    b = e.base
    if b.nat:
        return (PRI_NAT_DST if b.hook in _NAT_DST_HOOKS else PRI_NAT_SRC), b.priority
    return b.priority, 0


@dataclass(frozen=True, slots=True)
class CompiledRuleset:
    """A namespace's netfilter state compiled for tracing: chains per table with rule predicates and indexes,
    and per hook the base chains in the order the kernel runs them, whichever backend wrote them.

    Build it once with :func:`compile_ruleset` (iptables) or ``netsim.netfilter.nft.compile_nft`` and
    :func:`combine` them; trace many packets through it."""

    ruleset: Ruleset  # the iptables ruleset (empty when only nftables rules were given); its family is the trace's
    tables: Mapping[str, Mapping[str, _CChain]]
    # "table chain rule N: -m foo" for every construct netsim cannot evaluate (read it as ``unknown``); for
    # iptables rules a view that compiles every rule when first read
    unknowns: Sequence[str]
    # per hook, the base chains that exist, in the order the kernel runs them (ties: the order given)
    hooks: Mapping[str, tuple[HookEntry, ...]]
    # the same base chains in the order they were loaded (registered), which :func:`combine` orders again
    loaded: tuple[HookEntry, ...] = ()

    @property
    def unknown(self) -> tuple[str, ...]:
        """"table chain rule N: -m foo" for every construct netsim cannot evaluate."""
        return tuple(self.unknowns)


class _Unknowns(Sequence[str]):
    """:attr:`CompiledRuleset.unknown` of iptables rules compiled lazily: every rule compiled when first read."""

    def __init__(self, tables: Mapping[str, Mapping[str, _CChain]]):
        self._tables = tables
        self._found: tuple[str, ...] | None = None

    def _all(self) -> tuple[str, ...]:
        if self._found is None:
            out = []
            for table, chains in self._tables.items():
                for chain in chains.values():
                    for cr in chain.rules:
                        out += [f"{table} {chain.name} rule {cr.position}: {chk.label}" for chk in cr.checks
                                if chk.attr == "unknown"]
                        if cr.uncertain_target:
                            out.append(f"{table} {chain.name} rule {cr.position}: -j {cr.target}")
            self._found = tuple(out)
        return self._found

    def __len__(self) -> int:
        return len(self._all())

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...

    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        return self._all()[i]


def order_hooks(entries: Iterable[HookEntry]) -> dict[str, tuple[HookEntry, ...]]:
    """Base chains per hook in the kernel's order: by priority (nat chains at nf_nat's), ``entries`` given in
    the order they were registered (loaded); of equal priorities the one registered last runs first
    (nf_hook_entries_grow inserts a new hook before the first of equal or higher priority; verified: an
    inet nat chain loaded after iptables-nft's nat table, both at -100, runs before it). nf_nat's own hook
    is registered with the hook's first nat chain (nf_nat_register_fn), so that chain's load time places all
    the nat chains among other base chains of nf_nat's priority (a filter chain at -100 loaded before the
    first nat chain runs after them, one loaded after it before them); among themselves the nat chains run by
    their own priorities, ties again last registered first."""
    out: dict[str, list[HookEntry]] = {h: [] for h in HOOK_TABLES}
    for e in entries:
        out[e.base.hook].append(e)
    ordered: dict[str, tuple[HookEntry, ...]] = {}
    for h, es in out.items():
        first_nat = next((i for i, e in enumerate(es) if e.base.nat), 0)

        def key(item: tuple[int, HookEntry], first_nat: int = first_nat) -> tuple[int, int, int, int]:
            i, e = item
            if e.base.nat:
                return _run_priority(e)[0], -first_nat, e.base.priority, -i
            return e.base.priority, -i, 0, 0

        ordered[h] = tuple(e for _, e in sorted(enumerate(es), key=key))
    return ordered


def combine(parts: Sequence[CompiledRuleset]) -> CompiledRuleset:
    """One namespace's state from several compiled rulesets of the same family (e.g. iptables-nft and nft),
    in the order they were loaded (which decides ties of priority, see :func:`order_hooks`)."""
    if len(parts) == 1:
        return parts[0]
    family = parts[0].ruleset.family
    if any(p.ruleset.family is not family for p in parts):
        raise RulesetError("rulesets of different IP families cannot make one namespace's state")
    tables: dict[str, Mapping[str, _CChain]] = {}
    for p in parts:
        tables.update(p.tables)
    ruleset = next((p.ruleset for p in parts if p.ruleset.tables), parts[0].ruleset)
    entries = [e for p in parts for e in p.loaded]
    return CompiledRuleset(ruleset, tables, tuple(u for p in parts for u in p.unknown), order_hooks(entries),
                           tuple(entries))



def compile_ruleset(ruleset: Ruleset, base_chains: Iterable[tuple[str, str]] | None = None, *,
                    backend: str = "iptables-nft") -> CompiledRuleset:
    """Compile ``ruleset`` for :func:`trace`.

    ``base_chains`` lists the (table, chain) built-in chains that exist in the kernel; default: every
    built-in chain present in the ruleset (what restoring an ``iptables-save`` dump creates). With
    iptables-nft a built-in chain nobody declared or appended to does not exist and prints nothing
    in a trace (spec/netfilter.md §4). ``backend="iptables-legacy"``: the rules of an
    ``iptables-legacy-save``, legacy x_tables whose tables hook every built-in chain at the table's fixed
    priority (raw -300, mangle -150, nat -100/100, filter 0, security 50) and never appear in ``nft monitor
    trace``; their tables are named ``legacy TABLE`` in :attr:`CompiledRuleset.tables` (beside
    iptables-nft's of the same name). Raises RulesetError for a jump to a chain that does not exist."""
    with gc_paused():
        return _compile_ruleset(ruleset, base_chains, backend)


def _compile_ruleset(ruleset: Ruleset, base_chains: Iterable[tuple[str, str]] | None,
                     backend: str = "iptables-nft") -> CompiledRuleset:
    from netsim.netfilter.targets import is_extension_target

    exists = None if base_chains is None else set(base_chains)
    tables: dict[str, dict[str, _CChain]] = {}
    memo = _Memo()
    for table in ruleset.tables:
        chains: dict[str, _CChain] = {}
        names = {c.name for c in table.chains}
        for chain in table.chains:
            for pos, rule in enumerate(chain.rules, 1):  # what compiling the jump would find, checked now
                t = rule.target
                if t is not None and t.name not in names and not is_extension_target(t.name):
                    raise RulesetError(f"{table.name} {chain.name} rule {pos}: no chain `{t.name}'")
            builtin = chain.name in BUILTIN_CHAINS.get(table.name, ())
            present = builtin and (exists is None or (table.name, chain.name) in exists or bool(chain.rules)
                                   or backend == "iptables-legacy")
            ctx = _Ctx(ruleset.family, table.name, chain.name)
            keys = [_dst_key(rule) for rule in chain.rules] if len(chain.rules) >= INDEX_MIN_RULES else None
            if not chain.rules:  # a plain empty list: the walk tests an empty base chain on every packet
                chains[chain.name] = _CChain(chain.name, chain.policy if builtin else None, [], present)
                continue
            rules = LazyRules(len(chain.rules), functools.partial(_compile_at, chain, ctx, memo))
            chains[chain.name] = rules.owner = _CChain(chain.name, chain.policy if builtin else None, rules, present,
                                                       keys)
        tables[table.name] = chains
    fam = "ip" if ruleset.family is Family.IPV4 else "ip6"
    entries = [
        HookEntry(BaseChain(backend=backend, family=fam, table=t, chain=hook, hook=hook,
                            priority=(PRI_NAT_DST if hook in _NAT_DST_HOOKS else PRI_NAT_SRC) if t == "nat"
                            else TABLE_PRIORITY[t], nat=t == "nat"), tables[t][hook], tables[t])
        for hook, order in HOOK_TABLES.items() for t in order
        if t in tables and hook in tables[t] and tables[t][hook].exists
    ]
    named: dict[str, dict[str, _CChain]] = tables if backend != "iptables-legacy" else \
        {f"legacy {t}": chains for t, chains in tables.items()}
    return CompiledRuleset(ruleset, named, _Unknowns(named), order_hooks(entries), tuple(entries))


# ------------------------------------------------------------------------------------------ header checks


def _iface_matches(pattern: str, name: str | None) -> bool:
    """``ifname_compare``: a trailing ``+`` matches any name with that prefix; no device is ""."""
    name = name or ""
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


def _neg(label: str, neg: bool) -> str:
    return f"! {label}" if neg else label


def _header_check(attr: str, value: object, neg: bool) -> _Check:
    """The check of one header field (``attr`` as in :class:`Rule`: src, dst, in_iface, out_iface, proto,
    fragment) for ``value`` and its ``!``."""
    if attr in ("src", "dst"):
        assert isinstance(value, IPv4Network | IPv6Network)
        v, m = int(value.network_address), int(value.netmask)
        label = _neg(f"{'-s' if attr == 'src' else '-d'} {format_network(value)}", neg)
        if attr == "src":
            return _Check(lambda st: ((st.src & m) == v) != neg, label, "src")
        return _Check(lambda st: ((st.dst & m) == v) != neg, label, "dst")
    if attr in ("in_iface", "out_iface"):
        pat = str(value)
        if attr == "in_iface":
            return _Check(lambda st: _iface_matches(pat, st.in_iface) != neg, _neg(f"-i {pat}", neg), "in_iface")
        return _Check(lambda st: _iface_matches(pat, st.out_iface) != neg, _neg(f"-o {pat}", neg), "out_iface")
    if attr == "proto":
        proto = str(value)
        names = frozenset({proto, {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp",
                                   "132": "sctp"}.get(proto, proto)})
        return _Check(lambda st: (st.proto in names) != neg, _neg(f"-p {proto}", neg), "proto")
    # -f: netsim traces whole (first) packets: never a non-first fragment.
    return _Check(lambda st: not value, "-f" if value else "! -f", "fragment")


def _header_checks(rule: Rule, memo: dict[tuple[str, object, bool], _Check]) -> list[_Check]:
    """The checks of the rule's fixed header, in iptables' order; equal fields share one check (``memo``)."""
    out: list[_Check] = []
    for attr, value, neg in (("src", rule.src, rule.src_neg), ("dst", rule.dst, rule.dst_neg),
                             ("in_iface", rule.in_iface, rule.in_neg), ("out_iface", rule.out_iface, rule.out_neg),
                             ("proto", rule.proto, rule.proto_neg), ("fragment", rule.fragment, False)):
        if value is None:
            continue
        key = (attr, value, neg)
        chk = memo.get(key)
        if chk is None:
            chk = memo[key] = _header_check(attr, value, neg)
        out.append(chk)
    return out


# ------------------------------------------------------------------------------------------ match registry


def _range_check(attr: str, text: str, neg: bool, label: str) -> _Check:
    lo, hi = port_range(text, ordered=False)
    if attr == "sport":
        return _Check(lambda st: (lo <= st.sport <= hi) != neg, label, "sport")
    return _Check(lambda st: (lo <= st.dport <= hi) != neg, label, "dport")


def _m_ports(match: Match, ctx: _Ctx) -> list[_Check]:
    out: list[_Check] = []
    for opt in match.options:
        label = " ".join(match_tokens(Match(match.module, (opt,))))
        if opt.name in ("--sport", "--dport"):
            out.append(_range_check(opt.name[2:], opt.args[0], opt.negated, label))
        elif opt.name == "--tcp-flags":
            mask = frozenset(opt.args[0].split(",")) - {"NONE"}
            comp = frozenset(opt.args[1].split(",")) - {"NONE"}
            neg = opt.negated
            out.append(_Check(lambda st, m=mask, c=comp, n=neg: ((st.flags & m) == c) != n, label, "flags"))
        else:
            out.append(_unknown_check(label))
    return out


def _m_multiport(match: Match, ctx: _Ctx) -> list[_Check]:
    out: list[_Check] = []
    for opt in match.options:
        ranges = tuple(port_range(p) for p in opt.args[0].split(","))
        label = " ".join(match_tokens(Match(match.module, (opt,))))
        neg = opt.negated
        if opt.name == "--dports":
            out.append(_Check(lambda st, r=ranges, n=neg: any(a <= st.dport <= b for a, b in r) != n, label, "dport"))
        elif opt.name == "--sports":
            out.append(_Check(lambda st, r=ranges, n=neg: any(a <= st.sport <= b for a, b in r) != n, label, "sport"))
        else:
            out.append(_Check(lambda st, r=ranges, n=neg: any(a <= st.sport <= b or a <= st.dport <= b
                                                                 for a, b in r) != n, label, "ports"))
    return out


_OWNER_UID, _OWNER_GID, _OWNER_SOCKET, _OWNER_SUPPL = 1, 2, 4, 8


def _m_owner(match: Match, ctx: _Ctx) -> list[_Check]:
    """xt_owner's owner_mt as one predicate over the whole match (its bits interact, §1.6)."""
    bits = invert = 0
    uid = gid = (0, 0)
    for opt in match.options:
        bit = {"--uid-owner": _OWNER_UID, "--gid-owner": _OWNER_GID, "--socket-exists": _OWNER_SOCKET,
               "--suppl-groups": _OWNER_SUPPL}[opt.name]
        bits |= bit
        if opt.negated:
            invert |= bit
        if opt.name in ("--uid-owner", "--gid-owner"):
            lo, _, hi = opt.args[0].partition("-")
            rng = (int(lo), int(hi or lo))
            if opt.name == "--uid-owner":
                uid = rng
            else:
                gid = rng

    def owner(st: _State) -> bool:
        sk = st.socket
        if sk is None:
            return (bits ^ invert) == 0
        if bits & invert & _OWNER_SOCKET:
            return False
        if sk.kernel:
            return ((bits ^ invert) & (_OWNER_UID | _OWNER_GID)) == 0
        # "if ((fsuid in range) ^ !(invert & XT_OWNER_UID)) return false;"
        if bits & _OWNER_UID and (uid[0] <= sk.uid <= uid[1]) == bool(invert & _OWNER_UID):
            return False
        if bits & _OWNER_GID:
            hit = gid[0] <= sk.gid <= gid[1]
            if not hit and bits & _OWNER_SUPPL:
                hit = any(gid[0] <= g <= gid[1] for g in sk.groups)
            if hit == bool(invert & _OWNER_GID):
                return False
        return True

    return [_Check(owner, " ".join(match_tokens(match)), "owner")]


def _mark_check(match: Match, attr: str) -> list[_Check]:
    out: list[_Check] = []
    for opt in match.options:
        value, mask = value_mask(opt.args[0])
        label = " ".join(match_tokens(Match(match.module, (opt,))))
        neg = opt.negated
        if attr == "mark":
            out.append(_Check(lambda st, v=value, m=mask, n=neg: ((st.mark & m) == v) != n, label, "mark"))
        else:
            out.append(_Check(lambda st, v=value, m=mask, n=neg: ((st.ctmark & m) == v) != n, label, "ctmark"))
    return out


def _m_mark(match: Match, ctx: _Ctx) -> list[_Check]:
    return _mark_check(match, "mark")


def _m_connmark(match: Match, ctx: _Ctx) -> list[_Check]:
    return _mark_check(match, "ctmark")


def _ct_states(st: _State, virtual: bool) -> frozenset[str]:
    states = {st.ctstate}
    if virtual and st.ctstate not in ("INVALID", "UNTRACKED"):
        if st.dnat:
            states.add("DNAT")
        if st.snat:
            states.add("SNAT")
    return frozenset(states)


def _m_conntrack(match: Match, ctx: _Ctx) -> list[_Check]:
    out: list[_Check] = []
    virtual = match.module == "conntrack"
    for opt in match.options:
        label = " ".join(match_tokens(Match(match.module, (opt,))))
        neg = opt.negated
        if opt.name in ("--ctstate", "--state"):
            wanted = frozenset(opt.args[0].split(","))
            out.append(_Check(lambda st, w=wanted, n=neg, v=virtual: bool(w & _ct_states(st, v)) != n,
                              label, "ctstate"))
        elif opt.name == "--ctproto":
            proto = opt.args[0].lower()
            out.append(_Check(lambda st, p=proto, n=neg: (st.proto == p) != n, label, "proto"))
        elif opt.name in ("--ctorigsrc", "--ctorigdst"):
            net = ip_network(opt.args[0], strict=False)
            value, mask, idx = int(net.network_address), int(net.netmask), 0 if opt.name == "--ctorigsrc" else 1
            out.append(_Check(lambda st, v=value, m=mask, i=idx, n=neg: ((st.orig[i] & m) == v) != n, label,
                              "orig"))
        elif opt.name in ("--ctorigsrcport", "--ctorigdstport"):
            lo, hi = port_range(opt.args[0], ordered=False)
            idx = 2 if opt.name == "--ctorigsrcport" else 3
            out.append(_Check(lambda st, a=lo, b=hi, i=idx, n=neg: (a <= st.orig[i] <= b) != n, label, "orig"))
        elif opt.name == "--ctdir":
            want_orig = opt.args[0].upper() == "ORIGINAL"
            out.append(_Check(lambda st, w=want_orig: w != st.reply, label, "ctdir"))
        else:
            out.append(_unknown_check(label))
    return out


def _addr_type(st: _State, addr: int) -> str:
    """``inet_dev_addr_type`` over the namespace's local table (§1.10)."""
    if st.family is Family.IPV4:
        if addr == 0 or addr == 0xFFFFFFFF:
            return "BROADCAST"
        if (addr >> 28) == 0xE:
            return "MULTICAST"
        if st.nsinfo.is_local(st.family, addr):
            return "LOCAL"
        if addr in st.nsinfo.bcast4:
            return "BROADCAST"
        return "UNICAST"
    if (addr >> 120) == 0xFF:
        return "MULTICAST"
    if st.nsinfo.is_local(st.family, addr):
        return "LOCAL"
    return "UNICAST" if addr else "UNSPEC"


def _m_addrtype(match: Match, ctx: _Ctx) -> list[_Check]:
    out: list[_Check] = []
    for opt in match.options:
        label = " ".join(match_tokens(Match(match.module, (opt,))))
        neg = opt.negated
        if opt.name == "--src-type":
            types = frozenset(opt.args[0].split(","))
            out.append(_Check(lambda st, t=types, n=neg: (_addr_type(st, st.src) in t) != n, label, "src_type"))
        elif opt.name == "--dst-type":
            types = frozenset(opt.args[0].split(","))
            out.append(_Check(lambda st, t=types, n=neg: (_addr_type(st, st.dst) in t) != n, label, "dst_type"))
        # --limit-iface-in/out restrict the lookup to the packet's device; with one device per
        # address (a pod) the answer is the same.
    return out


def _m_comment(match: Match, ctx: _Ctx) -> list[_Check]:
    return []


def _m_icmp(match: Match, ctx: _Ctx) -> list[_Check]:
    out: list[_Check] = []
    table = ICMP_TYPES if match.module == "icmp" else ICMP6_TYPES
    for opt in match.options:
        label = " ".join(match_tokens(Match(match.module, (opt,))))
        kind, lo, hi = icmp_type(opt.args[0], table)
        neg = opt.negated
        if kind == 255 and match.module == "icmp":
            out.append(_Check(lambda st, n=neg: not n, label, "icmp"))
        else:
            out.append(_Check(lambda st, k=kind, a=lo, b=hi, n=neg:
                              (st.icmp_type == k and a <= st.icmp_code <= b) != n, label, "icmp"))
    return out


def _listener_for(st: _State, addr: int, port: int, proto: str) -> Listener | bool | None:
    """The listening socket for (addr, port); None if none; True if netsim does not know."""
    listen = st.nsinfo.listen
    if listen is None:
        return True
    for lst in listen.get((port, proto), ()):
        if lst.addr is None or int(lst.addr) == addr:
            return lst
    if st.netns.other_ports_listen:
        return _any_listener(port, proto)
    return None


@functools.lru_cache(maxsize=1024)
def _any_listener(port: int, proto: str) -> Listener:
    """The ordinary listener ``Netns.other_ports_listen`` assumes on a port (immutable: one per port)."""
    return Listener(port=port, proto=Proto(proto))


def _m_socket(match: Match, ctx: _Ctx) -> list[_Check]:
    """xt_socket: a socket for the packet's tuple (an assigned TPROXY socket, else a listener on
    dst:dport, or for a later packet the connection's own socket); ``--transparent`` needs
    IP_TRANSPARENT. A listener bound to the wildcard address is ignored unless ``--nowildcard``
    (socket_match: ``wildcard || !transparent`` → no socket); the accepted socket of an existing
    connection is bound to its address, so it counts."""
    transparent = match.option("--transparent") is not None
    nowildcard = match.option("--nowildcard") is not None

    def socket(st: _State) -> bool | None:
        if st.tproxy_port is not None:
            return st.tproxy_transparent or not transparent
        found = _listener_for(st, st.dst, st.dport, st.proto)
        if found is True:
            return None
        if found is None or found is False:
            return False
        if found.addr is None and not nowildcard and st.ctstate == "NEW":
            return False
        return found.transparent or not transparent

    return [_Check(socket, " ".join(match_tokens(match)), "socket")]


def _m_statistic(match: Match, ctx: _Ctx) -> list[_Check]:
    label = " ".join(match_tokens(match))

    def draw(st: _State) -> bool:
        # A random draw is a branch, not a guess: take the caller's choice, else assume it matched
        # and record it so trace_branches can explore the other way.
        i = len(st.branches)
        taken = st.choices[i] if i < len(st.choices) else True
        st.branches.append(Branch("", "", 0, label, taken))
        return taken

    return [_Check(draw, label, "statistic")]


def _unknown_check(label: str) -> _Check:
    return _Check(lambda st: None, label, "unknown")


def _m_unknown(match: Match, ctx: _Ctx) -> list[_Check]:
    return [_unknown_check(" ".join(match_tokens(match)))]


MatchEval = Callable[[Match, _Ctx], list[_Check]]
# Match module → how it compiles to predicates (STYLE §3: a table, name → evaluate).
MATCHES: dict[str, MatchEval] = {
    "tcp": _m_ports,
    "udp": _m_ports,
    "multiport": _m_multiport,
    "owner": _m_owner,
    "mark": _m_mark,
    "connmark": _m_connmark,
    "conntrack": _m_conntrack,
    "state": _m_conntrack,
    "addrtype": _m_addrtype,
    "comment": _m_comment,
    "icmp": _m_icmp,
    "icmp6": _m_icmp,
    "socket": _m_socket,
    "statistic": _m_statistic,
}


# ------------------------------------------------------------------------------------------ target registry

# A compiled target: applies itself to the walker state and returns the kernel's trace verdict.
_Action = Callable[[_State], str]
_Ports = tuple[int, int] | None  # a NAT target's port range (None: the port is kept)


_CONST_ACTS: dict[_Action, str] = {}  # the actions of plain verdicts, and the verdict each returns


def _verdict(verdict: str) -> _Action:
    act: _Action = lambda st: verdict  # noqa: E731
    _CONST_ACTS[act] = verdict
    return act


_CONTINUE_ACT, _ACCEPT_ACT, _DROP_ACT = _verdict(CONTINUE), _verdict(ACCEPT), _verdict(DROP)
_RETURN_ACT, _QUEUE_ACT = _verdict(RETURN), _verdict(QUEUE)
_JUMP_ACT, _GOTO_ACT = _verdict(JUMP), _verdict(GOTO)


def _split_hostport(text: str, family: Family) -> tuple[int | None, _Ports]:
    """``10.0.0.1``, ``10.0.0.1:80``, ``10.0.0.1-10.0.0.9:80-90``, ``[::1]:80``, ``:80`` → first address
    and port range (nf_nat picks the first address and keeps a port already in range)."""
    addr_part, port_part = text, ""
    if text.startswith("["):
        addr_part, _, rest = text[1:].partition("]")
        port_part = rest[1:] if rest.startswith(":") else ""
    elif family is Family.IPV4 and ":" in text:
        addr_part, _, port_part = text.partition(":")
    addr_part = addr_part.split("-")[0]
    addr = int(ip_address(addr_part)) if addr_part else None
    return addr, port_range(port_part, "-") if port_part else None


def _ports_arg(target: Target) -> _Ports:
    opt = target.option("--to-ports")
    return None if opt is None else port_range(opt.args[0], "-")


def _in_range(port: int, ports: _Ports) -> int:
    """nf_nat keeps a port already in the target's range, else takes the range's first."""
    return port if ports is None or ports[0] <= port <= ports[1] else ports[0]


# The two manips every NAT target ends in (nf_nat_setup_info with a range): DNAT and REDIRECT rewrite
# the destination, SNAT and MASQUERADE the source (§1.3, §1.4). They end the table (ACCEPT).
def _manip_dst(st: _State, addr: int | None, ports: _Ports) -> str:
    if addr is not None:
        st.dst = addr
    st.dport = _in_range(st.dport, ports)
    st.dnat = True
    return ACCEPT


def _manip_src(st: _State, addr: int | None, ports: _Ports) -> str:
    if addr is not None:
        st.src = addr
    st.sport = _in_range(st.sport, ports)
    st.snat = True
    return ACCEPT


def _redirect(ports: _Ports) -> _Action:
    """nf_nat_redirect_ipv4/6 (§1.4): OUTPUT → loopback, PREROUTING → primary address of the
    incoming device (none → DROP); ports from --to-ports, else unchanged."""

    def redirect(st: _State) -> str:
        if st.hook == "OUTPUT":
            return _manip_dst(st, 0x7F000001 if st.family is Family.IPV4 else 1, ports)
        primary = st.primary(st.in_iface)
        return DROP if primary is None else _manip_dst(st, primary, ports)

    return redirect


def _masquerade(ports: _Ports) -> _Action:
    """The outgoing device's primary address (none → DROP)."""

    def masquerade(st: _State) -> str:
        primary = st.primary(st.out_iface)
        return DROP if primary is None else _manip_src(st, primary, ports)

    return masquerade


def _tproxy(on_port: int, on_ip: int, value: int, mask: int) -> _Action:
    """tproxy_tg4/6 (§1.7): a transparent listener on (--on-ip or the incoming device's primary
    address or the destination, --on-port or dport) → mark, assign the socket, ACCEPT; else DROP."""

    def tproxy(st: _State) -> str:
        port = on_port or st.dport
        laddr = on_ip or st.primary(st.in_iface) or st.dst
        found = _listener_for(st, laddr, port, st.proto)
        if found is True:
            st.uncertain.append(f"TPROXY to port {port}: listeners unknown, assumed a transparent one exists")
            transparent = True
        else:
            transparent = isinstance(found, Listener) and found.transparent
        if not transparent:
            return DROP
        st.mark = (st.mark & ~mask & 0xFFFFFFFF) ^ value
        st.tproxy_port = port
        st.tproxy_transparent = True
        return ACCEPT

    return tproxy


def _mark(value: int, mask: int) -> _Action:
    def mark(st: _State) -> str:
        st.mark = (st.mark & ~mask & 0xFFFFFFFF) ^ value
        return CONTINUE

    return mark


def _connmark(op: str, a: int, b: int) -> _Action:
    """``--save-mark``/``--restore-mark`` (a = nfmask, b = ctmask) or ``--set-xmark`` (a = value,
    b = mask); nothing without a conntrack entry."""

    def connmark(st: _State) -> str:
        if st.ctstate in ("UNTRACKED", "INVALID"):
            return CONTINUE
        if op == "--save-mark":
            st.ctmark = (st.ctmark & ~b & 0xFFFFFFFF) ^ (st.mark & a)
        elif op == "--restore-mark":
            st.mark = (st.mark & ~a & 0xFFFFFFFF) ^ (st.ctmark & b)
        else:
            st.ctmark = (st.ctmark & ~b & 0xFFFFFFFF) ^ a
        return CONTINUE

    return connmark


def _ct(notrack: bool, zone: int) -> _Action:
    def ct(st: _State) -> str:
        # xt_ct_target: "Previously seen (loopback)? Ignore." — the first CT a packet meets wins (§1.9).
        if not st.ct_attached:
            st.ct_attached = True
            if notrack:
                st.ctstate = "UNTRACKED"
            else:
                st.zone = zone
        return CONTINUE

    return ct


def _compile_target(target: Target | None, ctx: _Ctx) -> tuple[str, _Action, str, str]:
    """(kind, action, jump target, why uncertain)."""
    if target is None:
        return "NONE", _CONTINUE_ACT, "", ""
    name = target.name
    if name in ("ACCEPT", "DROP", "RETURN"):
        return name, {"ACCEPT": _ACCEPT_ACT, "DROP": _DROP_ACT, "RETURN": _RETURN_ACT}[name], "", ""
    if name == "QUEUE" or name == "NFQUEUE":
        return QUEUE, _QUEUE_ACT, "", f"-j {name}: the packet goes to a userspace program netsim cannot see"
    if name == "REJECT":
        return "REJECT", _DROP_ACT, "", ""  # nft traces REJECT by its verdict, NF_DROP (spec §4: verified)
    if name == "REDIRECT":
        return name, _redirect(_ports_arg(target)), "", ""
    if name == "MASQUERADE":
        return name, _masquerade(_ports_arg(target)), "", ""
    if name in ("DNAT", "SNAT"):
        opt = target.option("--to-destination" if name == "DNAT" else "--to-source")
        if opt is None:
            return "UNKNOWN", _CONTINUE_ACT, name, f"-j {name} without an address"
        addr, ports = _split_hostport(opt.args[0], ctx.family)
        manip = _manip_dst if name == "DNAT" else _manip_src
        return name, lambda st: manip(st, addr, ports), "", ""
    if name == "TPROXY":
        on_port = int(port_opt.args[0]) if (port_opt := target.option("--on-port")) else 0
        on_ip = int(ip_address(ip_opt.args[0])) if (ip_opt := target.option("--on-ip")) else 0
        mark_opt = target.option("--tproxy-mark")
        value, mask = value_mask(mark_opt.args[0]) if mark_opt else (0, 0)
        return name, _tproxy(on_port, on_ip, value, mask), "", ""
    if name == "MARK":
        return name, _mark(*value_mask(target.options[0].args[0])), "", ""
    if name == "CONNMARK":
        first = target.options[0]
        if first.name in ("--save-mark", "--restore-mark"):
            nfmask = int(target.options[1].args[0], 16)
            ctmask = int(target.options[2].args[0], 16)
            return name, _connmark(first.name, nfmask, ctmask), "", ""
        return name, _connmark("--set-xmark", *value_mask(first.args[0])), "", ""
    if name in ("CT", "NOTRACK"):
        notrack = name == "NOTRACK" or target.option("--notrack") is not None
        zone_opt = target.option("--zone") or target.option("--zone-orig")
        return "CT", _ct(notrack, int(zone_opt.args[0], 0) if zone_opt else 0), "", ""
    if name in ("LOG", "NFLOG", "TRACE"):
        return "LOG", _CONTINUE_ACT, "", ""
    from netsim.netfilter.targets import is_extension_target

    if not is_extension_target(name):
        return (GOTO, _GOTO_ACT, name, "") if target.goto else (JUMP, _JUMP_ACT, name, "")
    # an unknown target: assumed non-terminating, reported as uncertain
    return "UNKNOWN", _CONTINUE_ACT, name, f"-j {name}: a target netsim does not model (assumed to continue)"


class _Memo:
    """What one ruleset's equal header fields, matches and targets compiled to (see :func:`_compile_rule`)."""

    __slots__ = ("header", "matches", "targets")

    def __init__(self) -> None:
        self.header: dict[tuple[str, object, bool], _Check] = {}
        self.matches: dict[Match, tuple[_Check, ...]] = {}
        self.targets: dict[Target | None, tuple[str, _Action, str, str]] = {}


def _compile_rule(rule: Rule, position: int, chain: str, ctx: _Ctx, memo: _Memo) -> _CRule:
    """``memo`` shares what equal header fields, matches and targets compile to between the rules of one
    ruleset (big ones repeat them by the thousand); checks and actions depend only on them and the family."""
    checks = _header_checks(rule, memo.header)
    for match in rule.matches:
        mchecks = memo.matches.get(match)
        if mchecks is None:
            mchecks = memo.matches[match] = tuple(MATCHES.get(match.module, _m_unknown)(match, ctx))
        checks.extend(mchecks)
    compiled = memo.targets.get(rule.target)
    if compiled is None:
        compiled = memo.targets[rule.target] = _compile_target(rule.target, ctx)
    kind, act, target, uncertain = compiled
    if kind == "UNKNOWN" and not target and rule.target is not None:
        target = rule.target.name
    return _CRule(rule, position, chain, tuple(checks), kind, act, target, _dst_key(rule), uncertain)


def _dst_key(rule: Rule) -> int | None:
    """The one destination the rule can match (the chain's index key), or None."""
    dst = rule.dst
    if dst is not None and not rule.dst_neg and dst.prefixlen == dst.max_prefixlen:
        return int(dst.network_address)
    return None


# ------------------------------------------------------------------------------------------ traversal


def _run_table(st: _State, info: BaseChain, base: _CChain, chains: Mapping[str, _CChain]) -> str:
    """Walk the base chain ``base`` (``info`` says whose and where); return ACCEPT, DROP or QUEUE."""
    table, hook = info.table, info.hook
    steps = st.steps
    pass_no = st.pass_no
    # The kernel's PACKET line shows the packet as of the traversal's first traced event: after a first rule's
    # MARK/CONNMARK/TPROXY mark, before any NAT rewrite (done after the chain returns). st.snapshot(), inlined.
    snap = (st.in_iface, st.out_iface, st.loopback, st.src, st.dst, st.sport, st.dport, st.mark, st.proto, st.fam_no)
    explain = st.explain
    table_idx = len(steps)
    entry_mark = st.mark
    steps.append(_tuple_new(Step, (pass_no, hook, table, base.name, _TABLE, 0, "", False, "", "", None, "", 0,
                                   snap, info)))
    stack: list[tuple[_CChain, int, int]] = []
    ci = 0
    last = -1
    failed: _Check | None
    jump = base.jump
    if jump is None:
        one = base.rules[0] if len(base.rules) == 1 else None
        jump = base.jump = one if one is not None and one.const == JUMP and not one.checks \
            and not one.uncertain_target and one.target else False
    if jump:
        # A base chain that is one unconditional jump (`-A PREROUTING -j MY_PRERT`: every table of an ambient or
        # sidecar pod's): the loop below would match it, record it and jump; done here without the loop's
        # bookkeeping. The jump changes no mark (the PACKET line stays), and returning resumes after it.
        steps.append(_tuple_new(Step, (pass_no, hook, table, base.name, _RULE, jump.position,
                                       jump._text or jump.text, True, JUMP, jump.target, None, "", 0, (), info)))
        first = False
        stack.append((base, 1, 0))
        level = 1  # jumps and gotos between the base chain and the current chain
        chain = chains[jump.target]
    else:
        first = True
        level = 0
        chain = base
    cands = chain.every if chain.index is None else chain.candidates(st.dst)
    while True:
        rules = chain.rules
        name = chain.name
        n = len(cands)
        jumped = returned = False
        while ci < n:
            ri = cands[ci]
            ci += 1
            r = rules[ri]
            if ri > last + 1 and explain:
                steps.append(Step(pass_no, hook, table, name, _SKIPPED, last + 2,
                                  "", failed=("-d", "dst", st.dst), end=ri, base=info))
            last = ri
            unc = ""
            if r.has_branch:
                failed, unc = _branch_checks(st, r, table, name)
            else:
                for failed in r.checks:  # the first that fails (None: every one held)
                    res = failed.fn(st)
                    if not res:
                        if res is None:
                            unc = f"{failed.label}: netsim cannot evaluate this match (assumed it matched)"
                            continue
                        break
                else:
                    failed = None
            if failed is not None:
                if explain:
                    attr = failed.attr
                    value = getattr(st, attr) if attr in _PLAIN_ATTRS else _value_of(st, attr)
                    steps.append(_tuple_new(Step, (pass_no, hook, table, name, _RULE, r.position,
                                                   r._text or r.text, False, "", "", (failed.label, attr, value), unc,
                                                   0, (), info)))
                if unc:
                    st.uncertain.append(f"{table} {name} rule {r.position}: {unc}")
                continue
            if r.uncertain_target:
                unc = unc or r.uncertain_target
            if unc:
                st.uncertain.append(f"{table} {name} rule {r.position}: {unc}")
            verdict = r.const or r.act(st)
            if first:
                first = False
                if st.mark != entry_mark and r.kind not in _NAT_KINDS:
                    steps[table_idx] = steps[table_idx]._replace(packet=st.snapshot())
            target = r.target
            if verdict == CONTINUE:
                steps.append(_tuple_new(Step, (pass_no, hook, table, name, _RULE, r.position, r._text or r.text,
                                               True, verdict, target, None, unc, 0, (), info)))
                continue
            if verdict in (JUMP, GOTO):
                if not target:
                    target = st.jump_to  # a verdict map's element chose the chain
                steps.append(_tuple_new(Step, (pass_no, hook, table, name, _RULE, r.position, r._text or r.text,
                                               True, verdict, target, None, unc, 0, (), info)))
                if verdict == JUMP:
                    stack.append((chain, ri + 1, level))
                level += 1
                if level >= MAX_JUMP_LEVEL:
                    raise RulesetError(f"{table} {name} rule {r.position}: chain {target} entered at jump "
                                       f"level {level}; the kernel refuses such a ruleset at load (a jump loop or "
                                       f"chains nested too deep), so this one was not loaded through the parser")
                chain = chains[target]
                cands = chain.every if chain.index is None else chain.candidates(st.dst)
                ci = 0
                last = -1
                jumped = True
                break
            step = _tuple_new(Step, (pass_no, hook, table, name, _RULE, r.position, r._text or r.text, True,
                                     verdict, target, None, unc, 0, (), info))
            steps.append(step)
            if verdict == RETURN:
                returned = True
                break
            st.decider = step
            return verdict  # ACCEPT, DROP, QUEUE end this table at this hook
        if jumped:
            continue
        if not returned and explain and last + 1 < len(rules):
            steps.append(Step(pass_no, hook, table, name, _SKIPPED, last + 2, "",
                              failed=("-d", "dst", st.dst), end=len(rules), base=info))
        # RETURN or falling off pops the jump stack; a chain entered by -g pushed nothing, so this resumes in
        # the chain that called the goto-ing chain (§1.8).
        while stack:
            chain, resume, level = stack.pop()
            if chain.index is not None:
                cands = chain.candidates(st.dst)
                ci = bisect.bisect_left(cands, resume)
                break
            if resume < len(chain.every):
                cands, ci = chain.every, resume  # every rule a candidate: rule ``resume`` is at ``resume``
                break
            # the jump was the chain's last rule (a base chain of one jump): it falls off this one too
        else:
            break
        last = resume - 1
    # the packet fell off (or RETURNed from) the base chain: its policy decides
    policy = base.policy or ACCEPT
    snap = (st.in_iface, st.out_iface, st.loopback, st.src, st.dst, st.sport, st.dport, st.mark, st.proto,
            st.fam_no)  # st.snapshot(), inlined (hot path)
    step = _tuple_new(Step, (pass_no, hook, table, base.name, _POLICY, 0, policy, True, policy, "", None, "", 0, snap,
                             info))
    steps.append(step)
    if policy != ACCEPT:
        st.decider = step
    return policy


def _branch_checks(st: _State, r: _CRule, table: str, chain: str) -> tuple[_Check | None, str]:
    """The checks of a rule with a random draw (``-m statistic``, nft's ``numgen``): the first that fails (or
    None), and what the trace assumed; the draws made are recorded as the trace's branches."""
    unc = ""
    failed = None
    mark = len(st.branches)
    for chk in r.checks:
        res = chk.fn(st)
        if not res:
            if res is None:
                unc = f"{chk.label}: netsim cannot evaluate this match (assumed it matched)"
                continue
            failed = chk
            break
    if len(st.branches) > mark:
        b = st.branches[-1]
        for j in range(mark, len(st.branches)):  # nft's numgen draws one per value but the last
            st.branches[j] = Branch(table, chain, r.position, r.text, st.branches[j].taken)
        unc = unc or (b.text if b.text.startswith("numgen ") else
                      f"{b.text}: a random draw; this trace assumes it {'matched' if b.taken else 'did not'}")
    return failed, unc


def _value_of(st: _State, attr: str) -> object:
    if attr == "owner":
        sk = st.socket
        return None if sk is None else (sk.uid, sk.gid, sk.kernel)
    if attr in ("src_type",):
        return _addr_type(st, st.src)
    if attr in ("dst_type",):
        return _addr_type(st, st.dst)
    if attr in ("statistic", "unknown", "fragment", "ctdir", "other"):
        return None
    if attr == "ctstate":
        return ",".join(sorted(_ct_states(st, True)))
    if attr == "socket":
        return st.tproxy_port
    if attr == "icmp":
        return (st.icmp_type, st.icmp_code)
    if attr == "flags":
        return ",".join(f for f in _TCP_FLAG_NAMES if f in st.flags) or "NONE"
    return getattr(st, attr)


def _note(st: _State, hook: str, text: str) -> None:
    if st.explain:
        st.steps.append(_tuple_new(Step, (st.pass_no, hook, "", "", _NOTE, 0, text, False, "", "", None, "", 0, (),
                                          None)))


def _hook(crs: CompiledRuleset, st: _State, hook: str) -> str:
    """Run every base chain of ``hook`` in the kernel's order, with conntrack at its priority and NAT-once
    (§1.1, §1.3): the nat chains run for a connection's first packet only, in order, until one binds."""
    st.hook = hook
    # nf_conntrack_in runs after raw at PREROUTING/OUTPUT, never again for a looped packet (§1.2(c)).
    pending_ct = hook in _NAT_DST_HOOKS and not st.loopback
    dst_manip = hook in _NAT_DST_HOOKS
    nat_done = False  # the nat decision of this hook was made before it (an entry, the loopback pass)
    nat_seen = False
    for entry in crs.hooks[hook]:
        info, base, chains = entry
        # _run_priority(entry)[0] > PRI_CONNTRACK, inlined (hot path): nat chains run at NAT_DST/NAT_SRC, after it
        if pending_ct and (info.nat or info.priority > PRI_CONNTRACK):
            _conntrack_in(st, hook)
            pending_ct = False
        if info.nat:
            if st.ctstate in ("UNTRACKED", "INVALID"):
                continue  # no conntrack entry, nothing for nf_nat to bind
            if not nat_seen:
                nat_seen = True
                nat_done = st.nat_dst_done if dst_manip else st.nat_src_done
                if nat_done:
                    if st.loopback and hook == "PREROUTING":
                        _note(st, hook, "nat PREROUTING not consulted: the looped packet's connection already "
                                        "has its NAT binding (nf_nat_inet_fn)")
                    elif st.explain and not st.loopback and st.ct_in.exists:
                        _note(st, hook, f"nat {hook} not consulted: the packet belongs to an existing conntrack "
                                        f"entry ({st.ctstate}{', reply direction' if st.reply else ''}; "
                                        "nf_nat_inet_fn)")
                    if st.bound:
                        _apply_binding(st, hook, dst_manip)
                if dst_manip:
                    st.nat_dst_done = True
                else:
                    st.nat_src_done = True
            if nat_done:
                continue  # decided before this hook
            if st.dnat if dst_manip else st.snat:
                # nf_nat_inet_fn stops at the first nat chain that sets up the binding (§1.3)
                _note(st, hook, f"{info.family} {info.table} {info.chain} ({info.backend} nat, priority "
                                f"{info.priority}) not consulted: an earlier nat chain of this hook bound the "
                                "connection")
                continue
        elif st.bound and dst_manip and info.priority > PRI_NAT_DST:
            _apply_binding(st, hook, dst_manip)  # no nat chain here: the manip still runs at NAT_DST
        if not base.rules:
            # an empty base chain: its policy decides, the packet as it entered (_run_table's first case, inlined:
            # an ambient pod's hooks meet several on every packet)
            policy = base.policy or ACCEPT
            snap = (st.in_iface, st.out_iface, st.loopback, st.src, st.dst, st.sport, st.dport, st.mark, st.proto,
                    st.fam_no)
            steps = st.steps
            steps.append(_tuple_new(Step, (st.pass_no, info.hook, info.table, base.name, _TABLE, 0, "", False, "",
                                           "", None, "", 0, snap, info)))
            step = _tuple_new(Step, (st.pass_no, info.hook, info.table, base.name, _POLICY, 0, policy, True, policy,
                                     "", None, "", 0, snap, info))
            steps.append(step)
            if policy != ACCEPT:
                st.decider = step
                return policy
            continue
        dst_before = st.dst
        verdict = _run_table(st, info, base, chains)
        if verdict != ACCEPT:
            return verdict
        if info.nat and hook == "OUTPUT" and st.dst != dst_before and _loopback_source_leaves(st):
            return DROP
    if pending_ct:
        _conntrack_in(st, hook)
    if st.bound and hook != "FORWARD":
        _apply_binding(st, hook, dst_manip)  # the manip is the last step of these hooks (§1.1)
    # Without a nat chain at this hook the connection still gets its null binding at confirm.
    if hook in ("PREROUTING", "OUTPUT"):
        st.nat_dst_done = True
    elif hook in ("INPUT", "POSTROUTING"):
        st.nat_src_done = True
    return ACCEPT


def _hostport(st: _State, addr: int, port: int) -> str:
    return f"[{st.ip(addr)}]:{port}" if st.v6 else f"{st.ip(addr)}:{port}"


def _apply_binding(st: _State, hook: str, dst_manip: bool) -> None:
    """nf_nat_packet for a packet of an existing entry: rewrite the manip type of ``hook`` from the
    entry's binding (§1.3). Idempotent (the target is the entry's tuple), so the loopback pass and a
    second call at the same hook change nothing and record nothing."""
    if st.ctstate in ("UNTRACKED", "INVALID"):
        return
    bind = st.dst_bind if dst_manip else st.src_bind
    if bind is None:
        return
    addr, port = bind
    if dst_manip:
        if (st.dst, st.dport) == (addr, port):
            return
        before = _hostport(st, st.dst, st.dport)
        st.dst, st.dport = addr, port
        field, what = "destination", ("DNAT" if not st.reply else "SNAT")
    else:
        if (st.src, st.sport) == (addr, port):
            return
        before = _hostport(st, st.src, st.sport)
        st.src, st.sport = addr, port
        field, what = "source", ("SNAT" if not st.reply else "DNAT")
    how = f"the entry's {what} binding" if not st.reply else f"undoing the entry's {what} binding, reply direction"
    step = Step(st.pass_no, hook, "", "", _CONNTRACK, 0,
                f"conntrack entry: {field} {before} → {_hostport(st, addr, port)} ({how}; nf_nat_packet, no rule)",
                True, "dst" if dst_manip else "src", what)
    st.steps.append(step)
    if st.decider is None:
        st.decider = step


def _conntrack_in(st: _State, hook: str) -> None:
    """nf_conntrack_in after raw: attach the entry (in the template's zone) unless untracked."""
    if st.ctstate == "UNTRACKED":
        _note(st, hook, "conntrack: untracked (CT --notrack); nat will not see this packet")
        return
    st.ct_attached = True
    given = st.ct_in
    if given.zone != st.zone and given.exists and st.ctstate != "INVALID":
        # §1.9: lookups happen only in the packet's zone; the given entry lives in another one, so
        # this packet starts a new connection there (the DNS zone story, istio#33469).
        st.ctstate = "NEW"
        st.nat_dst_done = st.nat_src_done = False
        st.ctmark, st.dnat, st.snat = 0, False, False
        # ... in the ORIGINAL direction, without the other entry's binding
        st.bound, st.dst_bind, st.src_bind, st.reply = False, None, None, False
        st.orig = (st.src, st.dst, st.sport, st.dport)
        if st.explain:
            _note(st, hook, f"conntrack: the existing entry is in zone {given.zone}, this packet looks in zone "
                            f"{st.zone}: a NEW connection")
        return
    if st.explain:  # _note, inlined (every traced packet passes here)
        st.steps.append(_tuple_new(Step, (st.pass_no, hook, "", "", _NOTE, 0, f"conntrack: {st.ctstate} in zone "
                                          f"{st.zone}", False, "", "", None, "", 0, (), None)))


def _loopback_source_leaves(st: _State) -> bool:
    """ip_route_me_harder after nat OUTPUT changed the destination: an IPv4 loopback source may not leave
    through a device that is not lo unless route_localnet is on (Netns.route_localnet). Records why."""
    if st.v6 or st.netns.route_localnet or (st.src >> 24) != 127:
        return False
    dev = _route_out(st, st.dst, st.mark)
    if dev == "lo":
        return False
    st.drop_reason = (f"dropped at re-routing after nat OUTPUT: source {st.ip(st.src)} is a loopback address and "
                      f"{st.ip(st.dst)} is routed via {dev}, which a loopback source may not leave "
                      f"(route_localnet is off)")
    _note(st, "OUTPUT", st.drop_reason)
    st.decider = None
    return True


def _route_out(st: _State, dst: int, mark: int) -> str:
    """ip_route_output: local table first (local addresses → lo), then fwmark rules, then main."""
    if st.nsinfo.is_local(st.family, dst):
        return "lo"
    for fr in st.netns.fwmark_routes:
        if fr.selects(mark, st.family):
            return "lo"
    return st.netns.default_iface


class _End(NamedTuple):  # a tuple: built once per probe (a frozen dataclass's construction costs twice as much)
    outcome: Outcome
    reason: str
    local_port: int | None = None


def _walk(crs: CompiledRuleset, st: _State, packet: Packet) -> _End:
    if packet.origin is _LOCAL:
        st.in_iface = None
        out = packet.out_iface or _route_out(st, st.dst, st.mark)
        st.out_iface = out
        if st.explain:
            _note(st, "OUTPUT", f"routing: {st.ip(st.dst)} via {out}")
        before = (st.dst, st.mark, st.src)
        verdict = _hook(crs, st, "OUTPUT")
        if verdict != ACCEPT:
            return _stopped(st, verdict)
        if (st.dst, st.mark, st.src) != before:
            # ip_route_me_harder after mangle/nat OUTPUT changed the packet (§1.12); only
            # POSTROUTING sees the new device (§1.10).
            new_out = _route_out(st, st.dst, st.mark)
            if new_out != out:
                _note(st, "OUTPUT", f"rerouted: {st.ip(st.dst)} now via {new_out}")
            out = new_out
        st.out_iface = out
        verdict = _hook(crs, st, "POSTROUTING")
        if verdict != ACCEPT:
            return _stopped(st, verdict)
        if out != "lo":
            if st.v6 and st.src == 1:  # no IPv6 counterpart of the IPv4 drop above: it leaves (verified)
                return _End(Outcome.SENT, f"sent out {out} to {st.ip(st.dst)}:{st.dport} with source ::1, "
                                          f"which every receiver drops (ip6_rcv_core: a loopback source)")
            return _End(Outcome.SENT, f"sent out {out} to {st.ip(st.dst)}:{st.dport}")
        # §1.2(c): loopback re-entry — same skb, same conntrack, nat not consulted.
        st.loopback = True
        st.pass_no = 1
        st.in_iface, st.out_iface = "lo", None
        _note(st, "PREROUTING", "re-enters through lo (loopback): same connection, nat is not consulted again")
    else:
        st.out_iface = None
    verdict = _hook(crs, st, "PREROUTING")
    if verdict != ACCEPT:
        return _stopped(st, verdict)
    local = st.nsinfo.is_local(st.family, st.dst)
    if not local and (st.tproxy_port is not None or st.netns.fwmark_routes):
        # a foreign destination is delivered only through an `ip rule fwmark` to a local route (TPROXY's)
        if not any(fr.selects(st.mark, st.family) for fr in st.netns.fwmark_routes):
            return _forward(crs, st)
        _note(st, "INPUT", f"routing: mark {st.mark:#x} selects a local route (ip rule fwmark)")
        local = True
    if local:
        verdict = _hook(crs, st, "INPUT")
        if verdict != ACCEPT:
            return _stopped(st, verdict)
        return _deliver(st)
    return _forward(crs, st)


def _forward(crs: CompiledRuleset, st: _State) -> _End:
    if not st.netns.ip_forward:
        return _End(Outcome.DROPPED, f"dropped at routing: {st.ip(st.dst)} is not a local address and "
                                     f"forwarding is off")
    out = st.netns.default_iface
    st.out_iface = out
    verdict = _hook(crs, st, "FORWARD")
    if verdict != ACCEPT:
        return _stopped(st, verdict)
    verdict = _hook(crs, st, "POSTROUTING")
    if verdict != ACCEPT:
        return _stopped(st, verdict)
    return _End(Outcome.SENT, f"forwarded out {out} to {st.ip(st.dst)}:{st.dport}")


def _deliver(st: _State) -> _End:
    if st.tproxy_port is not None:
        return _End(Outcome.DELIVERED, f"delivered to the transparent socket on port {st.tproxy_port} "
                                       f"(TPROXY; destination still {st.ip(st.dst)}:{st.dport})", st.tproxy_port)
    where = f"{st.ip(st.dst)}:{st.dport}"
    if st.proto not in ("tcp", "udp", "sctp"):
        return _End(Outcome.DELIVERED, f"delivered locally to {st.ip(st.dst)}", None)
    if st.ctstate in ("ESTABLISHED", "RELATED"):
        # An existing connection's packets go to its own socket (the accepted one, or for a reply the
        # one that connected), not to a listener.
        return _End(Outcome.DELIVERED, f"delivered to the connection's socket at {where}", st.dport)
    found = _listener_for(st, st.dst, st.dport, st.proto)
    if found is True:
        return _End(Outcome.DELIVERED, f"delivered locally to {where}", st.dport)
    if found is None:
        return _End(Outcome.REFUSED, f"reaches {where}, where nothing listens (connection refused)", st.dport)
    return _End(Outcome.DELIVERED, f"delivered to the socket listening on {where}", st.dport)


def _stopped(st: _State, verdict: str) -> _End:
    if st.drop_reason is not None:
        return _End(Outcome.DROPPED, st.drop_reason)
    last = next((s for s in reversed(st.steps) if s.kind in (Kind.RULE, Kind.POLICY) and s.matched), None)
    if verdict == QUEUE:
        return _End(Outcome.QUEUED, "queued to userspace")
    if last is None:
        return _End(Outcome.DROPPED, "dropped")
    if last.kind is Kind.POLICY:
        return _End(Outcome.DROPPED, f"dropped by the {last.table} {last.chain} policy")
    if last.target == "TPROXY" or (last.text and " -j TPROXY " in last.text + " "):
        return _End(Outcome.DROPPED, "dropped by TPROXY: no transparent socket listens on its port")
    return _End(Outcome.DROPPED, f"dropped by {last.table} {last.chain} rule {last.position}: {last.text}")


# ------------------------------------------------------------------------------------------ public API

_LAST: list[tuple[Ruleset, CompiledRuleset]] = []


def _compiled(rules: Ruleset | CompiledRuleset) -> CompiledRuleset:
    if isinstance(rules, CompiledRuleset):
        return rules
    for rs, crs in _LAST:
        if rs is rules:
            return crs
    crs = compile_ruleset(rules)
    _LAST[:] = [(rules, crs)]
    return crs


def trace(
    rules: Ruleset | CompiledRuleset,
    packet: Packet,
    netns: Netns | None = None,
    *,
    choices: Sequence[bool] = (),
    explain: bool = True,
) -> Trace:
    """Trace ``packet`` through ``rules`` in namespace ``netns`` (default: a pod with no device addresses).

    ``choices`` fixes the outcome of each ``-m statistic`` rule met, in order (unfixed ones are
    assumed to match and listed in ``Trace.branches``). ``explain`` False records only the rules that
    matched (what the kernel's trace prints), which is faster. Pure; raises nothing for a valid
    packet; the ruleset's family must be the packet's (RulesetError otherwise)."""
    crs = rules if type(rules) is CompiledRuleset else _compiled(rules)
    if crs.ruleset.family is not packet.family:
        raise RulesetError(f"an IPv{packet.family.value} packet cannot be traced through an "
                           f"IPv{crs.ruleset.family.value} ruleset")
    ns = netns if netns is not None else Netns.pod()
    st = _State(packet, ns, _nsinfo(ns), choices, explain)
    end = _walk(crs, st, packet)
    decided = st.decider
    tracked = st.ctstate not in ("UNTRACKED", "INVALID")
    original = None
    v6 = st.v6
    if tracked and st.zone == 0 and st.proto in ("tcp", "sctp") and not st.reply:
        original = _endpoint(v6, st.orig[1], st.orig[3])
    result = _object_new(Trace)
    _object_setattr(result, "__dict__", {
        "packet": packet,
        "steps": tuple(st.steps),
        "outcome": end.outcome,
        "src": _endpoint(v6, st.src, st.sport),
        "dst": _endpoint(v6, st.dst, st.dport),
        "in_iface": st.in_iface,
        "out_iface": st.out_iface,
        "mark": st.mark,
        "zone": st.zone,
        "ctstate": st.ctstate,
        "looped": st.loopback,
        "local_port": end.local_port,
        "transparent_socket": st.tproxy_port is not None,
        "original_dst": original,
        "decided_by": decided,
        "reason": end.reason,
        "uncertain": tuple(dict.fromkeys(st.uncertain)) if st.uncertain else (),
        "branches": tuple(st.branches) if st.branches else (),
        "ctmark": st.ctmark,
    })
    return result


def trace_branches(
    rules: Ruleset | CompiledRuleset, packet: Packet, netns: Netns | None = None, *, explain: bool = True
) -> tuple[Trace, ...]:
    """Every trace the ``-m statistic`` draws (and nft's ``numgen random mod N`` values) allow (at most
    MAX_BRANCH_TRACES), first the one where every draw matched (numgen: drew 0)."""
    out: list[Trace] = []
    pending: list[tuple[bool, ...]] = [()]
    while pending and len(out) < MAX_BRANCH_TRACES:
        fixed = pending.pop(0)
        t = trace(rules, packet, netns, choices=fixed, explain=explain)
        out.append(t)
        taken = tuple(b.taken for b in t.branches)
        for j in range(len(fixed), len(taken)):
            pending.append((*taken[:j], not taken[j]))
    return tuple(out)


def describe_failure(step: Step, family: Family) -> str:
    """Why a rule did not match, in words: ``-o lo: the packet leaves via eth0``."""
    if step.failed is None:
        return ""
    label, attr, value = step.failed
    return f"{label}: {_explain_value(attr, value, family)}"


def _explain_value(attr: str, value: object, family: Family) -> str:
    def ip(v: object) -> str:
        assert isinstance(v, int)
        return str(IPv4Address(v) if family is Family.IPV4 else IPv6Address(v))

    if attr == "src":
        return f"source is {ip(value)}"
    if attr == "dst":
        return f"destination is {ip(value)}"
    if attr in ("in_iface", "out_iface"):
        word = "arrives on" if attr == "in_iface" else "leaves via"
        if value:
            return f"the packet {word} {value}"
        return f"the packet has no {'input' if attr == 'in_iface' else 'output'} device at this hook"
    if attr == "proto":
        return f"protocol is {value}"
    if attr == "family":
        return f"the packet is IPv{value.value if isinstance(value, Family) else value}"
    if attr in ("sport", "dport"):
        return f"{'source' if attr == 'sport' else 'destination'} port is {value}"
    if attr == "ports":
        return "neither port is listed"
    if attr == "owner":
        if value is None:
            return "the packet has no socket (not locally generated)"
        assert isinstance(value, tuple)
        uid, gid, kernel = value
        return "a kernel socket without an owner" if kernel else f"the socket belongs to uid {uid}, gid {gid}"
    if attr == "mark":
        return f"packet mark is {value:#x}"
    if attr == "ctmark":
        return f"connection mark is {value:#x}"
    if attr == "ctstate":
        return f"conntrack state is {value}"
    if attr in ("src_type", "dst_type"):
        return f"the {'source' if attr == 'src_type' else 'destination'} address type is {value}"
    if attr == "socket":
        return "no matching socket"
    if attr == "icmp":
        return f"ICMP type/code is {value}"
    if attr == "flags":
        return f"TCP flags are {value}"
    if attr == "statistic":
        return "the random draw did not match (branch)"
    if attr == "fragment":
        return "the packet is not a fragment"
    return "does not hold"


__all__ = [
    "HOOK_TABLES",
    "MATCHES",
    "CompiledRuleset",
    "compile_ruleset",
    "describe_failure",
    "trace",
    "trace_branches",
]

