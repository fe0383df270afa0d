"""istio-iptables' rules in a dump → the options and the releases that wrote them.

Method (netsim's compiler is the truth): read candidate option values off the rules (each value has
one rule shape that shows it, in every release layout: spec/istio-iptables.md §4, history §2–§5), then
compile each candidate at every modelled release and compare with the dump chain by chain, as
kernel-canonical rule text. A release is consistent when its compiled rules all appear in the dump, in
order, with the fewest rules left over; the release range is every consistent release. Rules of the dump
no consistent compile accounts for are foreign to istio-iptables.

Compiles are memoised by (options, release): a fleet's dumps share a few hundred option sets.

Never does: read files, recognise other generators (``generators.py``), render output.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv4Interface, IPv6Interface, ip_interface

from netsim.capture.config import (
    CURRENT_LAYOUT,
    WILDCARD,
    CaptureConfig,
    CidrList,
    InterceptionMode,
    layout_releases,
)
from netsim.capture.iptables import (
    AGENT_DNS_PORT,
    ISTIO_IN_REDIRECT,
    ISTIO_INBOUND,
    ISTIO_OUTPUT,
    ISTIO_REDIRECT,
    payloads,
    plan,
    writes_ip6tables,
)
from netsim.errors import RulesetError
from netsim.infer.view import ChainKey, Tokens, View, negated, target, value, values
from netsim.netfilter.model import Family
from netsim.netfilter.parse import apply_payload
from netsim.netfilter.render import rule_tokens

Release = tuple[int, ...]  # (major, minor[, patch]), as CaptureConfig.release
V4, V6 = Family.IPV4, Family.IPV6
# Chains only istio-iptables creates (ISTIO_OUTPUT is shared with ambient, told apart in generators.py).
SIDECAR_CHAINS = frozenset({ISTIO_INBOUND, ISTIO_REDIRECT, ISTIO_IN_REDIRECT, "ISTIO_DIVERT", "ISTIO_TPROXY",
                            "ISTIO_OUTPUT_DNS", "ISTIO_DROP"})


def releases() -> tuple[Release, ...]:
    """Every release layout netsim models, oldest first (``capture.config.layout_releases``), a minor's
    .0 written as (major, minor); the last is the current layout (1.25 on)."""
    return tuple(r[:2] if r[2] == 0 else r for r in layout_releases())


@dataclass(frozen=True, slots=True)
class Match:
    """One candidate compared with the dump at one release."""

    release: Release
    missing: int  # compiled rules not found in the dump (in order)
    leftover: frozenset[tuple[ChainKey, int]]  # dump rules (chain, 1-based position) the compile does not account for
    matched: frozenset[tuple[ChainKey, int]]  # dump rules the compile wrote


@dataclass(frozen=True, slots=True)
class SidecarFit:
    """The best candidate: its config, the releases that reproduce it, and what is left over."""

    config: CaptureConfig
    releases: tuple[Release, ...]  # consistent releases, oldest first (exact when ``exact``)
    exact: bool  # every compiled rule found in the dump
    missing: int
    leftover: frozenset[tuple[ChainKey, int]]
    matched: frozenset[tuple[ChainKey, int]]  # the dump's rules istio-iptables wrote (chain, 1-based position)
    notes: tuple[str, ...]


@functools.lru_cache(maxsize=4096)
def expected(config: CaptureConfig) -> Mapping[ChainKey, tuple[Tokens, ...]]:
    """What the kernel holds after ``config``'s rules are loaded into an empty namespace, as a View's chains.
    Raises RulesetError when the rules would not load (e.g. an owner group name iptables cannot resolve).

    Memoised twice: by config, and by the planned rules themselves, which most neighbouring releases
    share (the layouts differ in a few rules each), so each distinct ruleset is loaded once."""
    rules = plan(config)
    key = tuple((r.family, r.table, r.chain, r.args, r.position) for r in rules)
    found = _LOADED.get(key)
    if found is None:
        v4, v6 = payloads(rules, ipv6=writes_ip6tables(config))
        rulesets = {V4: apply_payload(v4), **({V6: apply_payload(v6)} if v6 is not None else {})}
        found = {(family, table.name, chain.name): tuple(tuple(rule_tokens(r)) for r in chain.rules)
                 for family, rs in rulesets.items() for table in rs.tables for chain in table.chains if chain.rules}
        if len(_LOADED) >= _MAX_LOADED:
            _LOADED.clear()
        _LOADED[key] = found
    return found


# distinct planned rulesets → their loaded chains (a fleet has a few hundred; bounded all the same)
_LOADED: dict[tuple[object, ...], Mapping[ChainKey, tuple[Tokens, ...]]] = {}
_MAX_LOADED = 4096


def compare(want: Mapping[ChainKey, tuple[Tokens, ...]], view: View, release: Release,
            tables: frozenset[str]) -> Match:
    """Find ``want``'s rules in the dump, each chain in order (a greedy subsequence match); rules of the
    dump's ``tables`` (and of the tables ``want`` writes to) left unmatched are the leftover."""
    tables = tables | {k[1] for k in want}
    missing = 0
    leftover: set[tuple[ChainKey, int]] = set()
    matched: set[tuple[ChainKey, int]] = set()
    families = {k[0] for k in view.chains}  # a family not pasted at all is not compared (only ip6tables-save)
    for key in {*(k for k in want if k[0] in families), *(k for k in view.chains if k[1] in tables)}:
        have = view.chains.get(key, ())
        need = want.get(key, ())
        j = 0
        for position, tokens in enumerate(have, 1):
            if j < len(need) and tokens == need[j]:
                j += 1
                matched.add((key, position))
            else:
                leftover.add((key, position))
        missing += len(need) - j
    return Match(release=release, missing=missing, leftover=frozenset(leftover), matched=frozenset(matched))


