"""istio-cni's ambient in-pod rules in a dump → the node agent's settings, the pod's overrides and the releases
that wrote them, verified by compiling (``netsim.capture.ambient``).

Method (as for istio-iptables, ``sidecar.py``): read candidate values off the rules (each shows in one rule
shape, spec/istio-ambient-capture.md §3, §11): IPv6 rules present (``EnableIPv6``), a redirect to 15053
(DNS capture), the probe SNAT address of each family (rules 9/10), the virtual interfaces (rule 7), no
inbound redirect to 15006 (ingress mode), TPROXY in mangle (1.21–1.24's inbound); then compile each
candidate at every ambient release layout (``capture.ambient.AMBIENT_LAYOUTS``) and compare with the dump
chain by chain as kernel-canonical rule text (``sidecar.compare``). The releases whose compile equals the
dump are the range; ``exact`` when one does.

The answer is in the vocabulary ``netsim compile --mode ambient`` takes: ``--ambient-config`` keys (§2.1
names, ``spec.ambient.SETTINGS``) and the pod's annotations (§2.2). Never does: read files, render output.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netsim.capture.ambient import (
    AMBIENT_LAYOUTS,
    DEFAULT_SNAT_V6,
    NFT_NAT,
    OUTPUT,
    POSTRT,
    PRERT,
    ZTUNNEL_DNS,
    ZTUNNEL_INBOUND,
    ZTUNNEL_OUTBOUND,
    AmbientConfig,
    PodOverrides,
    compile_ambient,
)
from netsim.errors import NetsimError
from netsim.infer.sidecar import Match, compare
from netsim.infer.view import ChainKey, Tokens, View, negated, target, value
from netsim.netfilter.model import Family
from netsim.netfilter.render import rule_tokens

if TYPE_CHECKING:
    from netsim.netfilter.nft import NftRuleset

Layout = tuple[int, int, int]
NFT_PREFIX = "istio-ambient-"
V4, V6 = Family.IPV4, Family.IPV6
AMBIENT_CHAINS = frozenset({PRERT, OUTPUT, POSTRT})


def layout_text(rel: Layout) -> str:
    """``1.21``, ``1.23.1``: a layout's first release (a minor's .0 without its patch)."""
    return f"{rel[0]}.{rel[1]}" + (f".{rel[2]}" if rel[2] else "")


def layout_span(first: Layout, last: Layout) -> tuple[str, str]:
    """(from, to) of the layouts ``first``..``last``: ``to`` is the last release before the next layout
    (``1.22`` when 1.23.0 changed the rules, ``1.23.0`` when 1.23.1 did), ``current`` after the newest."""
    i = AMBIENT_LAYOUTS.index(last)
    if i == len(AMBIENT_LAYOUTS) - 1:
        return layout_text(first), "current"
    after = AMBIENT_LAYOUTS[i + 1]
    if after[:2] == last[:2]:
        to = f"{last[0]}.{last[1]}.{after[2] - 1}"
    elif after[2]:
        to = f"{after[0]}.{after[1]}.{after[2] - 1}"
    else:
        to = f"{after[0]}.{after[1] - 1}"
    start = layout_text(first)
    if first[2] == 0 and to.startswith(f"{first[0]}.{first[1]}.") and to.count(".") == 2:
        start = f"{first[0]}.{first[1]}.0"
    return start, to


def release_of(rel: Layout) -> tuple[int, ...] | None:
    """The release an AmbientConfig takes for a layout: None (current) for the newest."""
    return None if rel == AMBIENT_LAYOUTS[-1] else rel


@functools.lru_cache(maxsize=1024)
def expected(config: AmbientConfig, pod: PodOverrides) -> Mapping[ChainKey, tuple[Tokens, ...]] | None:
    """What the kernel holds after the agent's in-pod iptables rules for ``config`` and ``pod`` are loaded into
    an empty namespace, as a View's chains; None when the agent would not write them (no ambient before 1.21,
    TPROXY redirection outside 1.23.1–1.24, an IPv4 address in an IPv6 rule before 1.23)."""
    try:
        v4, v6 = compile_ambient(config, pod).rulesets()
    except (ValueError, NetsimError):
        return None
    rulesets = {V4: v4, **({V6: v6} if v6 is not None else {})}
    return {(family, table.name, chain.name): tuple(tuple(rule_tokens(r)) for r in chain.rules)
            for family, rs in rulesets.items() for table in rs.tables for chain in table.chains if chain.rules}


@dataclass(frozen=True, slots=True)
class AmbientFit:
    """The settings and overrides that best reproduce the dump's ambient rules, and where they do."""

    config: AmbientConfig  # release None; the settings read off the rules
    pod: PodOverrides
    releases: tuple[Layout, ...]  # the layouts whose compile equals the dump (the closest ones if not ``exact``)
    exact: bool
    missing: int
    matched: frozenset[tuple[ChainKey, int]]
    notes: tuple[str, ...]

    @property
    def span(self) -> tuple[str, str] | None:
        return layout_span(self.releases[0], self.releases[-1]) if self.releases else None

    def settings(self) -> dict[str, object]:
        """The ``--ambient-config`` settings (§2.1 names) that, with :meth:`annotations`, reproduce the dump."""
        c = self.config
        out: dict[str, object] = {"EnableIPv6": c.enable_ipv6, "RedirectDNS": c.redirect_dns,
                                  "HostProbeSNATAddress": c.host_probe_snat_address,
                                  "HostProbeV6SNATAddress": c.host_probe_v6_snat_address,
                                  "NativeNftables": c.native_nftables}
        if c.tproxy_redirection:
            out["TPROXYRedirection"] = True
        return out

    def annotations(self) -> dict[str, str]:
        from netsim.spec.ambient import ANN_BYPASS_INBOUND, ANN_DNS_CAPTURE, ANN_REROUTE

        out: dict[str, str] = {}
        if self.pod.ingress_mode:
            out[ANN_BYPASS_INBOUND] = "true"
        if self.pod.virtual_interfaces:
            out[ANN_REROUTE] = ",".join(self.pod.virtual_interfaces)
        if self.pod.dns_capture is not None:
            out[ANN_DNS_CAPTURE] = "true" if self.pod.dns_capture else "false"
        return out


