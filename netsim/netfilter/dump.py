"""A whole ``iptables-save`` dump as users keep it: the IPv4 and IPv6 sections of one text.

Owns: :func:`split_families` (``iptables-save; ip6tables-save`` written to one file: a table that
appears a second time, or an ``# IPv6`` / ``ip6tables-save`` comment, starts the IPv6 part) and
:func:`parse_dump` (each part parsed into a :class:`~netsim.netfilter.model.Ruleset`).

Never does: IO (the caller reads the file and adds its name to errors with ``NetsimError.at``).
"""

from __future__ import annotations

import re

from netsim.errors import RulesetError
from netsim.netfilter.model import Family, Ruleset

_TABLE_LINE = re.compile(r"^[^\S\n]*\*(.*)$", re.MULTILINE)  # a line that is "*table" once stripped


def split_families(text: str) -> list[tuple[Family, str]]:
    """Split ``iptables-save; ip6tables-save`` output into its IPv4 and IPv6 parts: a table that
    appears a second time, or a ``# IPv6``/``ip6tables-save`` comment, starts the second part."""
    from netsim.netfilter.parse import guess_family

    if "IPv6" not in text and "ip6tables-save" not in text:  # no comment can start the IPv6 part
        tables = [m.group(1).strip() for m in _TABLE_LINE.finditer(text)]
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


def parse_dump(text: str, family: Family | None = None) -> dict[Family, Ruleset]:
    """The rulesets of one dump, by family. A dump of one family is read as ``family`` when the caller
    knows it (an ``ip6tables-save`` file may hold no address to tell). Raises RulesetError (no tables, or
    a bad line)."""
    from netsim.netfilter.parse import parse_ruleset

    parts = split_families(text)
    if not parts:
        raise RulesetError("no tables found (expected iptables-save output)")
    if family is not None and len(parts) == 1:
        parts = [(family, parts[0][1])]
    return {fam: parse_ruleset(body, fam) for fam, body in parts}


__all__ = ["parse_dump", "split_families"]
