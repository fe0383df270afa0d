"""How ``netsim check`` places and keeps findings: every finding diagnose reports is reported (two alike
but for their evidence are two), and files, documents and lines come from where the objects were read
(data), not from re-reading the ``file: document N`` text of their messages."""

from __future__ import annotations

from pathlib import Path

from netsim.check import check_paths

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
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
        env: [{name: RESOLVER, value: "dns://8.8.8.8:53"}]
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.0.0.7, selector: {app: web}, ports: [{name: http, port: 80}]}
"""


def test_two_findings_alike_but_for_their_evidence_are_both_reported(tmp_path: Path) -> None:
    f = tmp_path / "web.yaml"
    f.write_text(SERVICE + "---\n" + DEPLOY)
    report = check_paths([f])
    dns = [x for x in report.findings if x.check == "NS0008"]
    # the same nameserver in the arguments and in the environment: one message, two places
    assert len(dns) == 2 and dns[0].message == dns[1].message
    assert {e.what for x in dns for e in x.evidence} >= {
        "Deployment shop/web: container web: --dns-resolver=8.8.8.8",
        "Deployment shop/web: container web: dns://8.8.8.8:53"}
    assert all(x.file == str(f) and x.line == 6 for x in dns)  # the Deployment's document starts after ---
    assert all(e.line == 6 for x in dns for e in x.evidence if e.file)


def test_places_come_from_where_objects_were_read_not_from_their_text(tmp_path: Path) -> None:
    # a directory whose name reads like a location: ``file: document N`` text would be cut at it
    folder = tmp_path / "x: document 1: y"
    folder.mkdir()
    f = folder / "web.yaml"
    f.write_text("# the shop\n" + SERVICE + "---\n" + DEPLOY)
    report = check_paths([folder])
    assert report.findings
    for x in report.findings:
        assert (x.file, x.line) == (str(f), 7)
        located = [e for e in x.evidence if e.file]
        assert located and all((e.file, e.line) == (str(f), 7) for e in located if "Deployment" in e.what)
        assert all((e.file, e.line) == (str(f), 1) for e in located if e.what.startswith("Service "))
