"""A pod's live rules → which generator wrote them, which release, with which options, and what is foreign.

Owns: :func:`infer_rules` (rulesets → one :class:`Inference` per generator found) and :func:`infer_text`
(pasted text → the same, through ``netsim.netfilter.dump.read_pasted``). istio-iptables' part is
verified by compiling (``sidecar.fit``); the other generators are recognised by their chains
(``generators``). Every rule no generator accounts for is foreign, with its table, chain and position.

Never does: IO or rendering (``netsim.commands.infer`` prints; ``as_dict`` is the JSON contract of
issue 14: generator, releases, options, annotations, foreign, notes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netsim.capture.config import CURRENT_LAYOUT, LAYOUT_FLOOR, CaptureConfig
from netsim.infer import generators
from netsim.infer.ambient import AmbientFit
from netsim.infer.options import annotations_of, cni_signature, options_of
from netsim.infer.sidecar import SIDECAR_CHAINS, SidecarFit, fit, releases
from netsim.infer.view import ChainKey, View, line
from netsim.netfilter.dump import read_pasted
from netsim.netfilter.matches import DEFAULT_NAMES, Names
from netsim.netfilter.model import Family, Ruleset
from netsim.spec.releases import release_text

if TYPE_CHECKING:
    from netsim.netfilter.nft import NftRuleset

Release = tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Foreign:
    """A rule the inferred generator would not have written."""

    family: Family
    table: str
    chain: str
    position: int  # 1-based, in the chain as the dump holds it
    rule: str  # ``-A CHAIN …`` as iptables-save prints it


@dataclass(frozen=True, slots=True, kw_only=True)
class Inference:
    """One generator's share of a dump."""

    generator: str  # istio-sidecar, istio-cni, istio-ambient, linkerd, kube-proxy, other, unknown
    releases: tuple[str, str] | None  # (from, to); "current" as ``to`` for the current layout
    options: Mapping[str, object]
    annotations: Mapping[str, str]
    foreign: tuple[Foreign, ...]
    notes: tuple[str, ...]
    config: CaptureConfig | None = None  # istio-iptables' inferred input (istio-sidecar / istio-cni)
    exact: bool = True  # the options and releases reproduce the generator's rules exactly

    def as_dict(self) -> dict[str, object]:
        """The JSON contract (issue 14, Deliver 3)."""
        return {
            "generator": self.generator,
            "releases": None if self.releases is None else {"from": self.releases[0], "to": self.releases[1]},
            "options": dict(self.options),
            "annotations": dict(self.annotations),
            "foreign": [{"table": f.table, "chain": f.chain, "position": f.position, "rule": f.rule}
                        for f in self.foreign],
            "notes": list(self.notes),
        }


def _release_range(rels: tuple[Release, ...]) -> tuple[tuple[str, str], list[str]]:
    """(from, to) of the consistent layouts: ``to`` is the last release before the next layout that is not
    consistent (``1.10.1`` when 1.10.2 changed the rules, ``1.17`` for every 1.17.x), or ``current``."""
    points = releases()
    first, last = rels[0], rels[-1]
    notes = []
    span = points[points.index(first):points.index(last) + 1]
    if tuple(rels) != span:
        notes.append("the consistent releases are not contiguous: " + ", ".join(release_text(r) for r in rels))
    if last >= CURRENT_LAYOUT:
        return (release_text(first), "current"), notes
    after = points[points.index(last) + 1]
    to = release_text((*after[:2], after[2] - 1)) if len(after) == 3 else release_text(last[:2])
    return (release_text(first), to), notes


def _sidecar(result: SidecarFit) -> Inference:
    config = result.config
    notes = list(result.notes)
    span = None
    if result.releases:
        span, more = _release_range(result.releases)
        notes += more
    cni = cni_signature(config)
    generator = "istio-cni" if cni else "istio-sidecar"
    if cni:
        notes.append(f"written by the istio-cni plugin: {cni}; it writes the same rules as istio-init")
    else:
        notes.append("read as istio-init's: the istio-cni plugin writes the same rules, and nothing here shows "
                     "its defaults (-d ending 15020,15021,15090, outbound port 15020 excluded)")
    if not result.exact:
        floor = release_text(LAYOUT_FLOOR)
        notes.append(f"no modelled release ({floor} to today) writes exactly these rules: {result.missing} rule(s) "
                     "the closest one writes are missing (damaged rules, another generator, or a release before "
                     f"{floor})")
    first = result.releases[0] if result.releases else None
    annotations, more_notes = annotations_of(config, None if first is None or first >= CURRENT_LAYOUT else first,
                                             cni=bool(cni))
    notes += more_notes
    at = None if first is None or first >= CURRENT_LAYOUT else first
    return Inference(generator=generator, releases=span, options=options_of(config, at), annotations=annotations,
                     foreign=(), notes=tuple(notes), config=config, exact=result.exact)


def _ambient_fit(view: View) -> AmbientFit | None:
    from netsim.infer.ambient import fit as ambient_fit

    return ambient_fit(view)


def _ambient(result: AmbientFit) -> Inference:
    from netsim.infer.ambient import reproduce

    notes = ["istio-cni's ambient in-pod rules, verified by compiling every ambient release layout: "
             f"{reproduce(result)} writes them" + ("" if result.exact else " (the closest compile, not exactly)"),
             *result.notes,
             "the pod's policy routes (ip rule fwmark 0x111/0xfff lookup 100, table 100's local routes; "
             "spec/istio-ambient-capture.md §7) are not in a netfilter dump: nothing here shows them"]
    return Inference(generator="istio-ambient", releases=result.span, options=result.settings(),
                     annotations=result.annotations(), foreign=(), notes=tuple(notes), exact=result.exact)


