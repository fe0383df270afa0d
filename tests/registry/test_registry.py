"""The service registry alone: each kind, each resolution, endpoints with their health, visibility by release."""

from __future__ import annotations

import pytest

from netsim.istio_service import Resolution
from netsim.k8s import parse_objects
from netsim.registry import (
    SERVICE,
    SERVICE_ENTRY,
    UNSPECIFIED,
    Health,
    HostRule,
    Protocol,
    Registry,
    Service,
    build_registry,
    host_rule,
    visible,
)


def registry(text: str) -> Registry:
    return build_registry(parse_objects(text, "c.yaml", keep_going=True).objects)


def one(reg: Registry, host: str) -> Service:
    [s] = [s for s in reg.services if s.hostname == host]
    return s


CLUSTER_IP = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00::10"]
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: tcp-db, port: "5432"}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
endpoints:
- addresses: [10.1.0.1]
- addresses: [10.1.0.2]
  conditions: {ready: false}
- addresses: [10.1.0.3]
  conditions: {ready: false, terminating: true}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {containers: [{name: app}]}
status: {podIP: 10.1.0.1}
"""


def test_cluster_ip_service_ports_vips_and_endpoints_with_health() -> None:
    reg = registry(CLUSTER_IP)
    assert reg.errors == ()
    s = one(reg, "web.shop.svc.cluster.local")
    assert (s.kind, s.registry, s.resolution, s.address) == (SERVICE, "Kubernetes", Resolution.CLIENT_SIDE_LB,
                                                             "10.96.0.10")
    assert s.cluster_vips == {"Kubernetes": ("10.96.0.10", "fd00::10")}
    assert [(p.port, p.protocol, p.target_port) for p in s.ports] == [
        (80, Protocol.HTTP, 8080), (5432, Protocol.TCP, 5432), (53, Protocol.UDP, 53)]
    assert [(e.address, e.health) for e in s.endpoints] == [
        ("10.1.0.1", Health.HEALTHY), ("10.1.0.2", Health.UNHEALTHY), ("10.1.0.3", Health.TERMINATING)]
    # the pod behind 10.1.0.1 gives its labels (and, injected, its tlsMode)
    assert s.endpoints[0].workload == "Pod shop/web-0" and s.endpoints[0].sidecar


def test_headless_service_endpoints_fall_back_to_selected_pods() -> None:
    reg = registry("""
