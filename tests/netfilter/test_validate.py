"""Load-time validation: netsim refuses exactly the rulesets the kernel refuses (root test checks that)."""

from __future__ import annotations

import subprocess

import pytest

from netsim.errors import RulesetError
from netsim.netfilter import parse_ruleset

# (restore text without COMMIT, None if the kernel accepts it, else what netsim's error says)
CASES = [
    ("*nat\n-A PREROUTING -j DROP", 'the "nat" table is not intended for filtering'),
    ("*nat\n:X - [0:0]\n-A X -j DROP", 'the "nat" table is not intended for filtering'),
    ("*nat\n:X - [0:0]\n-A OUTPUT -j X\n-A X -m owner --uid-owner 1 -j RETURN", None),
    ("*nat\n:X - [0:0]\n-A PREROUTING -j X\n-A X -m owner --uid-owner 1 -j RETURN",
     "line 4: -m owner is valid only in OUTPUT/POSTROUTING, but chain X is reached from PREROUTING"),
    ("*nat\n:X - [0:0]\n-A X -m owner --uid-owner 1 -j RETURN\n-A PREROUTING -j X",
     "line 4: -m owner is valid only in OUTPUT/POSTROUTING, but chain X is reached from PREROUTING"),
    ("*nat\n:X - [0:0]\n-A X -m owner --uid-owner 1 -j RETURN", None),
    ("*nat\n:X - [0:0]\n:Y - [0:0]\n-A Y -m owner --uid-owner 1 -j RETURN\n-A X -j Y\n-A PREROUTING -j X",
     "line 6: -m owner is valid only in OUTPUT/POSTROUTING, but chain Y is reached from PREROUTING"),
    ("*mangle\n-A OUTPUT -p tcp -j TPROXY --on-port 1", "-j TPROXY is valid only in PREROUTING"),
    ("*mangle\n:X - [0:0]\n-A PREROUTING -j X\n-A INPUT -j X\n-A X -p tcp -j TPROXY --on-port 1",
     "line 5: -j TPROXY is valid only in PREROUTING, but chain X is reached from INPUT"),
    ("*filter\n-A INPUT -p tcp -j REDIRECT", "-j REDIRECT is valid only in the nat table"),
    ("*nat\n-A INPUT -p tcp -j REDIRECT", "-j REDIRECT is valid only in PREROUTING/OUTPUT"),
    ("*nat\n-A POSTROUTING -j DNAT --to-destination 1.2.3.4", "-j DNAT is valid only in PREROUTING/OUTPUT"),
    ("*nat\n-A INPUT -j SNAT --to-source 1.2.3.4", None),
    ("*nat\n-A INPUT -j MASQUERADE", "-j MASQUERADE is valid only in POSTROUTING"),
    ("*filter\n-A OUTPUT -i lo -j ACCEPT", "Can't use -i with OUTPUT"),
    ("*filter\n-A INPUT -o lo", "Can't use -o with INPUT"),
    ("*filter\n:X - [0:0]\n-A OUTPUT -j X\n-A X -i lo -j ACCEPT", None),
    ("*filter\n-A FORWARD -o lo -i lo", None),
    ("*filter\n-A INPUT -m owner --uid-owner 1", "-m owner is valid only in OUTPUT/POSTROUTING"),
    ("*mangle\n-A INPUT -j REJECT", "-j REJECT is valid only in the filter table"),
    ("*filter\n-A INPUT -j CT --zone 1", "-j CT is valid only in the raw table"),
    ("*raw\n-A OUTPUT -j CT --zone 1", None),
    ("*mangle\n-A POSTROUTING -m socket", "-m socket is valid only in PREROUTING/INPUT"),
    ("*raw\n-A PREROUTING -m socket", None),
    ("*mangle\n-A PREROUTING -j CONNMARK --save-mark", None),
    ("*filter\n-A INPUT -j MARK --set-mark 1", None),
]


@pytest.mark.parametrize(("text", "error"), CASES)
def test_netsim_refuses_what_the_kernel_refuses(text: str, error: str | None) -> None:
    if error is None:
        parse_ruleset(text + "\nCOMMIT\n")
    else:
        with pytest.raises(RulesetError, match=None) as info:
            parse_ruleset(text + "\nCOMMIT\n")
        assert error in str(info.value)


@pytest.mark.root
@pytest.mark.parametrize(("text", "error"), CASES)
def test_the_kernel_agrees(netns: str, text: str, error: str | None) -> None:
    proc = subprocess.run(["ip", "netns", "exec", netns, "iptables-restore"], input=text + "\nCOMMIT\n",
                          text=True, capture_output=True)
    assert (proc.returncode == 0) == (error is None), proc.stderr


@pytest.mark.parametrize("seed", range(4))
def test_the_quick_depth_check_agrees_with_the_path_finder(seed: int) -> None:
    """validate.loads decides "too deep" from each chain's set of jump targets (validate._deep); the path finder
    that names the path (validate._too_deep) walks the rules in order. Seeded random jump graphs (loops, deep
    nests, jumps to built-in chains, repeated targets): the same answer."""
    import random

    from netsim.netfilter.model import Rule, Target
    from netsim.netfilter.validate import MAX_JUMP_LEVEL, _deep, _jumps, _too_deep

    rng = random.Random(seed)
    seen = set()
    for _ in range(400):
        n = rng.randint(1, MAX_JUMP_LEVEL + 4)
        users = [f"C{i}" for i in range(n)]
        rules: dict[str, list[Rule]] = {"OUTPUT": [], "PREROUTING": [], **{u: [] for u in users}}
        chain_mode = rng.random() < 0.5  # a long nest C0 → C1 → … as well as random edges
        for i, name in enumerate(["OUTPUT", "PREROUTING", *users]):
            targets = rng.choices([*users, "OUTPUT", "ACCEPT"], k=rng.randint(0, 3))
            if chain_mode and name.startswith("C") and i - 2 + 1 < n:
                targets.append(f"C{i - 2 + 1}")
            if chain_mode and name == "OUTPUT":
                targets.append("C0")
            if rng.random() < 0.6:  # mostly forward: deep nests without loops
                targets = [t for t in targets if not t.startswith("C") or int(t[1:]) > (int(name[1:]) if
                                                                                      name.startswith("C") else -1)]
            rules[name] = [Rule(target=Target(t)) for t in targets]
        quick = _deep("filter", rules, _jumps("filter", rules))
        assert quick == (_too_deep("filter", rules) is not None), rules
        seen.add(quick)
    assert seen == {True, False}
