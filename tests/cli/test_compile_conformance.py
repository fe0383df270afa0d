"""Istio's conformance cases through the command line: each case's config spelled as istio-iptables
flags and environment variables (plus --ipv6/--dns-servers-*), compiled by ``netsim compile``, must
give Istio's golden byte for byte (after trimming) and, as iptables-save, the kernel's own output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from compile_runner import compile_, invocation, save_tables
from conftest import CONFORMANCE, conformance_dir

CASES = CONFORMANCE / "istio-iptables"
NAMES = sorted(p.stem for p in CASES.glob("*.yaml")) if CASES.is_dir() else []


def case(name: str) -> dict[str, Any]:
    data = yaml.safe_load((conformance_dir("istio-iptables") / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_and_nft_equal_istios_goldens(name: str) -> None:
    data = case(name)
    args, env = invocation(data["config"])
    for fmt, kind in (("istio-dry-run", "iptables"), ("nft", "nftables")):
        rel = data["expected_file"].get(kind)
        if rel is None:
            continue
        r = compile_(*args, "--format", fmt, env=env)
        assert r.code == 0, r.stderr
        assert r.stdout.strip() == (CASES / rel).read_text().strip(), f"{name} {fmt}"


@pytest.mark.parametrize("name", NAMES)
def test_iptables_save_equals_the_kernels(name: str, tmp_path: Path) -> None:
    data = case(name)
    args, env = invocation(data["config"])
    # The groups the kernel/ files were made with (conformance README).
    group_file = tmp_path / "group"
    group_file.write_text("root:x:0:\njava:x:5001:\nftp:x:5002:\n")
    args.append(f"--group-file={group_file}")
    for family, suffix in (("4", "v4.iptables-save"), ("6", "v6.ip6tables-save")):
        kernel = CASES / "kernel" / f"{name}.{suffix}"
        if not kernel.exists():
            continue
        r = compile_(*args, "--family", family, env=env)
        assert r.code == 0, r.stderr
        assert save_tables(r.stdout) == save_tables(kernel.read_text()), f"{name} v{family}"
