"""One compiled configuration: Istio's restore payloads, the route commands, and the resulting rulesets.

Owns: bundling what :func:`compile_config` derives from one CaptureConfig, so every renderer (Istio
dry run, iptables-save, nft, JSON) and the lab start from the same value. Never does: IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from netsim.capture.config import CaptureConfig
from netsim.capture.iptables import PlannedRule, RouteCommand, payloads, plan, route_commands, writes_ip6tables
from netsim.netfilter.matches import DEFAULT_NAMES, Names
from netsim.netfilter.model import RestorePayload, Ruleset
from netsim.netfilter.parse import apply_payload


@dataclass(frozen=True, slots=True, kw_only=True)
class Compiled:
    """What istio-iptables would do for one config.

    ``v4``/``v6``: the ``iptables-restore --noflush`` payloads (``v6`` None when no ip6tables rule is written);
    ``ruleset_v4``/``ruleset_v6``: what the kernel holds after loading them into an empty namespace;
    ``routes``: the netlink steps that follow (``ip`` argv); ``rules``: the plan, with each rule's reason.
    """

    config: CaptureConfig
    rules: tuple[PlannedRule, ...]
    v4: RestorePayload
    v6: RestorePayload | None
    ruleset_v4: Ruleset
    ruleset_v6: Ruleset | None
    routes: tuple[RouteCommand, ...]


def compile_config(config: CaptureConfig, *, names: Names = DEFAULT_NAMES) -> Compiled:
    """Compile ``config`` (see :class:`Compiled`).

    ``names`` resolves owner-group names to GIDs as iptables does when it loads the rules; raises
    RulesetError when a name is unknown, as loading would fail.
    """
    rules = plan(config)
    v4, v6 = payloads(rules, ipv6=writes_ip6tables(config), names=names)
    return Compiled(
        config=config,
        rules=rules,
        v4=v4,
        v6=v6,
        ruleset_v4=apply_payload(v4),
        ruleset_v6=apply_payload(v6) if v6 is not None else None,
        routes=route_commands(config),
    )


__all__ = ["Compiled", "compile_config"]
