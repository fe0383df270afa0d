"""nftables rules compiled into the engine's own form, so one walker traces every backend (engine.py).

Each :class:`~netsim.netfilter.nft.model.Match` becomes a predicate over the walker's state and each rule's
statements one action returning the kernel's verdict; base chains become :class:`HookEntry` values that
:func:`netsim.netfilter.engine.combine` orders with the iptables tables of the same namespace.

The kernel behaviours kept here (each checked against ``nft monitor trace`` on Linux 6.18):

1. A field whose implicit dependency fails (``ip daddr`` on an IPv6 packet in an ``inet`` table, ``tcp dport``
   on UDP) makes the rule not match, negated or not (the dependency is a match of its own).
2. ``meta skuid``/``skgid``, ``ct mark``/``ct zone`` with nothing to read (no socket, a kernel socket without a
   file, no conntrack) end the rule (NFT_BREAK): ``!=`` does not match either. Arriving packets carry no
   socket; before conntrack (raw priority) a packet's ``ct state`` reads ``invalid`` (nft_ct_get_eval).
3. ``tproxy`` without a transparent socket ends the rule (NFT_BREAK), unlike xt_TPROXY's drop; it sets no
   mark itself. NAT statements end the rule with accept; ``reject`` is traced as drop.
4. ``ct zone set`` and ``notrack`` follow xt_CT: the first one a packet meets wins (§1.9).
5. A verdict map without an element for the key ends the rule; ``numgen random mod N`` is a draw netsim
   cannot know: it is reported as branches, as ``-m statistic`` is (value k is k+1 binary draws, the first
   k not taken; the default trace draws 0, ``engine.trace_branches`` walks every value).

Never does IO; knows no Istio port, uid or chain name.
"""

from __future__ import annotations

import bisect
import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from netsim.errors import RulesetError
from netsim.netfilter.engine import (
    ACCEPT,
    CONTINUE,
    DROP,
    GOTO,
    INDEX_MIN_RULES,
    JUMP,
    QUEUE,
    RETURN,
    CompiledRuleset,
    HookEntry,
    LazyRules,
    _Action,
    _addr_type,
    _CChain,
    _Check,
    _CRule,
    _ct,
    _listener_for,
    _manip_dst,
    _manip_src,
    _masquerade,
    _redirect,
    _State,
    order_hooks,
)
from netsim.netfilter.model import Family, Ruleset
from netsim.netfilter.nft.model import (
    CT_STATES,
    FIB_TYPES,
    FIELDS,
    HOOKS,
    L4PROTOS,
    TCP_FLAGS,
    Atom,
    Chain,
    Element,
    Elements,
    Expr,
    Kind,
    Match,
    Nat,
    NftFamily,
    NftRuleset,
    Notrack,
    Other,
    Rule,
    SetRef,
    SetStmt,
    Table,
    Tproxy,
    Unknown,
    Verdict,
    VerdictMap,
    expr_text,
    rule_text,
)
from netsim.netfilter.trace import BaseChain, Branch

_Getter = Callable[[_State], Any]
_VERDICT_OF = {"accept": ACCEPT, "drop": DROP, "reject": DROP, "return": RETURN, "continue": CONTINUE,
               "queue": QUEUE, "jump": JUMP, "goto": GOTO}
_TH_PROTOS = frozenset({"tcp", "udp", "sctp", "dccp", "udplite"})
# which walker field explains a failed match (engine.describe_failure)
_ATTR = {"ip saddr": "src", "ip6 saddr": "src", "ip daddr": "dst", "ip6 daddr": "dst", "iifname": "in_iface",
         "oifname": "out_iface", "meta l4proto": "proto", "ip protocol": "proto", "ip6 nexthdr": "proto",
         "tcp sport": "sport", "udp sport": "sport", "th sport": "sport", "sctp sport": "sport",
         "tcp dport": "dport", "udp dport": "dport", "th dport": "dport", "sctp dport": "dport",
         "meta mark": "mark", "ct mark": "ctmark", "ct state": "ctstate", "meta skuid": "owner",
         "meta skgid": "owner", "fib daddr type": "dst_type", "fib saddr type": "src_type", "tcp flags": "flags"}
