"""Every conformance case, rendered in Istio's dry-run format and as Istio's nftables transaction,
equals Istio's golden byte for byte."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from capture_cases import FIXTURE_GROUPS, assert_same_text, case_config, case_names, expected
from conftest import conformance_dir

from netsim.capture.config import CaptureConfig
from netsim.capture.dryrun import dry_run, render_dry_run
from netsim.capture.iptables import build
from netsim.capture.nft import render_nft
from netsim.netfilter.matches import Names

# golden kind (the case file's expected_file key) -> the renderer, and how many cases have one
RENDERERS: dict[str, tuple[Callable[[CaptureConfig], str], int]] = {
    "iptables": (dry_run, 27),
    "nftables": (render_nft, 28),
}
CASES = [(name, kind) for kind in RENDERERS for name in case_names() if expected(name, kind)]


@pytest.mark.parametrize("kind", RENDERERS)
def test_corpus_present(kind: str) -> None:
    conformance_dir("istio-iptables")
    assert sum(k == kind for _, k in CASES) == RENDERERS[kind][1]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_rendering_matches_istio_golden(name: str, kind: str) -> None:
    golden = expected(name, kind)
    assert golden is not None
    render = RENDERERS[kind][0]
    assert_same_text(golden.read_text(), render(case_config(name)), f"{name} {kind}")


@pytest.mark.parametrize("name", [name for name, kind in CASES if kind == "iptables"])
def test_dry_run_from_built_payloads_is_the_same(name: str) -> None:
    config = case_config(name)
    names = Names(groups=tuple(FIXTURE_GROUPS.items()))
    assert render_dry_run(*build(config, names=names)) == dry_run(config)
