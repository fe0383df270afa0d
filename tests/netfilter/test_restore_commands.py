"""What ``iptables-restore`` does with inputs beyond ``-A``/``-I``/``-N``: non-contiguous masks, address lists
(``-s a,b``), ``localhost`` and other host names, the other restore commands (-D, -R, -C, -F, -X, -P, -Z)
and lines past its buffer. The unit tests state each behaviour; the root test restores every case into a
namespace it creates and compares ``iptables-save`` with netsim's rendering of the same input."""

from __future__ import annotations

import subprocess

import pytest

from netsim.errors import RulesetError
from netsim.netfilter import Family, parse_ruleset, render_save

BASE = """*filter
:FOO - [0:0]
:BAR - [0:0]
-A INPUT -j FOO
-A FOO -j ACCEPT
-A FOO -s 1.1.1.1/32 -j DROP
-A OUTPUT -j DROP
COMMIT
"""

# (name, family, base restored first or None, the input, restored with --noflush when there is a base)
CASES: list[tuple[str, Family, str | None, str]] = [
    ("masks", Family.IPV4, None, "*filter\n-A INPUT -s 10.1.2.3/255.0.255.0 -d 1.2.3.4/0.0.0.255 -j ACCEPT\n"
                                 "-A INPUT ! -s 10.1.2.3/255.255.0.255 -j DROP\n-A INPUT -s 1.1.1.1/0.0.0.1\n"
                                 "-A INPUT -s 1.1.1.1/255.255.255.255 -d 2.2.2.2/255.0.0.0 -j ACCEPT\nCOMMIT\n"),
    ("masks6", Family.IPV6, None, "*filter\n-A INPUT -s fd00::1:2/ffff::ffff -j ACCEPT\n"
                                  "-A INPUT -d ::1/ffff:ffff:: -j DROP\nCOMMIT\n"),
    ("lists", Family.IPV4, None, "*filter\n-A INPUT -s 1.1.1.1,2.2.2.2 -d 3.3.3.3,4.4.4.4/24 -j ACCEPT\n"
                                 "-A INPUT -s 1.1.1.1,1.1.1.1 -j DROP\n-I INPUT 2 -s 5.5.5.5,6.6.6.6 -j DROP\n"
                                 "-A INPUT -s 10.0.0.1/8,10.0.0.2/8,0/0 -j ACCEPT\n"
                                 "-A INPUT -s 1.2.3,7 -d 1.1.1.1/255.0.255.0,2.2.2.2\nCOMMIT\n"),
    ("lists6", Family.IPV6, None, "*filter\n-A INPUT -s ::1,fd00::1/64 -j ACCEPT\nCOMMIT\n"),
    ("localhost", Family.IPV4, None, "*filter\n-A INPUT -s localhost -j ACCEPT\n-A INPUT -d localhost/8,10.0.0.1\n"
                                     "COMMIT\n"),
    ("delete", Family.IPV4, BASE, "*filter\n-D FOO -s 1.1.1.1 -j DROP\n-D INPUT 1\n-A INPUT -j BAR\nCOMMIT\n"),
    ("delete-list", Family.IPV4, BASE, "*filter\n-A FOO -s 2.2.2.2 -j DROP\n-D FOO -s 1.1.1.1,2.2.2.2 -j DROP\n"
                                       "COMMIT\n"),
    ("replace-check", Family.IPV4, BASE, "*filter\n-R FOO 2 -s 3.3.3.3 -j ACCEPT\n-C FOO -j ACCEPT\n"
                                         "-C INPUT -j FOO\nCOMMIT\n"),
    ("flush-chain", Family.IPV4, BASE, "*filter\n-A FOO -j RETURN\n-F FOO\n-A FOO -j DROP\nCOMMIT\n"),
    ("flush-all-noflush", Family.IPV4, BASE, "*filter\n-A BAR -j RETURN\n-F\n-A OUTPUT -j ACCEPT\nCOMMIT\n"),
    ("flush-all", Family.IPV4, None, "*filter\n:C1 - [0:0]\n-A C1 -j ACCEPT\n-A INPUT -j DROP\n-F\nCOMMIT\n"),
    ("delete-chains", Family.IPV4, BASE, "*filter\n-D INPUT -j FOO\n-F FOO\n-X FOO\n-X BAR\n-N FOO\n"
                                         "-A FOO -j RETURN\nCOMMIT\n"),
    ("delete-all-chains", Family.IPV4, BASE, "*filter\n-F\n-X\nCOMMIT\n"),
    ("policy-zero", Family.IPV4, BASE, "*filter\n-P INPUT DROP\n-P OUTPUT ACCEPT -c 1 2\n-Z\n-Z FOO\nCOMMIT\n"),
    ("comment-line-hides-a-rule", Family.IPV4, None,
     "*filter\n# " + "y" * 10_237 + "-A INPUT -j ACCEPT\nCOMMIT\n"),
    ("rule-line-cut-in-two", Family.IPV4, None,
     "*filter\n-A INPUT -m comment --comment x" + " " * 10_208 + "\n-A OUTPUT -j DROP\nCOMMIT\n"),
]