def infer_rules(rulesets: Mapping[Family, Ruleset]) -> tuple[Inference, ...]:
    """Which generators wrote ``rulesets`` (a dump's IPv4 and IPv6 rules), one :class:`Inference` each,
    istio-iptables first; several when several generators' rules are there. A dump without any rule,
    or with none a known generator writes, gives one ``unknown`` inference. Raises nothing for any
    ruleset: what is not recognised is foreign."""
    view = View.of(rulesets)
    found: list[Inference] = []
    claimed: set[tuple[ChainKey, int]] = set()
    sidecar = any(rules for (_, _, c), rules in view.chains.items() if c in SIDECAR_CHAINS)
    if sidecar:
        result = fit(view)
        claimed |= result.matched
        found.append(_sidecar(result))
    ambient_fit = None if sidecar else _ambient_fit(view)
    if ambient_fit is not None:
        claimed |= ambient_fit.matched
        found.append(_ambient(ambient_fit))
    claims = [c for c in (None if ambient_fit is not None else generators.ambient(view, sidecar, claimed),
                          generators.linkerd(view),
                          generators.kube_proxy(view), generators.others(view)) if c is not None]
    for claim in claims:
        claim.rules -= claimed
        claimed |= claim.rules
    foreign = tuple(Foreign(family=key[0], table=key[1], chain=key[2], position=pos, rule=line(key[2], tokens))
                    for key, pos, tokens in view.all_rules() if (key, pos) not in claimed)
    for claim in claims:
        releases = (claim.releases["from"], claim.releases["to"]) if claim.releases else None
        found.append(Inference(generator=claim.generator, releases=releases, options=claim.options,
                               annotations={}, foreign=(), notes=tuple(claim.notes)))
    if not found:
        note = ("no rules at all: nothing captures or filters this pod's traffic" if view.empty
                else "no known generator's rules (istio-iptables, istio-cni ambient, Linkerd proxy-init, kube-proxy, "
                     "CNI plugins): every rule is listed as foreign")
        found.append(Inference(generator="unknown", releases=None, options={}, annotations={}, foreign=(),
                               notes=(note,)))
    out = []
    for inference in found:
        notes = inference.notes
        if foreign:
            notes = (*notes, f"{len(foreign)} rule(s) no recognised generator writes (listed as foreign)")
        if len(found) > 1:
            others = ", ".join(i.generator for i in found if i is not inference)
            notes = (*notes, f"the dump also holds rules of {others} (a separate object each)")
        out.append(Inference(generator=inference.generator, releases=inference.releases, options=inference.options,
                             annotations=inference.annotations, foreign=foreign, notes=notes,
                             config=inference.config, exact=inference.exact))
    return tuple(out)


def is_nft_text(text: str) -> bool:
    """Whether pasted text is nftables: an ``nft list ruleset`` listing, an ``nft -f`` transaction or ``nft -j``
    JSON (its first non-comment line begins so; no iptables form, istio-init log or container log does)."""
    first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    return first.startswith(("table ", "flush ruleset", "add table ")) or first.replace(" ", "").startswith(
        '{"nftables"')


def infer_nft(ruleset: NftRuleset) -> tuple[Inference, ...]:
    """Which generator wrote an ``nft list ruleset`` dump: istio-cni's ambient tables (``inet istio-ambient-*``,
    verified by compiling every release with the nftables backend, ``ambient.fit_nft``), the node's probe SNAT
    table (read by its shape), else ``unknown`` (netsim infers no other nftables generator)."""
    import re

    from netsim.infer.ambient import fit_nft, nft_chains

    result = fit_nft(ruleset)
    if result is not None:
        return (_ambient(result),)
    chains = nft_chains(ruleset)
    if chains:
        snat = next((m.group(1) for r in chains.get(("istio-ambient-nat", "postrouting"), ())
                     if (m := re.search(r"ip daddr @\S+ .*snat (?:ip )?to (\S+)", r))), "")
        return (Inference(generator="istio-ambient", releases=None, options={"HostProbeSNATAddress": snat},
                          annotations={}, foreign=(), notes=(
                              "the node's kubelet-probe SNAT table of istio-cni's ambient agent (nftables backend; "
                              "not a pod's rules; read by its shape: `netsim compile --mode ambient --node "
                              "--backend nft` prints what the agent writes)",)),)
    tables = ", ".join(f"{t.family.value} {t.name}" for t in ruleset.tables)
    return (Inference(generator="unknown", releases=None, options={}, annotations={}, foreign=(), notes=(
        f"an nftables ruleset without istio-cni's ambient tables ({tables or 'no tables'}): netsim infers "
        "ambient's nftables tables only (for other generators, give iptables-save output)",)),)


def infer_text(text: str, names: Names = DEFAULT_NAMES) -> tuple[Inference, ...]:
    """:func:`infer_rules` on pasted text (any form ``read_pasted`` reads; ``names`` resolves owner names in
    Istio's payloads). Raises RulesetError naming the line."""
    return infer_rules(read_pasted(text, names).rulesets)


__all__ = ["Foreign", "Inference", "infer_nft", "infer_rules", "infer_text", "is_nft_text"]
