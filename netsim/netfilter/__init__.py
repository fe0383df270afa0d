"""The generic netfilter model: parse and render iptables rulesets, and (engine) trace packets.

Knows nothing about Istio. See ``model.py`` for the values, ``parse.py``/``render.py`` for text.
"""

from netsim.netfilter.matches import Names
from netsim.netfilter.model import (
    Chain,
    Family,
    Match,
    Option,
    RestorePayload,
    Rule,
    RuleOp,
    Ruleset,
    Table,
    Target,
)
from netsim.netfilter.parse import apply_payload, parse_payload, parse_rule_args, parse_ruleset, tokenize
from netsim.netfilter.render import render_rule, render_save, rule_tokens

__all__ = [
    "Chain",
    "Family",
    "Match",
    "Names",
    "Option",
    "RestorePayload",
    "Rule",
    "RuleOp",
    "Ruleset",
    "Table",
    "Target",
    "apply_payload",
    "parse_payload",
    "parse_rule_args",
    "parse_ruleset",
    "render_rule",
    "render_save",
    "rule_tokens",
    "tokenize",
]
