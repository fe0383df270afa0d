"""Shared fixtures: where Istio's conformance data lives, and throw-away network namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# ../shared next to the checkout (the brief's layout); NETSIM_CONFORMANCE overrides.
CONFORMANCE = Path(os.environ.get("NETSIM_CONFORMANCE", REPO.parent / "shared" / "conformance"))


def conformance_dir(sub: str) -> Path:
    """The conformance folder ``sub``; skips (with the path in the reason) only if it is absent."""
    path = CONFORMANCE / sub
    if not path.is_dir():
        pytest.skip(f"conformance data not found at {path} (set NETSIM_CONFORMANCE)")
    return path


def root_tools_missing(*tools: str) -> str | None:
    """Why root tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in ("ip", *tools) if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


def require_root(*tools: str) -> None:
    reason = root_tools_missing(*tools)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"root test cannot run in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, empty network namespace (lo up), deleted afterwards whatever happens."""
    require_root("iptables-restore", "iptables-save")
    name = f"nstest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
