"""``netsim infer``: read a pod's pasted rules, print which generator, release range and options wrote them.

A thin shell over :func:`netsim.infer.infer_rules`: reads the files (``netsim.reader``), hands the text to
``netsim.netfilter.dump.read_pasted``, and renders the inferences as text or as the JSON of issue 14
(one object, or a list when several generators' rules are in the dump). Exit 0 for an answer, 2 for
input it cannot read (one ``Error:`` line naming the file and line).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from netsim.commands.options import PathsOption
from netsim.errors import NetsimError, RulesetError
from netsim.reader import display_name, read_group_file, read_text

if TYPE_CHECKING:
    from netsim.infer import Inference


@click.command("infer")
@click.option("--rules", "rules_files", cls=PathsOption, multiple=True, required=True, type=click.Path(),
              metavar="FILE…",
              help="The pod's rules as pasted: iptables-save / ip6tables-save (legacy or nft, with or without "
                   "counters), iptables -S listings, an istio-init log, Istio's golden formats, or an nft list "
                   "ruleset (ambient's nftables tables are inferred from it). Several "
                   "files are one pod's (e.g. its iptables-save and ip6tables-save); - is standard input.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--group-file", metavar="FILE", default=None,
              help="/etc/group-format file to resolve owner-group names in Istio's payloads with "
                   "(default: this machine's groups; saved rules hold numbers).")
def infer_cmd(rules_files: tuple[str, ...], fmt: str, group_file: str | None) -> None:
    """Tell which generator wrote a pod's rules, in which release range, with which options.

    Generators: istio-sidecar (istio-iptables run by istio-init), istio-cni (the same rules, told apart
    by the CNI plugin's defaults), istio-ambient, linkerd (proxy-init), kube-proxy, other (CNI plugins),
    unknown. For Istio's sidecar rules the options are verified by compiling every modelled release:
    `netsim compile --istio-version FROM` with the options reproduces the dump's Istio rules. Every rule
    no recognised generator writes is listed as foreign, with its table, chain and position.

    \b
    Examples:
      kubectl exec POD -c istio-proxy -- iptables-save > pod.rules; netsim infer --rules pod.rules
      kubectl logs POD -c istio-init | netsim infer --rules - --format json
    """
    from netsim.infer import infer_rules
    from netsim.infer.core import is_nft_text
    from netsim.netfilter.dump import read_pasted
    from netsim.netfilter.matches import Names
    from netsim.netfilter.model import Family, Ruleset

    names = Names.resolving(read_group_file(group_file) if group_file else None)
    rulesets: dict[Family, Ruleset] = {}
    origin: dict[Family, str] = {}
    nft: list[Inference] = []
    for path in rules_files:
        try:
            text = read_text(path)
            if is_nft_text(text):
                from netsim.infer import infer_nft
                from netsim.netfilter.nft import parse_nft_any

                nft.extend(infer_nft(parse_nft_any(text)))
                continue
            pasted = read_pasted(text, names)
        except NetsimError as e:
            raise (e if e.where else e.at(display_name(path))) from None
        for family, ruleset in pasted.rulesets.items():
            if family in rulesets:
                raise RulesetError(f"both {origin[family]} and {display_name(path)} hold IPv{family.value} rules: "
                                   "give one pod's rules (its iptables-save and ip6tables-save)")
            rulesets[family], origin[family] = ruleset, display_name(path)
    inferences = (*infer_rules(rulesets), *nft) if rulesets or not nft else tuple(nft)
    if fmt == "json":
        docs = [i.as_dict() for i in inferences]
        click.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
        return
    click.echo(_text(inferences), nl=False)


def _text(inferences: tuple[Inference, ...]) -> str:
    out: list[str] = []
    for inference in inferences:
        rel = inference.releases
        span = "release not known" if rel is None else f"releases {rel[0]} to {rel[1]}" if rel[0] != rel[1] \
            else f"release {rel[0]}"
        out.append(f"{inference.generator}: {span}" + ("" if inference.exact else " (closest, not exact)"))
        if inference.options:
            out.append("  options:")
            out += [f"    {key}: {_shown(value)}" for key, value in inference.options.items()]
        if inference.annotations:
            out.append("  pod annotations:")
            out += [f"    {key}: {value}" for key, value in inference.annotations.items()]
        out += [f"  note: {note}" for note in inference.notes]
        out.append("")
    foreign = inferences[0].foreign if inferences else ()  # the same rules in every object: printed once
    if foreign:
        out.append(f"foreign rules ({len(foreign)}), written by none of the above:")
        out += [f"  {'ip6tables' if f.family.value == 6 else 'iptables'} -t {f.table} {f.chain} #{f.position}: "
                f"{f.rule}" for f in foreign]
        out.append("")
    return "\n".join(out)


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or '""'
    return str(value) if value != "" else '""'


__all__ = ["infer_cmd"]