def fit(view: View) -> SidecarFit:
    """The options and releases that best reproduce the dump's istio-iptables rules (see the module doc)."""
    ipv6 = any(rules for (f, _, c), rules in view.chains.items() if f is V6 and c in SIDECAR_CHAINS | {ISTIO_OUTPUT})
    candidates = _candidates(view, ipv6)
    tables = frozenset({"nat", "mangle", "raw"})
    best: tuple[tuple[int, int], CaptureConfig, list[Match]] | None = None
    per_candidate: list[tuple[CaptureConfig, list[Match]]] = []
    # id(expected chains) → (those chains, kept alive so the id stays theirs; the comparison)
    compared: dict[int, tuple[Mapping[ChainKey, tuple[Tokens, ...]], Match]] = {}
    for config in candidates:
        matches: list[Match] = []
        for rel in releases():
            try:
                want = expected(replace(config, release=None if rel >= CURRENT_LAYOUT else rel))
            except RulesetError:
                continue
            if id(want) not in compared:
                compared[id(want)] = (want, compare(want, view, rel, tables))
            matches.append(replace(compared[id(want)][1], release=rel))
        if not matches:
            continue
        per_candidate.append((config, matches))
        score = min((m.missing, len(m.leftover)) for m in matches)
        if best is None or score < best[0]:
            best = (score, config, matches)
    if best is None:  # nothing compiles (not reached for values read off loaded rules)
        return SidecarFit(config=CaptureConfig(), releases=(), exact=False, missing=0, leftover=frozenset(),
                          matched=frozenset(), notes=("no candidate options could be compiled",))
    (missing, extra), config, matches = best
    chosen = [m for m in matches if (m.missing, len(m.leftover)) == (missing, extra)]
    notes: list[str] = []
    for other, other_matches in per_candidate:
        if other is config:
            continue
        alt = [m.release for m in other_matches if (m.missing, len(m.leftover)) == (missing, extra)]
        if alt:
            notes.append(f"also consistent with releases {_span(alt)} under other options: "
                         + _difference(config, other))
    return SidecarFit(config=replace(config, release=None), releases=tuple(m.release for m in chosen),
                      exact=missing == 0, missing=missing, leftover=chosen[0].leftover, matched=chosen[0].matched,
                      notes=tuple(notes))


def _span(rels: Iterable[Release]) -> str:
    rs = sorted(rels)
    first, last = rs[0], rs[-1]
    return f"{first[0]}.{first[1]}" if first == last else f"{first[0]}.{first[1]}–{last[0]}.{last[1]}"


def _difference(a: CaptureConfig, b: CaptureConfig) -> str:
    from netsim.infer.options import options_of

    oa, ob = options_of(a), options_of(b)
    return ", ".join(f"{k}={ob[k]!r}" for k in ob if oa.get(k) != ob[k]) or "the same options"


# --- reading candidate values off the rules -----------------------------------------------------------

