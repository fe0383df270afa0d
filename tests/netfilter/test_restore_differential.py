"""The kernel is the judge of what loads: ≥300 seeded hostile rulesets (``hostile_rulesets.py``) are each
given to the real ``iptables-restore``/``ip6tables-restore`` in one scratch namespace, and netsim must accept
exactly the ones the kernel accepts and, for a refused one, name the line iptables-restore names first.

A real restore, not ``--test``: with ``--test`` nothing is committed, and the kernel validates jump loops
and jump depth only at commit (``--test`` accepts ``-A INPUT -j A`` + ``-A A -j A``). One ``ip netns exec``
runs every case, so the whole check takes a few seconds."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from hostile_rulesets import Case, generate

from netsim.errors import RulesetError
from netsim.netfilter import Family, parse_ruleset

SEED = 20261202
COUNT = 400
# Every message form iptables-restore uses names its line so: "Error occurred at line: N",
# "line N: RULE_APPEND failed", "line N failed", "COMMIT expected at line N", "Bad line N: need ]".
_KERNEL_LINE = re.compile(r"line:? (\d+)")
_NETSIM_LINE = re.compile(r"^line (\d+):")


def _kernel(netns: str, cases: list[Case], tmp: Path) -> list[int | None]:
    """Restore each case in ``netns``: None if it loaded, else the first line iptables-restore names."""
    script = []
    for i, case in enumerate(cases):
        (tmp / f"{i}.rules").write_bytes(case.text.encode())
        cmd = "iptables-restore" if case.family is Family.IPV4 else "ip6tables-restore"
        # a failed validation leaves the namespace validating every rule until a commit succeeds (see
        # parse._first_kernel_failure): the empty commit puts it back in the state of a fresh namespace
        script.append(f"{cmd} < {i}.rules 2> {i}.err; echo $? > {i}.rc; printf '*raw\\nCOMMIT\\n' | {cmd}")
    subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", "\n".join(script)], cwd=tmp, check=True,
                   stdin=subprocess.DEVNULL)
    out: list[int | None] = []
    for i in range(len(cases)):
        if (tmp / f"{i}.rc").read_text().strip() == "0":
            out.append(None)
            continue
        err = (tmp / f"{i}.err").read_text(errors="replace")
        found = _KERNEL_LINE.search(err)
        assert found, f"case {cases[i].name}: no line in {err!r}"
        out.append(int(found.group(1)))
    return out


def _netsim(case: Case) -> int | None:
    try:
        parse_ruleset(case.text, case.family)
    except RulesetError as e:
        found = _NETSIM_LINE.match(e.message)
        assert found, f"case {case.name}: netsim's error names no line: {e.message}"
        assert "\n" not in e.message and "\r" not in e.message
        return int(found.group(1))
    return None


@pytest.mark.root
def test_netsim_loads_exactly_what_iptables_restore_loads(netns: str, tmp_path: Path) -> None:
    cases = generate(SEED, COUNT)
    started = time.perf_counter()
    kernel = _kernel(netns, cases, tmp_path)
    kernel_s = time.perf_counter() - started
    started = time.perf_counter()
    ours = [_netsim(case) for case in cases]
    netsim_s = time.perf_counter() - started
    mismatches = [(c.name, k, o, c.text) for c, k, o in zip(cases, kernel, ours, strict=True) if k != o]
    accepted = sum(k is None for k in kernel)
    print(f"{len(cases)} cases: kernel accepted {accepted}, refused {len(cases) - accepted}; "
          f"{len(mismatches)} mismatches; kernel {kernel_s:.2f}s, netsim {netsim_s:.2f}s")
    assert not mismatches, "\n\n".join(f"{n}: kernel line {k}, netsim line {o}\n{t}" for n, k, o, t in mismatches[:5])
    # both outcomes must be well represented, or the test proves little
    assert 0.25 * len(cases) < accepted < 0.75 * len(cases)
