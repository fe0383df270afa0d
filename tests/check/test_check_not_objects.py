"""``netsim check DIR`` on a manifests directory that also holds files that are no Kubernetes objects (a
Helm values.yaml, a kustomization.yaml, a tool's JSON config): they are skipped with a note naming the
file, and the workloads are checked; YAML that does not parse is still bad input (exit 2, file and line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.compile_runner import run

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web, ports: [{containerPort: 8080}]}]}
"""
VALUES = """\
# Helm values
replicaCount: 2
image: {repository: web, tag: "1.2"}
service:
  type: ClusterIP
  port: 80
"""
KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [web.yaml]
"""


def _tree(tmp_path: Path) -> Path:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "web.yaml").write_text(DEPLOY)
    (d / "values.yaml").write_text(VALUES)
    (d / "kustomization.yaml").write_text(KUSTOMIZATION)
    (d / "tool.json").write_text(json.dumps(["not", "an", "object"]))
    return d


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_files_that_are_no_kubernetes_objects_are_skipped_with_a_note(tmp_path: Path, fmt: str) -> None:
    d = _tree(tmp_path)
    code, out, err = run(["check", str(d), "--format", fmt])
    assert code == 0, err
    notes = [ln for ln in (out if fmt == "text" else err).splitlines() if ln.startswith("note: ")]
    skipped = {ln.split(": document")[0].removeprefix("note: ") for ln in notes if ln.endswith(": skipped")}
    assert skipped == {str(d / "values.yaml"), str(d / "kustomization.yaml"), str(d / "tool.json")}
    assert any("Kustomization (kustomize.config.k8s.io/v1beta1)" in n for n in notes)
    if fmt == "json":
        assert json.loads(out)["workloads"] == 1
    else:
        assert "1 workload checked" in out


def test_yaml_that_does_not_parse_is_still_bad_input(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    (d / "values.yaml").write_text(VALUES + "ingress: {enabled: true\nhosts: []\n")
    code, out, err = run(["check", str(d)])
    assert code == 2 and out == ""
    assert f"{d / 'values.yaml'}" in err and "line 8" in err and "invalid YAML" in err and err.count("\n") == 1


def test_an_object_with_a_mistake_is_still_an_error(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    (d / "svc.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {namespace: shop}\n")
    code, _out, err = run(["check", str(d)])
    assert code == 2 and "metadata.name: missing" in err and str(d / "svc.yaml") in err
