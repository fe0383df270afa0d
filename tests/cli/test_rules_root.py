"""Root: each rules/ example, compiled as iptables-save text, loads into a fresh network namespace with
the real iptables-restore, and iptables-save there prints it back exactly (table by table)."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from compile_runner import REPO, compile_, save_tables

pytestmark = pytest.mark.root

EXAMPLES: dict[str, dict[str, list[str]]] = yaml.safe_load((REPO / "rules" / "examples.yaml").read_text())
CASES = [(ex, variant) for ex, variants in EXAMPLES.items() for variant in variants]


@pytest.mark.parametrize(("example", "variant"), CASES, ids=["/".join(c) for c in CASES])
def test_example_loads_into_the_kernel_and_saves_back_unchanged(example: str, variant: str, netns: str) -> None:
    args = ["--pod", f"rules/{example}/pod.yaml", *EXAMPLES[example][variant]]
    ipv6 = compile_(*args, "--family", "6").code == 0
    for family, restore, save in (("4", "iptables-restore", "iptables-save"),
                                  ("6", "ip6tables-restore", "ip6tables-save")):
        if family == "6" and not ipv6:
            continue
        r = compile_(*args, "--family", family)
        assert r.code == 0, r.stderr
        subprocess.run(["ip", "netns", "exec", netns, restore], input=r.stdout, text=True, check=True, timeout=60)
        saved = subprocess.run(["ip", "netns", "exec", netns, save], capture_output=True, text=True, check=True,
                               timeout=60).stdout
        assert save_tables(saved) == save_tables(r.stdout), f"{example}/{variant} IPv{family}"
