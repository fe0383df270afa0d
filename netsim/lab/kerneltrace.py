"""The kernel's own packet traces, read into netsim's ``xtables-trace`` form so the two compare line by line.

Owns (pure, standard library only): the nft rule handle → position map (:func:`handle_positions`,
:func:`nft_positions`), parsing ``xtables-monitor --trace`` (:func:`parse_monitor`) and ``nft -a monitor trace``
(:func:`parse_nft_monitor` for iptables rules, verdicts only; :func:`nft_trace_lines` whole lines in
``--format nft-trace`` form, for nftables rules) output per probe source port, and the normalising of lines on
both sides (:func:`packet_line`, :func:`packet_fields`, :func:`kernel_view`, :func:`monitor_noise`). Used by
``lab verify`` and by the kernel-differential tests and bench (``tests/trace/kernel_diff.py``,
``tests/netfilter/nft_kernel_diff.py``); spec/netfilter.md §4 describes the method.

A probe is its first packet (the SYN, or the one datagram), identified by its unique source port; a packet
that re-enters through ``lo`` gets a new trace id but keeps its source port, so both passes land on the same
probe. IPv4 is compared as whole lines (xtables-monitor prints the rule in iptables-save syntax); for IPv6
the pinned xtables-monitor (1.8.9) cannot print rules with layer-4 matches and exits, so nft's monitor is
read, and only each event's ``table:chain:rule:N:VERDICT`` head is compared.

Never does: run a command, send a packet or import pyroute2 (callers run the monitors and ``nft``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator

from netsim.errors import LabError

RETURN_AS_PRINTED = "0xfffffffb"  # xtables-monitor 1.8.9 prints an explicit RETURN verdict raw (§4)

Positions = dict[tuple[str, str, int], int]  # (table, chain, nft handle) → 1-based position in the chain


def handle_positions(nft_json: str, nft_family: str = "ip") -> tuple[Positions, set[tuple[str, str]]]:
    """From ``nft -j -a list ruleset``: each rule's nft handle → its 1-based position in its chain, and the
    base chains that exist (a built-in chain iptables-nft never created prints nothing, §4), for one family
    (``ip`` or ``ip6``). Raises LabError if the text is not nft's JSON."""
    try:
        items = json.loads(nft_json)["nftables"]
    except (ValueError, KeyError, TypeError) as e:
        raise LabError(f"cannot read nft -j output: {e}") from None
    counters: dict[tuple[str, str], int] = {}
    positions: Positions = {}
    bases: set[tuple[str, str]] = set()
    for item in items:
        chain = item.get("chain")
        if chain and chain.get("family") == nft_family and "hook" in chain:
            bases.add((chain["table"], chain["name"]))
        rule = item.get("rule")
        if not rule or rule.get("family") != nft_family:
            continue
        key = (rule["table"], rule["chain"])
        counters[key] = counters.get(key, 0) + 1
        positions[(rule["table"], rule["chain"], rule["handle"])] = counters[key]
    return positions, bases


def packet_line(rest: str) -> str:
    """A kernel PACKET line reduced to the fields netsim prints: IN, LOOPBACK, OUT, SRC, DST, SPORT,
    DPORT, MARK (not LEN/TTL/ID/MAC/flags, which describe the wire packet, not the rules' view)."""
    fields: dict[str, str] = {}
    flags = set()
    for tok in rest.split():
        key, eq, value = tok.partition("=")
        if eq:
            fields[key] = value
        else:
            flags.add(tok)
    parts = ["PACKET:"]
    if fields.get("IN"):
        parts.append(f"IN={fields['IN']}")
        if "LOOPBACK" in flags:
            parts.append("LOOPBACK")
    if fields.get("OUT"):
        parts.append(f"OUT={fields['OUT']}")
    parts += [f"SRC={fields.get('SRC')}", f"DST={fields.get('DST')}"]
    if "SPORT" in fields:
        parts += [f"SPORT={fields['SPORT']}", f"DPORT={fields['DPORT']}"]
    if "MARK" in fields:
        parts.append(f"MARK={fields['MARK']}")
    return " ".join(parts)


_LATER_TCP = re.compile(r"\b(ACK|FIN|RST)\b")
_EVENT = re.compile(r"^\s*(PACKET|TRACE): (\d+) ([0-9a-f]+) (.*?)\s*$")


