"""``nft -j list ruleset`` (libnftables JSON) read by writing it back as the nft commands it stands for, which
``parse.py`` reads: one reader of nftables semantics, two spellings of its input.

An expression this module does not know is written as its JSON key (``xt``, ``osf``, …): the reader keeps
it as an expression netsim cannot evaluate, reported with the rule. Raises RulesetError for a document that
is not a ruleset. Never does IO.
"""

from __future__ import annotations

import json
from typing import Any

from netsim.errors import RulesetError
from netsim.netfilter.matches import DEFAULT_NAMES, Names
from netsim.netfilter.nft.model import NftRuleset
from netsim.netfilter.nft.parse import parse_nft

_VERDICT_KEYS = ("accept", "drop", "continue", "return", "queue")
_IFNAME_KEYS = ("iifname", "oifname")


def _value(v: Any, quote: bool = False) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return f'"{v}"' if quote and not v.startswith("@") else v
    if isinstance(v, list):
        return ",".join(_value(x, quote) for x in v)
    if isinstance(v, dict):
        if "set" in v:
            parts = []
            for x in v["set"] or []:
                if isinstance(x, list) and len(x) == 2 and isinstance(x[1], dict) and _is_verdict(x[1]):
                    parts.append(f"{_value(x[0], quote)} : {_verdict(x[1])}")  # a verdict map's element
                else:
                    parts.append(_value(x, quote))
            return "{ " + ", ".join(parts) + " }"
        if "prefix" in v:
            return f"{v['prefix']['addr']}/{v['prefix']['len']}"
        if "range" in v:
            a, b = v["range"]
            return f"{_value(a, quote)}-{_value(b, quote)}"
        if "concat" in v:
            return " . ".join(_value(x, quote) for x in v["concat"])
        if "elem" in v:
            return _value(v["elem"]["val"], quote)
        return _expr(v)
    raise RulesetError(f"unexpected JSON value {v!r}")


def _is_verdict(d: dict[str, Any]) -> bool:
    return len(d) == 1 and next(iter(d)) in (*_VERDICT_KEYS, "jump", "goto")


def _verdict(d: Any) -> str:
    if not isinstance(d, dict) or not _is_verdict(d):
        return _value(d)
    key, arg = next(iter(d.items()))
    return f"{key} {arg['target']}" if key in ("jump", "goto") else key


def _expr(e: dict[str, Any]) -> str:
    """A left-hand expression (a selector)."""
    key, arg = next(iter(e.items()))
    if key == "payload":
        return f"{arg['protocol']} {arg['field']}" if "protocol" in arg else "payload"
    if key == "meta":
        return arg["key"] if arg["key"] in _IFNAME_KEYS else f"meta {arg['key']}"
    if key == "ct":
        return " ".join(["ct", *([arg["dir"]] if "dir" in arg else []), arg["key"]])
    if key == "fib":
        flags = arg.get("flags", [])
        return f"fib {' . '.join(flags if isinstance(flags, list) else [flags])} {arg['result']}"
    if key == "numgen":
        off = f" offset {arg['offset']}" if arg.get("offset") else ""
        return f"numgen {arg.get('mode', 'random')} mod {arg['mod']}{off}"
    if key == "concat":
        return " . ".join(_expr(x) if isinstance(x, dict) else _value(x) for x in arg)
    if key in ("&", "|", "^"):
        left, right = arg
        return f"{_expr(left) if isinstance(left, dict) else _value(left)} {key} {_value(right)}"
    return key


