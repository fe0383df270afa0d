"""Spec rules one by one (spec/istio-mesh-hops.md sections 2-5), each on a few objects written inline."""

from __future__ import annotations

import pytest

from netsim.mesh import Connection, Direction, MeshConfig, Send, build_index, hop, make_proxy, mesh_profile
from netsim.mesh.hop import Hop
from netsim.mesh.objects import convert, parse_text


def decide(objects_yaml: str, *, dst: str, send: str = "tcp", host: str | None = None, version: str | None = None,
           proxy_ip: str = "10.9.9.9", namespace: str = "default", inbound: bool = False, path: str = "/",
           policy: str = "ALLOW_ANY", labels: tuple[tuple[str, str], ...] | None = None) -> Hop:
    parsed = parse_text(objects_yaml, "test.yaml")
    objects = convert(parsed.objects, errors=parsed.errors)
    assert not objects.errors, objects.errors
    mesh = MeshConfig(outbound_policy=policy)
    proxy = make_proxy(objects, mesh, ips=(proxy_ip,), namespace=namespace, labels=labels)
    index = build_index(objects, proxy, mesh_profile(version), mesh)
    ip, port = dst.rsplit(":", 1)
    return hop(index, Connection(direction=Direction.INBOUND if inbound else Direction.OUTBOUND, dst_ip=ip,
                                 dst_port=int(port), send=Send(send), host=host, path=path))


def svc(name: str, ports: str, *, ip: str = "None", ns: str = "default", extra: str = "", ts: str = "") -> str:
    created = f", creationTimestamp: '{ts}'" if ts else ""
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}{created}}}\n"
            f"spec:\n  clusterIP: {ip}\n  selector: {{app: {name}}}\n  ports: {ports}\n{extra}---\n")


def se(name: str, host: str, ports: str, *, res: str = "DNS", addresses: str = "", ts: str = "",
       extra: str = "") -> str:
    created = f", creationTimestamp: '{ts}'" if ts else ""
    addr = f"  addresses: {addresses}\n" if addresses else ""
    return (f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default"
            f"{created}}}\nspec:\n  hosts: [{host}]\n{addr}  resolution: {res}\n  ports: {ports}\n{extra}---\n")


def slice_(name: str, ips: list[str]) -> str:
    eps = "".join(f"- addresses: [{i}]\n" for i in ips)
    return (f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-x, namespace: default, "
            f"labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints:\n{eps}---\n")


def test_mesh_two_wildcard_tcp_services_oldest_wins() -> None:
    objs = (se("new", "new.example.com", "[{number: 5000, name: tcp, protocol: TCP}]", ts="2024-02-01T00:00:00Z")
            + se("old", "old.example.com", "[{number: 5000, name: tcp, protocol: TCP}]", ts="2024-01-01T00:00:00Z"))
    h = decide(objs, dst="10.1.2.3:5000")
    assert (h.listener, h.cluster) == ("0.0.0.0_5000", "outbound|5000||old.example.com")


def test_mesh_app_protocol_wins_over_port_name() -> None:
    objs = svc("a", "[{name: tcp-x, port: 8000, appProtocol: http}]", ip="10.0.0.1")
    h = decide(objs, dst="10.0.0.1:8000", send="http", host="a")
    assert (h.listener, h.virtual_host, h.cluster) == ("0.0.0.0_8000", "a.default.svc.cluster.local:8000",
                                                       "outbound|8000||a.default.svc.cluster.local")


@pytest.mark.parametrize(("port", "version", "rc"), [(8080, None, "a.default.svc.cluster.local:8080"),
                                                      (3306, None, None), (8080, "1.2", None)])
def test_mesh_unnamed_port_sniffed_except_well_known_and_before_1_3(port: int, version: str | None,
                                                                    rc: str | None) -> None:
    objs = svc("a", f"[{{port: {port}}}]", ip="10.0.0.1")
    h = decide(objs, dst=f"10.0.0.1:{port}", send="http", host="a", version=version)
    assert h.listener == f"10.0.0.1_{port}"
    assert h.route_config == rc
    assert h.cluster == f"outbound|{port}||a.default.svc.cluster.local"


