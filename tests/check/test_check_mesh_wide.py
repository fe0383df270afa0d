"""The mesh-wide findings of ``netsim check``, each on a small manifest set built for it, and diagnose's
rules corrected where a whole mesh shows them wrong (exportTo, the sidecar's own ports)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from netsim.cli import cli


def _deploy(name: str, ns: str, *, ports: tuple[int, ...] = (), inject: bool = True, annotations: str = "") -> str:
    port_list = ", ".join(f"{{containerPort: {p}}}" for p in ports)
    ann = f"\n      annotations: {{{annotations}}}" if annotations else ""
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}, sidecar.istio.io/inject: "{str(inject).lower()}"}}{ann}
    spec:
      containers:
      - name: {name}
        image: {name}
        ports: [{port_list}]
"""


def _check(tmp_path: Path, docs: list[str], *extra: str) -> tuple[int, dict[str, list[dict[str, object]]]]:
    f = tmp_path / "mesh.yaml"
    f.write_text("---\n".join(docs))
    r = CliRunner().invoke(cli, ["check", str(f), "--format", "json", "--fail-on", "warning", *extra])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    report = json.loads(r.stdout)
    by: dict[str, list[dict[str, object]]] = {}
    for finding in report["findings"]:
        by.setdefault(str(finding["check"]), []).append(finding)
    return r.exit_code, by


def test_wildcard_listener_from_one_namespace_hijacks_a_port_served_elsewhere(tmp_path: Path) -> None:
    se = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy-db, namespace: tools}
spec:
  hosts: [db.legacy.corp]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 9000, name: tcp-db, protocol: TCP}]
"""
    docs = [se, _deploy("server", "data", ports=(9000,)), _deploy("client", "web")]
    code, by = _check(tmp_path, docs)
    hijacked = {str(f["workload"]) for f in by["NS0003"]}
    # the client serves nothing on 9000, but the server in another namespace does: its connections to the
    # server's pods on 9000 go to the ServiceEntry's STRICT_DNS cluster
    assert "Deployment web/client" in hijacked and "Deployment data/server" in hijacked
    (client,) = [f for f in by["NS0003"] if f["workload"] == "Deployment web/client"]
    whats = [e["what"] for e in client["evidence"]]  # type: ignore[attr-defined]
    assert any("ServiceEntry tools/legacy-db" in w for w in whats)
    assert any(w == "port 9000 of Deployment data/server" for w in whats)
    seps = [i for i, line in enumerate("---\n".join(docs).split("\n")) if line == "---"]
    assert client["line"] == seps[1] + 2 and code == 1  # the client's document: the line after the second ---
    # limited to its namespace, the ServiceEntry hijacks nothing elsewhere
    docs[0] = se.replace("  hosts:", "  exportTo: [\".\"]\n  hosts:")
    _code, by = _check(tmp_path, docs)
    assert "NS0003" not in by


def test_hostname_defined_in_two_namespaces_is_reported_once_per_workload_that_sees_both(tmp_path: Path) -> None:
    def se(ns: str, addr: str) -> str:
        return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: {ns}}}
spec:
  hosts: [api.example.org]
  addresses: [{addr}]
  resolution: STATIC
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  endpoints: [{{address: {addr}}}]
"""
    docs = [se("team-a", "240.0.0.1"), se("team-b", "240.0.0.2"), _deploy("one", "shop"), _deploy("two", "shop")]
    _code, by = _check(tmp_path, docs)
    found = by["NS0010"]
    assert {"Deployment shop/one", "Deployment shop/two"} <= {str(f["workload"]) for f in found}
    assert len(found) == len({str(f["workload"]) for f in found})  # once per workload
    for f in found:
        lines = {e["line"] for e in f["evidence"]}  # type: ignore[attr-defined]
        seps = [i for i, line in enumerate("---\n".join(docs).split("\n")) if line == "---"]
        assert lines == {1, seps[0] + 2}  # both ServiceEntries, at the lines their documents start


