"""``netsim.workload`` as a library: the pod built once, traced without click, and its one sidecar identity."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import ip_address

import pytest
from conftest import REPO

import netsim.workload as wl
from netsim.netfilter.model import Family
from netsim.netfilter.packet import Proto
from netsim.workload import SidecarIdentity, Workload, envoy_uid

MTLS = REPO / "rules" / "mtls-503"
TPROXY = REPO / "rules" / "tproxy"


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert wl.__all__ == sorted(wl.__all__)
    for name in wl.__all__:
        assert getattr(wl, name) is not None, name


def test_importing_the_package_loads_no_engine_spec_or_yaml() -> None:
    probe = ("import sys, json, netsim.workload\nprint(json.dumps([m for m in ('netsim.netfilter.engine', "
             "'netsim.spec', 'netsim.capture', 'netsim.mesh', 'yaml') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_a_pod_is_built_once_with_its_namespace_addresses_and_release() -> None:
    w = Workload.from_pod(str(TPROXY / "pod.yaml"))
    assert (w.namespace, w.addresses, w.pod is not None) == ("bank", (ip_address("10.244.0.5"),), True)
    assert w.annotations["sidecar.istio.io/interceptionMode"] == "TPROXY"
    assert w.resolution is not None and w.compiled is not None and Family.IPV4 in w.rulesets
    assert w.app_ports == (8080, 9000)


def test_tproxy_sidecar_runs_as_uid_0_gid_1337_from_the_one_rule() -> None:
    w = Workload.from_pod(str(TPROXY / "pod.yaml"))
    assert (w.sidecar.uid, w.sidecar.gid, w.sidecar.transparent) == (0, 1337, True)
    assert envoy_uid(1337, tproxy=True) == 0 and envoy_uid(1337, tproxy=False) == 1337
    redirect = Workload.from_pod(str(MTLS / "pod.yaml"))
    assert (redirect.sidecar.uid, redirect.sidecar.transparent) == (1337, False)


def test_the_lab_takes_the_tproxy_uid_from_the_same_rule() -> None:
    from netsim.lab.control import LabSpec, listener_roles

    # each process starts as root and becomes its --user once bound
    roles = {r.role: int(r.argv[r.argv.index("--user") + 1]) for r in listener_roles(LabSpec(name="t", tproxy=True))}
    assert roles["listener-15006"] == envoy_uid(1337, tproxy=True) == 0
    assert roles["listener-15001"] == 1337


def test_the_namespace_model_has_the_sidecars_listeners_and_tproxy_route() -> None:
    w = Workload.from_pod(str(TPROXY / "pod.yaml"))
    ns = w.netns()
    assert ns.listeners is not None
    ports = {(listener.port, listener.transparent) for listener in ns.listeners if listener.proto is Proto.TCP}
    assert {(15001, True), (15006, True), (15008, True)} <= ports
    assert [(r.mark, r.table) for r in ns.fwmark_routes] == [(1337, 133)]
    assert w.assumptions() and not w.assumptions((8080,))


def test_trace_without_click_gives_the_hops_and_the_sentence() -> None:
    w = Workload.from_pod(str(MTLS / "pod.yaml"), istio_version="1.2")
    f = w.trace("10.244.0.5:80", from_="10.1.2.3")
    assert f.verdict == "bypassed" and len(f.hops) == 1
    f = Workload.from_pod(str(MTLS / "pod.yaml")).trace("10.244.0.5:80", from_="10.1.2.3")
    assert f.verdict == "captured-inbound" and f.hops[1].who == SidecarIdentity().label
    assert f.original_dst is not None and f.original_dst.port == 80


def test_rules_dump_workload_traces_like_the_pod() -> None:
    pod = Workload.from_pod(str(MTLS / "pod.yaml"))
    dump = Workload.from_rules([str(MTLS / "current.iptables-save")], pod_ips=["10.244.0.5"])
    assert dump.pod is None and dump.namespace == "default"
    for question in ({"dst": "10.96.0.10:80"}, {"dst": "10.244.0.5:80", "from_": "10.1.2.3"}):
        assert dump.trace(**question).verdict == pod.trace(**question).verdict  # type: ignore[arg-type]


def test_a_bad_endpoint_is_a_located_error() -> None:
    from netsim.errors import SpecError

    w = Workload.from_pod(str(MTLS / "pod.yaml"))
    with pytest.raises(SpecError, match=r"^--dst '10.0.0.300:80': '10.0.0.300' is not an IP address$"):
        w.trace("10.0.0.300:80")


@pytest.mark.parametrize("source", ["pod", "dump"])
def test_a_direct_connection_to_the_sidecars_tunnel_port_reaches_its_hbone_listener(source: str) -> None:
    """istio-iptables exempts the HBONE tunnel port (-e, 15008) from inbound capture because Envoy listens there
    itself (spec/istio-iptables.md §2, §10): a peer's connection to it is received by the sidecar, through no
    rule, not a bypass to the app. In TPROXY mode the mangle chain has no such exemption, so 15006 gets it."""
    pod = str(MTLS / "pod.yaml")
    w = Workload.from_pod(pod, pod_ips=["10.244.0.5"]) if source == "pod" else \
        Workload.from_rules([str(MTLS / "current.iptables-save")], pod_ips=["10.244.0.5"])
    f = w.trace("10.244.0.5:15008", from_="10.1.2.3")
    d = f.decision
    assert d.verdict.value == "captured-inbound" and d.decided_by is None and d.basis == "addressed to it"
    assert d.listener is not None and (d.listener.port, d.listener.owner) == (w.sidecar.tunnel_port, "sidecar")
    assert "the sidecar's HBONE inbound listener 15008 directly" in f.summary
    other = w.trace("10.244.0.5:8080", from_="10.1.2.3").decision  # any other port: redirected to 15006
    assert other.listener is not None and other.listener.port == 15006 and other.decided_by is not None
    # TPROXY: captured on 15006 by the mangle rule; Envoy's onward connection to the pod's 15008 then meets its
    # own HBONE listener (the OUTPUT rules exempt 15008 from the loopback → inbound redirect), not the app
    tp = Workload.from_pod(str(TPROXY / "pod.yaml"), pod_ips=["10.244.0.5"]).trace("10.244.0.5:15008",
                                                                                   from_="10.1.2.3")
    first = tp.hops[0].trace
    assert first.transparent_socket and first.local_port == 15006
    assert first.decided_by is not None and "-j TPROXY" in first.decided_by.text
    assert tp.decision.verdict.value == "looped" and tp.decision.hop == 1
    assert "reaches its HBONE inbound listener 15008 directly" in tp.summary


def test_a_workload_derived_from_another_follows_with_its_own_rules_and_proxy() -> None:
    """``Workload.follow`` keeps its Follower per family; ``replace`` shares that memo between workloads that
    differ in their proxy (``as_ambient``) or rules (``with_nft_backend``), and each still answers with its own."""
    dump = Workload.from_rules([str(MTLS / "current.iptables-save")], pod_ips=["10.244.0.5"])
    packet, who = dump.packet("10.96.0.10:80")
    sidecar = dump.follow(packet, who)
    ambient = dump.as_ambient()
    assert ambient._followers is dump._followers  # the memo is shared, so it must check what it memoises
    ztunnel = ambient.follow(packet, who)
    assert sidecar.decision.listener is not None and sidecar.decision.listener.owner == "sidecar"
    assert ztunnel.decision.listener is not None and ztunnel.decision.listener.owner == "ztunnel"
    assert dump.follow(packet, who) == sidecar
    pod = Workload.from_pod(str(MTLS / "pod.yaml"))
    iptables = pod.follow(packet, who)
    nft = pod.with_nft_backend().follow(packet, who)
    assert iptables.decision.decided_by is not None and iptables.decision.decided_by.backend == ""
    assert nft.decision.decided_by is not None and nft.decision.decided_by.backend == "nft"
