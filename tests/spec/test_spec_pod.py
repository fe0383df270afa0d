"""Reading manifests and deriving istio-init's arguments as the sidecar injector does (spec §13.1)."""

from __future__ import annotations

import pytest

from netsim.errors import SpecError
from netsim.spec.flags import Source
from netsim.spec.pod import derive, exclude_inbound_port, load_pod
from netsim.spec.versions import profile_for

POD = """\
kind: Pod
metadata:
  name: p
  annotations:
{annotations}
spec:
  containers:
  - name: app
    ports: [{{containerPort: 8080}}, {{containerPort: 9090}}]
  - name: side
    ports: [{{containerPort: 7070}}]
"""


def pod(annotations: dict[str, str] | None = None, text: str | None = None):  # type: ignore[no-untyped-def]
    lines = "\n".join(f"    {k}: '{v}'" for k, v in (annotations or {}).items()) or "    {}"
    if not annotations:
        lines = "    x: 'y'"
    return load_pod("pod.yaml", text=text if text is not None else POD.format(annotations=lines))


def args(p, version: str | None = None) -> dict[str, str]:  # type: ignore[no-untyped-def]
    d = derive(p, profile_for(version))
    return {s.key: s.value for s in d.args}


def test_current_injector_defaults() -> None:
    a = args(pod())
    assert a == {"istio-inbound-interception-mode": "REDIRECT", "envoy-port": "15001",
                 "inbound-capture-port": "15006", "proxy-uid": "1337", "istio-service-cidr": "*",
                 "istio-service-exclude-cidr": "", "istio-inbound-ports": "*",
                 "istio-local-exclude-ports": "15090,15021,15020"}


def test_istio_1_2_captures_the_containerports_of_all_containers() -> None:
    assert args(pod(), "1.2")["istio-inbound-ports"] == "8080,9090,7070"
    assert args(pod(), "1.2")["istio-local-exclude-ports"] == "15020"
    assert args(pod({"traffic.sidecar.istio.io/includeInboundPorts": "9090"}), "1.2")["istio-inbound-ports"] == "9090"


def test_exclude_inbound_port_appends_the_status_port_unless_present_or_zero() -> None:
    assert exclude_inbound_port("15020", "") == "15020"
    assert exclude_inbound_port("15020", " 80, 81") == "80,81,15020"
    assert exclude_inbound_port("15020", "80,15020") == "80,15020"
    assert exclude_inbound_port("0", "80") == "80"
    a = args(pod({"status.sidecar.istio.io/port": "0", "traffic.sidecar.istio.io/excludeInboundPorts": "81"}))
    assert a["istio-local-exclude-ports"] == "15090,15021,81"


def test_optional_args_are_passed_only_when_annotated() -> None:
    a = args(pod({"traffic.sidecar.istio.io/includeOutboundPorts": "443",
                  "traffic.sidecar.istio.io/excludeOutboundPorts": "",
                  "traffic.sidecar.istio.io/excludeInterfaces": "eth1",
                  "istio.io/reroute-virtual-interfaces": "tap0",
                  "traffic.sidecar.istio.io/kubevirtInterfaces": "tap1"}))
    assert (a["istio-outbound-ports"], a["istio-local-outbound-ports-exclude"]) == ("443", "")
    assert (a["istio-exclude-interfaces"], a["kube-virt-interfaces"]) == ("eth1", "tap0")


def test_deprecated_kubevirt_interfaces_still_works_with_a_warning() -> None:
    d = derive(pod({"traffic.sidecar.istio.io/kubevirtInterfaces": "tap1"}), profile_for(None))
    assert {s.key: s.value for s in d.args}["kube-virt-interfaces"] == "tap1"
    assert any("deprecated" in w for w in d.warnings)


def test_tproxy_and_proxy_config_interception_mode() -> None:
    a = args(pod({"proxy.istio.io/config": "interceptionMode: TPROXY"}))
    assert a["istio-inbound-interception-mode"] == "TPROXY"
    a = args(pod({"proxy.istio.io/config": "interceptionMode: TPROXY",
                  "sidecar.istio.io/interceptionMode": "REDIRECT"}))
    assert a["istio-inbound-interception-mode"] == "REDIRECT"


