"""The answer to "where does this connection go": a value computed from the trace's steps.

Owns: :class:`Verdict` (captured by the sidecar's outbound, inbound or DNS listener, bypassed,
dropped, looped, uncertain), :class:`DecidedBy` (the rule that decided it), :class:`ListenerRef`
(the sidecar listener that got it) and :class:`Decision`, which carries the three with the hop they
come from. ``netsim.workload.hops`` computes the decision from the kernel's steps; every sentence,
matrix cell, JSON field and exit status is rendered from it, so they cannot disagree.

Never does: trace packets, or print.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from netsim.netfilter.packet import Address
from netsim.netfilter.trace import Kind, Step


class Verdict(enum.Enum):
    """What happened to the connection's first packet, as the contract names it."""

    CAPTURED_OUTBOUND = "captured-outbound"
    CAPTURED_INBOUND = "captured-inbound"
    CAPTURED_DNS = "captured-dns"
    BYPASSED = "bypassed"
    DROPPED = "dropped"
    LOOPED = "looped"
    UNCERTAIN = "uncertain"

    @property
    def captured(self) -> bool:
        return self in (Verdict.CAPTURED_OUTBOUND, Verdict.CAPTURED_INBOUND, Verdict.CAPTURED_DNS)

    def holds(self, expect: str) -> bool:
        """``--expect``: ``captured`` is any captured-*; else the verdict's own name."""
        return self.captured if expect == "captured" else self.value == expect


EXPECTABLE = ("captured", "bypassed", "dropped")  # what ``trace --expect`` accepts


@dataclass(frozen=True, slots=True)
class DecidedBy:
    """The rule that decided a verdict: where it sits and its text as ``iptables-save`` prints it."""

    table: str
    chain: str
    position: int
    rule: str
    # who wrote an nftables-listed chain and its family (an iptables-only trace names neither)
    backend: str = ""
    family: str = ""

    @classmethod
    def of(cls, step: Step) -> DecidedBy:
        b = step.base
        if b is not None and b.backend == "nft":
            return cls(step.table, step.chain, step.position, step.text, b.written_by, b.family)
        return cls(step.table, step.chain, step.position, step.text)

    def to_json(self) -> dict[str, Any]:
        out = {"table": self.table, "chain": self.chain, "position": self.position, "rule": self.rule}
        return out | ({"backend": self.backend, "family": self.family} if self.backend else {})

    @property
    def ref(self) -> str:
        where = f"{self.backend} {self.family} " if self.backend else ""
        return f"{where}{self.table} {self.chain} rule {self.position} `{self.rule}`"

    def is_step(self, step: Step) -> bool:
        return step.kind is Kind.RULE and (step.table, step.chain, step.position, step.text) == (
            self.table, self.chain, self.position, self.rule)


@dataclass(frozen=True, slots=True)
class ListenerRef:
    """The listening socket that received a captured connection."""

    address: Address
    port: int
    owner: str = "sidecar"

    def to_json(self) -> dict[str, Any]:
        return {"address": str(self.address), "port": self.port, "owner": self.owner}


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The verdict, the rule that decided it (None: a policy, the routing or conntrack did, and
    ``reason`` says which), the sidecar listener for a captured connection, and ``hop``: the index of
    the hop whose steps decided it."""

    verdict: Verdict
    decided_by: DecidedBy | None
    reason: str
    listener: ListenerRef | None = None
    hop: int = 0
    # what decided when no rule did: "policy", "routing", "conntrack", "addressed to it", "userspace"
    basis: str = "policy"

    def __post_init__(self) -> None:
        if (self.listener is not None) != self.verdict.captured:
            raise ValueError(f"a {self.verdict.value} decision {'needs' if self.verdict.captured else 'has no'} "
                             "listener")

    def to_json(self) -> dict[str, Any]:
        """The contract's three fields, plus ``reason``."""
        return {"verdict": self.verdict.value,
                "decided_by": None if self.decided_by is None else self.decided_by.to_json(),
                "reason": self.reason,
                "listener": None if self.listener is None else self.listener.to_json()}

    @property
    def cell(self) -> str:
        """The capture matrix's short text for it."""
        return {Verdict.CAPTURED_OUTBOUND: "captured", Verdict.CAPTURED_INBOUND: "captured",
                Verdict.CAPTURED_DNS: "captured (dns)"}.get(self.verdict, self.verdict.value)

    @property
    def rule_cell(self) -> str:
        """The capture matrix's "rule" column: the deciding rule's place, or what decided instead."""
        if self.decided_by is not None:
            return f"{self.decided_by.table} {self.decided_by.chain} #{self.decided_by.position}"
        return f"(no rule: {self.basis})"


__all__ = ["EXPECTABLE", "DecidedBy", "Decision", "ListenerRef", "Verdict"]