def _address(tokens: Tokens, flag: str) -> str | None:
    v = value(tokens, flag)
    if v is None or negated(tokens, flag):
        return None
    return v.split("/")[0]


def _candidates(view: View) -> list[tuple[AmbientConfig, PodOverrides]]:
    main = V4 if view.rules(V4, "nat", OUTPUT) or view.rules(V4, "mangle", PRERT) else V6
    nat_out = view.rules(main, "nat", OUTPUT)
    prert = (*view.rules(main, "nat", PRERT), *view.rules(main, "mangle", PRERT))
    ipv6 = any(f is V6 and c in AMBIENT_CHAINS and rules for (f, _, c), rules in view.chains.items())
    dns = any(value(t, "--to-ports") == str(ZTUNNEL_DNS) for t in nat_out)
    inbound = any(str(ZTUNNEL_INBOUND) in (value(t, "--to-ports"), value(t, "--on-port")) for t in prert)
    tproxy = any(target(t) == "TPROXY" for t in prert)
    vifs = tuple(v for t in view.rules(main, "nat", PRERT) if value(t, "--to-ports") == str(ZTUNNEL_OUTBOUND)
                 for v in [value(t, "-i")] if v)

    def snat(family: Family) -> str | None:
        for t in view.rules(family, "nat", OUTPUT):
            if target(t) == "ACCEPT" and (a := _address(t, "-d")) is not None:
                return a
        for t in (*view.rules(family, "nat", PRERT), *view.rules(family, "mangle", PRERT)):
            if target(t) == "ACCEPT" and (a := _address(t, "-s")) is not None:
                return a
        return None

    s4 = snat(V4) or AmbientConfig().host_probe_snat_address
    s6 = snat(V6) or DEFAULT_SNAT_V6
    base = AmbientConfig(enable_ipv6=ipv6, redirect_dns=dns, host_probe_snat_address=s4,
                         host_probe_v6_snat_address=s6)
    pod = PodOverrides(ingress_mode=not inbound, virtual_interfaces=tuple(dict.fromkeys(vifs)))
    out = [(base, pod)]
    if tproxy:
        out.append((dataclasses.replace(base, tproxy_redirection=True), pod))
    if V6 not in view.families() and not ipv6:  # only iptables-save pasted: IPv6 cannot be told; try both
        out.append((dataclasses.replace(base, enable_ipv6=True), pod))
    return out


