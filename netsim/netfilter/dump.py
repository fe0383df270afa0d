"""A whole ``iptables-save`` dump as users keep it: the IPv4 and IPv6 sections of one text.

Owns: :func:`split_families` (``iptables-save; ip6tables-save`` written to one file: a table that
appears a second time, or an ``# IPv6`` / ``ip6tables-save`` comment, starts the IPv6 part),
:func:`parse_dump` (each part parsed into a :class:`~netsim.netfilter.model.Ruleset`) and
:func:`read_pasted` (whatever a user pastes: a save dump, Istio's restore payloads, a command log,
``iptables -S`` listings, or a container log holding any of these; each handed to its one reader).

Never does: IO (the caller reads the file and adds its name to errors with ``NetsimError.at``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from netsim.errors import RulesetError
from netsim.netfilter.matches import DEFAULT_NAMES, Names
from netsim.netfilter.model import BUILTIN_CHAINS, Family, Ruleset


def _table_names(text: str) -> list[str]:
    """The names of the lines that are ``*table`` once stripped, in order (found by their ``*``: a regex trying
    every line start of a 60,000-line dump cost more than reading its table lines)."""
    names = []
    at = text.find("*")
    while at >= 0:
        start = text.rfind("\n", 0, at) + 1
        end = text.find("\n", at)
        if end < 0:
            end = len(text)
        if start == at or text[start:at].isspace():  # only blanks before it on its line (not "\n": none there)
            names.append(text[at + 1:end].strip())
        at = text.find("*", end)  # the next line's (no later "*" of this line starts it)
    return names


def split_families(text: str) -> list[tuple[Family, str]]:
    """Split ``iptables-save; ip6tables-save`` output into its IPv4 and IPv6 parts: a table that
    appears a second time, or a ``# IPv6``/``ip6tables-save`` comment, starts the second part."""
    from netsim.netfilter.parse import guess_family

    if "IPv6" not in text and "ip6tables-save" not in text:  # no comment can start the IPv6 part
        tables = _table_names(text)
        if len(set(tables)) == len(tables):  # nor a table seen twice: the text is one part, as it is
            return [(guess_family(text), text)] if tables else []
    parts: list[list[str]] = [[]]
    seen: set[str] = set()
    # split at "\n" only and join back with it: a "\r" stays part of its line, as iptables-restore reads it
    for line in text.split("\n"):
        s = line.strip()
        starts_v6 = s.startswith("#") and ("IPv6" in s or "ip6tables-save" in s) and any(
            ln.strip().startswith("*") for ln in parts[-1])
        if s.startswith("*"):
            name = s[1:].strip()
            if name in seen:
                starts_v6 = True
                seen = set()
            seen.add(name)
        if starts_v6 and parts[-1]:
            parts.append([])
            seen = {s[1:].strip()} if s.startswith("*") else set()
        parts[-1].append(line)
    out = []
    for i, lines in enumerate(parts):
        body = "\n".join(lines)
        if not any(ln.strip().startswith("*") for ln in lines):
            continue
        fam = guess_family(body)
        if i > 0 and fam is Family.IPV4 and len(parts) == 2:
            fam = Family.IPV6
        out.append((fam, body))
    return out


def parse_dump(text: str, family: Family | None = None, names: Names = DEFAULT_NAMES) -> dict[Family, Ruleset]:
    """The rulesets of one dump, by family. A dump of one family is read as ``family`` when the caller
    knows it (an ``ip6tables-save`` file may hold no address to tell). Raises RulesetError (no tables, or
    a bad line)."""
    from netsim.netfilter.parse import parse_ruleset

    parts = split_families(text)
    if not parts:
        raise RulesetError("no tables found (expected iptables-save output)")
    if family is not None and len(parts) == 1:
        parts = [(family, parts[0][1])]
    return {fam: parse_ruleset(body, fam, names) for fam, body in parts}


# Prefixes a container log puts before each line: a CRI log file's "<time> stdout F ", `kubectl logs
# --timestamps`' "<time> ", Istio's logger "<time>\tinfo\t", a shell's xtrace "+ " and a prompt "$ ".
_LOG_PREFIX = re.compile(r"^\s*(?:\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:?\d\d)?\s+(?:(?:stdout|stderr)\s+[FP]\s)?"
                         r"(?:(?:info|warn|warning|error|debug)\s+)?)?(?:\++\s|\$\s+)?")
_COMMAND = re.compile(r"^(?:sudo\s+)?(ip6?tables)(?:-legacy|-nft)?\s")
_LISTING = re.compile(r"^-[PNA]\s+\S")
# `iptables -t nat -S` names its table only on the command line; a pasted listing without it is read by
# the set of built-in chains its -P lines list (nat and mangle differ; filter and security do not).
_POLICY_TABLES = {frozenset(chains): table for table, chains in BUILTIN_CHAINS.items() if table != "security"}


@dataclass(frozen=True, slots=True)
class Pasted:
    """What :func:`read_pasted` found: the rulesets by family, and the format it read them in
    (``iptables-save``, ``restore-payload``, ``command-log`` or ``listing``)."""

    format: str
    rulesets: dict[Family, Ruleset]


def _unwrapped(raw: str) -> str:
    """One log line without the log's own wrapping: a Docker JSON record's ``log`` field, then any
    timestamp / stream / level / xtrace / prompt prefix (``_LOG_PREFIX``)."""
    if raw.startswith('{"log":'):
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("log"), str):
            raw = record["log"].rstrip("\n")
    return raw[_LOG_PREFIX.match(raw).end():].rstrip()  # type: ignore[union-attr]


