"""The bundled examples in ``rules/``: each variant of each example, compiled in every text format,
equals its golden file. ``NETSIM_REFRESH_GOLDEN=1`` rewrites netsim's own goldens here (never the
shared conformance data)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest
import yaml
from compile_runner import REPO, compile_

RULES = REPO / "rules"
EXAMPLES: dict[str, dict[str, list[str]]] = yaml.safe_load((RULES / "examples.yaml").read_text())
FORMATS = {  # golden suffix → extra arguments
    "iptables-save": ["--format", "iptables-save"],
    "istio-dry-run": ["--format", "istio-dry-run"],
    "nft": ["--format", "nft"],
    "explain.txt": ["--explain"],
}
REFRESH = os.environ.get("NETSIM_REFRESH_GOLDEN") == "1"
# A release before 1.27 had no nftables backend: `--format nft` is refused for it (test_compile_history).
CASES = [(ex, variant, suffix) for ex, variants in EXAMPLES.items() for variant in variants for suffix in FORMATS
         if not (suffix == "nft" and "--istio-version" in variants[variant])]


def check_golden(path: Path, actual: str) -> None:
    if REFRESH:
        path.write_text(actual)
        return
    assert path.exists(), f"missing golden {path.relative_to(REPO)} (run with NETSIM_REFRESH_GOLDEN=1)"
    expected = path.read_text()
    if expected != actual:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), actual.splitlines(), str(path), "netsim",
                                              lineterm=""))
        raise AssertionError(f"{path.relative_to(REPO)} differs:\n{diff}")


@pytest.mark.parametrize(("example", "variant", "suffix"), CASES, ids=["/".join(c) for c in CASES])
def test_example_matches_its_golden(example: str, variant: str, suffix: str) -> None:
    args = ["--pod", f"rules/{example}/pod.yaml", *EXAMPLES[example][variant], *FORMATS[suffix]]
    r = compile_(*args)
    assert r.code == 0, r.stderr
    check_golden(RULES / example / f"{variant}.{suffix}", r.stdout)


def test_every_example_folder_is_listed_and_documented() -> None:
    folders = {p.parent.name for p in RULES.glob("*/pod.yaml")}
    assert folders == set(EXAMPLES)
    readme = (RULES / "README.md").read_text()
    for name in folders:
        assert f"`{name}/`" in readme


def test_no_stray_goldens() -> None:
    expected = {RULES / ex / f"{v}.{s}" for ex, v, s in CASES}
    found = {p for ex in EXAMPLES for p in (RULES / ex).iterdir() if p.name != "pod.yaml"}
    assert found <= expected, sorted(str(p) for p in found - expected)
