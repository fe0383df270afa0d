"""``dns table`` and ``mesh hop`` are two views of one registry: same objects, same addresses, same warnings,
same refusals. Regression tests for issue 11's registry symptoms (each fails on the two-reader code)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import netsim.dns.table as dns_table
from netsim.cli import cli
from netsim.dns.table import load_config
from netsim.k8s import in_document_order
from netsim.mesh import MeshConfig, build_index, make_proxy, mesh_profile
from netsim.mesh.files import read_config
from netsim.mesh.model import UNSPECIFIED, MeshService

DNS_CAPTURE_MESH = "defaultConfig:\n  proxyMetadata: {ISTIO_META_DNS_CAPTURE: 'true'}\n"


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def se(name: str, ns: str, spec: str, created: str = "2024-01-01T00:00:00Z") -> str:
    return (f"---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}\nspec: {spec}\n")


def dns_view(path: Path, namespace: str, version: str | None = None) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    res = load_config([path], namespace=namespace, istio_version=version)
    # located and ordered as both commands print them (`dns table` and `mesh hop` call in_document_order)
    return {h: i.ips for h, i in res.table.entries.items()}, [str(e) for e in in_document_order(res.errors)]


def _address(s: MeshService) -> str:
    return s.auto_ipv4 if s.address == UNSPECIFIED and s.auto_ipv4 else s.address


def mesh_view(path: Path, namespace: str, version: str | None = None, *, dns_capture: bool = True
              ) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    objects = read_config([path]).objects
    # the proxy `dns table` assumes: DNS capture and auto-allocation on
    mesh = MeshConfig(proxy_metadata=(("ISTIO_META_DNS_CAPTURE", "true"), ("ISTIO_META_DNS_AUTO_ALLOCATE", "true"))
                      if dns_capture else ())
    proxy = make_proxy(objects, mesh, ips=("10.250.0.1",), namespace=namespace)
    index = build_index(objects, proxy, mesh_profile(version), mesh)
    out: dict[str, tuple[str, ...]] = {}
    for c in index.clusters.values():
        if c.service is not None and c.direction == "outbound" and not c.subset:
            addrs = out.setdefault(c.service.hostname, ())
            if _address(c.service) not in addrs:
                out[c.service.hostname] = (*addrs, _address(c.service))
    return out, [str(e) for e in in_document_order((*objects.errors, *index.errors))]


MIXED = (se("q", "a", "{hosts: [q.example.com], ports: [{number: '80', name: http}], resolution: DNS}")
         + se("static", "a", "{hosts: [s.example.com], addresses: [192.0.2.7], ports: [{number: 443, name: tls, "
                             "protocol: TLS}], resolution: STATIC, endpoints: [{address: 198.51.100.7}]}")
         + se("bad-addr", "a", "{hosts: [b.example.com], addresses: [db.internal], ports: [{number: 80}]}")
         + se("bad-port", "a", "{hosts: [c.example.com], ports: [{number: 0}]}")
         + "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: a}\n"
           "spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}\n"
         + "---\napiVersion: v1\nkind: Service\nmetadata: {name: nocip, namespace: a}\n"
           "spec: {ports: [{name: http, port: 80}]}\n")


@pytest.mark.parametrize("version", [None, "1.23", "1.18"])
def test_dns_table_and_mesh_read_the_same_objects_identically(tmp_path: Path, version: str | None) -> None:
    p = write(tmp_path, "mixed.yaml", MIXED)
    names, dns_errors = dns_view(p, "a", version)
    listeners, mesh_errors = mesh_view(p, "a", version)
    # same refusals, word for word
    assert dns_errors == mesh_errors
    assert [e.split(": ")[3] for e in dns_errors] == ["ServiceEntry a/bad-addr", "ServiceEntry a/bad-port",
                                                      "Service a/nocip"]
    # same addresses for every name of the table
    for host, ips in names.items():
        assert listeners[host] == ips, host
    assert names["web.a.svc.cluster.local"] == ("10.96.0.10",) and names["s.example.com"] == ("192.0.2.7",)
    assert "q.example.com" in names  # a port written "80" is read, not refused (see netsim.registry.fields)


def test_port_string_80_is_read_by_dns_table_and_mesh_hop_without_a_warning(tmp_path: Path) -> None:
    cfg = write(tmp_path, "c.yaml", se("q", "a", "{hosts: [q.example.com], ports: [{number: '80', name: http}], "
                                                 "resolution: DNS}"))
    mesh = write(tmp_path, "mesh.yaml", DNS_CAPTURE_MESH)
    table = CliRunner().invoke(cli, ["dns", "table", "--config", str(cfg), "-n", "a"])
    assert table.exit_code == 0 and "warning" not in table.stderr
    assert "q.example.com  240.240.0.1  (External)  [auto-allocated: v2]" in table.stdout
    hop = CliRunner().invoke(cli, ["mesh", "hop", "--config", str(cfg), "--mesh-config", str(mesh), "--proxy-ip",
                                   "10.0.0.1", "--namespace", "a", "--dst", "240.240.0.1:80", "--send", "http",
                                   "--host", "q.example.com"])
    assert hop.exit_code == 0 and hop.stderr == ""  # no DNS-reader warning about the object it used
    assert "listener      240.240.0.1_80" in hop.stdout


def test_mesh_does_not_rerun_the_dns_converter_for_auto_allocated_addresses(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "c.yaml", se("q", "a", "{hosts: [q.example.com], ports: [{number: 80, name: http}], "
                                               "resolution: DNS}"))
    names, _ = dns_view(p, "a")

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the mesh converted the objects a second time")

    monkeypatch.setattr(dns_table, "build_from_objects", refuse)
    monkeypatch.setattr(dns_table, "load_config", refuse)
    listeners, errors = mesh_view(p, "a")
    assert errors == []
    assert listeners["q.example.com"] == names["q.example.com"] == ("240.240.0.1",)


TWO_NAMESPACES = (se("db-a", "a", "{hosts: [db.example.com], addresses: [192.0.2.1], resolution: STATIC, "
                                  "ports: [{number: 5432, name: tcp, protocol: TCP}]}", "2024-01-01T00:00:00Z")
                  + se("db-b", "b", "{hosts: [db.example.com], addresses: [192.0.2.2], resolution: STATIC, "
                                    "ports: [{number: 5432, name: tcp, protocol: TCP}]}", "2024-01-02T00:00:00Z"))


@pytest.mark.parametrize(("version", "namespace", "want"), [
    ("1.23", "b", ("192.0.2.1",)), ("1.24", "b", ("192.0.2.2",)), (None, "a", ("192.0.2.1",)),
    (None, "c", ("192.0.2.1",)),
])
def test_a_hostname_defined_in_two_namespaces_gives_the_proxy_one_definition(
        tmp_path: Path, version: str, namespace: str, want: tuple[str, ...]) -> None:
    p = write(tmp_path, "c.yaml", TWO_NAMESPACES)
    names, _ = dns_view(p, namespace, version)
    listeners, _ = mesh_view(p, namespace, version)
    assert names["db.example.com"] == listeners["db.example.com"] == want


def test_dns_table_says_why_the_other_definition_is_not_used(tmp_path: Path) -> None:
    p = write(tmp_path, "c.yaml", TWO_NAMESPACES)
    res = load_config([p], namespace="b")
    [u] = [u for u in res.unresolved if u.hostname == "db.example.com"] or [None]
    assert u is None  # the host is in the table: nothing to explain, the hidden one is not "unresolved"
    assert res.table.entries["db.example.com"].sources == (f"{p}: document 2: ServiceEntry b/db-b",)


def test_service_before_service_entry_squatting_its_hostname(tmp_path: Path) -> None:
    p = write(tmp_path, "c.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: k, "
                                  "creationTimestamp: '2024-01-05T00:00:00Z'}\n"
                                  "spec: {clusterIP: 10.96.0.7, ports: [{name: tcp, port: 5432}]}\n"
              + se("squat", "s", "{hosts: [db.k.svc.cluster.local], addresses: [192.0.2.9], resolution: STATIC, "
                                 "ports: [{number: 5432, name: tcp, protocol: TCP}]}"))
    for version, ns, want in (("1.23", "s", "10.96.0.7"), ("1.24", "x", "10.96.0.7"), ("1.24", "s", "192.0.2.9")):
        names, _ = dns_view(p, ns, version)
        listeners, _ = mesh_view(p, ns, version)
        assert names["db.k.svc.cluster.local"] == listeners["db.k.svc.cluster.local"] == (want,), (version, ns)


def test_unready_endpoints_are_a_named_policy_of_each_view(tmp_path: Path) -> None:
    """DNS counts a not-ready endpoint of a publishNotReadyAddresses Service; Envoy never load-balances to it."""
    p = write(tmp_path, "c.yaml", """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: a}
spec: {clusterIP: None, publishNotReadyAddresses: true, ports: [{name: tcp, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: a, labels: {kubernetes.io/service-name: db}}
endpoints:
- addresses: [10.2.0.1]
- addresses: [10.2.0.2]
  conditions: {ready: false}
""")
    names, _ = dns_view(p, "a")
    assert names["db.a.svc.cluster.local"] == ("10.2.0.1", "10.2.0.2")
    objects = read_config([p]).objects
    proxy = make_proxy(objects, MeshConfig(), ips=("10.250.0.1",), namespace="a")
    index = build_index(objects, proxy, mesh_profile(None), MeshConfig())
    assert [e.address for e in index.clusters["outbound|5432||db.a.svc.cluster.local"].endpoints] == ["10.2.0.1"]
