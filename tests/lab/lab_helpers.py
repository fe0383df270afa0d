"""Lab test helpers and fixtures, imported by the lab tests (not a conftest: "conftest" stays tests/conftest.py).

A private run directory and /etc/netns stand-in, so unit tests never touch the real ones.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from netsim.cli import main
from netsim.lab import control

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "lab" / "example"


@pytest.fixture(name="run_root")
def run_root_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "run"
    monkeypatch.setenv("NETSIM_LAB_RUN_DIR", str(root))
    monkeypatch.setattr(control, "ETC_NETNS", tmp_path / "etc-netns")
    yield root


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``netsim ARGV`` in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


def exit_on_signal(prefix: Sequence[str], sig: signal.Signals, code: int) -> int:
    """Run ``PREFIX sh -c SCRIPT`` where the script exits ``code`` on ``sig``; send ``sig`` to the prefix's
    process once the script runs, and return the prefix's exit status (what ``lab exec`` passes on)."""
    script = f"trap 'exit {code}' {sig.name[3:]}; echo ready; sleep 30 & wait"
    proc = subprocess.Popen([*prefix, "sh", "-c", script], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, cwd=REPO, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(sig)
        return proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait()
