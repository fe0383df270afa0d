"""A pod enrolled in ambient, as the commands that read Kubernetes objects see it: the registry, ``diagnose``
(NS0012), ``check`` and ``dns query`` agree with the rule that ``compile``, ``trace`` and ``migrate`` apply
(``istio.io/dataplane-mode`` on the pod or its namespace; opted out with ``none``; skipped with a sidecar)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from netsim.mesh.cli import diagnose_cmd
from netsim.mesh.files import read_config
from netsim.mesh.proxy import pick_pod
from netsim.migrate import build_migration
from netsim.spec.ambient import decide_mode, namespace_labels
from netsim.spec.pod import load_pod_with_objects

ROOT = Path(__file__).resolve().parents[2]
ANNOTATIONS = {"traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
               "traffic.sidecar.istio.io/excludeInboundPorts": "9090",
               "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.96.0.0/12",
               "proxy.istio.io/config": "proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n"}


def _manifest(tmp_path: Path, *, pod_labels: dict[str, str] | None = None, ns_labels: dict[str, str] | None = None,
              annotations: dict[str, str] | None = None, sidecar: bool = False) -> Path:
    docs: list[dict[str, object]] = []
    if ns_labels is not None:
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": ns_labels}})
    containers: list[dict[str, object]] = [{"name": "app", "image": "x", "ports": [{"containerPort": 8080},
                                                                                   {"containerPort": 9090}]}]
    if sidecar:
        containers.append({"name": "istio-proxy", "image": "proxyv2"})
    docs.append({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "p", "namespace": "shop", "labels": {"app": "p", **(pod_labels or {})},
                              "annotations": annotations or {}},
                 "spec": {"containers": containers}, "status": {"podIP": "10.244.0.5"}})
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


CASES = [  # (pod labels, namespace labels (None: no Namespace object), runs a sidecar)
    ({"istio.io/dataplane-mode": "ambient"}, None, False),
    ({}, {"istio.io/dataplane-mode": "ambient"}, False),
    ({"istio.io/dataplane-mode": "none"}, {"istio.io/dataplane-mode": "ambient"}, False),
    ({}, {"istio.io/dataplane-mode": "ambient"}, True),
    ({}, {"istio-injection": "enabled"}, False),
    ({}, None, False),
    ({"istio.io/dataplane-mode": "ambient"}, {"istio.io/dataplane-mode": "none"}, False),
]


@pytest.mark.parametrize(("pod_labels", "ns_labels", "sidecar"), CASES)
def test_registry_and_compile_decide_enrolment_alike(tmp_path: Path, pod_labels: dict[str, str],
                                                     ns_labels: dict[str, str] | None, sidecar: bool) -> None:
    path = _manifest(tmp_path, pod_labels=pod_labels, ns_labels=ns_labels, sidecar=sidecar)
    pod, objects = load_pod_with_objects(str(path))
    decision = decide_mode(pod, namespace_labels(objects))
    info = pick_pod(read_config([path]).objects.pods)
    assert info is not None
    assert info.ambient is decision.ambient
    assert info.ambient_why == decision.reason
    if info.ambient:
        assert not info.sidecar and "enrolled in ambient" in info.sidecar_why


def _diagnose(*args: str) -> tuple[int, dict[str, Any]]:
    r = CliRunner().invoke(diagnose_cmd, [*args, "--format", "json"])
    return r.exit_code, json.loads(r.stdout)


def test_diagnose_names_each_sidecar_setting_ambient_ignores_as_migrate_does(tmp_path: Path) -> None:
    path = _manifest(tmp_path, ns_labels={"istio.io/dataplane-mode": "ambient"}, annotations=ANNOTATIONS)
    code, report = _diagnose("--pod", str(path), "--config", str(path))
    found = [f for f in report["findings"] if f["check"] == "NS0012"]
    assert code == 1 and found
    flagged = {m["message"].split(": ")[0].split("=")[0] for m in found}
    migration = build_migration(str(path))
    ignored = {f.message.split(": ")[0].split("=")[0] for f in migration.findings
               if f.check in ("annotation-ignored", "proxy-config-ignored")}
    assert flagged == ignored
    assert "annotation traffic.sidecar.istio.io/excludeOutboundPorts" in flagged
    assert "proxy.istio.io/config proxyMetadata ISTIO_META_DNS_CAPTURE" in flagged
    for f in found:
        assert f["severity"] == "warning" and "ambient.istio.io/bypass-inbound-capture" in f["fix"]
        assert f["evidence"][0]["file"] == str(path)


@pytest.mark.parametrize(("pod_labels", "ns_labels"), [({"istio.io/dataplane-mode": "none"},
                                                        {"istio.io/dataplane-mode": "ambient"}),
                                                       ({}, {"istio-injection": "enabled"})])
def test_no_ns0012_where_the_sidecar_reads_the_settings(tmp_path: Path, pod_labels: dict[str, str],
                                                        ns_labels: dict[str, str]) -> None:
    path = _manifest(tmp_path, pod_labels=pod_labels, ns_labels=ns_labels, annotations=ANNOTATIONS)
    _code, report = _diagnose("--pod", str(path), "--config", str(path))
    assert not [f for f in report["findings"] if f["check"] == "NS0012"]


def test_reroute_virtual_interfaces_is_read_in_both_modes(tmp_path: Path) -> None:
    path = _manifest(tmp_path, ns_labels={"istio.io/dataplane-mode": "ambient"},
                     annotations={"istio.io/reroute-virtual-interfaces": "net1"})
    _code, report = _diagnose("--pod", str(path), "--config", str(path))
    assert not [f for f in report["findings"] if f["check"] == "NS0012"], report


def test_check_reports_the_ambient_example_as_diagnose_does() -> None:
    example = ROOT / "rules" / "ambient"
    r = subprocess.run([sys.executable, "-m", "netsim", "check", str(example), "--format", "json"],
                       capture_output=True, text=True)
    checked = json.loads(r.stdout)
    _code, report = _diagnose("--pod", str(example / "shop.yaml"), "--config", str(example))
    from_check = sorted(f["message"] for f in checked["findings"] if f["check"] == "NS0012")
    assert from_check and from_check == sorted(
        f["message"] for f in report["findings"] if f["check"] == "NS0012")


@pytest.mark.parametrize(("version", "annotations", "captured"), [
    (None, {}, True),  # RedirectDNS on from 1.25
    ("1.24", {}, False),
    (None, {"ambient.istio.io/dns-capture": "false"}, False),  # per pod from 1.26
])
def test_dns_query_says_where_an_ambient_pods_queries_go(tmp_path: Path, version: str | None,
                                                         annotations: dict[str, str], captured: bool) -> None:
    path = _manifest(tmp_path, ns_labels={"istio.io/dataplane-mode": "ambient"}, annotations=annotations)
    args = ["dns", "query", "kubernetes.default.svc.cluster.local", "--pod", str(path), "--config", str(path)]
    if version:
        args += ["--istio-version", version]
    r = subprocess.run([sys.executable, "-m", "netsim", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "enrolled in ambient" in r.stdout and "no pilot-agent" not in r.stdout
    assert ("ztunnel's DNS proxy on 15053" in r.stdout) is captured
    assert ("go to its nameservers" in r.stdout) is not captured
    trace = ["trace", "--pod", str(path), "--proto", "udp", "--dst", "10.96.0.10:53", "--format", "json",
             *(["--istio-version", version] if version else [])]
    t = subprocess.run([sys.executable, "-m", "netsim", *trace], capture_output=True, text=True)
    verdict = json.loads(t.stdout)
    assert (verdict["verdict"] == "captured-dns" and verdict["listener"]["owner"] == "ztunnel") is captured


def test_trace_config_shows_no_envoy_hop_for_ztunnel(tmp_path: Path) -> None:
    """--config continues a sidecar's trace into Envoy; ztunnel is not Envoy, so an ambient pod's trace says
    what is not modelled instead of a sidecar's listener and cluster. The same pod as a sidecar pod gets them."""
    config = tmp_path / "mesh.yaml"
    config.write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "web"}, "ports": [{"port": 80, "name": "http"}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
         "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 80}]}]},
         "status": {"podIP": "10.244.0.9"}}]))
    out = {}
    for mode in ("ambient", "sidecar"):
        path = _manifest(tmp_path, ns_labels={"istio.io/dataplane-mode": "ambient"})
        r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--pod", str(path), "--config", str(config),
                            "--mode", mode, "--dst", "10.96.0.20:80", "--format", "json"], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        out[mode] = json.loads(r.stdout)
    assert out["ambient"]["verdict"] == out["sidecar"]["verdict"] == "captured-outbound"
    assert out["ambient"].get("mesh") is None and any("ztunnel, not an Envoy sidecar" in n
                                                  for n in out["ambient"]["notes"])
    assert out["sidecar"]["mesh"]["listener"] and not any("not an Envoy" in n for n in out["sidecar"]["notes"])