_LOCAL_HOOKS = frozenset({"OUTPUT", "POSTROUTING"})
_FAMILY_DEP = {NftFamily.IP: "meta nfproto ipv4", NftFamily.IP6: "meta nfproto ipv6"}
# the one-call forms of common checks and actions (_fast_check, the exact verdict map, a constant verdict, the
# concatenated key in one expression): off only to test that they trace as the general forms do
SPECIALISE = True


def _l4(st: _State) -> int:
    return L4PROTOS.get(st.proto, 255)


def _owner(attr: str) -> _Getter:
    def get(st: _State) -> int | None:
        sk = st.socket
        if sk is None or sk.kernel or st.hook not in _LOCAL_HOOKS:
            return None  # NFT_BREAK: no socket with a file (an arriving packet carries none)
        return int(getattr(sk, attr))

    return get


def _ct_state(st: _State) -> int:
    if st.ctstate == "UNTRACKED":
        return CT_STATES["untracked"]
    if not st.ct_attached:
        return CT_STATES["invalid"]  # before conntrack: no ct on the skb (nft_ct_get_eval)
    return CT_STATES[st.ctstate.lower()]


def _tracked(st: _State) -> bool:
    return st.ct_attached and st.ctstate not in ("UNTRACKED", "INVALID")


def _flags(st: _State) -> int:
    return sum(b for n, b in TCP_FLAGS.items() if n.upper() in st.flags)


def _fib(addr: str) -> _Getter:
    def get(st: _State) -> int:
        return FIB_TYPES.index(_addr_type(st, st.src if addr == "saddr" else st.dst).lower())

    return get


_GETTERS: dict[str, _Getter] = {
    "ip saddr": lambda st: st.src, "ip daddr": lambda st: st.dst,
    "ip6 saddr": lambda st: st.src, "ip6 daddr": lambda st: st.dst,
    "ip protocol": _l4, "ip6 nexthdr": _l4, "meta l4proto": _l4,
    "meta nfproto": lambda st: 10 if st.v6 else 2,
    "meta mark": lambda st: st.mark,
    "meta skuid": _owner("uid"), "meta skgid": _owner("gid"),
    "iifname": lambda st: st.in_iface or "", "oifname": lambda st: st.out_iface or "",
    "ct state": _ct_state,
    "ct mark": lambda st: st.ctmark if _tracked(st) else None,
    "ct zone": lambda st: st.zone if st.ct_attached else None,
    "fib daddr type": _fib("daddr"), "fib saddr type": _fib("saddr"),
    "tcp flags": _flags,
}


def _numgen(mod: int) -> _Getter:
    """``numgen random mod N``: the value the caller's choices fix (engine._State.choices), each value a
    branch of the trace (engine.trace_branches walks all N)."""

    drew = [f"numgen random mod {mod}: a random number; this trace assumes it drew {k}" for k in range(mod)]

    def draw(st: _State) -> int:
        for k in range(mod - 1):
            i = len(st.branches)
            taken = st.choices[i] if i < len(st.choices) else True
            st.branches.append(Branch("", "", 0, drew[k] if taken else "", taken))
            if taken:
                return k
        if mod > 1:
            st.branches[-1] = Branch("", "", 0, drew[mod - 1], False)
        return mod - 1

    return draw


# fields read straight off the walker's state: the field's value is that attribute (an int, never None)
_PLAIN: dict[str, str] = {"ip saddr": "src", "ip6 saddr": "src", "ip daddr": "dst", "ip6 daddr": "dst",
                          "meta mark": "mark"} | {f: f.rsplit(" ", 1)[1] for f, (k, _, l4) in FIELDS.items()
                                                  if k is Kind.PORT and l4 is not None}
