"""``netsim drift``: the rules a pod has against the rules its spec gives, one dump or a directory of them.

A thin shell over :mod:`netsim.drift`: reads the options and the pod manifests, hands each dump to one
:class:`~netsim.drift.DriftChecker` (so identical dumps and pod specs are computed once), and renders
the reports as text or JSON. The exit status is the answer: 0 no drift, 1 drift, 2 bad input.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import TYPE_CHECKING

import click

from netsim.commands.options import PathsOption, ambient_config_option, mode_option
from netsim.errors import NetsimError, SpecError

if TYPE_CHECKING:
    from netsim.drift.fleet import DriftChecker, DriftReport
    from netsim.spec.pod import PodSource


@click.command("drift")
@click.option("--rules", "rules_path", type=click.Path(),
              help="A pod's iptables-save (and ip6tables-save) output, or any form infer reads, or its nft list "
                   "ruleset, or a directory of them: one file per pod, named after it (NAME, NAMESPACE_NAME or a "
                   "workload's pod name, optionally .txt/.nft/.gz).")
@click.option("--nft", "nft_path", type=click.Path(dir_okay=False),
              help="The pod's nft list ruleset (text or -j JSON), alone or with --rules FILE: the namespace holds "
                   "both (an ambient pod's rules written by both backends is a finding).")
@click.option("--pod", "pod_file", type=click.Path(dir_okay=False),
              help="The pod's manifest (Pod, or a Deployment/StatefulSet/… whose template it runs); with a "
                   "directory of dumps, every pod-bearing object of the file.")
@click.option("--pods", "--config", "pod_paths", cls=PathsOption, multiple=True, type=click.Path(),
              metavar="PATH…", help="Pod manifests, files or directories (e.g. kubectl get pods -A -o yaml), "
                                    "matched to the dumps by name.")
@click.option("--name", help="With --pod FILE and one dump: the object of the file to use (default: the first).")
@click.option("--istio-version", help="The Istio release whose rules the pods should have (default: current).")
@mode_option("a pod enrolled in ambient is compared with the rules istio-cni's agent writes for it")
@ambient_config_option("for the pods in ambient mode")
@click.option("--pod-ip", "pod_ips", multiple=True, help="The pod's addresses (comma list or repeated; default: "
                                                          "the manifest's status.podIPs).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def drift_cmd(rules_path: str | None, nft_path: str | None, pod_file: str | None, pod_paths: tuple[str, ...],
              name: str | None, istio_version: str | None, mode: str | None, ambient_settings: tuple[str, ...],
              pod_ips: tuple[str, ...], fmt: str) -> None:
    """Has this pod's capture drifted from what its spec gives? Compare a dump with the compiled rules.

    Each difference is a finding with a stable code: absent, partial, duplicated, stale-release,
    foreign, annotation-not-applied, dns-capture-off, reordered; for ambient pods also agent-config
    (the node agent ran with other settings) and two-backends (iptables rules and nftables tables both
    written). Rules are compared as iptables-save (nft list ruleset) prints them, so spacing, option
    order and counters never count. An ambient pod's policy routes are not in a dump (a note says so).

    With a directory of dumps: one line per pod and a summary (a progress line on a terminal).

    Exit status: 0 no drift, 1 drift, 2 bad input (with a directory: any dump or pod that could not
    be read, reported on its line).
    """
    from netsim.drift.fleet import DriftChecker
    from netsim.workload.model import parse_addresses

    if pod_file is None and not pod_paths:
        raise SpecError("give the pod's manifest with --pod FILE (or manifests with --pods PATH…)")
    if rules_path is None and nft_path is None:
        raise SpecError("give the pod's rules with --rules FILE|DIR (iptables-save or nft list ruleset) or --nft FILE")
    if ambient_settings:
        from netsim.spec.ambient import settings_given

        settings_given(ambient_settings)  # a bad setting is one error before any dump is read
    if pod_file is not None and pod_paths:
        raise SpecError("--pod and --pods both name the pods: give one of them")
    if istio_version is not None:
        from netsim.istio_version import parse_istio_version

        parse_istio_version(istio_version, option="--istio-version")
    checker = DriftChecker(istio_version=istio_version, pod_ips=parse_addresses(pod_ips), mode=mode,
                           ambient_settings=ambient_settings)
    if rules_path is not None and os.path.isdir(rules_path):
        if name is not None:
            raise SpecError("--name picks one pod for one dump; with a directory the dumps' names pick the pods")
        if nft_path is not None:
            raise SpecError("--nft names one pod's nft list ruleset; with a directory, put each pod's listing in it")
        status = _many(checker, rules_path, pod_file, pod_paths, fmt)
        if status:
            raise click.exceptions.Exit(status)
        return
    if nft_path is not None:
        from netsim.drift.fleet import is_nft
        from netsim.reader import display_name, read_bytes

        if not is_nft(read_bytes(nft_path), display_name(nft_path)):
            raise SpecError(f"option --nft: {display_name(nft_path)} is not an nft list ruleset (iptables-save "
                            "output goes to --rules)")
    paths = [p for p in (rules_path, nft_path) if p is not None]
    pod, namespaces = _one_pod(paths[0], pod_file, pod_paths, name)
    checker.namespaces = namespaces
    if ambient_settings and not checker.decision(pod).ambient:
        raise SpecError(f"option --ambient-config: the pod is compared with sidecar rules "
                        f"({checker.decision(pod).reason}); add --mode ambient")
    report = checker.check_files(pod, paths)
    if fmt == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        for line in _text(report):
            click.echo(line)
    if report.drift:
        raise click.exceptions.Exit(1)


def _one_pod(rules_path: str, pod_file: str | None, pod_paths: tuple[str, ...],
             name: str | None) -> tuple[PodSource, dict[str, dict[str, str]]]:
    """The pod of one dump, and the labels of the Namespace objects read with it."""
    from netsim.drift.fleet import PodCatalog, load_pods_and_namespaces, pod_name_of
    from netsim.spec.ambient import namespace_labels
    from netsim.spec.pod import load_pod_with_objects

    if pod_file is not None:
        pod, objects = load_pod_with_objects(pod_file, name=name)
        return pod, namespace_labels(objects)
    pods, namespaces = load_pods_and_namespaces(pod_paths)
    catalog = PodCatalog(pods)
    return catalog.for_dump(name if name is not None else pod_name_of(os.path.basename(rules_path))), namespaces


def _text(report: DriftReport) -> list[str]:
    head = f"pod {report.pod}, rules {report.rules}, expected from Istio {report.release}"
    if not report.drift:
        return [f"{head}: no drift (the rules are exactly those its spec gives)",
                *(f"  note: {n}" for n in report.notes)]
    n = len(report.findings)
    out = [f"{head}: drift, {n} finding{'s' if n != 1 else ''}"]
    for f in report.findings:
        out.append(f"  {f.severity.value:<7} {f.check.value}: {f.message}")
        out.extend(f"      expected: {r}" for r in f.expected)
        out.extend(f"      found:    {r}" for r in f.found)
    return out + [f"  note: {n}" for n in report.notes]


def _many(checker: DriftChecker, directory: str, pod_file: str | None, pod_paths: tuple[str, ...],
          fmt: str) -> int:
    """Every dump of ``directory`` against its pod: one line each, a summary; returns the exit status."""
    from netsim.commands.progress import ProgressLine
    from netsim.drift.fleet import PodCatalog, dump_files, load_pods_and_namespaces, pod_name_of
    from netsim.reader import read_bytes

    files = dump_files(directory)
    manifests, checker.namespaces = load_pods_and_namespaces([pod_file] if pod_file is not None else pod_paths)
    catalog = PodCatalog(manifests)
    rows: list[tuple[str, DriftReport | NetsimError]] = []
    progress = ProgressLine(sys.stderr, "drift", "dumps")
    try:
        for i, path in enumerate(files, 1):
            dump = pod_name_of(path.name)
            try:
                pod = catalog.for_dump(dump)
                rows.append((dump, checker.check(pod, read_bytes(path), str(path))))
            except NetsimError as e:
                rows.append((dump, e if e.where else e.at(str(path))))
            progress(i, len(files))
    finally:
        progress.done()
    reports = [r for _, r in rows if not isinstance(r, NetsimError)]
    errors = len(rows) - len(reports)
    drifted = [r for r in reports if r.drift]
    checks = Counter(f.check.value for r in drifted for f in r.findings)
    summary = {"dumps": len(rows), "distinct_rulesets": checker.distinct_dumps, "clean": len(reports) - len(drifted),
               "drift": len(drifted), "errors": errors, "checks": dict(sorted(checks.items()))}
    if fmt == "json":
        pods = [{"dump": dump, "error": str(r)} if isinstance(r, NetsimError) else {"dump": dump, **r.as_json()}
                for dump, r in rows]
        click.echo(json.dumps({"pods": pods, "summary": summary}, indent=2))
    else:
        width = max(len(dump) for dump, _ in rows)
        for dump, r in rows:
            if isinstance(r, NetsimError):
                click.echo(f"{dump:<{width}}  error  {r}")
            elif r.drift:
                codes = ", ".join(dict.fromkeys(f.check.value for f in r.findings))
                click.echo(f"{dump:<{width}}  drift  {r.pod}: {codes}")
            else:
                click.echo(f"{dump:<{width}}  ok     {r.pod}")
        by_check = ", ".join(f"{code} {n}" for code, n in summary["checks"].items())  # type: ignore[attr-defined]
        click.echo(f"{len(rows)} dumps ({checker.distinct_dumps} distinct): {summary['clean']} without drift, "
                   f"{len(drifted)} with drift{f' ({by_check})' if by_check else ''}, {errors} "
                   f"error{'s' if errors != 1 else ''}")
    return 2 if errors else 1 if drifted else 0


__all__ = ["drift_cmd"]