def _candidates(view: View, ipv6: bool) -> list[CaptureConfig]:
    # the values every family shares are read off IPv4's rules, or IPv6's when only those were pasted
    main = V4 if any(rules for (f, _, c), rules in view.chains.items() if f is V4 and c in SIDECAR_CHAINS) else V6
    nat = functools.partial(view.rules, main, "nat")
    mangle = functools.partial(view.rules, main, "mangle")
    out4 = view.rules(V4, "nat", ISTIO_OUTPUT)
    out = nat(ISTIO_OUTPUT)

    tproxy = any(target(t) in ("TPROXY", "CONNMARK", "MARK", "ISTIO_DIVERT", "ISTIO_TPROXY")
                 for chain in ("PREROUTING", "OUTPUT", ISTIO_INBOUND, "ISTIO_DIVERT", "ISTIO_TPROXY")
                 for t in mangle(chain))
    proxy_port = _first(value(t, "--to-ports") for t in nat(ISTIO_REDIRECT)
                        if target(t) == "REDIRECT" and value(t, "--dport") is None) or "15001"
    inbound_port = _first(value(t, "--to-ports") for t in nat(ISTIO_IN_REDIRECT) if target(t) == "REDIRECT")
    inbound_port = inbound_port or _first(value(t, "--on-port") for t in mangle("ISTIO_TPROXY")) or "15006"
    tunnel = _tunnel_port(nat(ISTIO_INBOUND), out)
    mark = _mark(mangle)

    uids = _owners(out, "--uid-owner")
    gids = _owners(out, "--gid-owner")
    lo = _first(value(t, "-d") for t in view.rules(V4, "nat", ISTIO_OUTPUT)
                if negated(t, "-d") and value(t, "-o") == "lo" and (value(t, "-d") or "").startswith("127."))
    lo = lo or "127.0.0.1/32"  # ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR: a loopback prefix (Istio refuses others)

    table = "mangle" if tproxy else "nat"
    inbound_rules = view.rules(main, table, ISTIO_INBOUND)
    jumps_in = any(target(t) == ISTIO_INBOUND for t in view.rules(main, table, "PREROUTING"))
    capture_target = "ISTIO_TPROXY" if tproxy else ISTIO_IN_REDIRECT
    wildcard = any(target(t) == capture_target and value(t, "--dport") is None for t in inbound_rules)
    excludes: list[str] = []
    listed: list[str] = []
    for i, t in enumerate(inbound_rules):
        port = value(t, "--dport")
        if port is None or value(t, "-s") or value(t, "-i"):
            continue
        if target(t) == "RETURN" and not (i == 0 and table == "nat" and port == tunnel):
            excludes.append(port)
        elif target(t) == capture_target and port not in listed:
            listed.append(port)
    inbound: tuple[str, ...] = () if not jumps_in else (WILDCARD,) if wildcard else tuple(listed)

    excluded_ifaces = tuple(value(t, "-o") or "" for t in nat("OUTPUT")
                            if target(t) == "RETURN" and value(t, "-o") and len(t) == 4)
    virt = _kube_virt(nat("PREROUTING"), excluded_ifaces)

    include4, exclude4, _, _ = _outbound(out4, lo)
    _, _, out_ports, out_excl = _outbound(out, lo if main is V4 else "::1/128")
    include6, exclude6 = CidrList(), CidrList()
    if ipv6:
        include6, exclude6, _, _ = _outbound(view.rules(V6, "nat", ISTIO_OUTPUT), "::1/128")
    wildcard_out = include4.wildcard or include6.wildcard
    include = CidrList(wildcard=True) if wildcard_out else CidrList(v4=include4.v4, v6=include6.v6)
    exclude = CidrList(v4=exclude4.v4, v6=exclude6.v6)

    redirect_dns, capture_all, servers4 = _dns(view, V4)
    servers6: tuple[str, ...] = ()
    if ipv6:
        dns6, all6, servers6 = _dns(view, V6)
        redirect_dns, capture_all = redirect_dns or dns6, capture_all or all6

    drop_invalid = any(value(t, "--ctstate") == "INVALID" for t in mangle("PREROUTING"))
    # inputs only old releases read (history §2.2, §4.4, §4.9); every other release ignores them
    dns_capture = any(value(t, "--to-ports") == "15013" and target(t) == "REDIRECT" for t in nat("OUTPUT"))
    zones = any(target(t) == "CT" for chain in ("OUTPUT", "PREROUTING") for t in view.rules(main, "raw", chain))
    lo_redirect = any(value(t, "-o") == "lo" and negated(t, "-d") and target(t) in (ISTIO_REDIRECT, ISTIO_IN_REDIRECT)
                      for t in out)
    include_groups, exclude_groups = _owner_groups(out, gids, lo if main is V4 else "::1/128")

    base = CaptureConfig(
        proxy_port=proxy_port, inbound_capture_port=inbound_port, inbound_tunnel_port=tunnel,
        proxy_uid=uids or ("1337",), proxy_gid=gids or uids or ("1337",),
        mode=InterceptionMode.TPROXY if tproxy else InterceptionMode.REDIRECT, tproxy_mark=mark,
        inbound_ports=inbound, inbound_ports_exclude=tuple(excludes) if inbound == (WILDCARD,) else (),
        exclude_interfaces=excluded_ifaces, outbound_cidrs=include, outbound_cidrs_exclude=exclude,
        outbound_ports=out_ports, outbound_ports_exclude=out_excl, kube_virt_interfaces=virt,
        redirect_dns=redirect_dns, capture_all_dns=capture_all, drop_invalid=drop_invalid,
        owner_groups_include=include_groups, owner_groups_exclude=exclude_groups,
        ipv4_loopback_cidr=lo if lo != "127.0.0.1/32" else "127.0.0.1/32",
        enable_ipv6=ipv6, dns_servers_v4=servers4, dns_servers_v6=servers6,
        dns_capture=dns_capture, dns_conntrack_zone=zones, disable_loopback_redirect=not lo_redirect,
    )
    # -b '*' wrote an inbound SSH RETURN before 1.13 (history §4.14): a leading 22 may be that rule, or -d 22.
    if base.inbound_ports == (WILDCARD,) and base.inbound_ports_exclude[:1] == ("22",):
        return [replace(base, inbound_ports_exclude=base.inbound_ports_exclude[1:]), base]
    return [base]