# the same fields, and others that cannot break a rule, as Python expressions over the state ``st`` (for a
# concatenation's key read in one call: :func:`_value_getter`)
_L4_FIELDS = frozenset({"meta l4proto", "ip protocol", "ip6 nexthdr"})  # read as _l4: the protocol's number
_IFACES = {"iifname": "in_iface", "oifname": "out_iface"}  # read as the device's name, "" for none
_BIT_KINDS = (Kind.CTSTATE, Kind.TCPFLAGS)  # a value is a bit test, not an equality
_EXPRESSIONS: dict[str, str] = {f: f"st.{a}" for f, a in _PLAIN.items()} | {
    "meta l4proto": "_l4(st.proto, 255)", "ip protocol": "_l4(st.proto, 255)", "ip6 nexthdr": "_l4(st.proto, 255)",
    "meta nfproto": "(10 if st.v6 else 2)", "iifname": "(st.in_iface or '')", "oifname": "(st.out_iface or '')"}


def _getter(name: str) -> _Getter:
    """The field's value for the walker's packet, None where the kernel's expression breaks the rule."""
    get = _GETTERS.get(name)
    if get is not None:
        return get
    if name.endswith("sport"):
        return lambda st: st.sport
    return lambda st: st.dport


def _dependency(name: str) -> tuple[str, Callable[[_State], bool]] | None:
    """The implicit match a field needs: (its text, its test)."""
    _, fam, l4 = FIELDS[name]
    if fam is Family.IPV4:
        return "meta nfproto ipv4", lambda st: not st.v6
    if fam is Family.IPV6:
        return "meta nfproto ipv6", lambda st: st.v6
    if l4 == "th":
        return "meta l4proto { tcp, udp, sctp, dccp, udplite }", lambda st: st.proto in _TH_PROTOS
    if l4 is not None:
        return f"meta l4proto {l4}", lambda st, p=l4: st.proto == p
    return None


def _atom_test(kind: Kind, atom: Atom) -> Callable[[Any], bool]:
    if isinstance(atom, str):
        if atom.endswith("*"):
            prefix = atom[:-1]
            return lambda v: isinstance(v, str) and v.startswith(prefix)
        return lambda v: v == atom
    lo, hi = atom
    if kind in (Kind.CTSTATE, Kind.TCPFLAGS):
        return lambda v: bool(v & lo)
    if lo == hi:
        return lambda v: v == lo
    return lambda v: lo <= v <= hi


def _element_test(kinds: tuple[Kind, ...], e: Element) -> Callable[[Any], bool]:
    tests = [_atom_test(k, a) for k, a in zip(kinds, e, strict=True)]

    def test(v: Any) -> bool:
        return all(t(x) for t, x in zip(tests, v if isinstance(v, tuple) else (v,), strict=True))

    return test


class _LazyCheck(_Check):
    """A check whose label (the expression's listing text) is rendered when a trace first shows it: the slot
    is left unset until then (``__getattr__`` runs only for an unset one), so later reads are plain slot reads
    (a failed rule's step reads it on every probe)."""

    __slots__ = ("expr",)

    def __init__(self, fn: Callable[..., bool | None], expr: Expr, attr: str) -> None:
        self.fn = fn
        self.attr = attr
        self.expr = expr

    def __getattr__(self, name: str) -> str:
        if name != "label":
            raise AttributeError(name)
        self.label = expr_text(self.expr)
        return self.label


class _NftCRule(_CRule):
    """A compiled nft rule: its text is nft's listing of it, rendered when a trace first shows it."""

    __slots__ = ("nft_rule",)
    nft_rule: Rule

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = rule_text(self.nft_rule)
        return self._text


