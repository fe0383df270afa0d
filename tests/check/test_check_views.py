"""``netsim check`` builds one sidecar view per group of workloads that see the same config, through a
:class:`~netsim.mesh.build.ViewCache`: on a generated mesh with overrides in several namespaces
(DestinationRules with exportTo, workload selectors and subsets, exported and namespace-local Services,
Sidecar resources, a VirtualService, a hostname in two namespaces), every view equals the one built from
scratch, and the report equals the one of building every workload's view from scratch."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.check import check_objects
from netsim.mesh.build import ProxyIndex, ViewCache, build_index
from netsim.mesh.diagnose import mesh_facts
from netsim.mesh.files import read_config
from netsim.mesh.proxy import PLACEHOLDER_IP, make_proxy
from netsim.mesh.versions import mesh_profile

NAMESPACES = ("n0", "n1", "n2", "n3", "n4", "n5")


def _app(name: str, ns: str, i: int, *, inject: bool = True, headless: bool = False, export: str = "") -> list[str]:
    ann = f", annotations: {{networking.istio.io/exportTo: \"{export}\"}}" if export else ""
    cluster_ip = "None" if headless else f"10.{NAMESPACES.index(ns) + 10}.0.{i + 1}"
    docs = [f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}, version: v{i % 2 + 1}, sidecar.istio.io/inject: "{str(inject).lower()}"}}
    spec:
      containers: [{{name: app, image: app, ports: [{{containerPort: 8080}}, {{containerPort: {9000 + i}}}]}}]
""", f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}{ann}}}
spec:
  clusterIP: {cluster_ip}
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: tcp, port: {9000 + i}}}]
"""]
    if headless:  # pods behind it, one with a sidecar and one without
        for k, side in enumerate(("true", "false")):
            docs.append(f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}-{k}, namespace: {ns}, labels: {{app: {name}, sidecar.istio.io/inject: "{side}"}}}}
spec: {{containers: [{{name: app, image: app, ports: [{{containerPort: 8080}}, {{containerPort: {9000 + i}}}]}}]}}
status: {{podIP: 10.99.{NAMESPACES.index(ns)}.{k + 10}}}
""")
    return docs


def _dr(name: str, ns: str, host: str, mode: str, extra: str = "") -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {ns}}}
spec:
  host: "{host}"
{extra}  trafficPolicy: {{tls: {{mode: {mode}}}}}
"""


def _mesh(root_sidecar: bool) -> list[str]:
    docs = [_dr("default", "istio-system", "*.local", "ISTIO_MUTUAL"),
            _dr("local", "n1", "*.n1.svc.cluster.local", "DISABLE"),
            _dr("subsets", "n2", "app0.n0.svc.cluster.local", "ISTIO_MUTUAL",
                "  exportTo: [\".\"]\n"
                "  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]\n"),
            _dr("picky", "n3", "*.local", "SIMPLE", "  workloadSelector: {matchLabels: {app: app0}}\n"),
            _dr("for-n5", "n4", "*.n3.svc.cluster.local", "DISABLE", "  exportTo: [n5]\n"),
            """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: n2}
spec:
  egress: [{hosts: ["./*", "istio-system/*", "n0/app1.n0.svc.cluster.local"]}]
