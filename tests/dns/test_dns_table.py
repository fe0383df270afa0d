"""Kubernetes/Istio objects → NameTable: object kinds, API versions, endpoints, exportTo, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsim.dns.allocate import Generation
from netsim.dns.table import Proxy, load_config
from netsim.errors import ConfigError
from netsim.k8s import read_objects


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def ips(res: object, host: str) -> list[str]:
    return list(res.table.entries[host].ips)  # type: ignore[attr-defined]


def test_reader_multidoc_list_directory_json_and_locations(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "kind: Service\napiVersion: v1\nmetadata: {name: s1}\n---\n---\n"
                              "kind: List\napiVersion: v1\nitems:\n"
                              "- {kind: Service, apiVersion: v1, metadata: {name: s2}}\n- 42\n")
    write(tmp_path, "sub/b.json", json.dumps({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p"}}))
    write(tmp_path, "notes.txt", "ignored")
    res = read_objects([tmp_path], default_namespace="ns")
    assert [(o.kind, o.name, o.namespace, o.document, o.item) for o in res.objects] == [
        ("Service", "s1", "ns", 1, None), ("Service", "s2", "ns", 3, 1), ("Pod", "p", "ns", 1, None)]
    assert [str(e) for e in res.errors] == [
        f"{tmp_path / 'a.yaml'}: document 3 item 2: expected a Kubernetes object (a mapping), got int"]
    assert res.objects[1].where() == f"{tmp_path / 'a.yaml'}: document 3 item 1: Service ns/s2"


def test_reader_missing_kind_and_name(tmp_path: Path) -> None:
    p = write(tmp_path, "x.yaml", "apiVersion: v1\nmetadata: {name: a}\n---\nkind: Service\nmetadata: {}\n")
    res = read_objects([p])
    assert [str(e) for e in res.errors] == [f"{p}: document 1: field kind: missing",
                                           f"{p}: document 2: Service: field metadata.name: missing"]


def test_headless_service_from_endpoints_and_endpointslices(tmp_path: Path) -> None:
    p = write(tmp_path, "h.yaml", """