class _Lookup:
    """Membership in a set (or the data of a map): exact elements hashed, intervals by bisection, the rest
    (wildcard names, concatenations with ranges) scanned."""

    def __init__(self, kinds: tuple[Kind, ...], items: Sequence[Element], data: Sequence[Verdict]) -> None:
        self.exact: dict[object, int] = {}
        starts: list[tuple[int, int, int]] = []
        self.scan: list[tuple[Callable[[Any], bool], int]] = []
        for i, e in enumerate(items):
            if all(not isinstance(a, str) and a[0] == a[1] for a in e) and \
                    not any(k in (Kind.CTSTATE, Kind.TCPFLAGS) for k in kinds):
                key = e[0][0] if len(e) == 1 else tuple(a[0] for a in e)
                self.exact.setdefault(key, i)
            elif len(e) == 1 and not isinstance(e[0], str) and kinds[0] not in (Kind.CTSTATE, Kind.TCPFLAGS):
                starts.append((e[0][0], e[0][1], i))
            else:
                self.scan.append((_element_test(kinds, e), i))
        starts.sort()
        self.starts = [s[0] for s in starts]
        self.ranges = starts
        self.data = tuple(data)

    def find(self, value: Any) -> int | None:
        """The index of the element ``value`` falls in, or None."""
        hit = self.exact.get(value)
        if hit is not None:
            return hit
        if self.ranges and not isinstance(value, tuple | str):
            # the ranges of one set do not overlap (nft refuses or merges them): the last start at or
            # before the value is the only candidate
            j = bisect.bisect_right(self.starts, value) - 1
            if j >= 0 and value <= self.ranges[j][1]:
                return self.ranges[j][2]
        for test, i in self.scan:
            if test(value):
                return i
        return None


def _resolve(value: Elements | SetRef, table: Table) -> Elements:
    if isinstance(value, Elements):
        return value
    s = table.set(value.name)
    if s is None:  # parse.py checks references; a hand-built ruleset may not
        raise RulesetError(f"table {table.family.value} {table.name}: no set @{value.name}")
    return s.elements


# fields whose getter can be None (the kernel's expression breaks the rule: no socket, no conntrack, a draw)
_MAY_BREAK = frozenset({"meta skuid", "meta skgid", "ct mark", "ct zone", "numgen"})


def _value_getter(fields: tuple[str, ...], mod: int = 0) -> _Getter:
    getters = [_numgen(mod) if f == "numgen" else _getter(f) for f in fields]
    if len(getters) == 1:
        return getters[0]
    if not SPECIALISE and len(fields) == 3 and not _MAY_BREAK.intersection(fields):
        g0, g1, g2 = getters  # the general form of a key that cannot break the rule
        return lambda st: (g0(st), g1(st), g2(st))
    if SPECIALISE and all(f in _EXPRESSIONS for f in fields):
        # ``ip daddr . meta l4proto . th dport`` (kube-proxy's service maps): nothing to break the rule, the key
        # read in one call (the expressions are this module's own table, never input)
        key = ", ".join(_EXPRESSIONS[f] for f in fields)
        return eval(f"lambda st: ({key},)", {"_l4": L4PROTOS.get})  # type: ignore[no-any-return]

    def concat(st: _State) -> tuple[Any, ...] | None:
        out = tuple(g(st) for g in getters)
        return None if any(v is None for v in out) else out

    return concat


def _deps(fields: tuple[str, ...], seen: set[str], family: NftFamily) -> list[_Check]:
    """The implicit matches of ``fields`` not met yet in the rule; not ``meta nfproto`` in a table of that
    family (only packets of its family pass it: the dependency always holds)."""
    out = []
    for f in fields:
        dep = _dependency(f)
        if SPECIALISE and dep is not None and dep[0] == _FAMILY_DEP.get(family):
            continue
        if dep is not None and dep[0] not in seen:
            seen.add(dep[0])
            label, test = dep
            out.append(_Check(test, label, "family" if "nfproto" in label else "proto"))
    return out


