"""``netsim check PATH…``: every workload of a set of manifests, each diagnosed, for CI.

A thin shell over :func:`netsim.check.check_paths`: parses the options, shows a progress line on a
terminal, renders the report as text, JSON or SARIF 2.1.0, and turns ``--fail-on`` into the exit status
(0 nothing at that level, 1 a finding at or above it, 2 bad input).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

if TYPE_CHECKING:
    from netsim.check import CheckReport

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


@click.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text", show_default=True)
@click.option("--fail-on", type=click.Choice(["info", "warning", "error"]), default="error", show_default=True,
              help="Exit status 1 when a finding is at this severity or above.")
@click.option("--istio-version", default=None, metavar="V",
              help="Istio release whose behaviour to simulate (default: current).")
def check_cmd(paths: tuple[str, ...], fmt: str, fail_on: str, istio_version: str | None) -> None:
    """Check every workload in PATH… (files or directories; - for standard input) for the capture pitfalls.

    Workloads are Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, ReplicaSets without an owner in
    the files, and bare Pods (a Pod owned by one of them is reported under it). Services, ServiceEntries,
    DestinationRules, PeerAuthentications, Sidecars and the mesh config (the istio ConfigMap) come from
    the same files; a `kubectl get -A -o yaml` (or -o json) dump works as it is.

    Each finding is `netsim diagnose`'s, with its stable code, at the file and line where the workload's
    manifest starts. Exit status: 0 nothing at --fail-on's level or above, 1 something, 2 bad input.
    """
    from netsim.check import check_paths
    from netsim.commands.progress import ProgressLine

    progress = ProgressLine(sys.stderr, "check", "workloads")
    try:
        report = check_paths(paths, istio_version=istio_version, progress=progress)
    finally:
        progress.done()
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    elif fmt == "sarif":
        click.echo(json.dumps(sarif(report), indent=2))
    else:
        click.echo(render_text(report))
    if fmt != "text":  # what the answer rests on (files skipped, kinds ignored), outside the JSON or SARIF
        for n in report.notes:
            click.echo(f"note: {n}", err=True)
    if report.reaches(fail_on):
        raise click.exceptions.Exit(1)


def render_text(report: CheckReport) -> str:
    lines: list[str] = []
    for f in report.findings:
        at = f"{f.file}:{f.line}: " if f.file else ""
        lines.append(f"{at}[{f.severity}] {f.check} {f.name} ({f.workload}): {f.message}.")
        lines += [f"  evidence: {e}" for e in f.evidence]
        lines.append(f"  fix: {f.fix}.")
    counts = {s: sum(1 for f in report.findings if f.severity == s) for s in ("error", "warning", "info")}
    by = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n) or "no findings"
    if lines:
        lines.append("")
    lines.append(f"{report.workloads} workload{'s' if report.workloads != 1 else ''} checked ({report.istio}): {by}")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _uri(path: str) -> str:
    return quote(path.replace("\\", "/"), safe="/:")


def sarif(report: CheckReport) -> dict[str, Any]:
    """The report as a SARIF 2.1.0 log: one run, a rule per diagnose check, a result per finding located at
    the workload's manifest line, its evidence as related locations."""
    from importlib.metadata import PackageNotFoundError, version

    from netsim.mesh.diagnose import CODES, SUMMARIES

    try:
        tool_version = version("netsim")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        tool_version = "0"
    rules = [{"id": code, "name": name, "shortDescription": {"text": SUMMARIES[name]}} for name, code in CODES.items()]
    index = {code: i for i, code in enumerate(CODES.values())}
    results = []
    for f in report.findings:
        result: dict[str, Any] = {
            "ruleId": f.check, "ruleIndex": index[f.check], "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f"{f.workload}: {f.message}. Fix: {f.fix}."},
            "properties": {"workload": f.workload},
        }
        if f.file and f.file != "<stdin>":
            result["locations"] = [{"physicalLocation": {
                "artifactLocation": {"uri": _uri(f.file)},
                **({"region": {"startLine": f.line}} if f.line else {})}}]
        related = [{"id": i, "message": {"text": e.what}, "physicalLocation": {
            "artifactLocation": {"uri": _uri(e.file)}, **({"region": {"startLine": e.line}} if e.line else {})}}
            for i, e in enumerate(f.evidence, 1) if e.file and e.file != "<stdin>"]
        if related:
            result["relatedLocations"] = related
        results.append(result)
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "netsim", "version": tool_version, "rules": rules}},
        "results": results}]}


__all__ = ["check_cmd", "render_text", "sarif"]