def parse_monitor(text: str, positions: Positions, *, packets: bool = False) -> dict[int, list[str]]:
    """``xtables-monitor --trace`` output → per probe source port, its TRACE lines in netsim's form: the rule's
    position instead of its nft handle (-1 if unknown), no trace id, no ``-4 -t TABLE`` prefix. With
    ``packets``, each probe PACKET line too, as :func:`packet_line` reduces it."""
    sport_of: dict[str, int] = {}
    out: dict[int, list[str]] = {}
    for line in text.splitlines():
        m = _EVENT.match(line)
        if not m:
            continue
        kind, _family, tid, rest = m.groups()
        if kind == "PACKET":
            sp = re.search(r"\bSPORT=(\d+)", rest)
            # Later packets of an accepted connection are not selected by the TRACE rules, but are skipped
            # here too should one be traced.
            if sp and not _LATER_TCP.search(rest):
                sport_of[tid] = int(sp.group(1))
                if packets:
                    out.setdefault(int(sp.group(1)), []).append(packet_line(rest))
            else:
                sport_of.pop(tid, None)
            continue
        sport = sport_of.get(tid)
        if sport is None:
            continue
        event = trace_line(rest, positions)
        if event is not None:
            out.setdefault(sport, []).append(event)
    return out


def trace_line(rest: str, positions: Positions) -> str | None:
    """A ``TRACE:`` event of ``xtables-monitor --trace`` (what follows its trace id) in netsim's form: the rule's
    position instead of its nft handle (-1 if unknown), no ``-4 -t TABLE`` prefix; None if it names no rule
    or policy."""
    head, _, ruletext = rest.partition("  ")
    parts = head.split(":")
    if len(parts) < 4:
        return None
    table, chain, what = parts[0], parts[1], parts[2]
    if what == "policy":
        return f"TRACE: {table}:{chain}:policy:{':'.join(parts[3:])}"
    pos = positions.get((table, chain, int(parts[3], 16)), -1)
    ruletext = re.sub(r"^-[46] -t \S+ ", "", ruletext.strip())
    return f"TRACE: {table}:{chain}:rule:{pos}:{':'.join(parts[4:])}  {ruletext}"


_NFT_EVENT = re.compile(r"^trace id ([0-9a-f]+) (ip6?|inet) (\S+) (\S+) (packet|rule|policy|verdict):? ?(.*?)\s*$")
_NFT_VERDICTS = {"continue": "CONTINUE", "accept": "ACCEPT", "drop": "DROP", "return": RETURN_AS_PRINTED}


def _nft_probe_events(text: str, event: re.Pattern[str], probe: Callable[[str], int | None]
                      ) -> Iterator[tuple[int, str, str, str, str, str]]:
    """The events of ``nft monitor trace`` output (``event``'s groups: trace id, family, table, chain, kind, the
    rest) that belong to a probe, each as (the probe's source port, family, table, chain, kind, rest). A
    ``packet`` event starts its trace id's packet: ``probe`` of its text is the probe's source port, or None
    for a packet of no probe's, whose events are then left out (the kernel reuses trace ids)."""
    sport_of: dict[str, int] = {}
    for line in text.splitlines():
        m = event.match(line.strip())
        if not m:
            continue
        tid, family, table, chain, kind, rest = m.groups()
        if kind == "packet":
            sport = probe(rest)
            if sport is None:
                sport_of.pop(tid, None)
            else:
                sport_of[tid] = sport
        if tid in sport_of:
            yield sport_of[tid], family, table, chain, kind, rest


def parse_nft_monitor(text: str, positions: Positions) -> dict[int, list[str]]:
    """``nft -a monitor trace`` output → per probe source port, each event's head in netsim's xtables-trace
    form (``TRACE: table:chain:rule:N:VERDICT``, ``TRACE: table:chain:policy:X``); nft prints rules in its
    own syntax, so the rule text is not compared."""

    def probe(packet: str) -> int | None:
        sp = re.search(r"\b(?:tcp|udp) sport (\d+)", packet)
        flags = re.search(r"tcp flags == (\S+)", packet)
        return int(sp.group(1)) if sp and (flags is None or flags.group(1) == "syn") else None

    out: dict[int, list[str]] = {}
    for sport, _family, table, chain, kind, rest in _nft_probe_events(text, _NFT_EVENT, probe):
        if kind == "policy":
            out.setdefault(sport, []).append(f"TRACE: {table}:{chain}:policy:{rest.split()[0].upper()}")
        elif kind == "rule":
            hm = re.search(r"# handle (\d+) \(verdict (\w+)(?: (\S+))?\)$", rest)
            if hm is None:
                continue
            pos = positions.get((table, chain, int(hm.group(1))), -1)
            verdict = hm.group(2)
            head = (f"{verdict.upper()}:{hm.group(3)}" if verdict in ("jump", "goto")
                    else _NFT_VERDICTS.get(verdict, verdict.upper()))
            out.setdefault(sport, []).append(f"TRACE: {table}:{chain}:rule:{pos}:{head}")
    return out


