"""The spec's four worked examples (rules/mesh/*/example.yaml), for the release each happened on and today."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from netsim.cli import cli

RULES = Path(__file__).resolve().parents[2] / "rules" / "mesh"


def _steps() -> list[tuple[str, int]]:
    out = []
    for ex in sorted(RULES.glob("*/example.yaml")):
        data = yaml.safe_load(ex.read_text())
        out += [(ex.parent.name, i) for i in range(len(data["steps"]))]
    return out


def run_step(folder: Path, step: dict[str, list[str]]) -> tuple[int, str]:
    argv = [str(folder / a) if (folder / str(a)).is_file() else str(a) for a in step["argv"]]
    result = CliRunner().invoke(cli, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


def test_mesh_examples_cover_the_four_worked_examples() -> None:
    names = {p.parent.name for p in RULES.glob("*/example.yaml")}
    assert len(names) == 4
    for n in names:
        data = yaml.safe_load((RULES / n / "example.yaml").read_text())
        versions = {s["argv"][s["argv"].index("--istio-version") + 1] for s in data["steps"]
                    if "--istio-version" in s["argv"]}
        assert data["happened_on"] in versions, n
        assert any("--istio-version" not in s["argv"] for s in data["steps"]), f"{n}: no step for today"


@pytest.mark.parametrize(("example", "index"), _steps())
def test_mesh_example_step(example: str, index: int) -> None:
    folder = RULES / example
    step = yaml.safe_load((folder / "example.yaml").read_text())["steps"][index]
    code, out = run_step(folder, step)
    assert code == step.get("exit", 0), out
    if "expect" in step:
        got = json.loads(out)
        diff = {k: (v, got.get(k)) for k, v in step["expect"].items() if got.get(k) != v}
        assert not diff, f"{step['name']}: {diff}\n{got['reason']}"
    if "findings" in step:
        assert [f["name"] for f in json.loads(out)["findings"]] == step["findings"], out
    for text in step.get("contains", []):
        assert text in out, f"{step['name']}: {text!r} not in\n{out}"
    for text in step.get("absent", []):
        assert text not in out, f"{step['name']}: {text!r} in\n{out}"
