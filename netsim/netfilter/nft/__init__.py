"""nftables: the model of ``nft list ruleset`` (tables of a family, base and regular chains, sets and maps,
rules as typed expressions), its reader, and its compilation into the engine's form, so that a packet is
traced through a namespace's nftables and iptables rules by one walker (``netsim.netfilter.engine``).

Knows nothing about Istio. ``model.py`` holds the values and their listing text, ``parse.py`` reads text,
``json_input.py`` reads ``nft -j`` JSON, ``evaluate.py`` compiles for the engine (both loaded on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsim.lazy import lazy_exports
from netsim.netfilter.nft.model import Chain, NftFamily, NftRuleset, Rule, Table, rule_text
from netsim.netfilter.nft.parse import parse_nft

if TYPE_CHECKING:
    from netsim.netfilter.nft.evaluate import compile_nft, untraced
    from netsim.netfilter.nft.json_input import parse_nft_any, parse_nft_json

__getattr__ = lazy_exports(__name__, {"netsim.netfilter.nft.evaluate": ("compile_nft", "untraced"),
                                      "netsim.netfilter.nft.json_input": ("parse_nft_any", "parse_nft_json")})

__all__ = ["Chain", "NftFamily", "NftRuleset", "Rule", "Table", "compile_nft", "parse_nft", "parse_nft_any",
           "parse_nft_json", "rule_text", "untraced"]