def _ours(family: Family, base: str | None, text: str) -> str:
    rs = parse_ruleset(text, family) if base is None else \
        parse_ruleset(text, family, base=parse_ruleset(base, family), noflush=True)
    return render_save(rs)


def _rules(save: str) -> list[str]:
    return [ln for ln in save.splitlines() if ln.startswith(("-A", ":"))]


def test_a_non_contiguous_mask_is_kept_and_applied_to_the_address() -> None:
    out = _ours(Family.IPV4, None, CASES[0][3])
    assert "-A INPUT -s 10.0.2.0/255.0.255.0 -d 0.0.0.4/0.0.0.255 -j ACCEPT" in out
    assert "-A INPUT -s 1.1.1.1/32 -d 2.0.0.0/8 -j ACCEPT" in out  # contiguous masks print as lengths


def test_an_address_list_is_one_rule_per_address_sources_outermost() -> None:
    out = _rules(_ours(Family.IPV4, None, "*filter\n-A INPUT -s 1.1.1.1,2.2.2.2 -d 3.3.3.3,4.4.4.0/24\n"
                                          "-I INPUT 1 -s 5.5.5.5,6.6.6.6\nCOMMIT\n"))
    assert [r for r in out if r.startswith("-A")] == [
        "-A INPUT -s 6.6.6.6/32", "-A INPUT -s 5.5.5.5/32",  # each inserted at position 1 in turn
        "-A INPUT -s 1.1.1.1/32 -d 3.3.3.3/32", "-A INPUT -s 1.1.1.1/32 -d 4.4.4.0/24",
        "-A INPUT -s 2.2.2.2/32 -d 3.3.3.3/32", "-A INPUT -s 2.2.2.2/32 -d 4.4.4.0/24"]


@pytest.mark.parametrize(("rule", "message"), [
    ("! -s 1.1.1.1,2.2.2.2", "line 2: ! not allowed with multiple"),
    ("-s 1.1.1.1,", "line 2: host/network `' not found"),
    ("-d db.example", "line 2: `db.example' is a host name: iptables-restore resolves names when it loads"),
])
def test_address_lists_and_names_that_iptables_refuses(rule: str, message: str) -> None:
    with pytest.raises(RulesetError, match=message):
        parse_ruleset(f"*filter\n-A INPUT {rule} -j ACCEPT\nCOMMIT\n")


def test_localhost_is_the_one_name_netsim_resolves() -> None:
    assert "-A INPUT -s 127.0.0.1/32 -j ACCEPT" in _ours(Family.IPV4, None, CASES[4][3])
    assert "-A INPUT -s ::1/128" in _ours(Family.IPV6, None, "*filter\n-A INPUT -s localhost\nCOMMIT\n")


