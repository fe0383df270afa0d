"""Lab test helpers and fixtures, imported by the lab tests (not a conftest: "conftest" stays tests/conftest.py).

A private run directory and /etc/netns stand-in, so unit tests never touch the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from netsim.lab import control

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "lab" / "example"


@pytest.fixture(name="run_root")
def run_root_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "run"
    monkeypatch.setenv("NETSIM_LAB_RUN_DIR", str(root))
    monkeypatch.setattr(control, "ETC_NETNS", tmp_path / "etc-netns")
    yield root
