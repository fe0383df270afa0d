"""Istio's dry-run text: what ``istio-iptables --dry-run`` records, byte for byte (its golden format).

Owns: the restore payload text Istio pipes into ``iptables-restore --noflush`` (``* table``, ``-N`` in
first-use order, rules in emission order, ``COMMIT``; spec §5) and the recorded command list around
it (state probes before, final dumps after; conformance README "The iptables golden format").
Never does: IO, or the kernel's canonical form (that is ``netsim.netfilter.render``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from netsim.capture.config import CaptureConfig
from netsim.capture.iptables import BUILTIN, PlannedRule, plan, writes_ip6tables
from netsim.netfilter.model import Family, RestorePayload

# Istio's BuiltInChainsMap: never declared with -N (verdicts included, for "-j RETURN" as a jump target).
_UNDECLARED = BUILTIN | {"ACCEPT", "RETURN", "DROP", "REJECT"}


class _Op(Protocol):
    """What a rule line needs: a RuleOp of a payload, or a PlannedRule of one family."""

    @property
    def table(self) -> str: ...
    @property
    def chain(self) -> str: ...
    @property
    def args(self) -> tuple[str, ...]: ...
    @property
    def position(self) -> int | None: ...


Payload = RestorePayload | Sequence[PlannedRule]


def _ops(payload: Payload) -> Sequence[_Op]:
    return payload.ops if isinstance(payload, RestorePayload) else payload


def _rule_line(op: _Op) -> str:
    head = ["-A", op.chain] if op.position is None else ["-I", op.chain, str(op.position)]
    return " ".join([*head, *op.args])


def render_restore(payload: Payload) -> str:
    """The payload (or one family's planned rules) as Istio writes it for ``iptables-restore --noflush``.

    "" when there are no rules.

    Tables in alphabetical order, only those with rules; per table, ``-N`` for each non-built-in chain
    in order of first use as a rule's chain, then for chains only ever jumped to (``-j X`` as the last
    two tokens); then every rule line in emission order; then ``COMMIT``.
    """
    tables: dict[str, list[str]] = {}
    declared: set[tuple[str, str]] = set()

    def declare(table: str, chain: str) -> None:
        if (table, chain) in declared:
            return
        declared.add((table, chain))
        if chain not in _UNDECLARED:
            tables.setdefault(table, []).append(f"-N {chain}")

    ops = _ops(payload)
    for op in ops:
        declare(op.table, op.chain)
    for op in ops:
        if len(op.args) >= 2 and op.args[-2] == "-j":
            declare(op.table, op.args[-1])
    for op in ops:
        tables.setdefault(op.table, []).append(_rule_line(op))
    lines: list[str] = []
    for table in sorted(tables):
        lines += [f"* {table}", *tables[table], "COMMIT"]
    return "".join(line + "\n" for line in lines)


def render_dry_run(v4: Payload, v6: Payload | None) -> str:
    """The whole recorded command list of an istio-iptables dry run, one entry per line.

    ``iptables-save`` and ``ip6tables-save`` (the state check; the IPv6 probe is there even with IPv6
    off), the IPv4 payload, the IPv6 payload when IPv6 is on, then the final ``iptables-save`` and,
    with IPv6, ``ip6tables-save``.
    """
    parts = [Family.IPV4.save_command, Family.IPV6.save_command]
    for payload in (v4, v6):
        if payload is not None:
            parts += render_restore(payload).splitlines()
    parts.append(Family.IPV4.save_command)
    if v6 is not None:
        parts.append(Family.IPV6.save_command)
    return "\n".join(parts) + "\n"


def dry_run(config: CaptureConfig) -> str:
    """``render_dry_run`` straight from a config: no rule is parsed, so group names need no lookup."""
    rules = plan(config)
    v4 = [r for r in rules if r.family is Family.IPV4]
    v6 = [r for r in rules if r.family is Family.IPV6] if writes_ip6tables(config) else None
    return render_dry_run(v4, v6)


__all__ = ["dry_run", "render_dry_run", "render_restore"]
