"""Every nftables conformance case equals Istio's nftables transaction golden byte for byte."""

from __future__ import annotations

import pytest
from capture_cases import assert_same_text, case_config, case_names, expected
from conftest import conformance_dir

from netsim.capture.nft import render_nft

NFT_CASES = [n for n in case_names() if expected(n, "nftables")]


def test_corpus_present() -> None:
    conformance_dir("istio-iptables")
    assert len(NFT_CASES) == 28


@pytest.mark.parametrize("name", NFT_CASES)
def test_nft_transaction_matches_istio_golden(name: str) -> None:
    golden = expected(name, "nftables")
    assert golden is not None
    assert_same_text(golden.read_text(), render_nft(case_config(name)), f"{name} nftables")