def test_strict_peer_and_workloads_without_sidecars(tmp_path: Path) -> None:
    pa = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bank}
spec: {mtls: {mode: STRICT}}
"""
    docs = [pa, _deploy("ledger", "bank", ports=(8080,)), _deploy("batch", "jobs", inject=False)]
    _code, by = _check(tmp_path, docs)
    (f,) = by["NS0006"]
    assert f["workload"] == "Deployment bank/ledger"
    whats = [e["what"] for e in f["evidence"]]  # type: ignore[attr-defined]
    assert "PeerAuthentication bank/default" in whats
    assert any(str(w).startswith("Deployment jobs/batch") for w in whats)  # a template counts, not only Pods
    docs[2] = _deploy("batch", "jobs", inject=True)
    _code, by = _check(tmp_path, docs)
    assert "NS0006" not in by


def test_dns_capture_off_where_serviceentry_hosts_need_it(tmp_path: Path) -> None:
    se = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm, namespace: infra}
spec:
  hosts: [vm.internal.corp]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.9.9.9}]
"""
    dns_on = 'proxy.istio.io/config: "proxyMetadata: {ISTIO_META_DNS_CAPTURE: \\"true\\", ' \
             'ISTIO_META_DNS_AUTO_ALLOCATE: \\"true\\"}"'
    docs = [se, _deploy("plain", "app"), _deploy("dns", "app", annotations=dns_on)]
    _code, by = _check(tmp_path, docs)
    assert {str(f["workload"]) for f in by["NS0007"]} == {"Deployment app/plain"}
    # exported to its own namespace only, the host is nothing the app in another namespace may resolve
    docs[0] = se.replace("  hosts:", "  exportTo: [\".\"]\n  hosts:")
    _code, by = _check(tmp_path, docs)
    assert "NS0007" not in by


def test_headless_service_not_exported_here_is_not_reported(tmp_path: Path) -> None:
    def pod(name: str, ip: str, sidecar: bool) -> str:
        mode = "istio" if sidecar else "disabled"
        return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: db, labels: {{app: db, "
                f"security.istio.io/tlsMode: {mode}}}}}\nspec: {{containers: [{{name: c, image: c}}]}}\n"
                f"status: {{podIP: {ip}}}\n")
    svc = ("apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: db}\nspec: {clusterIP: None, "
           "selector: {app: db}, ports: [{name: tcp, port: 5432}]}\n")
    docs = [svc, pod("db-0", "10.4.0.1", True), pod("db-1", "10.4.0.2", False), _deploy("web", "shop")]
    _code, by = _check(tmp_path, docs)
    assert "Deployment shop/web" in {str(f["workload"]) for f in by["NS0005"]}
    docs[0] = svc.replace("metadata: {name: db, namespace: db}",
                          "metadata: {name: db, namespace: db, annotations: {networking.istio.io/exportTo: \".\"}}")
    _code, by = _check(tmp_path, docs)
    assert "Deployment shop/web" not in {str(f["workload"]) for f in by.get("NS0005", [])}


INJECTED = """\
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {app: web, security.istio.io/tlsMode: istio}
  annotations: {sidecar.istio.io/status: '{"containers":["istio-proxy"]}'}
spec:
  containers:
  - name: web
    image: web
    ports: [{containerPort: 8080}]
  - name: istio-proxy
    image: proxyv2
    ports: [{containerPort: 15090, name: http-envoy-prom, protocol: TCP}]
status: {podIP: 10.4.0.7}
"""


def test_the_sidecars_own_ports_are_not_the_apps(tmp_path: Path) -> None:
    svc = ("apiVersion: v1\nkind: Service\nmetadata: {name: web-metrics, namespace: shop}\nspec: {clusterIP: "
           "10.0.9.9, selector: {app: web}, ports: [{name: http-envoy-prom, port: 15090}]}\n")
    _code, by = _check(tmp_path, [INJECTED, svc])
    assert not any("15090" in str(f["message"]) for fs in by.values() for f in fs), by