def _match_check(m: Match, table: Table) -> _Check:
    kinds = tuple(FIELDS[f][0] for f in m.fields)
    get = _value_getter(m.fields, m.numgen_mod)
    mask = m.mask
    attr = _ATTR.get(m.fields[0], "other") if len(m.fields) == 1 else "other"
    if "numgen" in m.fields:
        attr = "statistic"  # a draw: the engine records its branches
    neg = m.op == "!="
    elements = _resolve(m.value, table)
    fast = _fast_check(m, kinds, elements, neg) if SPECIALISE else None
    if fast is not None:
        return _LazyCheck(fast, m, attr)
    test: Callable[[Any], bool]
    if not elements.braces and isinstance(m.value, Elements):
        one = _atom_test(kinds[0], elements.items[0][0]) if len(kinds) == 1 else None
        if one is None:
            lookup = _Lookup(kinds, elements.items, ())
            test = lambda v: lookup.find(v) is not None  # noqa: E731
        elif m.op in ("==", "!="):
            test = one
        else:
            atom = elements.items[0][0]
            assert not isinstance(atom, str)
            bound = atom[0]
            test = {"<": lambda v: v < bound, ">": lambda v: v > bound, "<=": lambda v: v <= bound,
                    ">=": lambda v: v >= bound}[m.op]
            neg = False
    else:
        lookup = _Lookup(kinds, elements.items, ())
        test = lambda v: lookup.find(v) is not None  # noqa: E731

    def check(st: _State) -> bool:
        v = get(st)
        if v is None:
            return False  # NFT_BREAK
        if mask is not None:
            v &= mask
        return test(v) != neg

    return _LazyCheck(check, m, attr)


def _fast_check(m: Match, kinds: tuple[Kind, ...], elements: Elements, neg: bool) -> Callable[[_State], bool] | None:
    """The check of the most common matches in one call, where :func:`_match_check`'s general one takes three
    (get, test, compare): one value or interval of a field read straight off the state (``ip daddr
    10.0.0.1``, ``tcp dport != 8443``, ``ip saddr != 10.0.0.0/8``), one value under a mask (``meta mark &
    0x00000fff != 0x00000539``), ``ct state`` bits, the protocol (``meta l4proto tcp``, as the names it reads),
    an interface's exact name, membership in a set of exact keys (``ip daddr @cluster-ips``). None where the
    general one is needed."""
    if m.op not in ("==", "!=") or m.numgen_mod or len(m.fields) != 1:
        return None
    field = m.fields[0]
    attr = _PLAIN.get(field)
    one = not elements.braces and isinstance(m.value, Elements)  # one value, not a set (``{ … }`` or ``@s``)
    if m.mask is not None:
        atom = elements.items[0][0] if one else None
        if attr is None or not isinstance(atom, tuple) or atom[0] != atom[1] or kinds[0] in _BIT_KINDS:
            return None
        mask, want = m.mask, atom[0]
        g = operator.attrgetter(attr)
        return (lambda st: (g(st) & mask) != want) if neg else (lambda st: (g(st) & mask) == want)
    if field in _L4_FIELDS:
        lookup = _Lookup(kinds, elements.items, ())
        if lookup.ranges or lookup.scan or 255 in lookup.exact:  # 255: what a protocol without a number reads
            return None
        names = frozenset(n for n, v in L4PROTOS.items() if v in lookup.exact)
        return (lambda st: st.proto not in names) if neg else (lambda st: st.proto in names)
    if not one:
        if attr is None:
            return None
        lookup = _Lookup(kinds, elements.items, ())
        if lookup.ranges or lookup.scan:
            return None
        keys = frozenset(lookup.exact)
        g = operator.attrgetter(attr)
        return (lambda st: g(st) not in keys) if neg else (lambda st: g(st) in keys)
    atom = elements.items[0][0]
    if isinstance(atom, str):
        if field not in _IFACES or atom.endswith("*"):
            return None
        g = operator.attrgetter(_IFACES[field])
        return (lambda st: (g(st) or "") != atom) if neg else (lambda st: (g(st) or "") == atom)
    lo, hi = atom
    if kinds[0] is Kind.CTSTATE:
        return (lambda st: not _ct_state(st) & lo) if neg else (lambda st: bool(_ct_state(st) & lo))
    if attr is None or kinds[0] is Kind.TCPFLAGS:
        return None
    g = operator.attrgetter(attr)
    if lo == hi:
        return (lambda st: g(st) != lo) if neg else (lambda st: g(st) == lo)
    return (lambda st: not lo <= g(st) <= hi) if neg else (lambda st: lo <= g(st) <= hi)


