"""Every case of ../shared/conformance/istio-mesh, run through ``netsim mesh hop`` as the README says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import CONFORMANCE, conformance_dir

from netsim.cli import cli


def _cases() -> list[str]:
    root = CONFORMANCE / "istio-mesh"
    if not root.is_dir():
        return ["(absent)"]
    return sorted(p.name for p in root.iterdir() if (p / "case.yaml").is_file())


def run_case(folder: Path) -> tuple[dict[str, object], dict[str, object]]:
    case = yaml.safe_load((folder / "case.yaml").read_text())
    argv = ["mesh", "hop", "--config", str(folder / "objects.yaml")]
    if (folder / "mesh.yaml").is_file():
        argv += ["--mesh-config", str(folder / "mesh.yaml")]
    argv += [str(a) for a in case["args"]] + ["--format", "json"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    assert result.exception is None
    return case["expect"], json.loads(result.stdout)


@pytest.mark.parametrize("case_id", _cases())
def test_mesh_conformance_case(case_id: str) -> None:
    folder = conformance_dir("istio-mesh") / case_id
    expect, got = run_case(folder)
    diff = {k: (v, got.get(k, "<missing>")) for k, v in expect.items() if got.get(k, "<missing>") != v}
    assert not diff, f"{case_id}: expected vs got {diff}\nreason: {got.get('reason')}"


def test_mesh_conformance_runs_every_case() -> None:
    root = conformance_dir("istio-mesh")
    folders = [p for p in root.iterdir() if p.is_dir()]
    assert folders and all((p / "case.yaml").is_file() for p in folders)
    assert len(_cases()) == len(folders)


@pytest.mark.parametrize("case_id", _cases())
def test_mesh_conformance_case_expect_exit_status(case_id: str) -> None:
    """``--expect`` agrees with the JSON: 0 for the case's verdict, 1 for any other."""
    folder = conformance_dir("istio-mesh") / case_id
    case = yaml.safe_load((folder / "case.yaml").read_text())
    verdict = case["expect"].get("verdict")
    if verdict is None:
        pytest.skip("the case asserts no verdict")
    argv = ["mesh", "hop", "--config", str(folder / "objects.yaml"),
            *(["--mesh-config", str(folder / "mesh.yaml")] if (folder / "mesh.yaml").is_file() else []),
            *(str(a) for a in case["args"])]
    assert CliRunner().invoke(cli, [*argv, "--expect", verdict]).exit_code == 0
    other = "blackhole" if verdict != "blackhole" else "captured"
    assert CliRunner().invoke(cli, [*argv, "--expect", other]).exit_code == 1