apiVersion: v1
kind: Service
metadata: {name: kafka, namespace: k}
spec: {clusterIP: None, ports: [{port: 9092}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: kafka, namespace: k}
subsets:
- addresses: [{ip: 10.1.0.1, hostname: kafka-0}, {ip: 10.1.0.2, hostname: kafka-1}]
  notReadyAddresses: [{ip: 10.1.0.3, hostname: kafka-2}]
---
apiVersion: v1
kind: Service
metadata: {name: zk, namespace: k}
spec: {clusterIP: None, publishNotReadyAddresses: true, ports: [{port: 2181}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: zk-abc, namespace: k, labels: {kubernetes.io/service-name: zk}}
endpoints:
- {addresses: [10.2.0.1], hostname: zk-0, conditions: {ready: true}}
- {addresses: [10.2.0.2], hostname: zk-1, conditions: {ready: false, terminating: true}}
""")
    res = load_config([p], namespace="k")
    assert ips(res, "kafka.k.svc.cluster.local") == ["10.1.0.1", "10.1.0.2"]  # not-ready left out
    assert ips(res, "kafka-0.kafka.k.svc.cluster.local") == ["10.1.0.1"]
    assert "kafka-2.kafka.k.svc.cluster.local" not in res.table.entries
    assert ips(res, "zk.k.svc.cluster.local") == ["10.2.0.1", "10.2.0.2"]  # publishNotReadyAddresses
    assert res.table.entries["zk-1.zk.k.svc.cluster.local"].shortname == "zk-1.zk"


def test_dual_stack_cluster_ips_follow_the_pod_family(tmp_path: Path) -> None:
    p = write(tmp_path, "d.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: a}\n"
                                  "spec: {clusterIP: 10.96.0.5, clusterIPs: [10.96.0.5, 'fd00::5'], "
                                  "ports: [{port: 80}]}\n")
    assert ips(load_config([p], namespace="a"), "web.a.svc.cluster.local") == ["10.96.0.5"]
    v6 = load_config([p], namespace="a", proxy=Proxy(ips=("fd00::1",), namespace="a", cluster="Kubernetes"))
    assert ips(v6, "web.a.svc.cluster.local") == ["fd00::5"]


def test_service_export_to_annotation_and_cluster_domain(tmp_path: Path) -> None:
    p = write(tmp_path, "e.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: a\n"
                                  "  annotations: {networking.istio.io/exportTo: '.'}\n"
                                  "spec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}\n")
    assert list(load_config([p], namespace="a", domain="a.svc.corp.internal").table.entries) == [
        "web.a.svc.corp.internal"]
    assert not load_config([p], namespace="b").table.entries


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_service_entry_api_versions(tmp_path: Path, version: str) -> None:
    p = write(tmp_path, "se.yaml", f"apiVersion: networking.istio.io/{version}\nkind: ServiceEntry\n"
                                   "metadata: {name: a, namespace: n}\n"
                                   "spec: {hosts: [a.example.com, '*.w.example.com'], "
                                   "addresses: [192.0.2.1, 10.0.0.0/8], resolution: STATIC}\n")
    res = load_config([p], namespace="n")
    assert ips(res, "a.example.com") == ["192.0.2.1"] and ips(res, "*.w.example.com") == ["192.0.2.1"]
    assert not res.errors


def test_wrong_api_version_and_bad_fields_are_reported(tmp_path: Path) -> None:
    p = write(tmp_path, "se.yaml", "apiVersion: networking.istio.io/v2\nkind: ServiceEntry\nmetadata: {name: a}\n"
                                   "spec: {hosts: [a.example.com]}\n---\n"
                                   "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: b}\n"
                                   "spec: {hosts: a.example.com}\n---\n"
                                   "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: c}\n"
                                   "spec: {hosts: [c.example.com], ports: [{number: 0}]}\n")
    errors = [str(e) for e in load_config([p]).errors]
    assert errors == [
        f"{p}: document 1: ServiceEntry default/a: apiVersion: 'networking.istio.io/v2' is not "
        "networking.istio.io/v1|v1beta1|v1alpha3",
        f"{p}: document 2: ServiceEntry default/b: spec.hosts: must be a list, got str",
        f"{p}: document 3: ServiceEntry default/c: spec.ports[0].number: must be a port number 1-65535, got 0",
    ]


def test_resolution_none_uses_endpoints_and_selected_workload_entries(tmp_path: Path) -> None:
    p = write(tmp_path, "n.yaml", """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: n}
spec:
  hosts: [vms.internal]
  ports: [{number: 22, name: ssh, protocol: TCP}]
  resolution: NONE
  endpoints: [{address: 192.0.2.1}, {address: vm.example.com}]
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1, namespace: n}
spec: {address: 192.0.2.2, labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm2, namespace: other}
spec: {address: 192.0.2.3, labels: {app: vm}}
""")
    assert ips(load_config([p], namespace="n"), "vms.internal") == ["192.0.2.1", "192.0.2.2"]


def test_v2_consumes_existing_status_and_allocates_in_creation_order(tmp_path: Path) -> None:
    p = write(tmp_path, "v2.yaml", """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: later, namespace: n, creationTimestamp: "2025-02-01T00:00:00Z"}
spec: {hosts: [later.example.com], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: earlier, namespace: n, creationTimestamp: "2025-01-01T00:00:00Z"}
spec: {hosts: [earlier.example.com], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: kept, namespace: n, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {hosts: [kept.example.com], resolution: DNS}
status:
  addresses:
  - {host: kept.example.com, value: 240.240.0.1}
  - {host: kept.example.com, value: 240.240.9.9}
  - {host: kept.example.com, value: "2001:2::9"}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: optout
  namespace: n
  labels: {networking.istio.io/enable-autoallocate-ip: "False"}
spec: {hosts: [optout.example.com], resolution: DNS}
""")
    res = load_config([p], namespace="n", istio_version="1.26")
    assert res.generation is Generation.V2
    assert ips(res, "kept.example.com") == ["240.240.9.9"]  # the last IPv4 of its status
    assert ips(res, "earlier.example.com") == ["240.240.0.2"]
    assert ips(res, "later.example.com") == ["240.240.0.3"]
    assert "optout.example.com" not in res.table.entries
    dual = load_config([p], namespace="n", proxy=Proxy(ips=("10.0.0.1", "fd00::1"), namespace="n"))
    assert ips(dual, "kept.example.com") == ["240.240.9.9"]  # dual-stack pod without ISTIO_DUAL_STACK: first family


def test_sequential_order_follows_creation_then_name(tmp_path: Path) -> None:
    p = write(tmp_path, "s.yaml", "".join(
        f"---\napiVersion: networking.istio.io/v1alpha3\nkind: ServiceEntry\n"
        f"metadata: {{name: {n}, namespace: n, creationTimestamp: '2020-01-0{d}T00:00:00Z'}}\n"
        f"spec: {{hosts: [{h}], resolution: DNS}}\n" for n, h, d in
        [("zz", "a.example.com", 1), ("aa", "b.example.com", 1), ("mm", "c.example.com", 2)]))
    old = load_config([p], namespace="n", istio_version="1.10")  # ties by SE name
    assert [ips(old, h) for h in ("b.example.com", "a.example.com", "c.example.com")] == [
        ["240.240.0.1"], ["240.240.0.2"], ["240.240.0.3"]]
    new = load_config([p], namespace="n", istio_version="1.13")  # ties by hostname
    assert [ips(new, h) for h in ("a.example.com", "b.example.com", "c.example.com")] == [
        ["240.240.0.1"], ["240.240.0.2"], ["240.240.0.3"]]


def test_missing_files_raise_and_invalid_yaml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config([tmp_path / "missing.yaml"])
    p = write(tmp_path, "bad.yaml", "a: [\n")
    assert [str(e) for e in load_config([p]).errors] == [
        f"{p}: document 1: line 2: invalid YAML: did not find expected node content"]


def test_unresolved_hosts_say_why(tmp_path: Path) -> None:
    p = write(tmp_path, "u.yaml", """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: none, namespace: n}
