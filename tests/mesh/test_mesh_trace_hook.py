"""``continue_trace``: the kernel tracer's verdict handed to the mesh hop (how ``netsim trace --config`` continues)."""

from __future__ import annotations

from pathlib import Path

import pytest

from netsim.mesh.files import load_index
from netsim.mesh.trace import continue_trace

HAZELCAST = Path(__file__).resolve().parents[2] / "rules" / "mesh" / "hazelcast-externalname"


def _kernel_verdict(pod_file: Path, dst: str, port: int) -> tuple[str, str]:
    """Run the real tracer on the pod's compiled capture rules, through the workload's front door."""
    from netsim.workload import Workload

    w = Workload.from_pod(str(pod_file), pod_ips=["10.12.0.11"])
    f = w.trace(f"{dst}:{port}", uid=1000, gid=1000)
    return f.verdict, f.summary


@pytest.mark.parametrize(("version", "cluster"), [("1.5", "outbound|5701||app-ext.app.svc.cluster.local"),
                                                   (None, "PassthroughCluster")])
def test_mesh_trace_continues_past_15001(version: str | None, cluster: str) -> None:
    verdict, summary = _kernel_verdict(HAZELCAST / "pod.yaml", "10.12.2.8", 5701)
    assert verdict == "captured-outbound", summary
    index = load_index([HAZELCAST / "objects.yaml"], pod_file=str(HAZELCAST / "pod.yaml"), istio_version=version)
    cont = continue_trace(index, verdict, dst_ip="10.12.2.8", dst_port=5701)
    assert cont is not None
    assert cont.hop.cluster == cluster
    last = cont.final_sentence(summary)
    assert last.startswith(summary.rstrip(".")) and "In the sidecar" in last
    assert any(line.startswith("== Envoy") for line in cont.text_lines())
    assert cont.to_json()["cluster"] == cluster


def test_mesh_trace_hook_values() -> None:
    index = load_index([HAZELCAST / "objects.yaml"], pod_file=str(HAZELCAST / "pod.yaml"), istio_version="1.5")
    assert continue_trace(index, "bypassed", dst_ip="10.12.2.8", dst_port=5701) is None
    assert continue_trace(index, "captured-dns", dst_ip="10.96.0.10", dst_port=53) is None
    cont = continue_trace(index, "captured-outbound", dst_ip="10.12.2.8", dst_port=5701)
    assert cont is not None
    assert [s.kind for s in cont.steps] == ["listener", "filter_chain", "cluster", "upstream", "verdict"]
    assert cont.steps[0].name == "0.0.0.0_5701"
    inbound = continue_trace(index, "captured-inbound", dst_ip="10.12.0.11", dst_port=5701, send="mtls")
    assert inbound is not None and inbound.hop.listener == "virtualInbound"
    assert inbound.hop.cluster == "inbound|5701|tcp-hazelcast|manager.manager.svc.cluster.local"