def test_mesh_registry_only_non_http_on_http_port_is_blackholed() -> None:
    objs = se("s", "istio.io", "[{number: 80, name: http, protocol: HTTP}]", addresses="[1.2.3.4]")
    h = decide(objs, dst="1.3.3.7:80", send="tcp", policy="REGISTRY_ONLY")
    assert (h.listener, h.filter_chain, h.cluster, h.verdict.value) == (
        "0.0.0.0_80", "PassthroughFilterChain", "BlackHoleCluster", "blackhole")
    h = decide(objs, dst="1.3.3.7:80", send="http", host="istio.io", policy="REGISTRY_ONLY")
    assert (h.virtual_host, h.cluster) == ("istio.io:80", "outbound|80||istio.io")


INBOUND = (se("se", "foo.bar", "[{name: tcp, number: 70, protocol: TCP}, {name: http, number: 80, protocol: HTTP}, "
              "{name: auto, number: 81}]", res="STATIC",
              extra="  location: MESH_INTERNAL\n  endpoints: [{address: 1.1.1.1}]\n"))


def pa(mode: str) -> str:
    return ("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: "
            f"istio-system}}\nspec:\n  mtls: {{mode: {mode}}}\n")


@pytest.mark.parametrize(("mode", "port", "send", "verdict"), [
    ("STRICT", 70, "tcp", "reset-no-filter-chain"),
    ("STRICT", 70, "tls", "tls-error"),
    ("STRICT", 80, "mtls", "captured"),
    ("STRICT", 82, "http", "reset-no-filter-chain"),
    ("PERMISSIVE", 81, "http", "captured"),
    ("PERMISSIVE", 82, "mtls", "passthrough"),
    ("DISABLE", 80, "mtls", "protocol-error"),
    ("DISABLE", 70, "mtls", "captured"),
])
def test_mesh_inbound_chains_per_peer_authentication(mode: str, port: int, send: str, verdict: str) -> None:
    h = decide(INBOUND + pa(mode), dst=f"1.1.1.1:{port}", send=send, inbound=True, proxy_ip="1.1.1.1",
               host="foo.bar" if send in ("http", "mtls") and port != 70 else None)
    assert h.verdict.value == verdict, h.reason


def test_mesh_inbound_before_1_10_uses_named_cluster() -> None:
    h = decide(INBOUND + pa("PERMISSIVE"), dst="1.1.1.1:70", inbound=True, proxy_ip="1.1.1.1", version="1.9")
    assert h.cluster == "inbound|70|tcp|foo.bar"
    h = decide(INBOUND + pa("PERMISSIVE"), dst="1.1.1.1:70", inbound=True, proxy_ip="1.1.1.1", version="1.2")
    assert (h.listener, h.cluster, h.cluster_type) == ("1.1.1.1_70", "inbound|70|tcp|foo.bar", "STATIC")


EXTNAME = ("apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: default}\nspec:\n  type: ExternalName\n"
           "  externalName: idle.other.svc.cluster.local\n  ports: [{name: tcp, port: 5701}]\n---\n")


@pytest.mark.parametrize(("version", "listener", "cluster"), [
    ("1.20", "0.0.0.0_5701", "outbound|5701||ext.default.svc.cluster.local"),
    ("1.21", "virtualOutbound", "PassthroughCluster"),
])
def test_mesh_externalname_before_and_after_alias(version: str, listener: str, cluster: str) -> None:
    h = decide(EXTNAME, dst="10.12.2.8:5701", version=version)
    assert (h.listener, h.cluster) == (listener, cluster)


@pytest.mark.parametrize(("version", "listener"), [("1.5", "0.0.0.0_6379"), ("1.8", "10.1.1.24_6379")])
def test_mesh_headless_unnamed_port_per_pod_from_1_8(version: str, listener: str) -> None:
    h = decide(svc("r", "[{port: 6379}]") + slice_("r", ["10.1.1.24"]), dst="10.1.1.24:6379", version=version)
    assert h.listener == listener


