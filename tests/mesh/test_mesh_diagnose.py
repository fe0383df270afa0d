"""``netsim diagnose`` checks not covered by the worked examples, with their evidence and fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from netsim.mesh.cli import diagnose_cmd
from netsim.mesh.diagnose import CHECKS, CODES

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  annotations:
    traffic.sidecar.istio.io/excludeInboundPorts: "8080"
    sidecar.istio.io/interceptionMode: TPROXY
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations:
        traffic.sidecar.istio.io/excludeInboundPorts: "9090"
        proxy.istio.io/config: |
          proxyMetadata:
            ISTIO_META_DNS_CAPTURE: "true"
    spec:
      containers:
      - name: web
        image: web
        ports: [{containerPort: 8080}, {containerPort: 9090}]
        args: ["--dns-resolver=8.8.8.8"]
"""

OBJECTS = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.0.5.5
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: grpc-metrics, port: 9090}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: shop, labels: {app: legacy}, annotations: {sidecar.istio.io/inject: "false"}}
spec: {containers: [{name: c, image: c}]}
status: {podIP: 10.4.0.9}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: shop, labels: {app: db, security.istio.io/tlsMode: istio}}
spec: {containers: [{name: c, image: c}]}
status: {podIP: 10.4.0.20}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, labels: {app: db}, annotations: {sidecar.istio.io/inject: "false"}}
spec: {containers: [{name: c, image: c}]}
status: {podIP: 10.4.0.21}
"""


@pytest.fixture
def report(tmp_path: Path) -> dict[str, object]:
    (tmp_path / "deploy.yaml").write_text(DEPLOY)
    (tmp_path / "objs.yaml").write_text(OBJECTS)
    r = CliRunner().invoke(diagnose_cmd, ["--pod", str(tmp_path / "deploy.yaml"), "--config",
                                          str(tmp_path / "objs.yaml"), "--format", "json"])
    assert r.exit_code == 1, r.output
    out: dict[str, object] = json.loads(r.stdout)
    return out


def _by_id(report: dict[str, object]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for f in report["findings"]:  # type: ignore[attr-defined]
        out.setdefault(f["name"], []).append(f)
    return out


def test_mesh_diagnose_finds_each_pitfall(report: dict[str, object]) -> None:
    assert set(_by_id(report)) == {"inbound-port-not-captured", "annotations-on-workload-metadata",
                                   "headless-mixed-sidecars", "strict-mtls-callers-without-sidecar",
                                   "dns-not-captured", "plaintext-to-strict-peer"}


def test_mesh_diagnose_excluded_inbound_port(report: dict[str, object], tmp_path: Path) -> None:
    (f,) = _by_id(report)["inbound-port-not-captured"]
    assert "port 9090" in f["message"] and "excluded" in f["message"]
    assert f["fix"] == "remove 9090 from the traffic.sidecar.istio.io/excludeInboundPorts annotation"
    assert {"what": "Service shop/web port grpc-metrics (9090 → 9090)", "file": str(tmp_path / "objs.yaml"),
            "document": 1} in f["evidence"]  # type: ignore[comparison-overlap]


def test_mesh_diagnose_annotations_on_deployment_metadata(report: dict[str, object]) -> None:
    found = _by_id(report)["annotations-on-workload-metadata"]
    keys = sorted(f["fix"] for f in found)
    assert keys == ["move sidecar.istio.io/interceptionMode to spec.template.metadata.annotations",
                    "move traffic.sidecar.istio.io/excludeInboundPorts to spec.template.metadata.annotations"]
    assert any("the template says '9090'" in f["message"] for f in found)


def test_mesh_diagnose_mixed_headless_strict_callers_and_dns(report: dict[str, object]) -> None:
    by = _by_id(report)
    assert "10.4.0.20" in by["headless-mixed-sidecars"][0]["message"]
    assert "Pod shop/legacy" in by["strict-mtls-callers-without-sidecar"][0]["message"]
    (dns,) = by["dns-not-captured"]
    assert "8.8.8.8" in dns["message"] and "10.96.0.10" in dns["message"]


def test_mesh_diagnose_clean_pod_exits_0(tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: ok, namespace: default}\n"
                                       "spec: {containers: [{name: c, image: c, ports: [{containerPort: 80}]}]}\n"
                                       "status: {podIP: 10.0.0.3}\n")
    r = CliRunner().invoke(diagnose_cmd, ["--pod", str(tmp_path / "pod.yaml"), "--config", str(tmp_path / "pod.yaml")])
    assert r.exit_code == 0 and f"none of the {len(CHECKS)} known capture pitfalls found" in r.stdout


CRONJOB = """\
apiVersion: batch/v1
kind: CronJob
metadata: {name: web, namespace: shop}
spec:
  schedule: "* * * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          labels: {app: web}
          annotations:
            proxy.istio.io/config: |
              proxyMetadata:
                ISTIO_META_DNS_CAPTURE: "true"
        spec:
          containers:
          - name: web
            image: web
            args: ["--dns-resolver=8.8.8.8"]
"""


def test_mesh_diagnose_reads_the_containers_of_a_cronjob_template(tmp_path: Path) -> None:
    (tmp_path / "cron.yaml").write_text(CRONJOB)
    (tmp_path / "objs.yaml").write_text(OBJECTS)
    r = CliRunner().invoke(diagnose_cmd, ["--pod", str(tmp_path / "cron.yaml"), "--config",
                                          str(tmp_path / "objs.yaml"), "--format", "json"])
    (dns,) = _by_id(json.loads(r.stdout))["dns-not-captured"]
    assert "container web queries nameserver 8.8.8.8" in dns["message"]


def test_mesh_diagnose_lists_its_checks_and_each_finding_names_one(report: dict[str, object]) -> None:
    assert report["checks"] == [f"NS{i:04d}" for i in range(1, 13)]
    assert {f["check"] for f in report["findings"]} <= set(report["checks"])  # type: ignore[attr-defined]
    for f in report["findings"]:  # type: ignore[attr-defined]
        assert set(f) == {"check", "name", "severity", "message", "evidence", "fix"}
        assert f["check"] == CODES[f["name"]] and f["severity"] in ("error", "warning")
        assert all(set(e) == {"what", "file", "document"} for e in f["evidence"])