def fit(view: View) -> AmbientFit | None:
    """The best reproduction of the dump's ambient in-pod rules, or None when it has none (see the module
    docstring). Only chains of the tables ambient writes (nat, mangle, raw) are compared."""
    if not any(c in (PRERT, OUTPUT) and rules for (_, _, c), rules in view.chains.items()):
        return None
    tables = frozenset({"nat", "mangle", "raw"})
    best: tuple[tuple[int, int], AmbientConfig, PodOverrides, list[Match]] | None = None
    for config, pod in _candidates(view):
        matches: list[Match] = []
        for rel in AMBIENT_LAYOUTS:
            want = expected(dataclasses.replace(config, release=release_of(rel)), pod)
            if want is None:
                continue
            m = compare(want, view, rel, tables)
            leftover = {x for x in m.leftover if _istio(view, x)}
            matches.append(dataclasses.replace(m, leftover=frozenset(leftover)))
        if not matches:
            continue
        score = min((m.missing, len(m.leftover)) for m in matches)
        if best is None or score < best[0]:
            best = (score, config, pod, matches)
    if best is None:
        return None
    (missing, extra), config, pod, matches = best
    chosen = [m for m in matches if (m.missing, len(m.leftover)) == (missing, extra)]
    exact = missing == 0  # as for istio-iptables: every rule the compile writes is there, in order
    notes: list[str] = []
    rels = tuple(r for r in AMBIENT_LAYOUTS if any(m.release == r for m in chosen))
    contiguous = AMBIENT_LAYOUTS[AMBIENT_LAYOUTS.index(rels[0]):AMBIENT_LAYOUTS.index(rels[-1]) + 1]
    if rels != contiguous:
        notes.append("the consistent releases are not contiguous: " + ", ".join(layout_text(r) for r in rels))
    if any(r >= (1, 26, 0) for r in rels):
        on = "true" if config.redirect_dns else "false"
        notes.append(f"the same rules come from an agent with RedirectDNS={'false' if config.redirect_dns else 'true'}"
                     f" and the pod annotation ambient.istio.io/dns-capture: \"{on}\" (read from 1.26)")
    if V6 not in view.families():
        notes.append("only IPv4 rules were given: whether the agent's EnableIPv6 is on cannot be told from them "
                     "(give its ip6tables-save too)")
    if not exact:
        notes.append(f"no modelled release (1.21 to today) writes exactly these rules: {missing} rule(s) the "
                     "closest compile writes are missing (damaged rules, or another generator)")
    if extra:
        notes.append(f"{extra} rule(s) in ambient's chains the agent does not write (listed as foreign)")
    return AmbientFit(config=dataclasses.replace(config, release=None), pod=pod, releases=rels, exact=exact,
                      missing=missing, matched=chosen[0].matched, notes=tuple(notes))


def _istio(view: View, item: tuple[ChainKey, int]) -> bool:
    """Whether a dump rule is in one of ambient's chains or jumps to one (others are not the agent's)."""
    key, position = item
    if key[2] in AMBIENT_CHAINS:
        return True
    tokens = view.chains.get(key, ())[position - 1]
    return (target(tokens) or "") in AMBIENT_CHAINS


NftChains = Mapping[tuple[str, str], tuple[str, ...]]  # (table, chain) → rules in nft's normal form


def nft_chains(ruleset: NftRuleset) -> NftChains:
    """The ``inet istio-ambient-*`` tables' chains of an nft ruleset, every chain (empty ones too)."""
    from netsim.netfilter.nft import NftFamily, rule_text

    return {(t.name, c.name): tuple(rule_text(r) for r in c.rules) for t in ruleset.tables
            if t.family is NftFamily.INET and t.name.startswith(NFT_PREFIX) for c in t.chains}


@functools.lru_cache(maxsize=256)
def expected_nft(config: AmbientConfig, pod: PodOverrides) -> NftChains | None:
    """The agent's in-pod nftables tables for ``config`` and ``pod`` as ``nft list ruleset`` shows them after
    the transaction is loaded; None where the release has no nftables backend (before 1.28)."""
    from netsim.netfilter.nft import parse_nft

    try:
        return nft_chains(parse_nft(compile_ambient(dataclasses.replace(config, native_nftables=True), pod).nft_text()))
    except (ValueError, NetsimError):
        return None