def _first(items: Iterable[str | None]) -> str | None:
    return next((i for i in items if i), None)


def _tunnel_port(inbound: tuple[Tokens, ...], out: tuple[Tokens, ...]) -> str:
    if inbound and target(inbound[0]) == "RETURN" and value(inbound[0], "--dport") and len(inbound[0]) == 8:
        return value(inbound[0], "--dport") or "15008"
    for t in out:
        if target(t) == ISTIO_IN_REDIRECT:
            ports = value(t, "--dports") or value(t, "--dport")
            if ports:
                return ports.split(",")[-1]
    return "15008"


def _mark(mangle: Callable[[str], tuple[Tokens, ...]]) -> str:
    """-t: ISTIO_DIVERT's MARK, the TPROXY target's mark, the CONNMARK rules' match (1.9 on), or 1.6–1.8's
    mangle OUTPUT MARK from 127.0.0.1 (never the fixed 1338 mark of the 1.11 tail)."""
    for chain in ("ISTIO_DIVERT", "ISTIO_TPROXY", "PREROUTING", "OUTPUT"):
        for t in mangle(chain):
            raw = value(t, "--tproxy-mark") or (value(t, "--mark") if target(t) == "CONNMARK" else None)
            if target(t) == "MARK" and (chain == "ISTIO_DIVERT" or value(t, "-s")):
                raw = value(t, "--set-xmark")
            if raw and raw.split("/")[0].startswith("0x"):
                return str(int(raw.split("/")[0], 16))
    return "1337"


def _owners(out: tuple[Tokens, ...], kind: str) -> tuple[str, ...]:
    """The proxy's UIDs (GIDs): the owner of each lo → ISTIO_IN_REDIRECT rule (1.5 on), else of each plain
    owner RETURN (the script's layout), in rule order."""
    found: list[str] = []
    for t in out:
        if target(t) == ISTIO_IN_REDIRECT:
            found += [v for v, neg in values(t, kind) if not neg]
    if not found:
        found = [v for t in out if target(t) == "RETURN" and len(t) == 6
                 for v, neg in values(t, kind) if not neg]
    return tuple(found)


def _kube_virt(prerouting: tuple[Tokens, ...], excluded: tuple[str, ...]) -> tuple[str, ...]:
    """Each ``-I PREROUTING 1 -i X -j RETURN`` reverses the list; -c's RETURNs are appended (and named in OUTPUT)."""
    names = [value(t, "-i") or "" for t in prerouting
             if target(t) in ("RETURN", ISTIO_REDIRECT) and value(t, "-i") and not negated(t, "-i")]
    names = [n for n in dict.fromkeys(names) if n not in excluded]
    return tuple(reversed(names))