def _statement(s: dict[str, Any]) -> str:
    key, arg = next(iter(s.items()))
    if key == "match":
        left = arg["left"]
        quote = isinstance(left, dict) and "meta" in left and left["meta"].get("key") in _IFNAME_KEYS
        op = {"==": "", "in": ""}.get(arg["op"], arg["op"] + " ")
        return f"{_expr(left)} {op}{_value(arg['right'], quote)}"
    if key in _VERDICT_KEYS:
        return key
    if key in ("jump", "goto"):
        return f"{key} {arg['target']}"
    if key == "counter":
        return "counter"
    if key == "reject":
        kind = (arg or {}).get("type")
        if kind == "tcp reset":
            return "reject with tcp reset"
        return "reject"
    if key == "log":
        return " ".join(["log", *(f'prefix "{arg["prefix"]}"' for _ in [0] if arg and "prefix" in arg)])
    if key == "limit":
        over = " over" if arg.get("inv") else ""
        return f"limit rate{over} {arg['rate']}/{arg.get('per', 'second')}"
    if key == "notrack":
        return "notrack"
    if key == "mangle":
        value = arg["value"]
        text = _expr(value) if isinstance(value, dict) else _value(value)
        return f"{_expr(arg['key'])} set {text}"
    if key in ("dnat", "snat", "redirect", "masquerade"):
        arg = arg or {}
        fam = f"{arg['family']} " if "family" in arg else ""
        addr = _value(arg["addr"]) if "addr" in arg else ""
        if ":" in addr and "port" in arg:
            addr = f"[{addr}]"
        port = f":{_value(arg['port'])}" if "port" in arg else ""
        to = f" {fam}to {addr}{port}" if addr or port else ""
        flags = arg.get("flags", [])
        flags = [flags] if isinstance(flags, str) else flags
        return f"{key}{to}{''.join(' ' + f for f in flags)}"
    if key == "tproxy":
        fam = f"{arg['family']} " if "family" in arg else ""
        addr = arg.get("addr", "")
        port = f":{arg['port']}" if "port" in arg else ""
        return f"tproxy {fam}to {f'[{addr}]' if ':' in addr and port else addr}{port}"
    if key == "vmap":
        data = arg["data"]
        return f"{_expr(arg['key'])} vmap {data if isinstance(data, str) else _value(data)}"
    return key  # an expression netsim does not read: kept as unknown by the parser


def json_to_commands(text: str) -> str:
    """The nft commands a ``nft -j list ruleset`` document stands for (rules with their handles)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise RulesetError(f"line {e.lineno}: not JSON: {e.msg}") from None
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise RulesetError('line 1: not an nft -j ruleset (no "nftables" list)')
    out: list[str] = []
    try:
        for item in items:
            if not isinstance(item, dict) or not item:
                continue
            kind, o = next(iter(item.items()))
            if kind == "table":
                out.append(f"add table {o['family']} {o['name']}")
            elif kind == "chain":
                spec = ""
                if "hook" in o:
                    spec = (f" {{ type {o['type']} hook {o['hook']} priority {o['prio']} ; "
                            f"policy {o.get('policy', 'accept')} ; }}")
                out.append(f"add chain {o['family']} {o['table']} {o['name']}{spec}")
            elif kind in ("set", "map"):
                types = o["type"] if isinstance(o["type"], list) else [o["type"]]
                key = " . ".join(types)
                typ = f"{key} : {o['map']}" if kind == "map" else key
                flags = o.get("flags", [])
                parts = [f"type {typ} ;"]
                if flags:
                    parts.append(f"flags {','.join(flags if isinstance(flags, list) else [flags])} ;")
                if o.get("elem"):
                    elems = [f"{_value(e[0])} : {_verdict(e[1])}" if kind == "map" else _value(e) for e in o["elem"]]
                    parts.append("elements = { " + ", ".join(elems) + " } ;")
                out.append(f"add {kind} {o['family']} {o['table']} {o['name']} {{ {' '.join(parts)} }}")
            elif kind == "rule":
                body = " ".join(_statement(s) for s in o["expr"])
                comment = f' comment "{o["comment"]}"' if "comment" in o else ""
                handle = f" # handle {o['handle']}" if "handle" in o else ""
                out.append(f"add rule {o['family']} {o['table']} {o['chain']} {body}{comment}{handle}")
    except (KeyError, TypeError, ValueError, StopIteration) as e:
        raise RulesetError(f"line 1: not an nft -j ruleset: {e!r} in {str(item)[:80]}") from None
    return "\n".join(out) + "\n"


def parse_nft_json(text: str, names: Names = DEFAULT_NAMES) -> NftRuleset:
    """Parse ``nft -j list ruleset`` output. Errors name the command line of the rewritten ruleset."""
    return parse_nft(json_to_commands(text), names)


def parse_nft_any(text: str, names: Names = DEFAULT_NAMES) -> NftRuleset:
    """A ruleset as ``nft list ruleset`` text, an ``nft -f`` transaction, or ``nft -j list ruleset`` JSON;
    ``names`` resolves ``skuid``/``skgid`` names."""
    return parse_nft_json(text, names) if text.lstrip().startswith("{") else parse_nft(text, names)


__all__ = ["json_to_commands", "parse_nft_any", "parse_nft_json"]
