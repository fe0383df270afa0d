"""Rules found in a pod against the rules its spec gives: the drift classes, as values.

Owns: :class:`Canon` (a ruleset in kernel-canonical form: each chain's rules as ``iptables-save``
prints them, so whitespace, option order and counters never make a difference), the drift classes
(:class:`Check`, with stable codes), :class:`DriftFinding` and :func:`classify`, which explains how a
found ruleset differs from the expected one given the alternatives (:class:`Candidate`: the pod
compiled under another release, without its annotations, without DNS capture).

Theory of operation (docs/design.md, "netsim drift"):

1. Equal to the expected rules: no finding.
2. No Istio rule at all (no ``ISTIO_*`` chain, no jump to one, no expected rule): **absent**.
3. A rule found more often than any explanation writes it: **duplicated** (the later copies are set
   aside: a second run of istio-iptables in per-command mode appends every rule again).
4. A rule no explanation writes at all: **foreign**, with its position and whether it runs before
   Istio's first rule in that chain (a rule inserted at the top of PREROUTING/OUTPUT does).
5. What is left equal to one alternative as a whole: **dns-capture-off**, **annotation-not-applied**
   or **stale-release** (tried in that order).
6. Otherwise, against the expected rules: the DNS rules all missing is **dns-capture-off**, other
   missing rules and chains **partial**, the same rules in another order **reordered**, and rules
   Istio writes for other options are **foreign** too (in Istio's own chains).

Never does: IO, compiling (``expect.py`` builds the expected rules and the alternatives).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from netsim.netfilter.model import BUILTIN_CHAINS, Family, Ruleset
from netsim.netfilter.render import render_rule

if TYPE_CHECKING:
    from netsim.netfilter.nft import NftRuleset

ISTIO_PREFIX = "ISTIO_"  # every chain istio-iptables has ever created (spec/istio-iptables-history.md)

NFT_ISTIO_PREFIX = "istio-"  # every nftables table Istio writes (istio-proxy-*, istio-ambient-*)
# family, table, chain: an iptables family, or an nft family's name ("inet", "ip", …) for a table of an nft listing
Key = tuple[Family | str, str, str]


@dataclass(frozen=True, slots=True)
class Voice:
    """Who writes the rules the findings talk about, and the sentences that name it (sidecar or ambient)."""

    writer: str = "istio-iptables"
    absent: str = ("no Istio capture at all: none of the rules the pod's spec gives is in the dump (istio-init did "
                   "not run, failed, or the rules were flushed)")
    duplicated: str = ("more often than istio-iptables writes them (it ran twice without cleaning up, e.g. a "
                       "restarted istio-init in per-command mode)")
    dns_off: str = ("DNS capture is off although the pod asks for it (ISTIO_META_DNS_CAPTURE / --redirect-dns): "
                    "queries go to the cluster's resolver, not to the sidecar's agent")


SIDECAR_VOICE = Voice()


class Check(enum.Enum):
    """The drift classes; the values are the stable codes of the JSON and the text."""

    ABSENT = "absent"
    PARTIAL = "partial"
    DUPLICATED = "duplicated"
    STALE_RELEASE = "stale-release"
    FOREIGN = "foreign"
    ANNOTATION_NOT_APPLIED = "annotation-not-applied"
    DNS_CAPTURE_OFF = "dns-capture-off"
    REORDERED = "reordered"
    AGENT_CONFIG = "agent-config"  # ambient: the rules of the node agent with other settings
    TWO_BACKENDS = "two-backends"  # ambient: iptables rules and native nftables tables both in the pod


class Severity(enum.Enum):
    ERROR = "error"  # capture differs from what the spec asks for
    WARNING = "warning"  # the same capture, or a difference that may matter
    INFO = "info"  # outside Istio's path


@dataclass(frozen=True, slots=True)
class Canon:
    """A ruleset in kernel-canonical form: per (family, table, chain) the non-empty rule list as
    ``iptables-save`` lines (``-A CHAIN …``), and the user-defined chains (empty ones included)."""

    rules: Mapping[Key, tuple[str, ...]] = field(default_factory=dict)
    chains: frozenset[Key] = frozenset()
    # the iptables families the dump held (an ip6tables-save without rules too), "nft" for a listing; not compared
    families: frozenset[Family | str] = frozenset()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Canon) and self.chains == other.chains and dict(self.rules) == dict(other.rules)

    def __hash__(self) -> int:
        return hash((self.chains, frozenset(self.rules.items())))

    @property
    def empty(self) -> bool:
        return not self.rules and not self.chains

    def lines(self) -> Iterable[tuple[Key, str]]:
        for key, lines in self.rules.items():
            for line in lines:
                yield key, line

    def has_istio(self) -> bool:
        """Whether any chain is Istio's or any rule jumps to one."""
        return any(k[2].startswith(ISTIO_PREFIX) or _nft_istio(k) for k in self.chains) or any(
            _jumps_to_istio(line) for _, line in self.lines())

    def part(self, keep: Callable[[Key], bool]) -> Canon:
        """The chains of this ruleset ``keep`` accepts."""
        return Canon(rules={k: v for k, v in self.rules.items() if keep(k)},
                     chains=frozenset(k for k in self.chains if keep(k)))

    def __or__(self, other: Canon) -> Canon:
        return Canon(rules={**self.rules, **other.rules}, chains=self.chains | other.chains,
                     families=self.families | other.families)


