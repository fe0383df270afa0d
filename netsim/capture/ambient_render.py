"""The renderings of a compiled ambient configuration (``netsim compile --mode ambient --format …``).

Owns: ``iptables-save`` (what the kernel lists after the agent's restore, with §7's policy routes as
``#`` lines the restore ignores), Istio's golden text, the nft transaction (routes as ``#`` lines), and the
JSON document. Never does: IO, decide the mode or read options (``netsim.capture.cli``, ``netsim.spec.ambient``).

JSON schema (``"schema": "netsim.compile.ambient/v1"``)::

    {"schema", "mode": "ambient", "reason": str, "node": bool, "release": str | null, "backend": "iptables"|"nft",
     "config": {AmbientConfig field: value}, "pod_overrides": {PodOverrides field: value},
     "effective": {"dns_capture": bool, "inbound": "redirect"|"tproxy"|"bypassed", "ipv6": bool},
     "families": {"ipv4": FAMILY, "ipv6": FAMILY | null} | null,     # the iptables rules (iptables backend)
     "nft": str | null,                                                # the nft transaction (nft backend)
     "routes": [{"argv": [...], "ignore_exists": bool, "why": str}],
     "planned": [{"family": 4|6, "table", "chain", "op", "position", "args", "why"}] |
                [{"table", "chain", "rule", "why"}],                   # Istio's emission order
     "notes": [str]}
"""

from __future__ import annotations

import dataclasses
from typing import Any

from netsim.capture.ambient import AmbientCompiled, ingress_mode, tproxy_inbound
from netsim.netfilter.model import Ruleset
from netsim.netfilter.render import render_rule, render_save


def _routes_comment(compiled: AmbientCompiled) -> str:
    if not compiled.routes:
        return ""
    when = "after the rules" if compiled.config.native_nftables else "before the rules"
    lines = [f"# policy routing the agent adds in the pod {when} (spec/istio-ambient-capture.md §7):"]
    lines += [f"#   {' '.join(c.argv)}" for c in compiled.routes]
    return "".join(line + "\n" for line in lines)


def render_iptables_save(compiled: AmbientCompiled, family: str = "all") -> str:
    """What ``iptables-save`` (``ip6tables-save``) prints after the agent's restore; ValueError when the
    family asked for has no rules."""
    v4, v6 = compiled.rulesets()
    if family == "6" and v6 is None:
        raise ValueError("EnableIPv6 is off: the agent writes no ip6tables rules")
    if family == "4" or v6 is None:
        text = render_save(v4)
    elif family == "6":
        text = render_save(v6)
    else:
        text = "# IPv4: iptables-save\n" + render_save(v4) + "# IPv6: ip6tables-save\n" + render_save(v6)
    return text + _routes_comment(compiled)


def render_nft_text(compiled: AmbientCompiled) -> str:
    """The nft transaction (for the node preceded by its probe sets), then the policy routes as comments."""
    return compiled.nft_text() + _routes_comment(compiled)


def _value(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _value(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple | list):
        return [_value(x) for x in v]
    return v


def _ruleset(rs: Ruleset | None) -> Any:
    if rs is None:
        return None
    return {"tables": [{"name": t.name, "chains": [
        {"name": c.name, "policy": c.policy, "rules": [render_rule(c.name, r) for r in c.rules]}
        for c in t.chains]} for t in rs.tables]}


def render_json(compiled: AmbientCompiled, reason: str, family: str = "all") -> str:
    import json

    nft = compiled.config.native_nftables
    cfg = compiled.config
    families = None
    if not nft:
        v4, v6 = compiled.rulesets()
        families = {"ipv4": _ruleset(v4) if family in ("4", "all") else None,
                    "ipv6": _ruleset(v6) if family in ("6", "all") else None}
    if nft:
        planned: list[dict[str, Any]] = [{"table": r.table, "chain": r.chain, "rule": r.rule, "why": r.why}
                                         for r in compiled.nft_rules]
    else:
        planned = [{"family": r.family.value, "table": r.table, "chain": r.chain,
                    "op": "-A" if r.position is None else "-I", "position": r.position, "args": " ".join(r.args),
                    "why": r.why} for r in compiled.rules if family == "all" or str(r.family.value) == family]
    inbound = "bypassed" if ingress_mode(cfg, compiled.pod) else \
        "tproxy" if tproxy_inbound(cfg) else "redirect"
    doc = {"schema": "netsim.compile.ambient/v1", "mode": "ambient", "reason": reason, "node": compiled.node,
           "release": None if cfg.release is None else ".".join(map(str, cfg.release)),
           "backend": compiled.backend, "config": _value(cfg), "pod_overrides": _value(compiled.pod),
           "effective": {"dns_capture": compiled.dns, "inbound": None if compiled.node else inbound,
                         "ipv6": cfg.enable_ipv6},
           "families": families, "nft": compiled.nft_text() if nft else None,
           "routes": [{"argv": list(c.argv), "ignore_exists": c.ignore_exists, "why": c.why} for c in compiled.routes],
           "planned": planned, "notes": list(compiled.notes)}
    return json.dumps(doc, indent=2) + "\n"


__all__ = ["render_iptables_save", "render_json", "render_nft_text"]