def test_the_namespace_may_come_from_config_alone(tmp_path: Path) -> None:
    """A pod file without its Namespace: the Namespace among --config's objects enrols it, for diagnose and
    dns query as for trace (and its istio-injection label injects it)."""
    pod_dir, ns_dir = tmp_path / "pod", tmp_path / "ns"
    pod_dir.mkdir()
    ns_dir.mkdir()
    pod = _manifest(pod_dir, annotations=ANNOTATIONS)
    for labels, ambient in (({"istio.io/dataplane-mode": "ambient"}, True), ({"istio-injection": "enabled"}, False)):
        (ns_dir / "ns.yaml").write_text(yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": labels}}))
        _code, report = _diagnose("--pod", str(pod), "--config", str(ns_dir))
        assert bool([f for f in report["findings"] if f["check"] == "NS0012"]) is ambient
        r = subprocess.run([sys.executable, "-m", "netsim", "dns", "query", "kubernetes.default.svc.cluster.local",
                            "--pod", str(pod), "--config", str(ns_dir)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert ("enrolled in ambient" in r.stdout) is ambient
        t = subprocess.run([sys.executable, "-m", "netsim", "trace", "--pod", str(pod), "--config", str(ns_dir),
                            "--dst", "10.96.0.20:80", "--format", "json"], capture_output=True, text=True)
        owner = json.loads(t.stdout)["listener"]["owner"]
        assert (owner == "ztunnel") is ambient


def test_trace_name_picks_the_object_for_the_rules_and_the_envoy_hop(tmp_path: Path) -> None:
    """trace --name, as compile's and diagnose's: the named object of a file with several (here a sidecar
    pod after an ambient one) gives both the capture rules and --config's sidecar."""
    path = tmp_path / "two.yaml"
    docs = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": n, "namespace": "shop", "labels": lbl},
             "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 80}]}]},
             "status": {"podIP": ip}}
            for n, lbl, ip in (("client", {"istio.io/dataplane-mode": "ambient"}, "10.244.0.5"),
                               ("web", {"app": "web"}, "10.244.0.9"))]
    path.write_text(yaml.safe_dump_all(docs))
    owners = {}
    for name in ("client", "web"):
        r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--pod", str(path), "--name", name,
                            "--config", str(path), "--dst", "10.96.0.20:80", "--format", "json"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        j = json.loads(r.stdout)
        owners[name] = (j["listener"]["owner"], j.get("mesh") is not None)
    assert owners == {"client": ("ztunnel", False), "web": ("sidecar", True)}
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--pod", str(path), "--name", "nope", "--dst",
                        "10.96.0.20:80"], capture_output=True, text=True)
    assert r.returncode == 2 and 'no pod-bearing object named "nope"' in r.stderr
