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


NETNS_TIMEOUT = 60


def run_in_netns(ns: str, argv: list[str], stdin: str | None = None, group_file: Path | None = None,
                 *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside network namespace ``ns``; with ``group_file``, in a private mount namespace
    (``unshare -m``) where it is bind-mounted over /etc/group (invisible outside: the host's file is
    never touched). ``check``: a failure fails the test, naming the command and its stderr."""
    cmd = ["ip", "netns", "exec", ns, *argv]
    if group_file is not None:
        script = 'mount --bind "$1" /etc/group && shift && exec "$@"'
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(group_file), *cmd]
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=NETNS_TIMEOUT, check=False)
    if check:
        assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}"
    return done


def group_file_with(path: Path, groups: dict[str, int]) -> Path:
    """Write a copy of /etc/group plus ``groups`` to ``path``, for :func:`run_in_netns`."""
    base = Path("/etc/group").read_text() if Path("/etc/group").is_file() else ""
    extra = "".join(f"{name}:x:{gid}:\n" for name, gid in groups.items())
    path.write_text(base + ("" if base.endswith("\n") or not base else "\n") + extra)
    return path
