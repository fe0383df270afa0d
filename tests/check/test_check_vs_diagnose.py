"""``netsim check`` on the rules/mesh examples reports, workload by workload, exactly the findings that
``netsim diagnose`` reports for each of them with the same files as --config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from netsim.cli import cli

RULES = Path(__file__).resolve().parents[2] / "rules" / "mesh"
EXAMPLES = sorted(p.parent for p in RULES.glob("*/example.yaml"))


def _run(argv: list[str]) -> tuple[int, dict[str, object]]:
    r = CliRunner().invoke(cli, argv)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    return r.exit_code, json.loads(r.stdout)


def _cases() -> list[tuple[Path, str | None]]:
    out: list[tuple[Path, str | None]] = []
    for folder in EXAMPLES:
        happened = str(yaml.safe_load((folder / "example.yaml").read_text())["happened_on"])
        out += [(folder, happened), (folder, None)]
    return out


@pytest.mark.parametrize(("folder", "version"), _cases(), ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_check_reports_what_diagnose_reports_for_each_workload(folder: Path, version: str | None) -> None:
    files = sorted(str(p) for p in folder.glob("*.yaml") if p.name != "example.yaml")
    opts = ["--istio-version", version] if version else []
    code, report = _run(["check", *files, "--format", "json", "--fail-on", "warning", *opts])
    by_workload: dict[str, set[tuple[str, str]]] = {}
    for f in report["findings"]:  # type: ignore[attr-defined]
        by_workload.setdefault(f["workload"], set()).add((f["check"], f["message"]))
    assert code == (1 if by_workload else 0)
    from netsim.mesh.files import read_config
    from netsim.mesh.diagnose import mesh_facts

    workloads = mesh_facts(read_config(files).objects).workloads
    assert report["workloads"] == len(workloads) > 0
    diagnosed = 0
    for pod in workloads:
        src = pod.where.split(": document")[0]
        dcode, d = _run(["diagnose", "--pod", src, "--name", pod.name, "--config", *files, "--format", "json", *opts])
        expected = {(f["check"], f["message"]) for f in d["findings"]}  # type: ignore[attr-defined]
        assert by_workload.get(pod.ref, set()) == expected, pod.ref
        assert dcode == (1 if expected else 0)
        diagnosed += bool(expected)
    assert diagnosed == len(by_workload)  # no finding of check belongs to a workload diagnose did not report


def test_the_examples_have_findings_to_compare() -> None:
    """The comparison above is not vacuous: the incidents' releases have findings in three examples."""
    with_findings = 0
    for folder, version in _cases():
        if version is None:
            continue
        files = sorted(str(p) for p in folder.glob("*.yaml") if p.name != "example.yaml")
        _code, report = _run(["check", *files, "--format", "json", "--istio-version", version])
        with_findings += bool(report["findings"])
    assert with_findings >= 3