""", """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: strict-egress, namespace: n4}
spec:
  workloadSelector: {labels: {app: app1}}
  egress: [{port: {number: 9001, protocol: TCP, name: tcp}, hosts: ["*/*"]}, {hosts: ["*/*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
""", """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shift, namespace: n1}
spec:
  hosts: [app0.n0.svc.cluster.local]
  exportTo: [n1, n2]
  tcp: [{route: [{destination: {host: app1.n0.svc.cluster.local, port: {number: 9001}}}]}]
""", """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"""]
    for ns, export in (("n0", ""), ("n3", "  exportTo: [\".\"]\n")):
        docs.append(f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api, namespace: {ns}}}
spec:
  hosts: [api.corp.internal]
{export}  resolution: NONE
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
""")
    if root_sidecar:
        docs.append("""\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  egress: [{hosts: ["./*", "n0/*", "n1/*", "n3/*"]}]
""")
    for n, ns in enumerate(NAMESPACES):
        for i in range(3):
            docs += _app(f"app{i}", ns, i, inject=(n + i) % 4 != 3, headless=i == 2 and n % 2 == 0,
                         export={(0, 1): ".", (5, 0): "n4", (3, 2): "n2,n3"}.get((n, i), ""))
    return docs


def _same_view(a: ProxyIndex, b: ProxyIndex) -> None:
    assert dict(a.exact) == dict(b.exact)
    assert dict(a.wildcard) == dict(b.wildcard)
    assert dict(a.clusters) == dict(b.clusters)
    assert dict(a.inbound_exact) == dict(b.inbound_exact)
    assert (a.virtual_outbound, a.virtual_inbound) == (b.virtual_outbound, b.virtual_inbound)
    assert (a.policy, a.policy_origin, a.auto_mtls, a.conflicts, a.hidden) == \
           (b.policy, b.policy_origin, b.auto_mtls, b.conflicts, b.hidden)
    assert list(a.routes) == list(b.routes)
    assert all(a.routes[n] == b.routes[n] for n in a.routes)


@pytest.fixture(scope="module", params=[False, True], ids=["namespace-sidecars", "root-sidecar-too"])
def manifests(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("views") / "mesh.yaml"
    f.write_text("---\n".join(_mesh(request.param)))
    return f


@pytest.mark.parametrize("version", [None, "1.5", "1.20"])
def test_every_view_built_through_the_cache_equals_the_view_built_from_scratch(manifests: Path,
                                                                                version: str | None) -> None:
    read = read_config([manifests], keep_going=False)
    objects, profile = read.objects, mesh_profile(version)
    from netsim.check.core import _mesh_config

    mesh = _mesh_config(read.loaded)
    cache = ViewCache(objects, profile, mesh)
    workloads = mesh_facts(objects).workloads
    assert len(workloads) == 3 * len(NAMESPACES) + 6  # the Deployments and the headless services' Pods
    policies = set()
    for pod in workloads:
        proxy = make_proxy(objects, mesh, ips=pod.ips or (PLACEHOLDER_IP,), namespace=pod.namespace,
                           labels=pod.labels, pod=pod)
        shared = build_index(objects, proxy, profile, mesh, cache=cache)
        _same_view(shared, build_index(objects, proxy, profile, mesh))
        policies.add(shared.policy)
        # the overrides make views differ: what each namespace sees is not one config for all
    assert policies == {"ALLOW_ANY", "REGISTRY_ONLY"}
    assert len(cache.clusters) > 3 and len(cache.outbound) > 3 and len(cache.visible) >= len(NAMESPACES)


@pytest.mark.parametrize("version", [None, "1.5"])
def test_the_report_equals_the_report_of_views_built_from_scratch(manifests: Path, version: str | None) -> None:
    read = read_config([manifests], keep_going=False)
    profile = mesh_profile(version)
    shared = check_objects(read.objects, read.loaded, profile=profile)
    fresh = check_objects(read.objects, read.loaded, profile=profile, fresh_views=True)
    assert shared.views < fresh.views == fresh.workloads
    assert [f.to_json() for f in shared.findings] == [f.to_json() for f in fresh.findings]
    assert len({f.check for f in shared.findings}) >= 4  # something to compare


def test_a_cache_serves_only_the_objects_it_was_made_for(manifests: Path) -> None:
    objects = read_config([manifests], keep_going=False).objects
    other = read_config([manifests], keep_going=False).objects
    from netsim.mesh.model import MeshConfig

    mesh, profile = MeshConfig(), mesh_profile(None)
    proxy = make_proxy(objects, mesh, ips=(PLACEHOLDER_IP,), namespace="n0")
    with pytest.raises(ValueError, match="ViewCache"):
        build_index(other, proxy, profile, mesh, cache=ViewCache(objects, profile, mesh))
