"""Every ``--config`` reader skips, with the same note, a document that is no Kubernetes object at all (a Helm
``values.yaml`` or a ``kustomization.yaml`` beside the manifests), as ``netsim check`` does, and still reads
the objects next to it; a document meant as an object but broken stays an error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.check.test_check_not_objects import _tree
from tests.cli.compile_runner import REPO, run

POD = str(REPO / "rules" / "mtls-503" / "pod.yaml")
SERVICE = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 80}]
"""

COMMANDS = {
    "diagnose": ["diagnose", "--pod", POD],
    "trace": ["trace", "--pod", POD, "--from", "10.1.2.3", "--dst", "10.244.0.5:80"],
    "mesh listeners": ["mesh", "listeners", "--pod", POD],
    "dns table": ["dns", "table", "--namespace", "shop"],
    "dns query": ["dns", "query", "--namespace", "shop", "web"],
    "check": ["check"],
}


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    """check's tree (a Deployment, a Helm values file, a kustomization, a tool's JSON), with a Service and the
    traced pod."""
    d = _tree(tmp_path)
    (d / "svc.yaml").write_text(SERVICE)
    shutil.copy(POD, d / "pod.yaml")
    return d


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_non_objects_are_skipped_with_a_note(name: str, manifests: Path) -> None:
    args = COMMANDS[name]
    args = [*args, str(manifests)] if name == "check" else [*args, "--config", str(manifests)]
    r = run(args)
    assert r.code in (0, 1), (r.code, r.stderr)  # check exits 1 on findings; nothing here is an input error
    assert "Error" not in r.stderr and "field kind" not in r.stderr
    # the report's own notes (diagnose, check, trace: on standard output) or on standard error (the rest)
    notes = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.endswith(": skipped")]
    assert any(f"{manifests / 'values.yaml'}: document 1 (line 1): not a Kubernetes object" in n for n in notes), notes
    assert any("kustomization.yaml" in n and "kustomize's configuration" in n for n in notes), notes
    assert any(f"{manifests / 'tool.json'}: document 1" in n for n in notes), notes
    if name.startswith("dns"):
        assert "10.96.0.20" in r.stdout  # the Service beside them was read


def test_an_object_with_a_mistake_is_still_an_error(manifests: Path) -> None:
    (manifests / "broken.yaml").write_text("apiVersion: v1\nmetadata: {name: x}\n")  # kind missing: meant as one
    r = run(["diagnose", "--pod", POD, "--config", str(manifests)])
    assert r.code == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"Error: {manifests / 'broken.yaml'}: document 1")