def read_pasted(text: str, names: Names = DEFAULT_NAMES) -> Pasted:
    """The rules in ``text``, whatever form a user pasted them in, each form read by its one reader:

    - ``iptables-save``/``ip6tables-save`` output (legacy or nft variant, with or without counters,
      both families in one text): :func:`parse_dump`; when a log holds both the restore payload Istio
      wrote and the save output that followed, the save output (what the kernel holds) wins;
    - Istio's restore payloads (``* nat`` … ``COMMIT``, its dry-run goldens and the "Writing following
      contents to rules file" block of istio-init's log): ``parse.parse_dry_run``;
    - a log of ``iptables``/``ip6tables`` commands (the 1.0–1.4 script, per-command goldens):
      ``parse.parse_command_log``;
    - ``iptables [-t T] -S`` listings (``-P``/``-N``/``-A`` lines): the table from the pasted command
      line, else from the built-in chains its ``-P`` lines list.

    Container-log wrapping (Docker JSON records, CRI and ``--timestamps`` prefixes, Istio's log level
    column, ``+ `` xtrace, ``$ `` prompts, indentation) is removed first; line numbers in errors are the
    pasted text's. ``names`` resolves user and group names (Istio's payloads may hold them; saved rules
    never do). Raises RulesetError when no rules are found or a rule line is bad.
    """
    from netsim.netfilter.parse import apply_payload, parse_command_log, parse_dry_run, parse_ruleset

    lines = [_unwrapped(raw) for raw in text.split("\n")]
    save = _blocks(lines, lambda ln: ln.startswith("*") and not ln.startswith("* "))
    if save is not None:
        return Pasted("iptables-save", parse_dump(save, names=names))
    payload = _blocks(lines, lambda ln: ln.startswith("* "))
    if payload is not None:
        v4, v6 = parse_dry_run(payload, names)
        found = {Family.IPV4: apply_payload(v4)}
        if v6 is not None:
            found[Family.IPV6] = apply_payload(v6)
        return Pasted("restore-payload", found)
    if any(_COMMAND.match(ln) and re.search(r"\s-[AI]\s", ln) for ln in lines):
        log = "\n".join(_COMMAND.sub(r"\1 ", ln) if _COMMAND.match(ln) else "" for ln in lines)
        v4, v6 = parse_command_log(log, names)
        found = {Family.IPV4: apply_payload(v4)}
        if v6 is not None:
            found[Family.IPV6] = apply_payload(v6)
        return Pasted("command-log", found)
    if any(_LISTING.match(ln) for ln in lines):
        rulesets: dict[Family, Ruleset] = {}
        for family, listing in _listings(lines):
            rulesets[family] = parse_ruleset(listing, family, names, base=rulesets.get(family), noflush=True)
        return Pasted("listing", rulesets)
    raise RulesetError("no rules found (expected iptables-save output, Istio's restore payload or command log, "
                       "an iptables -S listing, or an istio-init log holding one)")


def _blocks(lines: list[str], starts: object) -> str | None:
    """``lines`` with everything outside ``*table`` … ``COMMIT`` blocks (and their ``#`` comments) blanked,
    so that line numbers stay the pasted text's; None when there is no such block."""
    assert callable(starts)
    out: list[str] = []
    inside = found = False
    for line in lines:
        if not inside and starts(line):
            inside = found = True
        keep = inside or line.startswith("#")
        out.append(line if keep else "")
        if inside and line == "COMMIT":
            inside = False
    return "\n".join(out) if found else None


def _listings(lines: list[str]) -> list[tuple[Family, str]]:
    """``iptables -S`` listings → restore text per listed table (other lines blanked, numbers kept)."""
    parts: list[tuple[Family, str | None, list[tuple[int, str]]]] = []
    family, table = Family.IPV4, None
    for number, line in enumerate(lines):
        command = re.match(r"^(?:sudo\s+)?(ip6?tables)\S*\s.*?-S\b", line)
        if command:
            family = Family.IPV6 if command.group(1) == "ip6tables" else Family.IPV4
            named = re.search(r"(?:-t|--table)[\s=]+(\w+)", line)
            table = named.group(1) if named else "filter"
            parts.append((family, table, []))
        elif _LISTING.match(line):
            if not parts or (line.startswith("-P") and any(not ln.startswith("-P") for _, ln in parts[-1][2])):
                parts.append((family, None, []))
            parts[-1][2].append((number, line))
    out = []
    for fam, name, body in parts:
        if not body:
            continue
        first = body[0][0]
        if name is None:
            policies = frozenset(ln.split()[1] for _, ln in body if ln.startswith("-P") and len(ln.split()) > 1)
            name = _POLICY_TABLES.get(policies)
            if name is None:
                raise RulesetError(f"line {first + 1}: an iptables -S listing without its command line: "
                                   "paste the `iptables -t TABLE -S` line above it to say which table it is")
        # restore text with each listing line at its pasted line number; the `*table` line goes on the
        # line before the first one (blank in this part), or first of all when the paste starts with it
        shift = 0 if first else 1
        text = [""] * (body[-1][0] + 1 + shift)
        text[first + shift - 1] = f"*{name}"
        for number, line in body:
            words = line.split()
            if words[0] == "-P" and len(words) >= 3:
                line = f":{words[1]} {words[2]} [0:0]"
            elif words[0] == "-N" and len(words) >= 2:
                line = f":{words[1]} - [0:0]"
            text[number + shift] = line
        text.append("COMMIT")
        out.append((fam, "\n".join(text)))
    return out


__all__ = ["Pasted", "parse_dump", "read_pasted", "split_families"]