def _nft_istio(key: Key) -> bool:
    return isinstance(key[0], str) and key[1].startswith(NFT_ISTIO_PREFIX)


def iptables_side(key: Key) -> bool:
    """Whether a chain is written through iptables: an iptables-save chain, or a table of an nft listing with an
    iptables table's name in the ip/ip6 family (iptables-nft's tables as ``nft list ruleset`` shows them)."""
    return not isinstance(key[0], str) or (key[0] in ("ip", "ip6") and key[1] in BUILTIN_CHAINS)


def canon_of_nft(ruleset: NftRuleset) -> Canon:
    """The canonical form of an nft ruleset: per (family name, table, chain) its rules in nft's normal form
    (``nft list ruleset``'s text, counters 0, no handles); every chain, empty ones included, among the chains
    (an nft chain exists whether or not it holds rules; a base chain's hook is not compared)."""
    from netsim.netfilter.nft import rule_text

    rules: dict[Key, tuple[str, ...]] = {}
    chains: set[Key] = set()
    for table in ruleset.tables:
        for chain in table.chains:
            key: Key = (table.family.value, table.name, chain.name)
            chains.add(key)
            if chain.rules:
                rules[key] = tuple(rule_text(r) for r in chain.rules)
    return Canon(rules=rules, chains=frozenset(chains), families=frozenset({"nft"}))


def canon_of(rulesets: Iterable[Ruleset]) -> Canon:
    """The canonical form of parsed or compiled rulesets (see :class:`Canon`)."""
    rules: dict[Key, tuple[str, ...]] = {}
    chains: set[Key] = set()
    families: set[Family | str] = set()
    for rs in rulesets:
        families.add(rs.family)
        for table in rs.tables:
            builtin = BUILTIN_CHAINS.get(table.name, ())
            for chain in table.chains:
                key = (rs.family, table.name, chain.name)
                if chain.name not in builtin:
                    chains.add(key)
                if chain.rules:
                    rules[key] = tuple(render_rule(chain.name, r) for r in chain.rules)
    return Canon(rules=rules, chains=frozenset(chains), families=frozenset(families))


def _jumps_to_istio(line: str) -> bool:
    return f"-j {ISTIO_PREFIX}" in line or f"-g {ISTIO_PREFIX}" in line


def show(key: Key, line: str) -> str:
    """A rule as the command that adds it: ``iptables -t nat -A OUTPUT -j ISTIO_OUTPUT``, ``nft add rule inet
    istio-ambient-nat istio-output …``."""
    if isinstance(key[0], str):
        return f"nft add rule {key[0]} {key[1]} {key[2]} {line}"
    return f"{'iptables' if key[0] is Family.IPV4 else 'ip6tables'} -t {key[1]} {line}"