def _tproxy_check(t: Tproxy) -> _Check:
    """nft_tproxy_eval: a transparent socket on (addr or the incoming device's primary address or the
    destination, port or dport), else the rule ends (NFT_BREAK; no drop, no mark)."""
    want_v6 = {"ip": False, "ip6": True}.get(t.family)

    def check(st: _State) -> bool | None:
        if want_v6 is not None and want_v6 != st.v6:
            return False
        port = t.port or st.dport
        laddr = t.addr or st.primary(st.in_iface) or st.dst
        found = _listener_for(st, laddr, port, st.proto)
        if found is True:
            st.uncertain.append(f"tproxy to port {port}: listeners unknown, assumed a transparent one exists")
        elif not (found is not None and found is not False and found.transparent):
            return False
        st.tproxy_port = port
        return True

    return _Check(check, expr_text(t), "socket")


def _vmap_check(vm: VerdictMap, table: Table) -> _Check:
    kinds = tuple(FIELDS[f][0] for f in vm.fields)
    elements = _resolve(vm.value, table)
    lookup = _Lookup(kinds, elements.items, elements.data)
    get = _value_getter(vm.fields, vm.numgen_mod)
    label_attr = "statistic" if "numgen" in vm.fields else "other"
    if SPECIALISE and not lookup.ranges and not lookup.scan and not _MAY_BREAK.intersection(vm.fields):
        # exact keys only, a key that is never None (kube-proxy's service maps): one hash lookup
        exact = lookup.exact
        picks = [(v.chain, _VERDICT_OF[v.kind]) for v in lookup.data]

        def exact_check(st: _State) -> bool:
            i = exact.get(get(st))
            if i is None:
                return False  # no element: NFT_BREAK
            st.jump_to, st.picked = picks[i]
            return True

        return _LazyCheck(exact_check, vm, label_attr)

    def check(st: _State) -> bool | None:
        v = get(st)
        i = None if v is None else lookup.find(v)
        if i is None:
            return False  # no element: NFT_BREAK
        verdict = lookup.data[i]
        st.jump_to = verdict.chain
        st.picked = _VERDICT_OF[verdict.kind]
        return True

    return _LazyCheck(check, vm, label_attr)


def _set_action(s: SetStmt) -> _Action:
    if s.key == "ct zone":
        assert s.value is not None
        return _ct(False, s.value)

    def read(st: _State) -> int:
        if not s.source:
            assert s.value is not None
            return s.value
        v = st.mark if s.source == "meta mark" else st.ctmark
        for op, operand in ((s.op, s.operand), (s.op2, s.operand2)):
            if op == "&":
                v &= operand
            elif op == "|":
                v |= operand
            elif op == "^":
                v ^= operand
        return v & 0xFFFFFFFF

    if s.key == "meta mark":
        def set_mark(st: _State) -> str:
            st.mark = read(st)
            return CONTINUE

        return set_mark

    def set_ctmark(st: _State) -> str:
        if _tracked(st):
            st.ctmark = read(st)
        return CONTINUE

    return set_ctmark


def _nat_action(n: Nat) -> _Action:
    if n.kind == "redirect":
        return _redirect(n.ports)
    if n.kind == "masquerade":
        return _masquerade(n.ports)
    addr, ports = n.addr, n.ports
    manip = _manip_dst if n.kind == "dnat" else _manip_src
    return lambda st: manip(st, addr, ports)


def _tproxy_assign(st: _State) -> str:
    st.tproxy_transparent = True
    return CONTINUE


def _constant(verdict: str) -> _Action:
    return lambda st: verdict