def _outbound(out: tuple[Tokens, ...], lo: str) -> tuple[CidrList, CidrList, tuple[str, ...], tuple[str, ...]]:
    include: list[str] = []
    exclude: list[str] = []
    ports: list[str] = []
    ports_excluded: list[str] = []
    wildcard = False
    seen_lo = False
    for t in out:
        dst = value(t, "-d") if not negated(t, "-d") else None
        shape = tuple(x for x in t if x not in (dst,))
        if target(t) == ISTIO_REDIRECT:
            if shape == ("-j", ISTIO_REDIRECT):
                wildcard = True
            elif dst and shape == ("-d", "-j", ISTIO_REDIRECT):
                include.append(dst)
            elif value(t, "-p") == "tcp" and value(t, "--dport") and len(t) == 8:
                ports.append(value(t, "--dport") or "")
        elif target(t) == "RETURN" and dst and shape == ("-d", "-j", "RETURN"):
            if not seen_lo and dst in (lo, "::1/128"):
                seen_lo = True
            else:
                exclude.append(dst)
        elif target(t) == "RETURN" and value(t, "-p") == "tcp" and value(t, "--dport") and len(t) == 8 \
                and not negated(t, "--dport"):
            ports_excluded.append(value(t, "--dport") or "")
    return (_cidrs(include, wildcard), _cidrs(exclude, False), tuple(dict.fromkeys(ports)),
            tuple(dict.fromkeys(ports_excluded)))


def _cidrs(items: list[str], wildcard: bool) -> CidrList:
    if wildcard:
        return CidrList(wildcard=True)
    parsed = [ip_interface(i) for i in items]
    return CidrList(v4=tuple(p for p in parsed if isinstance(p, IPv4Interface)),
                    v6=tuple(p for p in parsed if isinstance(p, IPv6Interface)))


def _dns(view: View, family: Family) -> tuple[bool, bool, tuple[str, ...]]:
    """(redirect-dns, capture-all-dns, resolvers) from the DNS redirects to the agent (any layout) and the
    port-53 exceptions the lo rules carry when DNS capture is on (1.9 on)."""
    on = False
    capture_all = False
    servers: list[str] = []
    for (fam, table, _), rules in view.chains.items():
        if fam is not family or table != "nat":
            continue
        for t in rules:
            to = value(t, "--to-ports") or value(t, "--to-destination") or ""
            if (target(t) in ("REDIRECT", "DNAT") and value(t, "--dport") == "53" and to.endswith(AGENT_DNS_PORT)) \
                    or (target(t) == "DNAT" and to.endswith(":15013")):
                on = True
                dst = value(t, "-d")
                if dst and target(t) == "REDIRECT":
                    servers.append(dst.rsplit("/", 1)[0])
                elif target(t) == "REDIRECT" and value(t, "-p") in ("tcp", "udp"):
                    capture_all = True
            elif (negated(t, "--dport") and value(t, "--dport") == "53") or (
                    negated(t, "--dports") and (value(t, "--dports") or "").startswith("53,")):
                on = True
    return on, capture_all, tuple(dict.fromkeys(servers))


def _owner_groups(out: tuple[Tokens, ...], gids: tuple[str, ...], lo: str) -> tuple[str, str]:
    """ISTIO_OUTBOUND_OWNER_GROUPS(_EXCLUDE) (§9): plain gid RETURNs beyond the proxy GIDs' own are the
    exclude list; one RETURN of ``! --gid-owner`` matches is the include list; a bare RETURN before the
    loopback RETURN is an empty include (everything returns)."""
    quota = {g: gids.count(g) for g in gids}
    exclude: list[str] = []
    include: list[str] | None = None
    for t in out:
        if target(t) != "RETURN" or value(t, "-o") or value(t, "-p") or value(t, "-d"):
            if value(t, "-d") == lo and not negated(t, "-d"):
                break
            continue
        owners = values(t, "--gid-owner")
        if not owners and t == ("-j", "RETURN"):
            include = []
            break
        if owners and all(neg for _, neg in owners) and not values(t, "--uid-owner"):
            include = [g for g, _ in owners]
        elif len(owners) == 1 and not owners[0][1]:
            g = owners[0][0]
            if quota.get(g, 0) > 0:
                quota[g] -= 1
            else:
                exclude.append(g)
    if include is not None:
        return ",".join(include), ""
    return WILDCARD, ",".join(exclude)


__all__ = ["SIDECAR_CHAINS", "Match", "SidecarFit", "compare", "expected", "fit", "releases"]
