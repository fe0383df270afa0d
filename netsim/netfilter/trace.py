"""The result of tracing one packet: every rule it met, what it became, and where it went.

Owns: :class:`Step` (one evaluated rule, policy, skipped run or kernel event), :class:`Trace` and
:class:`Outcome`. Steps are NamedTuples rather than frozen dataclasses: a trace creates dozens per
probe, and a frozen dataclass's ``object.__setattr__`` construction costs several times a tuple's
(the engine's ≥ 50,000 probes/s target, issue 3); a Trace is a frozen dataclass the engine fills in one
call (see the class). Both are immutable.

Never does: evaluate rules (``engine.py``) or format text (``render_trace.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from netsim.netfilter.packet import Address, Packet


@dataclass(frozen=True, slots=True, kw_only=True)
class BaseChain:
    """One base chain registered on a hook, whoever wrote it: ``backend`` is ``nft``, ``iptables-nft`` or
    ``iptables-legacy``; ``family`` nft's (``ip``, ``ip6``, ``inet``); ``priority`` the chain's own (nat chains
    all run at the nat hook's priority, ordered among themselves by theirs: spec/netfilter.md §1.1)."""

    backend: str
    family: str
    table: str
    chain: str
    hook: str
    priority: int
    nat: bool = False
    # who wrote the table when an nft listing shows it was not nft itself: "iptables-nft" for a table with
    # iptables-nft's layout (its rules are then in nft's words, ``backend`` stays "nft")
    writer: str = ""

    @property
    def written_by(self) -> str:
        """The backend that wrote the chain, as a user names it (JSON ``backend``)."""
        return self.writer or self.backend


class Kind(enum.Enum):
    RULE = "rule"  # a rule was evaluated (matched or not)
    POLICY = "policy"  # the packet fell off a base chain (or RETURNed from it)
    SKIPPED = "skipped"  # a run of rules the index proved cannot match (same failed condition)
    TABLE = "table"  # a table's base chain is entered at a hook (the kernel's PACKET: line)
    NOTE = "note"  # a kernel event that is not a rule: conntrack, routing, nat skipped, delivery
    # a NAT binding applied from the packet's existing conntrack entry, not from a rule (§1.3):
    # ``target`` DNAT/SNAT (the entry's binding), ``verdict`` "dst"/"src" (the field rewritten)
    CONNTRACK = "conntrack"


class Step(NamedTuple):
    """One thing that happened to the packet, in order.

    ``position`` is the rule's 1-based position in its chain (for SKIPPED the first skipped rule,
    ``end`` the last). ``verdict`` is the kernel's trace verdict of a matched rule (CONTINUE,
    ACCEPT, DROP, RETURN, JUMP, GOTO) or a policy. ``failed`` names the first condition that did not
    hold, as ``(condition, field, packet value)``. ``uncertain`` is set when the outcome rests on an
    assumption (an unknown match, a statistic branch, an unknown listener)."""

    pass_no: int
    hook: str
    table: str
    chain: str
    kind: Kind
    position: int = 0
    text: str = ""
    matched: bool = False
    verdict: str = ""
    target: str = ""
    failed: tuple[str, str, object] | None = None
    uncertain: str = ""
    end: int = 0
    packet: tuple[object, ...] = ()
    base: BaseChain | None = None  # the base chain whose traversal this step is part of (None: a kernel note)


class Outcome(enum.Enum):
    DELIVERED = "delivered"  # accepted by a local socket (a listener or the TPROXY socket)
    REFUSED = "refused"  # reached local input but nothing listens there (RST / port unreachable)
    SENT = "sent"  # left the namespace through a device
    DROPPED = "dropped"  # a DROP/REJECT rule or policy, TPROXY without a socket, no route
    QUEUED = "queued"  # handed to userspace (QUEUE/NFQUEUE): netsim cannot say more


@dataclass(frozen=True, slots=True)
class Endpoint:
    addr: Address
    port: int


@dataclass(frozen=True, slots=True)
class Branch:
    """A ``-m statistic`` rule the packet met: ``taken`` is the assumption this trace made."""

    table: str
    chain: str
    position: int
    text: str
    taken: bool


# Not slotted: the engine builds each Trace by handing it its ``__dict__`` in one call (engine._freeze; a frozen
# dataclass's ``__init__`` sets its 19 fields one ``object.__setattr__`` at a time, ~10 % of an ambient probe).
@dataclass(frozen=True, kw_only=True)
class Trace:
    """What the kernel does with ``packet``.

    ``final`` is the packet after NAT (its destination is the connection's original destination
    unless DNAT/REDIRECT changed it); ``original_dst`` is what SO_ORIGINAL_DST would return (None
    for UDP or a non-default zone, spec/netfilter.md §1.5). ``decided_by`` is the step that decided
    the outcome (a DROP, a NAT target, TPROXY) or None when the packet passed every chain."""

    packet: Packet
    steps: tuple[Step, ...]
    outcome: Outcome
    src: Endpoint
    dst: Endpoint
    in_iface: str | None
    out_iface: str | None
    mark: int
    zone: int
    ctstate: str
    looped: bool
    local_port: int | None
    transparent_socket: bool
    original_dst: Endpoint | None
    decided_by: Step | None
    reason: str
    uncertain: tuple[str, ...] = ()
    branches: tuple[Branch, ...] = ()
    ctmark: int = 0  # the connection's mark after the trace (what the entry keeps for later packets)

    @property
    def certain(self) -> bool:
        return not self.uncertain and not self.branches

    def matched(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.kind is Kind.RULE and s.matched)


__all__ = ["BaseChain", "Branch", "Endpoint", "Kind", "Outcome", "Step", "Trace"]