spec: {hosts: [none.example.com], ports: [{number: 80, name: http}], resolution: NONE}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cidr, namespace: n}
spec: {hosts: [cidr.example.com], addresses: [198.51.100.0/31], resolution: NONE}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: optout, namespace: n, labels: {networking.istio.io/enable-autoallocate-ip: "false"}}
spec: {hosts: [optout.example.com], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild, namespace: n}
spec: {hosts: ["*.wild.example.com"], resolution: DNS}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: other}
spec: {hosts: [private.example.com], addresses: [192.0.2.5], exportTo: ["."], resolution: STATIC}
---
apiVersion: v1
kind: Service
metadata: {name: v6only, namespace: n}
spec: {clusterIP: "fd00::7", ports: [{port: 80}]}
""")
    res = load_config([p], namespace="n")
    assert not res.table.entries and not res.errors
    why = {u.hostname: u.reason for u in res.unresolved}
    assert why["none.example.com"].startswith("headless/NONE without a usable endpoint")
    assert why["cidr.example.com"].startswith("no usable IP address (198.51.100.0/31")
    assert "opted out" in why["optout.example.com"]
    assert why["*.wild.example.com"].startswith("wildcard host without addresses")
    assert why["private.example.com"] == "not exported to namespace n (spec.exportTo: .)"
    assert why["v6only.n.svc.cluster.local"] == "its addresses are of another IP family than this IPv4 proxy"
    assert all(u.source.startswith(str(p)) for u in res.unresolved)


# Any shape of object: the loader reports, it never raises anything but ConfigError

_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-2, 70000), st.sampled_from(
    ["", "None", "10.0.0.1", "fd00::1", "a.example.com", "*.w.example", "DNS", "NONE", "STATIC", "ExternalName",
     "198.51.100.0/31", "2024-01-01T00:00:00Z", "x"]))
_ANY = st.recursive(_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                    st.dictionaries(st.sampled_from(
                                                        ["hosts", "addresses", "ports", "port", "number", "ip",
                                                         "resolution", "endpoints", "address", "labels", "subsets",
                                                         "hostname", "clusterIP", "clusterIPs", "type", "selector",
                                                         "podIP", "podIPs", "conditions", "exportTo", "status",
                                                         "workloadSelector", "app", "value", "host"]),
                                                        inner, max_size=4)), max_leaves=12)
_KINDS = [("v1", "Service"), ("v1", "Endpoints"), ("v1", "Pod"), ("discovery.k8s.io/v1", "EndpointSlice"),
          ("networking.istio.io/v1", "ServiceEntry"), ("networking.istio.io/v1beta1", "WorkloadEntry")]


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_KINDS), _ANY, _ANY, _ANY), min_size=1, max_size=5))
def test_any_object_shape_is_reported_not_raised(docs: list[tuple[tuple[str, str], object, object, object]]) -> None:
    import tempfile

    import yaml

    from netsim.dns.table import BuildOptions, build_from_objects
    from netsim.k8s import K8sObject

    objs = []
    for i, ((api, kind), spec, status, labels) in enumerate(docs):
        body = {"apiVersion": api, "kind": kind, "metadata": {"name": f"o{i}", "namespace": "n", "labels": labels},
                "spec": spec, "status": status, "subsets": spec, "endpoints": status}
        objs.append(K8sObject(source="f.yaml", document=i + 1, item=None, api_version=api, kind=kind, namespace="n",
                              name=f"o{i}", body=body))
    for gen in (Generation.V2, Generation.SEQ_V4, Generation.HASH_1_22):
        res = build_from_objects(objs, BuildOptions(namespace="n", generation=gen))
        assert all(isinstance(e, ConfigError) for e in res.errors)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.yaml"
        p.write_text(yaml.safe_dump_all([o.body for o in objs]))
        load_config([p], namespace="n")
