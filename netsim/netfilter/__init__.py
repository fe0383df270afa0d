"""The generic netfilter model: parse and render iptables rulesets, and (engine) trace packets.

Knows nothing about Istio. See ``model.py`` for the values, ``parse.py``/``render.py`` for text,
``packet.py``/``trace.py`` for a packet, its namespace and what happened to it, ``engine.py`` for the
walk and ``dump.py`` for a whole ``iptables-save; ip6tables-save`` file. Following a connection
across the sidecar is ``netsim.workload``'s (it knows the sidecar; this package knows no proxy).

Import cost stays small (``netsim compile`` and every ``--help`` pay it): the model, the matches and
the parser load with the package; the engine, the packet model, the trace steps, the renderers and the
dump reader on first use of one of their names (PEP 562 ``__getattr__``).
``trace`` is the engine's function, not the ``trace`` submodule (import that module's names as
``from netsim.netfilter.trace import Step``): the package drops the submodule's binding when it
loads (:func:`netsim.lazy.keep_over_submodules`), so no import can rebind the name to the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsim.lazy import keep_over_submodules, lazy_exports
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
from netsim.netfilter.parse import (
    apply_payload,
    parse_command_log,
    parse_dry_run,
    parse_payload,
    parse_rule_args,
    parse_ruleset,
    tokenize,
)

if TYPE_CHECKING:
    from netsim.netfilter.dump import parse_dump, split_families
    from netsim.netfilter.engine import CompiledRuleset, compile_ruleset, describe_failure, trace, trace_branches
    from netsim.netfilter.packet import (
        Address,
        Conntrack,
        CtState,
        FwmarkRoute,
        Interface,
        Listener,
        Netns,
        Origin,
        Packet,
        Proto,
        Socket,
    )
    from netsim.netfilter.render import render_rule, render_save, rule_tokens
    from netsim.netfilter.trace import Branch, Endpoint, Kind, Outcome, Step, Trace

# name -> the module that defines it, imported on first use: what compiling rules needs (model, matches,
# parse) loads with the package; the packet model, the trace, the renderers and the dump reader only when
# a command uses them (compile --pod need none of them)
__getattr__ = lazy_exports(__name__, {
    "netsim.netfilter.engine": ("CompiledRuleset", "compile_ruleset", "describe_failure", "trace", "trace_branches"),
    "netsim.netfilter.dump": ("parse_dump", "split_families"),
    "netsim.netfilter.packet": ("Address", "Conntrack", "CtState", "FwmarkRoute", "Interface", "Listener", "Netns",
                                "Origin", "Packet", "Proto", "Socket"),
    "netsim.netfilter.render": ("render_rule", "render_save", "rule_tokens"),
    "netsim.netfilter.trace": ("Branch", "Endpoint", "Kind", "Outcome", "Step", "Trace"),
})
keep_over_submodules(__name__, ["trace"])  # ``trace`` is the engine's function, never the submodule

__all__ = [
    "Address",
    "Branch",
    "Chain",
    "CompiledRuleset",
    "Conntrack",
    "CtState",
    "Endpoint",
    "Family",
    "FwmarkRoute",
    "Interface",
    "Kind",
    "Listener",
    "Match",
    "Names",
    "Netns",
    "Option",
    "Origin",
    "Outcome",
    "Packet",
    "Proto",
    "RestorePayload",
    "Rule",
    "RuleOp",
    "Ruleset",
    "Socket",
    "Step",
    "Table",
    "Target",
    "Trace",
    "apply_payload",
    "compile_ruleset",
    "describe_failure",
    "parse_command_log",
    "parse_dry_run",
    "parse_dump",
    "parse_payload",
    "parse_rule_args",
    "parse_ruleset",
    "render_rule",
    "render_save",
    "rule_tokens",
    "split_families",
    "tokenize",
    "trace",
    "trace_branches",
]