def show_chain(key: Key) -> str:
    if isinstance(key[0], str):
        return f"nft add chain {key[0]} {key[1]} {key[2]}"
    return f"{'iptables' if key[0] is Family.IPV4 else 'ip6tables'} -t {key[1]} -N {key[2]}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """Another way the pod's rules could have been written: its class, what it is (``label``: "Istio
    1.20", "without traffic.sidecar.istio.io/excludeInboundPorts") and its rules."""

    check: Check
    label: str
    canon: Canon
    message: str  # the finding's sentence when the found rules are exactly these


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a foreign rule sits in the dump: 1-based position in its chain, and whether it runs
    before Istio's first rule there (None: a chain Istio has no rule in)."""

    family: Family | str  # an nft listing's table: its family's name
    table: str
    chain: str
    position: int
    before_istio: bool | None

    def as_json(self) -> dict[str, Any]:
        family = self.family if isinstance(self.family, str) else self.family.name.lower()
        return {"family": family, "table": self.table, "chain": self.chain,
                "position": self.position, "before_istio": self.before_istio}


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftFinding:
    """One difference: its class, how much it matters, a sentence, and the rules on both sides
    (``expected``: what the spec gives and the dump lacks; ``found``: what the dump has instead)."""

    check: Check
    severity: Severity
    message: str
    expected: tuple[str, ...] = ()
    found: tuple[str, ...] = ()
    placements: tuple[Placement, ...] = ()  # foreign rules only

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check.value, "severity": self.severity.value, "message": self.message,
                               "rules": {"expected": list(self.expected), "found": list(self.found)}}
        if self.placements:
            out["placements"] = [p.as_json() for p in self.placements]
        return out


# targets that only look at a packet or mark it: a foreign rule with one of them before Istio's changes
# no packet's path through the capture
_HARMLESS_TARGETS = ("-j LOG", "-j NFLOG", "-j TRACE", "-j MARK", "-j CONNMARK", "-j CT", "-j AUDIT")


def _all(canon: Canon) -> list[str]:
    return [show(k, line) for k, line in canon.lines()] + [show_chain(k) for k in sorted(canon.chains,
                                                                                       key=_key_order)]


def _key_order(key: Key) -> tuple[str, str, str]:
    return (key[0] if isinstance(key[0], str) else f"{key[0].value}", key[1], key[2])


def classify(found: Canon, expected: Canon, candidates: Callable[[], Sequence[Candidate]], *,
             dns_off: Canon | None = None, voice: Voice = SIDECAR_VOICE) -> tuple[DriftFinding, ...]:
    """How ``found`` differs from ``expected``, as findings (empty: no drift). See the module docstring.

    ``candidates`` gives the alternatives (asked only when the rules differ); ``dns_off``: the
    expected rules with DNS capture off, when the spec asks for DNS capture; ``voice``: who writes them.
    """
    if found == expected:
        return ()
    if not found.has_istio() and not any(line in expected.rules.get(k, ()) for k, line in found.lines()):
        if expected.empty or not expected.has_istio():
            return ()  # the spec gives no capture, and there is none: whatever else is there is not Istio's
        return (DriftFinding(check=Check.ABSENT, severity=Severity.ERROR,
                             message=voice.absent,
                             expected=tuple(_all(expected)), found=tuple(_all(found))),)
    alternatives = tuple(candidates())
    known = [expected, *(c.canon for c in alternatives)]
    most: Counter[tuple[Key, str]] = Counter()
    istio_chains: set[Key] = set()
    for canon in known:
        for rule, count in Counter(canon.lines()).items():
            most[rule] = max(most[rule], count)
        istio_chains |= canon.chains
    findings: list[DriftFinding] = []
    rest_rules: dict[Key, tuple[str, ...]] = {}
    dups: list[str] = []
    foreign: list[tuple[Key, str, int]] = []
    for key, lines in found.rules.items():
        seen: Counter[str] = Counter()
        kept: list[str] = []
        for pos, line in enumerate(lines, 1):
            seen[line] += 1
            limit = most.get((key, line), 0)
            if limit == 0:
                foreign.append((key, line, pos))
            elif seen[line] > limit:
                dups.append(show(key, line))
            else:
                kept.append(line)
        if kept:
            rest_rules[key] = tuple(kept)
    foreign_chains = sorted((k for k in found.chains if k not in istio_chains and k not in found.rules),
                            key=_key_order)
    rest = Canon(rules=rest_rules, chains=frozenset(k for k in found.chains if k in istio_chains))
    if dups:
        findings.append(DriftFinding(
            check=Check.DUPLICATED, severity=Severity.WARNING,
            message=f"{len(dups)} rule{'s' if len(dups) != 1 else ''} appear{'' if len(dups) != 1 else 's'} "
                    + voice.duplicated,
            expected=(), found=tuple(dups)))
    if rest != expected:
        match = next((c for c in alternatives if c.canon == rest), None)
        if match is not None:
            severity = Severity.WARNING if match.check is Check.STALE_RELEASE else Severity.ERROR
            findings.append(_whole(match, expected, rest, severity))
        else:
            diff, extra = _diff(expected, rest, dns_off, voice)
            findings.extend(diff)
            nth: Counter[tuple[Key, str]] = Counter()
            for key, line in extra:  # rules Istio writes for other options or releases: foreign to this spec
                nth[key, line] += 1
                foreign.append((key, line, _position(found.rules.get(key, ()), line, nth[key, line])))
    if foreign or foreign_chains:
        findings.append(_foreign(found, foreign, foreign_chains, istio_chains, most, voice))
    return tuple(findings)