def test_proxy_metadata_becomes_env_of_istio_init() -> None:
    d = derive(pod({"proxy.istio.io/config": '{"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true", '
                                             '"INVALID_DROP": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"}}'}),
               profile_for(None))
    assert {(s.key, s.value, s.source) for s in d.env} == {
        ("redirect-dns", "true", Source.PROXY_METADATA), ("drop-invalid", "true", Source.PROXY_METADATA)}


def test_no_capture_cases() -> None:
    assert not derive(pod({"sidecar.istio.io/interceptionMode": "NONE"}), profile_for(None)).capture
    assert not derive(pod({"sidecar.istio.io/inject": "false"}), profile_for(None)).capture
    host = POD.format(annotations="    x: 'y'").replace("spec:\n", "spec:\n  hostNetwork: true\n")
    assert not derive(load_pod("pod.yaml", text=host), profile_for(None)).capture


def test_annotation_typo_is_reported() -> None:
    d = derive(pod({"traffic.sidecar.istio.io/excludeOutboundPort": "5701"}), profile_for(None))
    assert any("typo" in f.reason and not f.used for f in d.findings)


def test_bad_annotation_value_names_file_object_annotation_and_value() -> None:
    with pytest.raises(SpecError) as e:
        derive(pod({"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0"}), profile_for(None))
    assert str(e.value) == ('pod.yaml: Pod p: annotation traffic.sidecar.istio.io/includeOutboundIPRanges: '
                            '"10.0.0.0": not a CIDR; add a prefix length, e.g. 10.0.0.0/32')


def test_status_pod_ips_and_dns_policy() -> None:
    text = POD.format(annotations="    x: 'y'") + "  dnsConfig: {nameservers: [8.8.8.8]}\nstatus:\n" \
        "  podIPs: [{ip: 10.244.0.5}, {ip: 'fd00:10:244::5'}]\n"
    p = load_pod("pod.yaml", text=text)
    assert p.pod_ips == ("10.244.0.5", "fd00:10:244::5")
    d = derive(p, profile_for(None))
    assert d.dns_servers == ("10.96.0.10", "8.8.8.8")


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"])
def test_workloads_use_their_pod_template(kind: str) -> None:
    text = (f"kind: {kind}\nmetadata: {{name: w}}\nspec:\n  template:\n    metadata:\n      annotations:\n"
            "        traffic.sidecar.istio.io/includeInboundPorts: '81'\n    spec:\n      containers: [{name: a}]\n")
    p = load_pod("w.yaml", text=text)
    assert (p.kind, p.name, p.where) == (kind, "w", f"w.yaml: {kind} w")
    assert args(p)["istio-inbound-ports"] == "81"


@pytest.mark.parametrize("example", ["dns-capture", "exclude-5701", "ipv6", "mtls-503", "tproxy"])
def test_an_already_parsed_object_reads_like_its_file(example: str) -> None:
    from pathlib import Path

    from netsim.k8s import load_yaml_all
    from netsim.spec.pod import pod_from_object

    path = Path(__file__).resolve().parents[2] / "rules" / example / "pod.yaml"
    docs = [d for d in load_yaml_all(path.read_text(encoding="utf-8")) if d is not None]
    assert len(docs) == 1
    assert pod_from_object(docs[0], source=str(path)) == load_pod(str(path))


def test_an_already_parsed_object_gets_the_file_errors_and_the_name_pick() -> None:
    from netsim.spec.pod import pod_from_object

    spec = {"containers": [{"name": "app"}]}
    items = {"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": n}, "spec": spec} for n in ("a", "b")]}
    assert pod_from_object(items, source="cfg.yaml", name="b").name == "b"
    assert pod_from_object(items, source="cfg.yaml").choice.startswith("first of 2 pod-bearing objects")
    with pytest.raises(SpecError, match=r'^cfg\.yaml: no pod-bearing object named "c"'):
        pod_from_object(items, source="cfg.yaml", name="c")
    with pytest.raises(SpecError, match=r"^cfg\.yaml: no Pod or workload .* the file has: Service s$"):
        pod_from_object({"kind": "Service", "metadata": {"name": "s"}}, source="cfg.yaml")
    bad = {"kind": "Pod", "metadata": {"name": "p", "annotations": {"k": 1}}, "spec": spec}
    with pytest.raises(SpecError, match=r"^cfg\.yaml: Pod p: metadata\.annotations: k: 1 is a YAML number"):
        pod_from_object(bad, source="cfg.yaml")
