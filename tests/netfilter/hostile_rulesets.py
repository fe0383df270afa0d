"""Seeded generator of hostile ``iptables-restore`` inputs for the load-time differential test: jump loops,
deep chains, the other family's addresses, each protocol with and without ports, partial addresses, odd
quoting and counters, CRLF and missing final newlines, empty and comment-only files, user-chain policies,
undefined jumps, hooks a target may not run in, non-contiguous masks, address lists (``-s a,b``), host names,
the other restore commands (-D, -R, -C, -F, -X, -P, -Z) and lines past iptables-restore's limits (10,239
characters, 251 words, 1,023-character words). Each case is (name, family, text)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from netsim.netfilter import Family


@dataclass(frozen=True)
class Case:
    name: str
    family: Family
    text: str


# (values the kernel loads, values that are hostile: refused, or loaded in a surprising way)
V4_ADDRS = (["10.0.0.1", "1.2.3", "1.2", "7", "010.1.1.1", "0x7f.1", "10.0.0.0/8", "1.2.3/24", "1.2.3.4/0",
             "10.1.2.3/255.255.0.0", "::ffff:1.2.3.4", "10.1.2.3/255.0.255.0", "1.2.3.4/0.0.0.255",
             "1.1.1.1,2.2.2.2", "10.0.0.0/8,1.2.3.4/255.0.0.255,0/0"],
            ["1.2.3.4/33", "256.1.1.1", "1.2.3.4.5", "1.2.3.4/", "1..2", "1.1.1.1,", ",1.1.1.1", "1.1.1.1,,2.2.2.2"])
V6_ADDRS = (["::1", "fd00::1/64", "::ffff:1.2.3.4", "::", "fe80::/10", "::1/0", "fd00::1:2/ffff::ffff",
             "::1,fd00::/64"], ["::1/129", "1::2::3", "::1,"])
# Host names: iptables resolves them at load (/etc/hosts here maps localhost to 127.0.0.1 only, so IPv6
# localhost is refused by ip6tables-restore on this machine and never drawn); netsim resolves only localhost.
NAMES = (["localhost", "localhost/8", "10.0.0.1,localhost"], ["nohost.invalid", "pod-a.example"])
PROTOS = (["tcp", "udp", "sctp", "dccp", "udplite", "icmp", "ipv6-icmp", "icmpv6", "132", "33", "136", "6", "17",
           "all", "gre", "SCTP"], ["999", "-1"])
PORTS = (["80", "1:1024", "0:65535", "0x50", "10:5"], ["65536", "http", "080"])
COMMENTS = (['"plain"', '""', '"unterminated', '"a\\"b"', 'a"b c"', "x", '"tab\there"'],
            ["'single quoted'", '"a b"c'])


def _pick(rng: random.Random, values: tuple[list[str], list[str]], hazard: float) -> str:
    good, bad = values
    return rng.choice(bad if rng.random() < hazard else good)


def _addr(rng: random.Random, family: Family, hazard: float) -> str:
    own, other = (V4_ADDRS, V6_ADDRS) if family is Family.IPV4 else (V6_ADDRS, V4_ADDRS)
    if rng.random() < 0.1:
        return _pick(rng, NAMES, hazard) if family is Family.IPV4 else rng.choice(NAMES[1])
    return _pick(rng, own, hazard) if rng.random() >= hazard else rng.choice(other[0])


def _plain_rule(rng: random.Random, family: Family, chain: str, hazard: float) -> str:
    parts = [f"-A {chain}"]
    if rng.random() < 0.35:
        parts.append(f"{'! ' * (rng.random() < 0.2)}-{rng.choice('sd')} {_addr(rng, family, hazard)}")
    if rng.random() < 0.5:
        proto = _pick(rng, PROTOS, hazard)
        parts.append(f"{'! ' * (rng.random() < 0.1)}-p {proto}")
        if rng.random() < hazard:
            parts.append(f"-m {rng.choice(['tcp', 'udp', 'sctp', 'dccp', 'icmp', proto.lower()])}")
        if rng.random() < 0.6 and (proto in ("tcp", "udp", "6", "17") or rng.random() < hazard + 0.1):
            parts.append(f"{'! ' * (rng.random() < 0.2)}--{rng.choice(['dport', 'sport'])} "
                         f"{_pick(rng, PORTS, hazard)}")
    if rng.random() < 0.25:
        parts.append(f"-m comment --comment {_pick(rng, COMMENTS, hazard)}")
    if rng.random() < 0.8:
        parts.append(f"-j {rng.choice(['ACCEPT', 'RETURN', 'DROP', 'ACCEPT'])}")
    return " ".join(parts)


def _table(rng: random.Random, family: Family, table: str, hazard: float) -> list[str]:
    builtins = {"filter": ["INPUT", "FORWARD", "OUTPUT"], "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
                "mangle": ["PREROUTING", "OUTPUT"], "raw": ["PREROUTING", "OUTPUT"]}[table]
    lines = [f"*{table}"]
    for b in builtins:
        if rng.random() < 0.5:
            lines.append(f":{b} {_pick(rng, (['ACCEPT', 'DROP', '-'], ['REJECT', 'accept']), hazard / 3)} "
                         f"{rng.choice(['[0:0]', '[5:300]', '[a:b]', ''])}".rstrip())
    feature = rng.choice(["loop", "deep", "plain", "plain", "plain", "hooks", "chains", "counters", "commands",
                          "commands", "long"])
    users = [f"C{i}" for i in range(rng.randint(1, 4))]
    if feature == "deep":
        users = [f"D{i}" for i in range(rng.choice([13, 14, 15, 16, 17]))]
    declared = list(users)
    for u in declared:
        lines.append(f":{u} {rng.choice(['-', '-', '-', 'ACCEPT', 'DROP'])} {rng.choice(['[0:0]', '[0:0]', '[x:y]'])}")
    body: list[str] = []
    verb = "-j" if rng.random() < 0.7 else "-g"
    if feature == "loop":
        cycle = users[: rng.randint(1, len(users))]
        for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
            body.append(f"-A {a} {rng.choice(['-j', '-g'])} {b}")
        if rng.random() < 0.7:
            body.insert(rng.randint(0, len(body)), f"-A {rng.choice(builtins)} {verb} {cycle[0]}")
    elif feature == "deep":
        for a, b in itertools.pairwise(users):
            body.append(f"-A {a} {rng.choice(['-j', '-g'])} {b}")
        entry = f"-A {rng.choice(builtins)} {verb} {users[0]}"
        body.insert(rng.choice([0, len(body)]), entry)
    elif feature == "hooks":
        chain = users[0]
        body.append(f"-A {chain} " + rng.choice([
            "-p tcp -j REDIRECT --to-ports 15001", "-m owner --uid-owner 1337 -j RETURN",
            "-p tcp -j DNAT --to-destination 10.0.0.1", "-j MASQUERADE", "-j REJECT", "-j CT --notrack"]))
        body.append(f"-A {rng.choice(builtins)} -j {chain}")
    elif feature == "chains":
        body.append(f"-A {rng.choice(builtins)} -j {rng.choice(['NOPE', 'accept', users[0], builtins[0]])}")
        if rng.random() < 0.3:
            body.append(f"-N {rng.choice([*users, 'FRESH'])}")
        if rng.random() < 0.3:
            body.append(f"-A {rng.choice(['MISSING', users[0]])} -j ACCEPT")
        if rng.random() < 0.3:
            body.append(f"-I {rng.choice(builtins)} {rng.choice([1, 2, 5])} -j ACCEPT")
    elif feature == "counters":
        for _ in range(rng.randint(1, 3)):
            prefix = _pick(rng, (["[1:2] ", "[a:b] ", "[3:4]", "[-1:x]"], ["[1:2 ", "[12] ", "[:] "]), hazard)
            body.append(prefix + _plain_rule(rng, family, rng.choice(builtins + users), hazard))
        if rng.random() < 0.5:
            body.append(f"-A {rng.choice(builtins)} -c {_pick(rng, (['1 2', '0 0'], ['a b', '3']), hazard)} -j ACCEPT")
    elif feature == "commands":  # the other restore commands, on chains with a few rules
        for _ in range(rng.randint(1, 3)):
            body.append(_plain_rule(rng, family, rng.choice(builtins + users), hazard / 3))
        body.append(f"-A {rng.choice(builtins)} -j {users[0]}")
        lines.append(":R0 - [0:0]")
        commands = [_command(rng, family, builtins, users, body, hazard) for _ in range(rng.randint(1, 4))]
        # -F without a chain and -X last: after them iptables-restore 1.8.9 loses sight of the rules the block
        # wrote (a later -D/-C of one fails, -R or -D N crashes or finds no chain; parse._apply)
        body += sorted(commands, key=lambda c: c == "-F" or "-X" in c)
    elif feature == "long":  # past one of iptables-restore's limits, or just below it
        words = rng.choice([240, 251, 251, 252]) - 4
        pad = rng.choice([10_000, 10_239, 10_240, 10_300]) - 30
        body.append(rng.choice([
            f"-A {builtins[0]} " + " ".join(["-m", "comment", "--comment", "w"] * (words // 4)) + " -j ACCEPT",
            f"-A {builtins[0]} -m comment --comment " + "c" * rng.choice([1000, 1023, 1024]) + " -j ACCEPT",
            f"-A {builtins[0]} -m comment --comment x" + " " * pad + "-j ACCEPT",
            f"# {'y' * pad}"]))
    for _ in range(rng.randint(0 if feature != "plain" else 1, 4)):
        body.insert(rng.randint(0, len(body)), _plain_rule(rng, family, rng.choice(builtins + users), hazard))
    if rng.random() < hazard / 2:  # a chain declared after its first use
        body.insert(0, f"-A {builtins[0]} -j LATE")
        body.append(":LATE - [0:0]")
    return lines + body + ["COMMIT"]


def _command(rng: random.Random, family: Family, builtins: list[str], users: list[str], body: list[str],
             hazard: float) -> str:
    """One of -D (a rule written earlier, or by number), -R, -C, -F, -X, -P, -Z on a chain that may not exist."""
    chain = rng.choice(builtins + users + (["NOPE"] if rng.random() < hazard + 0.05 else []))
    written = [line.split(" ", 2) for line in body if line.startswith("-A ")]
    earlier = rng.choice(written) if written else ["-A", chain, "-j ACCEPT"]
    number = rng.choice(["1", "2", "3", "0"] if rng.random() < hazard else ["1", "2"])
    kind = rng.choice(["-D", "-D", "-Dn", "-R", "-C", "-F", "-X", "-P", "-Z"])
    if kind in ("-D", "-C"):
        spec = earlier[2] if len(earlier) > 2 else ""
        return f"{kind} {earlier[1]} {spec if rng.random() >= hazard else '-j DROP'}".rstrip()
    if kind == "-Dn":
        return f"-D {chain} {number}"
    if kind == "-R":  # never a rule this block wrote: replacing one crashes iptables-restore 1.8.9
        chain = rng.choice(["R0", "NOPE"])  # R0 is declared and stays empty
        return f"-R {chain} {number} {_plain_rule(rng, family, chain, hazard)[len(f'-A {chain} '):]}"
    if kind == "-P":
        chain = rng.choice(users[:1] if rng.random() < hazard else builtins)
        return f"-P {chain} {_pick(rng, (['ACCEPT', 'DROP'], ['RETURN', 'drop']), hazard)}"
    if kind == "-X":  # a chain emptied first and never jumped to (users[0] is), or not
        idle = users[1:] or users
        if rng.random() < 0.6:
            chain = rng.choice(idle)
            return f"-F {chain}\n-X {chain}"
        return f"-X {rng.choice(users)}" if rng.random() < 0.6 else "-X"
    return f"{kind}{rng.choice(['', ' ' + chain])}"


def _line_noise(rng: random.Random, lines: list[str], hazard: float) -> list[str]:
    out = list(lines)
    for _ in range(rng.randint(0, 2)):
        pos = rng.randint(0, len(out))
        out.insert(pos, _pick(rng, (["", "# a comment", "#"], ["  # indented comment", "   ", "\t"]), hazard))
    return out


def generate(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    cases: list[Case] = []
    while len(cases) < count:
        i = len(cases)
        family = Family.IPV4 if rng.random() < 0.6 else Family.IPV6
        hazard = 0.0 if rng.random() < 0.5 else rng.choice([0.05, 0.15, 0.3])
        kind = rng.random()
        if kind < 0.06:
            text = rng.choice(["", "\n", "# only a comment\n", "# Generated by ip6tables-save v1.8.9\n# done",
                               "\n\n# x\n\n", "   \n", "COMMIT\n", "-A INPUT -j ACCEPT\n"])
            cases.append(Case(f"{i}-empty", family, text))
            continue
        tables = rng.sample(["filter", "nat", "mangle", "raw"], rng.choice([1, 1, 2]))
        lines: list[str] = []
        if rng.random() < 0.3:
            lines.append(f"# Generated by {'ip6tables' if family is Family.IPV6 else 'iptables'}-save v1.8.9")
        for table in tables:
            lines += _table(rng, family, table, hazard)
        lines = _line_noise(rng, lines, hazard)
        ending = rng.random() * 2 * hazard
        if ending > 0.5:
            lines = [ln + "\r" for ln in lines]  # a file saved with CRLF line ends
        elif ending > 0.4:
            j = rng.randrange(len(lines))
            lines[j] += "\r"
        if rng.random() < hazard / 4:
            lines = lines[:-1]  # COMMIT missing
        text = "\n".join(lines) + ("" if rng.random() < 0.1 else "\n")
        cases.append(Case(f"{i}-{'-'.join(tables)}", family, text))
    return cases
