"""What the sidecar's agent is, read once through ``Workload``: proxyMetadata (mesh defaultConfig overlaid by
the pod's ``proxy.istio.io/config``) and whether the pod runs a sidecar at all, for dns, mesh and diagnose."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.errors import ConfigError, SpecError
from netsim.mesh.files import read_config
from netsim.mesh.proxy import pick_pod
from netsim.workload import Workload

POD = """apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  annotations:
    proxy.istio.io/config: |
      proxyMetadata:
        ISTIO_META_DNS_CAPTURE: "true"
{extra}spec:
  containers:
  - name: app
    image: app
status:
  podIP: 10.244.0.7
"""


def _pod(tmp_path: Path, extra: str = "", name: str = "pod.yaml") -> str:
    path = tmp_path / name
    path.write_text(POD.format(extra=extra))
    return str(path)


def test_the_pods_annotation_overlays_the_mesh_defaults(tmp_path: Path) -> None:
    w = Workload.from_pod(_pod(tmp_path))
    assert (w.dns_capture, w.dns_auto_allocate) == (True, False)
    assert w.metadata_origin == "Pod shop/web annotation proxy.istio.io/config"
    m = w.with_mesh_defaults((("ISTIO_META_DNS_AUTO_ALLOCATE", "true"), ("ISTIO_META_DNS_CAPTURE", "false")),
                             "mesh.yaml")
    assert (m.dns_capture, m.dns_auto_allocate) == (True, True)  # the pod's value wins over the mesh's
    assert m.metadata_origin == ("Pod shop/web annotation proxy.istio.io/config over mesh.yaml "
                                 "defaultConfig.proxyMetadata")
    assert m.rulesets == w.rulesets and m.addresses == w.addresses


def test_an_annotation_that_is_not_yaml_is_one_located_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(POD.format(extra="").replace('ISTIO_META_DNS_CAPTURE: "true"', "[unclosed"))
    pod = pick_pod(read_config([path]).objects.pods)
    assert pod is not None
    w = Workload.from_pod_info(pod)
    with pytest.raises(ConfigError, match=r"annotation proxy\.istio\.io/config: invalid YAML"):
        _ = w.proxy_metadata


def test_injection_is_the_registrys_decision_in_the_namespaces_context(tmp_path: Path) -> None:
    off = Workload.from_pod(_pod(tmp_path, '    sidecar.istio.io/inject: "false"\n'))
    assert off.injection == (False, "annotation sidecar.istio.io/inject=false")
    assert Workload.from_pod(_pod(tmp_path)).has_sidecar
    ns = tmp_path / "ns.yaml"
    ns.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n" + POD.format(extra=""))
    pod = pick_pod(read_config([ns]).objects.pods)
    assert pod is not None
    w = Workload.from_pod_info(pod)
    assert w.injection == (False, "namespace shop has no injection label") and w.pod_info is pod


def test_a_pod_read_among_objects_keeps_what_the_capture_cannot_derive(tmp_path: Path) -> None:
    path = _pod(tmp_path, '    traffic.sidecar.istio.io/includeInboundPorts: "80-"\n')
    with pytest.raises(SpecError, match="includeInboundPorts"):
        Workload.from_pod(path)  # the strict reader: trace and compile refuse the pod
    pod = pick_pod(read_config([path]).objects.pods)
    assert pod is not None
    w = Workload.from_pod_info(pod)  # the lenient one: mesh and dns still answer for its agent
    assert w.capture_error.startswith("capture config not derived: ") and "includeInboundPorts" in w.capture_error
    assert (w.resolution, w.namespace, [str(a) for a in w.addresses], w.dns_capture) == (None, "shop",
                                                                                          ["10.244.0.7"], True)


def test_dns_and_mesh_read_the_agent_from_the_same_workload(tmp_path: Path) -> None:
    from netsim.mesh.model import MeshConfig
    from netsim.mesh.proxy import proxy_for_workload

    pod = pick_pod(read_config([_pod(tmp_path)]).objects.pods)
    assert pod is not None
    mesh = MeshConfig(proxy_metadata=(("ISTIO_META_DNS_AUTO_ALLOCATE", "true"),), source="mesh.yaml")
    proxy = proxy_for_workload(Workload.from_pod_info(pod), mesh)
    assert (proxy.ips, proxy.namespace, proxy.dns_capture, proxy.dns_auto_allocate) == (("10.244.0.7",), "shop",
                                                                                         True, True)
    template = Workload.from_pod_info(pod.__class__(name="t", namespace="shop", kind="Deployment", body={}))
    assert proxy_for_workload(template, mesh).ips == ("10.255.255.254",)  # a template has no address