apiVersion: v1
kind: Service
metadata: {name: db, namespace: a}
spec: {clusterIP: None, selector: {app: db}, publishNotReadyAddresses: true, ports: [{name: tcp, port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: a, labels: {app: db}}
spec: {hostname: db-0, subdomain: db, containers: [{name: db}]}
status: {podIPs: [{ip: 10.2.0.1}, {ip: "fd00::1"}], conditions: [{type: Ready, status: "False"}]}
""")
    s = one(reg, "db.a.svc.cluster.local")
    assert s.headless and s.resolution is Resolution.PASSTHROUGH and s.address == UNSPECIFIED and s.publish_not_ready
    [e] = s.endpoints
    assert (e.ips, e.hostname, e.subdomain, e.health) == (("10.2.0.1", "fd00::1"), "db-0", "db", Health.UNHEALTHY)


def test_endpoints_object_ready_and_not_ready_addresses() -> None:
    reg = registry("""
apiVersion: v1
kind: Service
metadata: {name: db, namespace: a}
spec: {clusterIP: None, ports: [{port: 5432}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: db, namespace: a}
subsets:
- addresses: [{ip: 10.2.0.1, hostname: db-0}]
  notReadyAddresses: [{ip: 10.2.0.2}]
""")
    eps = one(reg, "db.a.svc.cluster.local").endpoints
    assert [(e.address, e.health, e.subdomain) for e in eps] == [
        ("10.2.0.1", Health.HEALTHY, "db"), ("10.2.0.2", Health.UNHEALTHY, "")]


def test_external_name_service() -> None:
    s = one(registry("apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: a}\n"
                     "spec: {type: ExternalName, externalName: db.example.com., ports: [{port: 5432}]}\n"),
            "ext.a.svc.cluster.local")
    assert (s.resolution, s.external_name, s.mesh_external) == (Resolution.DNS_LB, "db.example.com", True)


def se(name: str, ns: str, spec: str, meta: str = "") -> str:
    return (f"---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: {name}, namespace: {ns}{meta}}}\nspec: {spec}\n")


@pytest.mark.parametrize(("written", "resolution"), [
    ("NONE", Resolution.PASSTHROUGH), ("STATIC", Resolution.CLIENT_SIDE_LB), ("DNS", Resolution.DNS_LB),
    ("DNS_ROUND_ROBIN", Resolution.DNS_ROUND_ROBIN_LB), ("DYNAMIC_DNS", Resolution.DYNAMIC_DNS),
])
@pytest.mark.parametrize("addresses", [(), ("192.0.2.10", "192.0.2.0/28")])
def test_service_entry_every_resolution_with_and_without_addresses(written: str, resolution: Resolution,
                                                                   addresses: tuple[str, ...]) -> None:
    addr = f", addresses: [{', '.join(addresses)}]" if addresses else ""
    reg = registry(se("ext", "a", f"{{hosts: [x.example.com, y.example.com]{addr}, resolution: {written}, "
                                  "ports: [{number: '443', name: tls, protocol: TLS}], "
                                  "endpoints: [{address: 198.51.100.1, ports: {tls: 8443}}]}"))
    assert reg.errors == ()
    got = [(s.hostname, s.address, s.resolution, s.kind) for s in reg.services]
    want_addrs = addresses or (UNSPECIFIED,)
    assert sorted(got) == sorted((h, a, resolution, SERVICE_ENTRY) for h in ("x.example.com", "y.example.com")
                                 for a in want_addrs)
    s = reg.services[0]
    assert [(p.port, p.protocol) for p in s.ports] == [(443, Protocol.TLS)]
    assert [(e.address, e.ports) for e in s.endpoints] == [("198.51.100.1", (("tls", 8443),))]


def test_service_entry_workload_selector_reads_workload_entries_and_pods() -> None:
    reg = registry(se("vm", "a", "{hosts: [vm.internal], resolution: STATIC, ports: [{number: 22, name: ssh}], "
                                 "workloadSelector: {labels: {app: vm}}}") + """
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: a}
spec: {address: 10.9.0.1, labels: {app: vm}, network: net2, ports: {ssh: 2222}}
---
apiVersion: v1
kind: Pod
metadata: {name: vm-pod, namespace: a, labels: {app: vm}}
spec: {containers: [{name: c}]}
status: {podIP: 10.9.0.2}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other-ns, namespace: b}
spec: {address: 10.9.0.3, labels: {app: vm}}
""")
    eps = one(reg, "vm.internal").endpoints
    assert [(e.address, e.workload, e.network, e.ports) for e in eps] == [
        ("10.9.0.1", "WorkloadEntry a/vm-1", "net2", (("ssh", 2222),)), ("10.9.0.2", "Pod a/vm-pod", "", ())]


def test_one_error_style_for_every_kind() -> None:
    reg = registry(se("bad-port", "a", "{hosts: [p.example.com], ports: [{number: 80x}]}")
                   + se("bad-addr", "a", "{hosts: [q.example.com], addresses: [not-an-ip]}")
                   + "---\napiVersion: networking.istio.io/v2\nkind: WorkloadEntry\n"
                     "metadata: {name: we, namespace: a}\nspec: {address: 10.0.0.1}\n"
                   + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\n"
                     "spec: {clusterIP: nope, ports: [{port: 80}]}\n")
    assert sorted(str(e) for e in reg.errors) == sorted([
        "c.yaml: document 1: ServiceEntry a/bad-port: spec.ports[0].number: must be a port number 1-65535, "
        "got '80x'",
        "c.yaml: document 2: ServiceEntry a/bad-addr: spec.addresses[0]: not an IP address or CIDR: 'not-an-ip'",
        "c.yaml: document 3: WorkloadEntry a/we: apiVersion: 'networking.istio.io/v2' is not "
        "networking.istio.io/v1|v1beta1|v1alpha3",
        "c.yaml: document 4: Service a/s: spec.clusterIP: not an IP address: 'nope'",
    ])
    assert reg.services == ()


def test_port_written_as_a_string_reads_as_its_number_everywhere() -> None:
    reg = registry(se("q", "a", "{hosts: [q.example.com], addresses: [192.0.2.1], ports: [{number: '80', name: http}]}")
                   + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: a}\n"
                     "spec: {clusterIP: 10.96.0.1, ports: [{port: '80', targetPort: '8080'}]}\n")
    assert reg.errors == ()
    assert [(s.hostname, s.port_numbers) for s in reg.services] == [
        ("q.example.com", (80,)), ("s.a.svc.cluster.local", (80,))]
    assert one(reg, "s.a.svc.cluster.local").ports[0].target_port == 8080


def test_services_are_in_push_context_order() -> None:
    reg = registry(se("late", "a", "{hosts: [a.example.com], addresses: [192.0.2.1]}",
                      ", creationTimestamp: '2024-01-02T00:00:00Z'")
                   + se("early", "b", "{hosts: [z.example.com], addresses: [192.0.2.2]}",
                        ", creationTimestamp: '2024-01-01T00:00:00Z'")
                   + se("same-time", "a", "{hosts: [b.example.com], addresses: [192.0.2.3]}",
                        ", creationTimestamp: '2024-01-02T00:00:00Z'"))
    assert [s.hostname for s in reg.services] == ["z.example.com", "a.example.com", "b.example.com"]


# ---------------------------------------------------------------------------------------------
# visibility

TWO_NAMESPACES = (se("db-a", "a", "{hosts: [db.example.com], addresses: [192.0.2.1], resolution: STATIC}",
                     ", creationTimestamp: '2024-01-01T00:00:00Z'")
                  + se("db-b", "b", "{hosts: [db.example.com], addresses: [192.0.2.2], resolution: STATIC}",
                       ", creationTimestamp: '2024-01-02T00:00:00Z'"))


def seen(text: str, namespace: str, version: str | None) -> list[str]:
    v = visible(registry(text).services, namespace, host_rule(version))
    return [f"{s.kind} {s.namespace}/{s.name} {s.address}" for s in v.services]


def test_host_rule_by_release() -> None:
    assert host_rule("1.23.5") is HostRule.LEGACY
    assert host_rule("1.24") is host_rule(None) is HostRule.UNIFIED


@pytest.mark.parametrize(("version", "namespace", "want"), [
    ("1.23", "b", "ServiceEntry a/db-a 192.0.2.1"),  # before 1.24: the oldest, whoever looks
    ("1.23", "c", "ServiceEntry a/db-a 192.0.2.1"),
    ("1.24", "b", "ServiceEntry b/db-b 192.0.2.2"),  # unified sidecar scope: the proxy's own namespace first
    ("1.24", "c", "ServiceEntry a/db-a 192.0.2.1"),  # neither is local: the oldest
    (None, "a", "ServiceEntry a/db-a 192.0.2.1"),
])
def test_one_definition_per_hostname_two_namespaces(version: str, namespace: str, want: str) -> None:
    assert seen(TWO_NAMESPACES, namespace, version) == [want]


SERVICE_AND_SE = ("---\napiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: k, "
                  "creationTimestamp: '2024-01-05T00:00:00Z'}\nspec: {clusterIP: 10.96.0.7, ports: [{port: 5432}]}\n"
                  + se("squat", "s", "{hosts: [db.k.svc.cluster.local], addresses: [192.0.2.9], resolution: STATIC}",
                       ", creationTimestamp: '2024-01-01T00:00:00Z'"))


@pytest.mark.parametrize(("version", "namespace", "want"), [
    ("1.23", "s", "Service k/db 10.96.0.7"),  # a Kubernetes Service before an (older) ServiceEntry
    ("1.23", "x", "Service k/db 10.96.0.7"),
    ("1.24", "x", "Service k/db 10.96.0.7"),
    ("1.24", "k", "Service k/db 10.96.0.7"),
    ("1.24", "s", "ServiceEntry s/squat 192.0.2.9"),  # 1.24+: the proxy's own namespace before Kubernetes
])
def test_kubernetes_service_before_service_entry(version: str, namespace: str, want: str) -> None:
    assert seen(SERVICE_AND_SE, namespace, version) == [want]


def test_hidden_definitions_say_why() -> None:
    v = visible(registry(TWO_NAMESPACES).services, "b", HostRule.UNIFIED)
    [h] = v.hidden
    assert h.service.namespace == "a"
    assert "also defined by ServiceEntry b/db-b" in h.reason and "proxy's namespace b" in h.reason


def test_export_to_hides_and_lets_the_other_definition_win() -> None:
    text = (se("db-a", "a", "{hosts: [db.example.com], addresses: [192.0.2.1], exportTo: [.]}",
               ", creationTimestamp: '2024-01-01T00:00:00Z'")
            + se("db-b", "b", "{hosts: [db.example.com], addresses: [192.0.2.2]}",
                 ", creationTimestamp: '2024-01-02T00:00:00Z'")
            + "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: a, annotations: "
              "{networking.istio.io/exportTo: 'a,c'}}\nspec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n")
    # (the Service has no creationTimestamp: it is the oldest)
    assert seen(text, "a", "1.23") == ["Service a/web 10.96.0.1", "ServiceEntry a/db-a 192.0.2.1"]
    assert seen(text, "b", "1.23") == ["ServiceEntry b/db-b 192.0.2.2"]
    assert seen(text, "c", "1.23") == ["Service a/web 10.96.0.1", "ServiceEntry b/db-b 192.0.2.2"]
    hidden = visible(registry(text).services, "b", HostRule.LEGACY).hidden
    assert sorted(h.reason for h in hidden) == [
        "not exported to namespace b (networking.istio.io/exportTo: a,c)",
        "not exported to namespace b (spec.exportTo: .)"]


def test_several_addresses_of_one_definition_stay_together() -> None:
    text = se("m", "a", "{hosts: [m.example.com], addresses: [192.0.2.1, 192.0.2.2]}")
    assert seen(text, "z", None) == ["ServiceEntry a/m 192.0.2.1", "ServiceEntry a/m 192.0.2.2"]


def test_registry_imports_only_the_layers_below_it() -> None:
    """STYLE.md §9 layer 2: the registry imports errors, istio_version, k8s, istio_service (and itself)."""
    import ast
    from pathlib import Path

    import netsim.registry

    allowed = {"netsim.errors", "netsim.istio_version", "netsim.k8s", "netsim.istio_service"}
    for path in Path(netsim.registry.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.startswith("netsim"):
                    assert name in allowed or name.startswith("netsim.registry"), f"{path.name} imports {name}"
