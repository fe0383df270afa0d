"""Target extensions: how ``-j TARGET options…`` is read and stored the way the kernel keeps it.

Like ``matches.py``, a table: each known target's options in save order and a normaliser that
produces what ``iptables-save`` prints (``MARK --set-mark 1000`` → ``--set-xmark 0x3e8/0xffffffff``,
``REDIRECT --to-port`` → ``--to-ports``, TPROXY's default ``--on-ip``, CONNMARK's masks, …; checked
against iptables 1.8.9). Unknown targets keep their tokens. Never evaluates packets.
"""

from __future__ import annotations

from collections.abc import Sequence

from netsim.errors import RulesetError
from netsim.netfilter.matches import parse_u32, value_mask
from netsim.netfilter.model import Family, Option, Target

VERDICTS = frozenset({"ACCEPT", "DROP", "RETURN", "QUEUE"})
MASK32 = 0xFFFFFFFF


def _opts(options: Sequence[Option]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for opt in options:
        if opt.negated:
            raise RulesetError(f'option "{opt.name}" cannot be negated')
        out[opt.name] = opt.args
    return out


def _xmark(value: int, mask: int) -> Option:
    return Option("--set-xmark", (f"{value:#x}/{mask:#x}",))


def _mark_target(o: dict[str, tuple[str, ...]]) -> tuple[Option, ...]:
    """MARK/CONNMARK value forms, as libxt_MARK stores them (value, mask) with XOR semantics."""
    if "--set-xmark" in o:
        return (_xmark(*value_mask(o["--set-xmark"][0])),)
    if "--set-mark" in o:
        value, mask = value_mask(o["--set-mark"][0])
        return (_xmark(value, value | mask),)
    if "--and-mark" in o:
        return (_xmark(0, ~parse_u32(o["--and-mark"][0]) & MASK32),)
    if "--or-mark" in o:
        bits = parse_u32(o["--or-mark"][0])
        return (_xmark(bits, bits),)
    if "--xor-mark" in o:
        return (_xmark(parse_u32(o["--xor-mark"][0]), 0),)
    raise RulesetError(
        "MARK target: one of --set-xmark, --set-mark, --and-mark, --or-mark, --xor-mark is required"
    )


def _connmark(o: dict[str, tuple[str, ...]]) -> tuple[Option, ...]:
    for action in ("--save-mark", "--restore-mark"):
        if action in o:
            mask = o.get("--mask", ("0xffffffff",))[0]
            nfmask = parse_u32(o.get("--nfmask", (mask,))[0])
            ctmask = parse_u32(o.get("--ctmask", (mask,))[0])
            return (
                Option(action),
                Option("--nfmask", (f"{nfmask:#x}",)),
                Option("--ctmask", (f"{ctmask:#x}",)),
            )
    return _mark_target(o)


def _tproxy(o: dict[str, tuple[str, ...]], family: Family) -> tuple[Option, ...]:
    port = o.get("--on-port", ("0",))[0]
    on_ip = o.get("--on-ip", ("0.0.0.0" if family is Family.IPV4 else "::",))[0]
    if "--tproxy-mark" in o:
        value, mask = value_mask(o["--tproxy-mark"][0])
    else:
        value, mask = 0, 0
    return (
        Option("--on-port", (port,)),
        Option("--on-ip", (on_ip,)),
        Option("--tproxy-mark", (f"{value:#x}/{mask:#x}",)),
    )


def _ports_target(o: dict[str, tuple[str, ...]], flags: tuple[str, ...]) -> tuple[Option, ...]:
    out: list[Option] = []
    ports = o.get("--to-ports") or o.get("--to-port")
    if ports:
        lo, sep, hi = ports[0].partition("-")
        if not (lo.isdigit() and int(lo) <= 65535 and (not sep or (hi.isdigit() and int(lo) <= int(hi) <= 65535))):
            raise RulesetError(f"invalid port range `{ports[0]}' for --to-ports, e.g. 8080 or 8080-8081")
        out.append(Option("--to-ports", (ports[0] if sep and lo != hi else lo,)))
    out.extend(Option(flag) for flag in flags if flag in o)
    return tuple(out)


def _reject(o: dict[str, tuple[str, ...]], family: Family) -> tuple[Option, ...]:
    aliases = {
        "tcp-reset": "tcp-reset",
        "icmp-port-unreachable": "icmp-port-unreachable",
        "port-unreach": "icmp-port-unreachable",
        "icmp-net-unreachable": "icmp-net-unreachable",
        "net-unreach": "icmp-net-unreachable",
        "icmp-host-unreachable": "icmp-host-unreachable",
        "host-unreach": "icmp-host-unreachable",
        "icmp-proto-unreachable": "icmp-proto-unreachable",
        "proto-unreach": "icmp-proto-unreachable",
        "icmp-net-prohibited": "icmp-net-prohibited",
        "net-prohib": "icmp-net-prohibited",
        "icmp-host-prohibited": "icmp-host-prohibited",
        "host-prohib": "icmp-host-prohibited",
        "icmp-admin-prohibited": "icmp-admin-prohibited",
        "admin-prohib": "icmp-admin-prohibited",
        "tcp-rst": "tcp-reset",
    }
    default = "icmp-port-unreachable" if family is Family.IPV4 else "icmp6-port-unreachable"
    given = o.get("--reject-with", (default,))[0]
    if family is Family.IPV6:
        return (
            Option("--reject-with", (given.replace("icmp-", "icmp6-") if given != "tcp-reset" else given,)),
        )
    return (Option("--reject-with", (aliases.get(given, given),)),)


def _log(o: dict[str, tuple[str, ...]]) -> tuple[Option, ...]:
    levels = {
        "emerg": 0,
        "alert": 1,
        "crit": 2,
        "error": 3,
        "err": 3,
        "warning": 4,
        "warn": 4,
        "notice": 5,
        "info": 6,
        "debug": 7,
    }
    out: list[Option] = []
    if "--log-prefix" in o:
        out.append(Option("--log-prefix", o["--log-prefix"]))
    if "--log-level" in o:
        raw = o["--log-level"][0]
        level = levels[raw] if raw in levels else int(raw) if raw.isdigit() else None
        if level is None:
            raise RulesetError(f"log-level `{raw}' unknown")
        if level != 4:
            out.append(Option("--log-level", (str(level),)))
    for flag in (
        "--log-tcp-sequence",
        "--log-tcp-options",
        "--log-ip-options",
        "--log-uid",
        "--log-macdecode",
    ):
        if flag in o:
            out.append(Option(flag))
    return tuple(out)


def _nflog(o: dict[str, tuple[str, ...]]) -> tuple[Option, ...]:
    out: list[Option] = []
    group = o.get("--nflog-group", ("0",))[0]
    if group != "0":
        out.append(Option("--nflog-group", (group,)))
    for name in ("--nflog-prefix", "--nflog-range", "--nflog-size", "--nflog-threshold"):
        if name in o:
            out.append(Option("--nflog-size" if name == "--nflog-range" else name, o[name]))
    return tuple(out)


def _ct(o: dict[str, tuple[str, ...]]) -> tuple[Option, ...]:
    if "--notrack" in o:
        return (Option("--notrack"),)
    order = ("--helper", "--timeout", "--ctevents", "--expevents", "--zone-orig", "--zone-reply", "--zone")
    return tuple(Option(name, o[name]) for name in order if name in o)


# Options each known target takes: name -> number of arguments.
TARGET_OPTIONS: dict[str, dict[str, int]] = {
    "MARK": {"--set-xmark": 1, "--set-mark": 1, "--and-mark": 1, "--or-mark": 1, "--xor-mark": 1},
    "CONNMARK": {
        "--set-xmark": 1,
        "--set-mark": 1,
        "--and-mark": 1,
        "--or-mark": 1,
        "--xor-mark": 1,
        "--save-mark": 0,
        "--restore-mark": 0,
        "--mask": 1,
        "--nfmask": 1,
        "--ctmask": 1,
    },
    "TPROXY": {"--on-port": 1, "--on-ip": 1, "--tproxy-mark": 1},
    "REDIRECT": {"--to-ports": 1, "--to-port": 1, "--random": 0},
    "MASQUERADE": {"--to-ports": 1, "--random": 0, "--random-fully": 0},
    "DNAT": {"--to-destination": 1, "--random": 0, "--persistent": 0},
    "SNAT": {"--to-source": 1, "--random": 0, "--random-fully": 0, "--persistent": 0},
    "REJECT": {"--reject-with": 1},
    "LOG": {
        "--log-prefix": 1,
        "--log-level": 1,
        "--log-tcp-sequence": 0,
        "--log-tcp-options": 0,
        "--log-ip-options": 0,
        "--log-uid": 0,
        "--log-macdecode": 0,
    },
    "NFLOG": {
        "--nflog-group": 1,
        "--nflog-prefix": 1,
        "--nflog-range": 1,
        "--nflog-size": 1,
        "--nflog-threshold": 1,
    },
    "CT": {
        "--notrack": 0,
        "--zone": 1,
        "--zone-orig": 1,
        "--zone-reply": 1,
        "--helper": 1,
        "--timeout": 1,
        "--ctevents": 1,
        "--expevents": 1,
    },
    "NOTRACK": {},
    "TRACE": {},
    "ACCEPT": {},
    "DROP": {},
    "RETURN": {},
    "QUEUE": {},
}


# Target extensions iptables ships that netsim does not model: kept verbatim, reported as uncertain.
OTHER_EXTENSIONS = frozenset(
    {
        "AUDIT",
        "CHECKSUM",
        "CLASSIFY",
        "CLUSTERIP",
        "CONNSECMARK",
        "DSCP",
        "ECN",
        "HL",
        "HMARK",
        "IDLETIMER",
        "LED",
        "NETMAP",
        "NFQUEUE",
        "RATEEST",
        "SECMARK",
        "SET",
        "SYNPROXY",
        "TCPMSS",
        "TCPOPTSTRIP",
        "TEE",
        "TOS",
        "TTL",
        "ULOG",
    }
)


def is_extension_target(name: str) -> bool:
    """True for verdicts and target extensions; anything else names a user chain."""
    return name in TARGET_OPTIONS or name in OTHER_EXTENSIONS


def _nat_address_family(text: str, family: Family) -> None:
    """``--to-destination``/``--to-source`` take an address of the ruleset's family ("Bad IP address")."""
    host = text.partition("-")[0]
    bad = host.count(":") > 1 if family is Family.IPV4 else not (host.startswith("[") or host.count(":") > 1)
    if bad:
        raise RulesetError(f'Bad IP address "{host}" (not IPv{family.value})')


def normalize_target(name: str, options: Sequence[Option], family: Family, goto: bool = False) -> Target:
    """Build a Target in canonical form. Raises RulesetError for options the target does not take."""
    known = TARGET_OPTIONS.get(name)
    if known is None:  # a user chain, or an extension we do not model: keep as written
        return Target(name, tuple(options), goto)
    for opt in options:
        if opt.name not in known:
            raise RulesetError(f'unknown option "{opt.name}" for target `{name}\'')
    o = _opts(options)
    canon: tuple[Option, ...]
    if name == "MARK":
        canon = _mark_target(o)
    elif name == "CONNMARK":
        canon = _connmark(o)
    elif name == "TPROXY":
        canon = _tproxy(o, family)
    elif name == "REDIRECT":
        canon = _ports_target(o, ("--random",))
    elif name == "MASQUERADE":
        canon = _ports_target(o, ("--random", "--random-fully"))
    elif name in ("DNAT", "SNAT"):
        key = "--to-destination" if name == "DNAT" else "--to-source"
        if key in o:
            _nat_address_family(o[key][0], family)
        canon = tuple(Option(k, o[k]) for k in (key, "--random", "--random-fully", "--persistent") if k in o)
    elif name == "REJECT":
        canon = _reject(o, family)
    elif name == "LOG":
        canon = _log(o)
    elif name == "NFLOG":
        canon = _nflog(o)
    elif name == "CT":
        canon = _ct(o)
    else:
        canon = tuple(options)
    return Target(name, canon, goto)


__all__ = ["OTHER_EXTENSIONS", "TARGET_OPTIONS", "VERDICTS", "is_extension_target", "normalize_target"]
