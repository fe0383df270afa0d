"""Kernel-differential test: netsim's xtables-trace equals the kernel's ``xtables-monitor --trace``.

For every conformance ruleset (``kernel/*.iptables-save`` and ``*.ip6tables-save``) and every
``rules/`` example dump (both families), seeded random probes are sent for real inside namespaces
this test creates and deletes (tests/trace/kernel_diff.py; IPv6 is read with ``nft monitor trace``
because the pinned xtables-monitor cannot print IPv6 rules with layer-4 matches).
Needs root, iproute2, iptables-nft, nft and xtables-monitor; skipped with the reason otherwise.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CONFORMANCE, REPO, require_root
from kernel_diff import SPORT_LO, Pair, make_probes, namespaces, run_ruleset

from netsim.netfilter import Family, parse_ruleset
from netsim.netfilter.dump import split_families

pytestmark = pytest.mark.root

KERNEL = CONFORMANCE / "istio-iptables" / "kernel"
# Probes per ruleset: bounded so the whole test stays well under 4 minutes (bench/ runs more).
PROBES = int(os.environ.get("NETSIM_DIFF_PROBES", "12"))


def _rulesets() -> list[tuple[str, Path, Family | None]]:
    dumps = sorted(KERNEL.glob("*.v4.iptables-save")) + sorted(KERNEL.glob("*.v6.ip6tables-save"))
    found: list[tuple[str, Path, Family | None]] = [(p.name, p, None) for p in dumps]
    # rules/ examples hold `iptables-save; ip6tables-save` output: one case per family section.
    for p in sorted((REPO / "rules").glob("**/*.iptables-save")):
        for fam, _ in split_families(p.read_text()):
            found.append((f"rules/{p.parent.name}/{p.name}.v{fam.value}", p, fam))
    return found


_SPORTS = itertools.count(SPORT_LO)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    require_root("iptables-restore", "ip6tables-restore", "nft", "xtables-monitor", "stdbuf")
    with namespaces() as p:
        yield p


_CASES = _rulesets()


@pytest.mark.parametrize(("name", "path", "family"), _CASES, ids=[c[0] for c in _CASES])
def test_kernel_trace_equals_netsim(pair: Pair, name: str, path: Path, family: Family | None) -> None:
    if family is None:
        ruleset = parse_ruleset(path.read_text())
    else:
        text = next(body for fam, body in split_families(path.read_text()) if fam is family)
        ruleset = parse_ruleset(text, family)
    probes = make_probes(ruleset, name, PROBES, _SPORTS)
    result = run_ruleset(pair, name, ruleset, probes)
    print(f"{name}: {result.compared}/{result.probes} probes compared, {len(result.mismatches)} mismatches")
    assert not result.mismatches, "\n\n".join(result.mismatches)
    assert result.compared == result.probes