def test_mesh_headless_skips_the_proxys_own_ip() -> None:
    objs = svc("t", "[{name: tcp, port: 9999}]") + slice_("t", ["1.1.1.1", "10.10.10.10"])
    assert decide(objs, dst="1.1.1.1:9999", proxy_ip="1.1.1.1").listener == "virtualOutbound"
    assert decide(objs, dst="10.10.10.10:9999", proxy_ip="1.1.1.1").listener == "10.10.10.10_9999"


def test_mesh_headless_kubernetes_without_endpoints_gets_no_listener() -> None:
    assert decide(svc("t", "[{name: tcp, port: 9999}]"), dst="1.2.3.4:9999").listener == "virtualOutbound"


def test_mesh_sidecar_egress_hosts_and_policy() -> None:
    objs = svc("a", "[{name: tcp, port: 9000}]", ip="10.0.0.1") + (
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\n"
        "spec:\n  egress: [{hosts: [istio-system/*]}]\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n")
    h = decide(objs, dst="10.0.0.1:9000")
    assert (h.listener, h.cluster, h.verdict.value) == ("virtualOutbound", "BlackHoleCluster", "blackhole")


def test_mesh_export_to_dot_hides_service_from_other_namespaces() -> None:
    objs = svc("a", "[{name: tcp, port: 9000}]", ip="10.0.0.1",
               ns="other").replace("namespace: other}", "namespace: other, annotations: "
                                                         "{networking.istio.io/exportTo: '.'}}")
    assert decide(objs, dst="10.0.0.1:9000").listener == "virtualOutbound"
    assert decide(objs, dst="10.0.0.1:9000", namespace="other").listener == "10.0.0.1_9000"


def test_mesh_destination_rule_disable_and_mesh_external() -> None:
    dr = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: default}\n"
          "spec:\n  host: a\n  trafficPolicy: {tls: {mode: DISABLE}}\n---\n")
    objs = svc("a", "[{name: tcp, port: 9000}]", ip="10.0.0.1")
    assert decide(objs, dst="10.0.0.1:9000").upstream_tls == "istio-mtls"
    assert decide(objs + dr, dst="10.0.0.1:9000").upstream_tls == "plaintext"


def test_mesh_mongo_port_cannot_be_shared() -> None:
    objs = (se("m", "m.example.com", "[{number: 27017, name: mongo, protocol: MONGO}]", ts="2024-01-01T00:00:00Z")
            + se("h", "h.example.com", "[{number: 27017, name: http, protocol: HTTP}]", ts="2024-02-01T00:00:00Z"))
    h = decide(objs, dst="1.2.3.4:27017", send="http", host="h.example.com")
    assert h.cluster == "outbound|27017||m.example.com"


def test_mesh_virtual_service_http_path_and_tcp_routes() -> None:
    objs = svc("a", "[{name: http, port: 80}, {name: tcp, port: 90}]", ip="10.0.0.1") + svc(
        "b", "[{name: http, port: 80}, {name: tcp, port: 90}]", ip="10.0.0.2") + (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: default}\n"
        "spec:\n  hosts: [a]\n  http:\n  - name: to-b\n    match: [{uri: {prefix: /b}}]\n"
        "    route: [{destination: {host: b}}]\n  - name: rest\n    route: [{destination: {host: a}}]\n"
        "  tcp:\n  - match: [{port: 90}]\n    route: [{destination: {host: b, port: {number: 90}}}]\n")
    h = decide(objs, dst="10.0.0.1:80", send="http", host="a", path="/b/x")
    assert (h.route, h.cluster) == ("to-b", "outbound|80||b.default.svc.cluster.local")
    h = decide(objs, dst="10.0.0.1:80", send="http", host="a", path="/")
    assert (h.route, h.cluster) == ("rest", "outbound|80||a.default.svc.cluster.local")
    assert decide(objs, dst="10.0.0.1:90").cluster == "outbound|90||b.default.svc.cluster.local"