_CONSTANT = {kind: _constant(v) for kind, v in _VERDICT_OF.items()}  # one action per verdict

def _picked(st: _State) -> str:
    return str(st.picked)


def _in_order(action: _Action) -> Callable[[_State], bool]:
    """A statement met before a rule's last match: applied where it stands, and the rule goes on."""

    def apply(st: _State) -> bool:
        action(st)
        return True

    return apply


def _compile_rule(rule: Rule, position: int, chain: str, table: Table, unknown: list[str],
                  memo: dict[Match, _Check]) -> _CRule:
    checks: list[_Check] = []
    acts: list[_Action] = []
    seen: set[str] = set()
    kind, target, uncertain = "NFT", "", ""
    where = f"{table.family.value} {table.name} {chain} rule {position} (line {rule.line})"
    # the kernel runs a rule's expressions left to right: a statement before a match takes effect whether or
    # not the match then holds, so it runs in its place among the checks
    last_check = max((i for i, e in enumerate(rule.exprs) if isinstance(e, Match | VerdictMap | Tproxy | Unknown)),
                     default=-1)
    for i, e in enumerate(rule.exprs):
        if isinstance(e, SetStmt | Notrack) and i < last_check:
            checks.append(_Check(_in_order(_set_action(e) if isinstance(e, SetStmt) else _ct(True, 0)), expr_text(e),
                                 "other"))
        elif isinstance(e, Match):
            checks += _deps(e.fields, seen, table.family)
            chk = memo.get(e)
            if chk is None:
                chk = memo[e] = _match_check(e, table)
            checks.append(chk)
        elif isinstance(e, VerdictMap):
            checks += _deps(e.fields, seen, table.family)
            checks.append(_vmap_check(e, table))
            acts.append(_picked)
        elif isinstance(e, Tproxy):
            checks.append(_tproxy_check(e))
            acts.append(_tproxy_assign)
            kind = "TPROXY"
        elif isinstance(e, Verdict):
            acts.append(_CONSTANT[e.kind])
            if e.kind in ("jump", "goto"):
                target = e.chain
            if e.kind == "queue":
                uncertain = uncertain or "queue: the packet goes to a userspace program netsim cannot see"
        elif isinstance(e, Nat):
            acts.append(_nat_action(e))
            kind = {"redirect": "REDIRECT", "dnat": "DNAT", "snat": "SNAT", "masquerade": "MASQUERADE"}[e.kind]
        elif isinstance(e, SetStmt):
            acts.append(_set_action(e))
        elif isinstance(e, Notrack):
            acts.append(_ct(True, 0))
        elif isinstance(e, Unknown):
            unknown.append(f"{where}: {e.text}")
            checks.append(_Check(lambda st: None, e.text, "unknown"))
        else:
            assert isinstance(e, Other)
    act: _Action
    if not acts:
        act = lambda st: CONTINUE  # noqa: E731
    elif len(acts) == 1:
        act = acts[0]
    else:
        def act(st: _State) -> str:
            v = CONTINUE
            for a in acts:
                v = a(st)
                if v != CONTINUE:
                    return v
            return v

    cr = _NftCRule(None, position, chain, tuple(checks), kind, act, target, None, uncertain)
    cr.nft_rule = rule
    last = rule.exprs[-1] if rule.exprs else None
    if SPECIALISE and len(acts) == 1 and isinstance(last, Verdict) and acts[0] is _CONSTANT.get(last.kind):
        cr.const = _VERDICT_OF[last.kind]
    return cr


def _compile_at(chain: Chain, positions: list[int], table: Table, memo: dict[Match, _Check], k: int) -> _CRule:
    return _compile_rule(chain.rules[k], positions[k], chain.name, table, [], memo)


