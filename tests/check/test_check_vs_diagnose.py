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
    from netsim.mesh.diagnose import mesh_facts
    from netsim.mesh.files import read_config

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


MESH = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: default, namespace: istio-system}
spec: {host: "*.local", trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: own, namespace: a}
spec: {host: "*.d.svc.cluster.local", trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: b}
spec: {egress: [{hosts: ["./*", "istio-system/*"]}]}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: c}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: e}
spec:
  hosts: [legacy.corp.internal]
  exportTo: ["."]
  resolution: DNS
  ports: [{number: 7000, name: tcp, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext2, namespace: d}
spec:
  hosts: [other.corp.internal]
  resolution: DNS
  ports: [{number: 7001, name: tcp, protocol: TCP}]
"""


def _workload(kind: str, name: str, ns: str, port: int, *, inject: bool = True, ip: str | None = None) -> str:
    labels = f"{{app: {name}, sidecar.istio.io/inject: \"{str(inject).lower()}\"}}"
    spec = f"{{containers: [{{name: c, image: c, ports: [{{containerPort: {port}}}]}}]}}"
    svc = (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
           f"spec: {{clusterIP: {'None' if ip else f'10.0.{port % 250}.{len(name)}'}, selector: {{app: {name}}}, "
           f"ports: [{{name: tcp, port: {port}}}]}}\n")
    if kind == "Pod":
        obj = (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\n"
               f"spec: {spec}\nstatus: {{podIP: {ip}}}\n")
    else:
        obj = (f"apiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n"
               f"  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {labels}}}\n"
               f"    spec: {spec}\n")
    return obj + "---\n" + svc


def test_workloads_sharing_a_sidecar_view_get_what_diagnose_gives_each(tmp_path: Path) -> None:
    """Special namespaces (a DestinationRule overriding the mesh's, a Sidecar) get views of their own, the
    others share one; either way each workload's findings are diagnose's for it."""
    docs = [MESH]
    for i, ns in enumerate(("a", "b", "c", "d", "e")):
        docs += [_workload("Deployment", f"web{i}", ns, 8080 + i), _workload("StatefulSet", f"db{i}", ns, 7000),
                 _workload("Pod", f"solo{i}", ns, 9000, ip=f"10.4.{i}.9", inject=i != 3)]
    docs.append(_workload("Deployment", "batch", "d", 6000, inject=False))
    f = tmp_path / "mesh.yaml"
    f.write_text("---\n".join(docs))
    from netsim.check import check_paths

    report = check_paths([f])
    assert report.workloads == 16 and report.views < report.workloads
    by_workload: dict[str, set[tuple[str, str]]] = {}
    for finding in report.findings:
        by_workload.setdefault(finding.workload, set()).add((finding.check, finding.message))
    assert len(by_workload) >= 5  # something to compare
    from netsim.mesh.diagnose import mesh_facts
    from netsim.mesh.files import read_config

    for pod in mesh_facts(read_config([f]).objects).workloads:
        _code, d = _run(["diagnose", "--pod", str(f), "--name", pod.name, "--config", str(f), "--format", "json"])
        expected = {(x["check"], x["message"]) for x in d["findings"]}  # type: ignore[attr-defined]
        assert by_workload.get(pod.ref, set()) == expected, pod.ref