def test_mesh_pod_ip_blackhole_chain_only_1_3_to_1_5() -> None:
    objs = se("w", "w.example.com", "[{number: 5000, name: tcp, protocol: TCP}]")
    assert decide(objs, dst="10.9.9.9:5000", version="1.5").cluster == "BlackHoleCluster"
    assert decide(objs, dst="10.9.9.9:5000", version="1.6").cluster == "outbound|5000||w.example.com"


@pytest.mark.parametrize(("dst", "listener", "cluster"), [
    ("10.0.0.5:5432", "0.0.0.0_5432", "outbound|5432||db.example.com"),
    ("10.1.0.5:5432", "0.0.0.0_5432", "PassthroughCluster"),
    ("192.168.1.1:6379", "192.168.1.1_6379", "outbound|6379||cache.example.com"),
])
def test_mesh_serviceentry_cidr_address_is_a_prefix_chain_and_slash_32_a_listener(dst: str, listener: str,
                                                                                   cluster: str) -> None:
    objs = (se("db", "db.example.com", "[{number: 5432, name: tcp, protocol: TCP}]", addresses="[10.0.0.0/24]",
               res="NONE")
            + se("cache", "cache.example.com", "[{number: 6379, name: tcp, protocol: TCP}]",
                 addresses="[192.168.1.1/32]", res="NONE"))
    h = decide(objs, dst=dst)
    assert (h.listener, h.cluster) == (listener, cluster)


def test_mesh_serviceentry_none_without_address_or_selector_is_a_wildcard_original_dst() -> None:
    h = decide(se("any", "any.example.com", "[{number: 7000, name: tcp, protocol: TCP}]", res="NONE"),
               dst="8.8.8.8:7000")
    assert (h.listener, h.cluster, h.cluster_type) == ("0.0.0.0_7000", "outbound|7000||any.example.com",
                                                       "ORIGINAL_DST")


def test_mesh_serviceentry_none_with_selector_and_no_endpoints_gets_no_listener() -> None:
    h = decide(se("sel", "sel.example.com", "[{number: 7000, name: tcp, protocol: TCP}]", res="NONE",
                  extra="  workloadSelector: {labels: {app: nobody}}\n"), dst="8.8.8.8:7000")
    assert h.listener == "virtualOutbound"


def test_mesh_autoallocated_vip_gives_tcp_serviceentry_its_own_listener() -> None:
    objs = se("db", "db.internal", "[{number: 5432, name: tcp, protocol: TCP}]", res="STATIC",
              extra="  endpoints: [{address: 10.5.5.5}]\n")
    parsed = parse_text(objs, "t.yaml")
    objects = convert(parsed.objects)
    mesh = MeshConfig(proxy_metadata=(("ISTIO_META_DNS_CAPTURE", "true"), ("ISTIO_META_DNS_AUTO_ALLOCATE", "true")))
    proxy = make_proxy(objects, mesh, ips=("10.9.9.9",), namespace="default")
    index = build_index(objects, proxy, mesh_profile("1.10"), mesh)
    assert ("240.240.0.1", 5432) in index.exact and 5432 not in index.wildcard
    off = build_index(objects, make_proxy(objects, MeshConfig(), ips=("10.9.9.9",), namespace="default"),
                      mesh_profile("1.10"), MeshConfig())
    assert 5432 in off.wildcard


def test_mesh_tls_port_on_a_wildcard_listener_matches_sni() -> None:
    objs = se("ext", "api.example.com", "[{number: 443, name: tls, protocol: TLS}]")
    h = decide(objs, dst="93.184.216.34:443", send="tls", host="api.example.com")
    assert (h.listener, h.cluster) == ("0.0.0.0_443", "outbound|443||api.example.com")
    h = decide(objs, dst="93.184.216.34:443", send="tls", host="other.example.org")
    assert (h.listener, h.filter_chain, h.cluster) == ("0.0.0.0_443", "PassthroughFilterChain", "PassthroughCluster")
    h = decide(objs, dst="93.184.216.34:443", send="tcp")
    assert h.cluster == "PassthroughCluster"