# iptables-nft's tables as an nft listing shows them: table → {built-in chain: (hook, priority)}
_XTABLES: dict[str, dict[str, int]] = {
    "raw": {"PREROUTING": -300, "OUTPUT": -300},
    "mangle": {"PREROUTING": -150, "INPUT": -150, "FORWARD": -150, "OUTPUT": -150, "POSTROUTING": -150},
    "nat": {"PREROUTING": -100, "INPUT": 100, "OUTPUT": -100, "POSTROUTING": 100},
    "filter": {"INPUT": 0, "FORWARD": 0, "OUTPUT": 0},
    "security": {"INPUT": 50, "FORWARD": 50, "OUTPUT": 50},
}


def iptables_nft_layout(table: Table) -> bool:
    """Whether a table of an nft listing has the layout iptables-nft gives its tables (family ip/ip6, an
    iptables table's name, only its built-in chains as base chains, on their own hooks and priorities): a
    pasted ``nft list ruleset`` holds iptables-nft's rules in nft's words, and older nft prints no mark of
    who wrote them."""
    builtins = _XTABLES.get(table.name)
    if builtins is None or table.family.value not in ("ip", "ip6"):
        return False
    bases = [c for c in table.chains if c.base]
    return bool(bases) and all(c.name in builtins and c.hook == c.name.lower() and c.priority == builtins[c.name]
                               and c.type == ("nat" if table.name == "nat" else "filter") for c in bases)


def compile_nft(ruleset: NftRuleset, family: Family, *, start: int = 0) -> CompiledRuleset:
    """The base and regular chains of every table of ``ruleset`` that a packet of ``family`` passes
    (ip/ip6/inet), compiled for :func:`netsim.netfilter.engine.trace` (each rule when a trace first meets
    it). Tables of other families are skipped (:func:`untraced` names them). Rule positions are handles
    when the input had them."""
    tables: dict[str, dict[str, _CChain]] = {}
    entries: list[HookEntry] = []
    unknown: list[str] = []
    for table in ruleset.tables:
        if not table.family.sees(family):
            continue
        memo: dict[Match, _Check] = {}  # equal matches of one table share their check (sets are per table)
        chains: dict[str, _CChain] = {}
        for chain in table.chains:
            positions = [r.handle if ruleset.has_handles and r.handle is not None else i
                         for i, r in enumerate(chain.rules, 1)]
            for pos, r in zip(positions, chain.rules, strict=True):
                for e in r.exprs:
                    if isinstance(e, Unknown):
                        unknown.append(f"{table.family.value} {table.name} {chain.name} rule {pos} (line {r.line}): "
                                       f"{e.text}")
            n = len(chain.rules)
            lazy = LazyRules(n, functools.partial(_compile_at, chain, positions, table, memo))
            cchain = chains[chain.name] = _CChain(chain.name, chain.policy.upper() if chain.base else None, lazy,
                                                  chain.base, [None] * n if n >= INDEX_MIN_RULES else None)
            lazy.owner = cchain
        tables[f"{table.family.value} {table.name}"] = chains
        xtables = iptables_nft_layout(table)
        for chain in table.chains:
            if chain.hook is None or chain.hook not in HOOKS:
                continue
            base = BaseChain(backend="nft", family=table.family.value, table=table.name, chain=chain.name,
                             hook=HOOKS[chain.hook], priority=chain.priority, nat=chain.type == "nat",
                             writer="iptables-nft" if xtables else "")
            entries.append(HookEntry(base, chains[chain.name], chains))
    return CompiledRuleset(Ruleset(family, ()), tables, tuple(unknown), order_hooks(entries), tuple(entries))


def untraced(ruleset: NftRuleset) -> list[str]:
    """What netsim does not walk: tables of the bridge/arp/netdev families, and base chains on other hooks."""
    out = [f"table {t.family.value} {t.name}: the {t.family.value} family is not traced"
           for t in ruleset.tables if not t.family.traced]
    out += [f"chain {t.family.value} {t.name} {c.name}: hook {c.hook} is not traced"
            for t in ruleset.tables if t.family.traced for c in t.chains if c.hook and c.hook not in HOOKS]
    return out


__all__ = ["compile_nft", "iptables_nft_layout", "untraced"]
