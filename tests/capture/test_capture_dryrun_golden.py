"""Every iptables conformance case, rendered in Istio's dry-run format, equals Istio's golden byte for byte."""

from __future__ import annotations

import pytest
from capture_cases import FIXTURE_GROUPS, assert_same_text, case_config, case_names, expected
from conftest import conformance_dir

from netsim.capture.dryrun import dry_run, render_dry_run
from netsim.capture.iptables import build
from netsim.netfilter.matches import Names

IPTABLES_CASES = [n for n in case_names() if expected(n, "iptables")]


def test_corpus_present() -> None:
    conformance_dir("istio-iptables")
    assert len(IPTABLES_CASES) == 27


@pytest.mark.parametrize("name", IPTABLES_CASES)
def test_dry_run_matches_istio_golden(name: str) -> None:
    golden = expected(name, "iptables")
    assert golden is not None
    assert_same_text(golden.read_text(), dry_run(case_config(name)), f"{name} dry run")


@pytest.mark.parametrize("name", IPTABLES_CASES)
def test_dry_run_from_built_payloads_is_the_same(name: str) -> None:
    config = case_config(name)
    names = Names(groups=tuple(FIXTURE_GROUPS.items()))
    assert render_dry_run(*build(config, names=names)) == dry_run(config)