@pytest.mark.parametrize(("text", "line", "message"), [
    ("*filter\n-A INPUT -j ACCEPT\n-D FOO -s 2.2.2.2 -j DROP\nCOMMIT\n", 3, "Bad rule"),
    ("*filter\n-D FOO 5\nCOMMIT\n", 2, "Index of deletion too big"),
    ("*filter\n-R FOO 3 -j ACCEPT\nCOMMIT\n", 2, "Index of replacement too big"),
    ("*filter\n-R FOO 1 -s 3.3.3.3,4.4.4.4 -j ACCEPT\nCOMMIT\n", 2, "Replacement rule does not specify a unique"),
    ("*filter\n-R FOO 0 -j ACCEPT\nCOMMIT\n", 2, "Invalid rule number `0'"),
    ("*filter\n-X FOO\nCOMMIT\n", 2, "Device or resource busy"),  # it has rules and is jumped to
    ("*filter\n-F FOO\n-X FOO\nCOMMIT\n", 3, "Device or resource busy"),  # still jumped to
    ("*filter\n-X INPUT\nCOMMIT\n", 2, "Device or resource busy"),
    ("*filter\n-X NOPE\nCOMMIT\n", 2, "does not exist"),
    ("*filter\n-X BAR\n-A INPUT -j BAR\nCOMMIT\n", 4, "Chain 'BAR' does not exist"),
    ("*filter\n-P FOO DROP\nCOMMIT\n", 2, "Bad built-in chain name"),
    ("*filter\n-P INPUT REJECT\nCOMMIT\n", 2, "Bad policy name"),
    ("*filter\n-Z NOPE\nCOMMIT\n", 2, "does not exist"),
    ("*filter\n-C FOO -j DROP\nCOMMIT\n", 2, "Bad rule"),
    ("*nat\n-P OUTPUT DROP\nCOMMIT\n", 2, "not intended for filtering"),
])
def test_restore_commands_fail_where_iptables_restore_fails(text: str, line: int, message: str) -> None:
    with pytest.raises(RulesetError, match=f"^line {line}: .*{message}"):
        parse_ruleset(text, base=parse_ruleset(BASE), noflush=True)


def test_lines_past_iptables_restore_limits() -> None:
    words = "-A INPUT -p tcp --syn" + " -m comment --comment w" * 61 + " -j ACCEPT"  # 251 words: loads
    parse_ruleset(f"*filter\n{words}\nCOMMIT\n")
    with pytest.raises(RulesetError, match=r"^line 2: Parser cannot handle more arguments"):
        parse_ruleset(f"*filter\n{words} -f\nCOMMIT\n")
    parse_ruleset(f"*filter\n-A INPUT -m comment --comment {'c' * 1023}\nCOMMIT\n")
    with pytest.raises(RulesetError, match=r"^line 2: Parameter too long"):
        parse_ruleset(f"*filter\n-A INPUT -m comment --comment {'c' * 1024}\nCOMMIT\n")
    # a line is read 10,239 characters at a time: the rest is a line of its own, with its own number
    with pytest.raises(RulesetError, match=r"^line 3: Bad argument `T'"):
        parse_ruleset("*filter\n-A INPUT -m comment --comment x" + " " * 10_199 + " -j ACCEPT\nCOMMIT\n")
    assert "-A INPUT -j ACCEPT" in _ours(Family.IPV4, None, CASES[-2][3])


@pytest.mark.root
@pytest.mark.parametrize(("name", "family", "base", "text"), CASES, ids=[c[0] for c in CASES])
def test_the_kernel_saves_what_netsim_renders(netns: str, name: str, family: Family, base: str | None,
                                             text: str) -> None:
    prefix = "iptables" if family is Family.IPV4 else "ip6tables"

    def restore(payload: str, *flags: str) -> None:
        subprocess.run(["ip", "netns", "exec", netns, f"{prefix}-restore", *flags], input=payload, text=True,
                       check=True)

    restore("*filter\nCOMMIT\n")
    if base is not None:
        restore(base)
    restore(text, *(["--noflush"] if base is not None else []))
    kernel = subprocess.run(["ip", "netns", "exec", netns, f"{prefix}-save", "-t", "filter"], capture_output=True,
                            text=True, check=True).stdout
    assert _rules(_ours(family, base, text)) == _rules(kernel)
