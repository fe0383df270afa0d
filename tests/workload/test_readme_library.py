"""The README's "Library" section runs as written (from the repository's root)."""

from __future__ import annotations

import os
import re

import pytest
from conftest import REPO


def _library_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Library\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_library_section_has_the_workload_example() -> None:
    blocks = _library_blocks()
    assert blocks and "Workload.from_pod" in blocks[0] and "decision.verdict" in blocks[0]


@pytest.mark.parametrize("n", range(len(_library_blocks())))
def test_readme_library_example_runs(n: int, capsys: pytest.CaptureFixture[str]) -> None:
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        exec(compile(_library_blocks()[n], f"README.md Library block {n + 1}", "exec"), {})
    finally:
        os.chdir(cwd)
    assert capsys.readouterr().out.strip()
