"""Kernel-differential test: netsim's xtables-trace equals the kernel's ``xtables-monitor --trace``.

For every conformance ruleset (``kernel/*.iptables-save`` and ``*.ip6tables-save``), every
``rules/`` example dump (both families) and each release layout compiled from two configurations,
seeded random probes are sent for real inside namespaces this test creates and deletes
(tests/trace/kernel_diff.py; IPv6 is read with ``nft monitor trace`` because the pinned
xtables-monitor cannot print IPv6 rules with layer-4 matches).
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


# Each release layout (spec/istio-iptables-history.md), compiled from one configuration that exercises its
# quirks: TPROXY and REDIRECT, -b * and a list, include and exclude lists, kube-virt and DNS where they exist.
RELEASES = ("1.0", "1.2", "1.4", "1.5.0", "1.5.3", "1.6", "1.8", "1.9", "1.11.3", "1.12.9", "1.18", "1.23", "1.24")
RELEASE_CONFIGS = {
    "redirect": {"istio-inbound-ports": "*", "istio-local-exclude-ports": "15020", "istio-service-cidr": "*",
                 "istio-service-exclude-cidr": "10.96.0.0/12", "kube-virt-interfaces": "vm0"},
    "tproxy": {"istio-inbound-interception-mode": "TPROXY", "istio-inbound-ports": "8080,9090",
               "istio-service-cidr": "10.0.0.0/8"},
}


def _compiled(name: str) -> tuple[str, Family]:
    """``release:<version>:<config>.v<family>`` → that release's compiled rules as iptables-save text."""
    from dataclasses import replace

    from netsim.capture.compiled import compile_config
    from netsim.netfilter.render import render_save
    from netsim.spec.options import config_from_options
    from netsim.spec.versions import profile_for

    _, version, rest = name.split(":")
    config_name, fam = rest.rsplit(".v", 1)
    config = replace(config_from_options(RELEASE_CONFIGS[config_name]), release=profile_for(version).release)
    compiled = compile_config(config)
    ruleset = compiled.ruleset_v4 if fam == "4" else compiled.ruleset_v6
    assert ruleset is not None, name
    return render_save(ruleset), Family.IPV4 if fam == "4" else Family.IPV6


def _release_cases() -> list[tuple[str, Path, Family | None]]:
    out: list[tuple[str, Path, Family | None]] = []
    for version in RELEASES:
        for config_name in RELEASE_CONFIGS:
            fams = ("4", "6") if version in ("1.0", "1.2", "1.4") else ("4",)  # the script's IPv6 lock-down
            out += [(f"release:{version}:{config_name}.v{fam}", Path(), None) for fam in fams]
    return out


_SPORTS = itertools.count(SPORT_LO)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    require_root("iptables-restore", "ip6tables-restore", "nft", "xtables-monitor", "stdbuf")
    with namespaces() as p:
        yield p


_CASES = _rulesets() + _release_cases()


@pytest.mark.parametrize(("name", "path", "family"), _CASES, ids=[c[0] for c in _CASES])
def test_kernel_trace_equals_netsim(pair: Pair, name: str, path: Path, family: Family | None) -> None:
    if name.startswith("release:"):
        text, fam = _compiled(name)
        ruleset = parse_ruleset(text, fam)
    elif family is None:
        ruleset = parse_ruleset(path.read_text())
    else:
        text = next(body for fam, body in split_families(path.read_text()) if fam is family)
        ruleset = parse_ruleset(text, family)
    probes = make_probes(ruleset, name, PROBES, _SPORTS)
    result = run_ruleset(pair, name, ruleset, probes)
    print(f"{name}: {result.compared}/{result.probes} probes compared, {len(result.mismatches)} mismatches")
    assert not result.mismatches, "\n\n".join(result.mismatches)
    assert result.compared == result.probes