def _whole(match: Candidate, expected: Canon, rest: Canon, severity: Severity) -> DriftFinding:
    """A finding for rules that are exactly an alternative: both sides as the lines that differ."""
    missing, extra = _multiset_diff(expected, rest)
    exp = [show(k, line) for k, line in missing] + [show_chain(k) for k in sorted(expected.chains - rest.chains,
                                                                                  key=_key_order)]
    got = [show(k, line) for k, line in extra] + [show_chain(k) for k in sorted(rest.chains - expected.chains,
                                                                               key=_key_order)]
    return DriftFinding(check=match.check, severity=severity, message=match.message, expected=tuple(exp),
                        found=tuple(got))


def _multiset_diff(a: Canon, b: Canon) -> tuple[list[tuple[Key, str]], list[tuple[Key, str]]]:
    """(lines of ``a`` missing from ``b``, lines of ``b`` not in ``a``), in chain order, counting copies."""
    ca, cb = Counter(a.lines()), Counter(b.lines())
    missing = [x for x in _ordered(a) if _take(ca, cb, x)]
    extra = [x for x in _ordered(b) if _take(cb, Counter(a.lines()), x)]
    return missing, extra


def _ordered(c: Canon) -> list[tuple[Key, str]]:
    return list(c.lines())


def _take(mine: Counter[tuple[Key, str]], theirs: Counter[tuple[Key, str]], x: tuple[Key, str]) -> bool:
    """Whether this copy of ``x`` is one more than ``theirs`` has (consuming one of ``theirs`` if not)."""
    if theirs[x] > 0:
        theirs[x] -= 1
        return False
    return True


