"""Every kernel/ dump of the corpus equals what netsim says the kernel holds after loading Istio's payload.

The kernel/ files are real ``iptables-save`` output after each golden payload was restored into an empty
namespace (groups java=5001, ftp=5002). Compared table by table: the order of table blocks depends on the
iptables backend.
"""

from __future__ import annotations

import pytest
from capture_cases import FIXTURE_GROUPS, KERNEL_DIR, assert_same_tables, case_config, case_names
from conftest import conformance_dir

from netsim.capture.compiled import compile_config
from netsim.netfilter.matches import Names
from netsim.netfilter.render import render_save

NAMES = Names(groups=tuple(FIXTURE_GROUPS.items()))
KERNEL_FILES = [
    (name, suffix)
    for name in case_names()
    for suffix in ("v4.iptables-save", "v6.ip6tables-save")
    if (KERNEL_DIR / f"{name}.{suffix}").is_file()
]


def test_kernel_corpus_present() -> None:
    conformance_dir("istio-iptables")
    assert len(KERNEL_FILES) >= 27


@pytest.mark.parametrize(("name", "suffix"), KERNEL_FILES)
def test_rendered_save_matches_kernel(name: str, suffix: str) -> None:
    compiled = compile_config(case_config(name), names=NAMES)
    ruleset = compiled.ruleset_v4 if suffix.startswith("v4") else compiled.ruleset_v6
    assert ruleset is not None, f"{name}: no IPv6 ruleset but kernel/{name}.{suffix} exists"
    assert_same_tables((KERNEL_DIR / f"{name}.{suffix}").read_text(), render_save(ruleset), f"{name} {suffix}")