def _nft_candidates(chains: NftChains) -> list[tuple[AmbientConfig, PodOverrides]]:
    import re

    rules = [r for rs in chains.values() for r in rs]
    out_rules = chains.get((NFT_NAT, "istio-output"), ())
    pre_rules = chains.get((NFT_NAT, "istio-prerouting"), ())

    def accept(family: str) -> str | None:
        for r in (*out_rules, *pre_rules):
            m = re.match(rf"meta l4proto tcp {family} [sd]addr (\S+) counter .*accept$", r)
            if m:
                return m.group(1)
        return None

    ipv6 = any(" ip6 " in f" {r} " for r in rules)
    dns = any(f"redirect to :{ZTUNNEL_DNS}" in r for r in rules)
    inbound = any(f"redirect to :{ZTUNNEL_INBOUND}" in r for r in pre_rules)
    vifs = tuple(dict.fromkeys(m.group(1) for r in pre_rules
                               if (m := re.match(r'iifname "?([^" ]+)"? .*redirect to :15001$', r))))
    base = AmbientConfig(enable_ipv6=ipv6, redirect_dns=dns, native_nftables=True,
                         host_probe_snat_address=accept("ip") or AmbientConfig().host_probe_snat_address,
                         host_probe_v6_snat_address=accept("ip6") or DEFAULT_SNAT_V6)
    pod = PodOverrides(ingress_mode=not inbound, virtual_interfaces=vifs)
    return [(base, pod)] + ([(dataclasses.replace(base, enable_ipv6=False), pod)] if ipv6 else [])


def fit_nft(ruleset: NftRuleset) -> AmbientFit | None:
    """:func:`fit` for an ``nft list ruleset`` dump: the agent's native nftables tables (1.28 on), each chain
    compared exactly; None when the dump has no ``istio-ambient-*`` table."""
    found = nft_chains(ruleset)
    if not found or ((NFT_NAT, "postrouting") in found and not found.get((NFT_NAT, "istio-output"))):
        return None  # none, or the node's probe SNAT table
    best: tuple[int, AmbientConfig, PodOverrides, list[Layout]] | None = None
    for config, pod in _nft_candidates(found):
        for rel in AMBIENT_LAYOUTS:
            want = expected_nft(dataclasses.replace(config, release=release_of(rel)), pod)
            if want is None:
                continue
            differ = sum(1 for k in {*want, *found} if want.get(k) != found.get(k))
            if best is None or differ < best[0] or (differ == best[0] and config == best[1] and pod == best[2]):
                if best is None or differ < best[0]:
                    best = (differ, config, pod, [])
                best[3].append(rel)
    if best is None:
        return None
    differ, config, pod, rels = best
    notes = [] if differ == 0 else [f"no modelled release (1.28 to today) writes exactly these nftables tables: "
                                    f"{differ} chain(s) differ from the closest compile"]
    if config.enable_ipv6 and (1, 28, 0) in rels:
        notes.append("at 1.28.0 the same tables also come from EnableIPv6=false (1.28.0 wrote its IPv6 rules "
                     "regardless; fixed in 1.28.1)")
    return AmbientFit(config=dataclasses.replace(config, release=None), pod=pod, releases=tuple(rels),
                      exact=differ == 0, missing=differ, matched=frozenset(), notes=tuple(notes))


def reproduce(fit: AmbientFit) -> str:
    """The ``netsim compile`` command line that reproduces the dump at the range's first release."""
    settings = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in fit.settings().items())
    first = fit.releases[0] if fit.releases else AMBIENT_LAYOUTS[-1]
    version = "" if first == AMBIENT_LAYOUTS[-1] else f" --istio-version {layout_text(first)}"
    annotations = fit.annotations()
    pod = f" (pod annotations: {', '.join(f'{k}: {v!r}' for k, v in annotations.items())})" if annotations else ""
    return f"netsim compile --mode ambient{version} --ambient-config {settings}{pod}"


__all__ = ["AMBIENT_CHAINS", "AmbientFit", "expected", "expected_nft", "fit", "fit_nft", "layout_span", "layout_text",
           "nft_chains", "release_of", "reproduce"]