NftPositions = dict[tuple[str, str, str, int], int]  # (family, table, chain, nft handle) → 1-based position


def nft_positions(nft_json: str) -> NftPositions:
    """From ``nft -j -a list ruleset``: each rule's handle → its 1-based position in its chain, every family.
    Raises LabError if the text is not nft's JSON."""
    try:
        items = json.loads(nft_json)["nftables"]
    except (ValueError, KeyError, TypeError) as e:
        raise LabError(f"cannot read nft -j output: {e}") from None
    counters: dict[tuple[str, str, str], int] = {}
    out: NftPositions = {}
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not rule:
            continue
        key = (rule["family"], rule["table"], rule["chain"])
        counters[key] = counters.get(key, 0) + 1
        out[(*key, rule["handle"])] = counters[key]
    return out


_NFT_LINE = re.compile(r"^trace id ([0-9a-f]+) (\S+) (\S+) (\S+) (packet|rule|policy):? (.*?)\s*$")
_FIELDS = re.compile(r'\b(?:iif|oif) "[^"]*"|\bip6? [sd]addr \S+|\bip protocol \S+|\bip6 nexthdr \S+|'
                     r"\b(?:tcp|udp|sctp) [sd]port \d+")
_HANDLE = re.compile(r"# handle (\d+) \(verdict")
_COUNTER = re.compile(r"packets \d+ bytes \d+")


def packet_fields(text: str) -> str:
    """A ``packet:`` line's fields netsim models (devices, addresses, protocol, ports), in the kernel's order;
    not lengths, TTLs, ids, MACs or TCP flags, which describe the wire packet."""
    return " ".join(_FIELDS.findall(text))


def nft_trace_lines(text: str, positions: NftPositions, *, sports: tuple[int, int],
                    skip_table: str = "") -> dict[int, list[str]]:
    """``nft -a monitor trace`` output → per probe source port (within ``sports``, inclusive), its lines as
    netsim's ``--format nft-trace`` prints them: trace id ``ID``, ``packet:`` lines reduced to
    :func:`packet_fields`, each rule's handle turned into its position (-1 if unknown), counters as 0. Lines
    of ``skip_table`` (the table that sets ``meta nftrace``) are left out."""

    def probe(packet: str) -> int | None:
        sp = re.search(r"\b(?:tcp|udp) sport (\d+)", packet)
        return int(sp.group(1)) if sp and sports[0] <= int(sp.group(1)) <= sports[1] else None

    out: dict[int, list[str]] = {}
    for sport, fam, table, chain, kind, rest in _nft_probe_events(text, _NFT_LINE, probe):
        if table == skip_table:
            continue
        head = f"trace id ID {fam} {table} {chain}"
        if kind == "packet":
            line = f"{head} packet: {packet_fields(rest)}"
        elif kind == "rule":
            h = _HANDLE.search(rest)
            if h is not None:
                pos = positions.get((fam, table, chain, int(h.group(1))), -1)
                rest = rest[:h.start()] + f"# handle {pos} (verdict" + rest[h.end():]
            line = f"{head} rule {_COUNTER.sub('packets 0 bytes 0', rest)}"  # the contract: counters as 0
        else:
            line = f"{head} policy {rest}"
        out.setdefault(sport, []).append(line)
    return out


def kernel_view(lines: Iterable[str], version: int) -> list[str]:
    """netsim's xtables-trace lines as the family's monitor can show them: whole for IPv4, each line's
    head (before the two spaces and the rule text) for IPv6, as :func:`parse_nft_monitor` gives them."""
    return [ln if version == 4 else ln.partition("  ")[0] for ln in lines]


def monitor_noise(text: str) -> list[str]:
    """The lines of a monitor's output that are no trace event (its warnings and errors, e.g. ENOBUFS)."""
    return [ln for ln in text.splitlines() if ln.strip()
            and not ln.lstrip().startswith(("PACKET:", "TRACE:", "trace id"))]


__all__ = [
    "RETURN_AS_PRINTED",
    "NftPositions",
    "Positions",
    "handle_positions",
    "kernel_view",
    "monitor_noise",
    "nft_positions",
    "nft_trace_lines",
    "packet_fields",
    "packet_line",
    "parse_monitor",
    "parse_nft_monitor",
]
