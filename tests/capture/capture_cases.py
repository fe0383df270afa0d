"""Istio's capture conformance cases, read in place from ../shared/conformance/istio-iptables."""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from conftest import CONFORMANCE

from netsim.capture.config import CaptureConfig
from netsim.spec.options import config_from_options

CASE_DIR = CONFORMANCE / "istio-iptables"
KERNEL_DIR = CASE_DIR / "kernel"
# The groups the kernel/ files were made with (conformance README "How the kernel/ files were made").
FIXTURE_GROUPS = {"java": 5001, "ftp": 5002}


def case_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in CASE_DIR.glob("*.yaml")) if CASE_DIR.is_dir() else []


@cache
def load_case(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CASE_DIR / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def case_config(name: str) -> CaptureConfig:
    return config_from_options(load_case(name)["config"])


def expected(name: str, kind: str) -> Path | None:
    rel = load_case(name).get("expected_file", {}).get(kind)
    return CASE_DIR / rel if rel else None


def assert_same_text(expected_text: str, actual_text: str, label: str) -> None:
    """Compare after trimming, as Istio's golden tests do; fail with a unified diff."""
    want, got = expected_text.strip(), actual_text.strip()
    if want != got:
        diff = "\n".join(
            difflib.unified_diff(want.splitlines(), got.splitlines(), "expected", "netsim", lineterm="")
        )
        raise AssertionError(f"{label} differs:\n{diff}")


def split_tables(text: str) -> dict[str, str]:
    """``*table`` … ``COMMIT`` blocks of an iptables-save text, keyed by table; ``#`` lines dropped."""
    tables: dict[str, str] = {}
    current: list[str] = []
    name = ""
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("*"):
            name, current = line[1:].strip(), [line]
            continue
        current.append(line)
        if line == "COMMIT":
            tables[name] = "\n".join(current) + "\n"
    return tables


def assert_same_tables(expected_text: str, actual_text: str, label: str) -> None:
    want, got = split_tables(expected_text), split_tables(actual_text)
    assert sorted(got) == sorted(want), f"{label}: tables {sorted(got)} != {sorted(want)}"
    for table in want:
        assert_same_text(want[table], got[table], f"{label} table {table}")