def _diff(expected: Canon, rest: Canon, dns_off: Canon | None,
          voice: Voice) -> tuple[list[DriftFinding], list[tuple[Key, str]]]:
    """The rules differ from every alternative: how they differ from the expected ones, rule by rule.

    Returns the findings and the found rules none of them accounts for.
    """
    out: list[DriftFinding] = []
    missing, extra = _multiset_diff(expected, rest)
    missing_chains = sorted(expected.chains - rest.chains, key=_key_order)
    if dns_off is not None:
        dns_rules, off_rules = _multiset_diff(expected, dns_off)
        dns_set = set(dns_rules)
        dns_chains = sorted(expected.chains - dns_off.chains, key=_key_order)
        if dns_rules and dns_set <= set(missing) and not any(x in dns_set for x in rest.lines()):
            present = [x for x in off_rules if x in set(extra)]
            out.append(DriftFinding(
                check=Check.DNS_CAPTURE_OFF, severity=Severity.ERROR,
                message=voice.dns_off,
                expected=tuple([show(k, line) for k, line in dns_rules]
                               + [show_chain(k) for k in dns_chains if k in missing_chains]),
                found=tuple(show(k, line) for k, line in present)))
            missing = [x for x in missing if x not in dns_set]
            missing_chains = [k for k in missing_chains if k not in dns_chains]
            extra = [x for x in extra if x not in set(present)]
    if missing or missing_chains:
        n = len(missing) + len(missing_chains)
        instead = [x for x in extra if x[0] in {k for k, _ in missing}]
        extra = [x for x in extra if x not in set(instead)]
        chains = sorted({k[2] for k, _ in missing} | {k[2] for k in missing_chains})
        out.append(DriftFinding(
            check=Check.PARTIAL, severity=Severity.ERROR,
            message=f"{n} of the rules and chains the pod's spec gives {'are' if n != 1 else 'is'} missing "
                    f"(in {', '.join(chains)})",
            expected=tuple([show(k, line) for k, line in missing] + [show_chain(k) for k in missing_chains]),
            found=tuple(show(k, line) for k, line in instead)))
    if not missing and not missing_chains and not extra and not out and expected.chains == rest.chains:
        keys = sorted((k for k in expected.rules if expected.rules[k] != rest.rules.get(k)), key=_key_order)
        out.append(DriftFinding(
            check=Check.REORDERED, severity=Severity.ERROR,
            message=f"the rules the pod's spec gives are all there, in another order (in "
                    f"{', '.join(k[2] for k in keys)}); the first rule that matches decides",
            expected=tuple(show(k, line) for k in keys for line in expected.rules[k]),
            found=tuple(show(k, line) for k in keys for line in rest.rules.get(k, ()))))
    return out, extra


def _position(lines: Sequence[str], line: str, nth: int) -> int:
    """The 1-based position of the ``nth`` copy of ``line`` in ``lines``."""
    for i, other in enumerate(lines, 1):
        if other == line:
            nth -= 1
            if nth == 0:
                return i
    return 0


def _foreign(found: Canon, foreign: list[tuple[Key, str, int]], chains: list[Key], istio_chains: set[Key],
             most: Counter[tuple[Key, str]], voice: Voice) -> DriftFinding:
    """Rules no Istio generator wrote for this pod, and whether they run before Istio's."""
    placements: list[Placement] = []
    before_any = False
    for key, line, pos in foreign:
        family, table, chain = key
        before: bool | None = None
        lines = found.rules.get(key, ())
        istio_at = [i for i, other in enumerate(lines, 1)
                    if (key, other) in most or _jumps_to_istio(other)]
        if key in istio_chains or chain.startswith(ISTIO_PREFIX) or _nft_istio(key):
            before = any(i > pos for i in istio_at) if istio_at else None
        elif istio_at:
            before = any(i > pos for i in istio_at)
        if before and not any(t in line for t in _HARMLESS_TARGETS):
            before_any = True
        placements.append(Placement(family, table, chain, pos, before))
    n = len(foreign)
    first = next((p for p in placements if p.before_istio), None)
    where = (f"; {'one runs' if n == 1 else 'some run'} before Istio's rules (first: {first.table} {first.chain} "
             f"position {first.position}) and can take packets away from the capture") if first is not None \
        else "; none runs before Istio's rules"
    extra_chains = f" and {len(chains)} chain{'s' if len(chains) != 1 else ''}" if chains else ""
    message = (f"{n} rule{'s' if n != 1 else ''}{extra_chains} that {voice.writer} does not write for this pod"
               f"{where if n else ''}")
    severity = Severity.ERROR if before_any else Severity.WARNING if first is not None or any(
        p.chain.startswith(ISTIO_PREFIX) for p in placements) else Severity.INFO
    return DriftFinding(check=Check.FOREIGN, severity=severity, message=message, expected=(),
                        found=tuple([show(k, line) for k, line, _ in foreign] + [show_chain(k) for k in chains]),
                        placements=tuple(placements))


__all__ = ["SIDECAR_VOICE", "Candidate", "Canon", "Check", "DriftFinding", "Placement", "Severity", "Voice", "canon_of",
           "canon_of_nft", "classify", "iptables_side", "show", "show_chain"]
