"""Ambient traces (``--rules|--nft FILE --mode ambient``) over the kernel read-backs of Istio's ambient goldens.

Every row of spec/istio-ambient-capture.md §10, both backends (iptables-nft dumps and ``nft list ruleset``), IPv4
and IPv6: the verdict, ztunnel's listener and the deciding rule come from the spec's table; netsim's answer is
computed from the dumps read in place (../shared/conformance/istio-ambient/kernel).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import CONFORMANCE

from netsim.capture.ambient import CONN as AMBIENT_CONNMARK
from netsim.capture.ambient import MARK as ZTUNNEL_MARK
from netsim.commands.trace import trace_cmd
from netsim.netfilter.model import Family
from netsim.netfilter.trace import Outcome
from netsim.workload import Verdict, Workload

AMBIENT = CONFORMANCE / "istio-ambient"
KERNEL = AMBIENT / "kernel"
POD = {4: "10.244.0.5", 6: "fd00:10:244::5"}
REMOTE = {4: "10.96.0.10", 6: "fd00:96::10"}
PEER = {4: "10.1.2.3", 6: "fd00:1::3"}
LOOP = {4: "127.0.0.1", 6: "::1"}


def _ep(version: int, addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if version == 6 else f"{addr}:{port}"


def _config(case: str) -> dict[str, object]:
    doc = yaml.safe_load((AMBIENT / "iptables" / f"{case}.yaml").read_text())
    return {**doc["config"], **doc["pod_overrides"], **doc["effective"]}


def _snat(case: str, version: int) -> str:
    return str(_config(case)["HostProbeSNATAddress" if version == 4 else "HostProbeV6SNATAddress"])


_CACHE: dict[tuple[str, str], Workload] = {}


def _workload(case: str, backend: str) -> Workload:
    key = (case, backend)
    if key not in _CACHE:
        if not KERNEL.is_dir():
            pytest.skip(f"conformance data not found at {KERNEL} (set NETSIM_CONFORMANCE)")
        ips = [POD[4], POD[6]] if case.endswith("_ipv6") else [POD[4]]
        if backend == "nft":
            w = Workload.from_rules([], nft_paths=[str(KERNEL / "nftables" / f"{case}.nft-list")], pod_ips=ips)
        else:
            files = [KERNEL / "iptables" / f"{case}.iptables-save", KERNEL / "iptables" / f"{case}.ip6tables-save"]
            w = Workload.from_rules([str(p) for p in files if p.exists()], pod_ips=ips)
        _CACHE[key] = w.as_ambient()
    return _CACHE[key]


CASES = [(case, backend, version) for case in ("default", "default_ipv6") for backend in ("iptables", "nft")
         for version in ((4, 6) if case.endswith("_ipv6") else (4,))]
IDS = [f"{c}-{b}-v{v}" for c, b, v in CASES]


@pytest.mark.parametrize(("case", "backend", "version"), CASES, ids=IDS)
def test_every_row_of_the_spec_table(case: str, backend: str, version: int) -> None:
    w = _workload(case, backend)
    pod, remote, peer, lo, snat = POD[version], REMOTE[version], PEER[version], LOOP[version], _snat(case, version)
    ep: Callable[[str, int], str] = lambda a, p: _ep(version, a, p)  # noqa: E731

    # app → remote TCP: REDIRECT to ztunnel's outbound 15001 (rule 19 / n10); ztunnel's own connection leaves
    f = w.trace(ep(remote, 80))
    assert f.decision.verdict is Verdict.CAPTURED_OUTBOUND
    listener = f.decision.listener
    assert listener is not None and (listener.port, listener.owner) == (15001, "ztunnel")
    assert f.decision.decided_by is not None and "15001" in f.decision.decided_by.rule
    assert len(f.hops) == 2 and f.hops[1].trace.packet.mark == ZTUNNEL_MARK and f.hops[1].trace.outcome is Outcome.SENT
    # app → own pod IP (via lo): rule 18 accepts it; app → loopback: never captured
    f = w.trace(ep(pod, 80))
    assert f.decision.verdict is Verdict.BYPASSED and f.decision.decided_by is not None
    assert "lo" in f.decision.decided_by.rule and "accept" in f.decision.decided_by.rule.lower()
    assert w.trace(ep(lo, 80)).decision.verdict is Verdict.BYPASSED
    # ztunnel (mark 0x539) → anything: not captured; its upstream DNS query goes into conntrack zone 1
    for proto, port in (("tcp", 80), ("udp", 53), ("tcp", 53)):
        f = w.trace(ep(remote, port), proto=proto, as_="ztunnel")
        assert f.decision.verdict is Verdict.BYPASSED and f.hops[0].trace.outcome is Outcome.SENT
        assert f.hops[0].trace.packet.mark == ZTUNNEL_MARK
        assert f.hops[0].trace.zone == (1 if proto == "udp" else 0)
    # remote → pod TCP: REDIRECT to 15006; ztunnel connects to the app from the client's address, marked 0x111
    f = w.trace(ep(pod, 8080), from_=peer)
    assert f.decision.verdict is Verdict.CAPTURED_INBOUND
    assert f.decision.listener is not None and f.decision.listener.port == 15006
    assert f.decision.decided_by is not None and "15006" in f.decision.decided_by.rule
    app = f.hops[1].trace
    assert str(app.packet.src) == peer and app.outcome is Outcome.DELIVERED and app.local_port == 8080
    assert app.ctmark & 0xFFF == AMBIENT_CONNMARK and "marked 0x111" in f.summary
    # remote → pod:15008: ztunnel's HBONE listener gets it directly, no rule
    f = w.trace(ep(pod, 15008), from_=peer)
    assert f.decision.verdict is Verdict.CAPTURED_INBOUND and f.decision.decided_by is None
    assert f.decision.listener is not None and f.decision.listener.port == 15008
    assert f.decision.basis == "addressed to it"
    # kubelet probe from the SNAT address: straight to the app (rule 9); the app's TCP to it: not captured (rule 10)
    for f in (w.trace(ep(pod, 8080), from_=snat), w.trace(ep(snat, 8080))):
        assert f.decision.verdict is Verdict.BYPASSED
        assert f.decision.decided_by is not None and snat in f.decision.decided_by.rule
    # UDP other than DNS, both directions: no rule
    assert w.trace(ep(remote, 5000), proto="udp").decision.verdict is Verdict.BYPASSED
    assert w.trace(ep(pod, 5000), proto="udp", from_=peer).decision.verdict is Verdict.BYPASSED
    # DNS on: UDP and TCP to port 53 go to ztunnel's DNS proxy on loopback
    for proto in ("udp", "tcp"):
        f = w.trace(ep(remote, 53), proto=proto)
        assert f.decision.verdict is Verdict.CAPTURED_DNS
        assert f.decision.listener is not None and f.decision.listener.port == 15053
        assert str(f.decision.listener.address) == lo
    # an upstream DNS reply (source port 53, no mark) is looked up in zone 1 (rule 16)
    f = w.trace(ep(pod, 40000), proto="udp", from_=ep(remote, 53))
    assert f.hops[0].trace.zone == 1
    # a new connection marked 0x111: nat OUTPUT accepts it (rule 17), and table 100 delivers it locally (§7)
    f = w.trace(ep(remote, 80), mark=AMBIENT_CONNMARK)
    assert f.decision.verdict is Verdict.BYPASSED and f.decision.decided_by is not None
    assert f.hops[0].trace.outcome is Outcome.DELIVERED and f.hops[0].trace.out_iface is None


@pytest.mark.parametrize(("case", "backend", "version"), CASES, ids=IDS)
def test_return_path_through_connmark_and_table_100(case: str, backend: str, version: int) -> None:
    """ztunnel's spoofed connection to the app gets connmark 0x111 on lo; the app's reply restores it as the packet
    mark, and the policy route sends it back through lo to ztunnel instead of out of eth0 (§10)."""
    from netsim.workload.packets import follow_up

    w = _workload(case, backend)
    pod, peer = POD[version], PEER[version]
    packet, who = w.packet(_ep(version, pod, 8080), src=peer, as_="ztunnel")
    fu = follow_up(w, packet, who, w.netns(), reply=True)
    assert fu.entry is not None and fu.entry.mark & 0xFFF == AMBIENT_CONNMARK
    assert fu.second is not None
    reply = fu.second.hops[0].trace
    assert reply.mark & 0xFFF == AMBIENT_CONNMARK and reply.looped and reply.outcome is Outcome.DELIVERED
    # without the policy route the same reply leaves through eth0 (the rules alone do not bring it back)
    bare = w.netns()
    from dataclasses import replace

    fu2 = follow_up(w, packet, who, replace(bare, fwmark_routes=()), reply=True)
    assert fu2.second is not None and fu2.second.hops[0].trace.outcome is Outcome.SENT


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_ingress_mode_captures_outbound_only(backend: str) -> None:
    w = _workload("ingress_ipv6", backend)
    for version in (4, 6):
        assert w.trace(_ep(version, REMOTE[version], 80)).decision.verdict is Verdict.CAPTURED_OUTBOUND
        assert w.trace(_ep(version, POD[version], 8080), from_=PEER[version]).decision.verdict is Verdict.BYPASSED
        # the 1.29 fix keeps rule 8: ztunnel's connection to the app is still marked 0x111
        f = w.trace(_ep(version, POD[version], 8080), src=PEER[version], as_="ztunnel")
        assert f.hops[0].trace.ctmark & 0xFFF == AMBIENT_CONNMARK
        # DNS capture is off in this case: a query is not captured
        assert not _config("ingress_ipv6")["redirect_dns"]
        assert w.trace(_ep(version, REMOTE[version], 53), proto="udp").decision.verdict is Verdict.BYPASSED


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_virtual_interface_needs_an_address(backend: str) -> None:
    w = _workload("virtual_interfaces_ipv6", backend)
    iface = str(yaml.safe_load((AMBIENT / "iptables" / "virtual_interfaces_ipv6.yaml").read_text())
                ["pod_overrides"]["VirtualInterfaces"][0])
    import ipaddress

    dropped = w.trace(_ep(4, POD[4], 8080), from_=PEER[4], in_iface=iface)
    assert dropped.decision.verdict is Verdict.DROPPED  # REDIRECT in PREROUTING: the device has no address
    wa = w.with_iface_addrs([(iface, ipaddress.ip_address("10.10.0.5")), (iface, ipaddress.ip_address("fd00:10::5"))])
    assert dict(wa.iface_addrs)[iface] == ipaddress.ip_address("fd00:10::5")  # the last given wins
    wa = w.with_iface_addrs([(iface, ipaddress.ip_address("10.10.0.5"))])
    f = wa.trace(_ep(4, POD[4], 8080), from_=PEER[4], in_iface=iface)
    assert f.decision.verdict is Verdict.CAPTURED_OUTBOUND  # "treated as outbound" (rule 7)
    assert f.decision.listener is not None and str(f.decision.listener.address) == "10.10.0.5"
    assert f.decision.decided_by is not None and iface in f.decision.decided_by.rule


def _cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(trace_cmd, list(args))
    return r.exit_code, r.output


def _k(*parts: str) -> str:
    return str(KERNEL.joinpath(*parts))


def test_cli_json_names_ztunnel_and_notes_the_assumed_routes() -> None:
    if not KERNEL.is_dir():
        pytest.skip("conformance data not found")
    code, out = _cli("--rules", _k("iptables", "default.iptables-save"), "--mode", "ambient", "--pod-ip", POD[4],
                     "--dst", "10.96.0.10:80", "--format", "json")
    assert code == 0, out
    j = json.loads(out)
    assert j["verdict"] == "captured-outbound"
    assert (j["listener"]["owner"], j["listener"]["port"]) == ("ztunnel", 15001)
    assert any("fwmark 0x111/0xfff lookup 100" in n for n in j["notes"])
    assert j["hops"][1]["who"].startswith("ztunnel (") and "mark 0x539" in j["hops"][1]["who"]
    # --expect reads the same decision
    assert _cli("--nft", _k("nftables", "default.nft-list"), "--mode", "ambient", "--pod-ip", POD[4], "--from",
                PEER[4], "--dst", f"{POD[4]}:15008", "--expect", "captured")[0] == 0
    assert _cli("--nft", _k("nftables", "default.nft-list"), "--mode", "ambient", "--pod-ip", POD[4], "--as",
                "ztunnel", "--dst", "10.96.0.10:80", "--expect", "captured")[0] == 1
    # the text's sentence is the JSON's summary
    code, text = _cli("--rules", _k("iptables", "default.iptables-save"), "--mode", "ambient", "--pod-ip", POD[4],
                      "--dst", "10.96.0.10:80")
    assert text.rstrip().endswith(j["summary"])
    # the matrix names the same cells
    code, out = _cli("--rules", _k("iptables", "default.iptables-save"), "--mode", "ambient", "--pod-ip", POD[4],
                     "--matrix", "--format", "json")
    rows = json.loads(out)
    cell = next(r for r in rows if r["direction"] == "outbound" and r["who"] == "app" and r["proto"] == "tcp"
                and r["port"] == 80)
    assert cell["verdict"] == j["verdict"] and cell["listener"]["owner"] == "ztunnel"
    hbone = next(r for r in rows if r["direction"] == "inbound" and r["proto"] == "tcp" and r["port"] == 15008)
    assert hbone["verdict"] == "captured-inbound" and hbone["rule"] == "(no rule: addressed to it)"


def test_cli_mark_and_as_on_a_sidecar_dump() -> None:
    """--mark is the socket mark of any local packet: Istio's TPROXY rules RETURN Envoy's marked loopback packets."""
    dump = CONFORMANCE / "istio-iptables" / "kernel" / "tproxy.v4.iptables-save"
    if not dump.exists():
        pytest.skip("conformance data not found")
    args = ["--rules", str(dump), "--pod-ip", POD[4], "--dst", f"{POD[4]}:8080", "--format", "json"]
    plain = json.loads(_cli(*args)[1])
    marked = json.loads(_cli(*args, "--mark", "0x539")[1])
    rule = "-A OUTPUT -o lo -p tcp -m mark --mark 0x539 -j RETURN"

    def matched(j: dict[str, object]) -> bool:
        hop = j["hops"][0]  # type: ignore[index]
        return any(s.get("rule") == rule and s.get("matched") for s in hop["steps"])

    assert matched(marked) and not matched(plain)
    assert marked["hops"][0]["who"] == "app (uid 0, gid 0, mark 0x539)"
    assert json.loads(_cli(*args, "--as", "ztunnel")[1])["hops"][0]["who"] == "ztunnel (uid 0, gid 1337, mark 0x539)"


@pytest.mark.parametrize(("args", "message"), [
    (["--as", "ztunnel", "--uid", "5"], "--as ztunnel gives the socket's uid, gid and mark: drop --uid"),
    (["--mark", "0x539", "--from", "10.1.2.3"], "--mark describes the socket of a locally generated packet"),
    (["--mark", "0x539", "--matrix"], "--mark describes one traced packet's socket"),
    (["--mark", "nope"], "--mark 'nope': not a number"),
    (["--iface-addr", "net1"], "--iface-addr 'net1': expected NAME=IP"),
    (["--iface-addr", "net1=10.0.0.300"], "--iface-addr 'net1=10.0.0.300': expected NAME=IP"),
])
def test_cli_bad_options_are_one_line(args: list[str], message: str) -> None:
    if not KERNEL.is_dir():
        pytest.skip("conformance data not found")
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--rules", _k("iptables", "default.iptables-save"),
                        "--mode", "ambient", "--dst", "10.244.0.5:80", *args], capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_virtual_interface_address_from_the_manifest_or_the_option(tmp_path: Path) -> None:
    if not KERNEL.is_dir():
        pytest.skip("conformance data not found")
    base = ["--rules", _k("iptables", "virtual_interfaces.iptables-save"), "--mode", "ambient", "--pod-ip", POD[4],
            "--from", PEER[4], "--dst", f"{POD[4]}:8080", "--in-iface", "fake1s0f0", "--format", "json"]
    j = json.loads(_cli(*base)[1])
    assert j["verdict"] == "dropped" and any("--iface-addr fake1s0f0=IP" in n for n in j["notes"])
    j = json.loads(_cli(*base, "--iface-addr", "fake1s0f0=10.10.0.5")[1])
    assert j["verdict"] == "captured-outbound" and j["listener"]["address"] == "10.10.0.5"


def test_virtual_interface_addresses_from_the_network_status_annotation(tmp_path: Path) -> None:
    """Multus' network-status annotation names each device's addresses: the first of each device is used, a
    value that is not that JSON gives none."""
    status = json.dumps([{"name": "default", "interface": "eth0", "ips": ["10.244.0.5"]},
                         {"name": "ns/vm", "interface": "net1", "ips": ["10.10.0.5", "fd00:10::5"]},
                         {"name": "bad", "interface": "net2", "ips": ["not-an-ip", "10.20.0.5"]},
                         {"interface": 7}, "junk"])
    pod = tmp_path / "pod.yaml"
    pod.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p", "annotations": {"k8s.v1.cni.cncf.io/network-status": status}},
        "spec": {"containers": [{"name": "app", "image": "x"}]}}))
    w = Workload.from_pod(str(pod))
    got = {name: str(a) for name, a in w.annotated_iface_addrs()}
    assert got == {"eth0": "10.244.0.5", "net1": "10.10.0.5", "net2": "10.20.0.5"}
    pod.write_text(pod.read_text().replace("k8s.v1.cni.cncf.io/network-status", "other"))
    assert Workload.from_pod(str(pod)).annotated_iface_addrs() == ()


SHOP = Path(__file__).resolve().parents[2] / "rules" / "ambient" / "shop.yaml"


def _pod(tmp_path: Path, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
         ns_labels: dict[str, str] | None = None) -> Path:
    docs: list[dict[str, object]] = []
    if ns_labels is not None:
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": ns_labels}})
    docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p", "namespace": "shop", "labels": labels or {}, "annotations": annotations or {}},
        "spec": {"containers": [{"name": "app", "image": "x", "ports": [{"containerPort": 8080}]}]},
        "status": {"podIPs": [{"ip": POD[4]}, {"ip": POD[6]}]}})
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_pod_in_an_ambient_namespace_is_traced_with_ztunnel(backend: str) -> None:
    """rules/ambient/shop.yaml: the namespace is enrolled, so the Deployment gets istio-cni's rules; its
    sidecar-era excludeOutboundPorts annotation no longer applies (ambient reads no traffic.sidecar.istio.io/*)."""
    ann = yaml.safe_load_all(SHOP.read_text())
    deployment = next(d for d in ann if d["kind"] == "Deployment")
    excluded = int(deployment["spec"]["template"]["metadata"]["annotations"]
                   ["traffic.sidecar.istio.io/excludeOutboundPorts"])
    w = Workload.from_pod(str(SHOP), pod_ips=[POD[4], POD[6]], backend=backend)
    assert w.sidecar.owner == "ztunnel" and w.ambient is not None and w.ambient.backend == backend
    assert any("namespace shop" in n and "dataplane-mode=ambient" in n for n in w.notes)
    assert not any("fwmark 0x111/0xfff lookup 100" in n for n in w.notes)  # compiled: the routes are known
    for version in (4, 6):
        f = w.trace(_ep(version, REMOTE[version], excluded))
        assert f.decision.verdict is Verdict.CAPTURED_OUTBOUND and f.decision.listener is not None
        assert f.decision.listener.owner == "ztunnel"
        assert w.trace(_ep(version, POD[version], 15008), from_=PEER[version]).decision.listener is not None
    side = Workload.from_pod(str(SHOP), pod_ips=[POD[4]], mode="sidecar")
    assert side.sidecar.owner == "sidecar"
    assert side.trace(_ep(4, REMOTE[4], excluded)).decision.verdict is Verdict.BYPASSED
    # the matrix and the trace read the same decision
    rows = dict(w.matrix())
    cell = next(r for r in rows[Family.IPV4] if (r.direction, r.proto, r.port, r.who) == ("outbound", "tcp", 80, "app"))
    assert cell.decision == w.trace(_ep(4, REMOTE[4], 80)).decision
    proxy = next(r for r in rows[Family.IPV4]
                 if (r.direction, r.proto, r.port, r.who) == ("outbound", "tcp", 80, "proxy"))
    assert proxy.decision.verdict is Verdict.BYPASSED  # ztunnel's own socket is marked 0x539


def test_pod_mode_from_labels_opt_out_and_settings(tmp_path: Path) -> None:
    plain = _pod(tmp_path)
    assert Workload.from_pod(str(plain)).sidecar.owner == "sidecar"
    assert Workload.from_pod(str(_pod(tmp_path, labels={"istio.io/dataplane-mode": "ambient"}))).sidecar.ambient
    assert Workload.from_pod(str(_pod(tmp_path, ns_labels={"istio.io/dataplane-mode": "ambient"}))).sidecar.ambient
    # a Namespace object given apart (trace --config) counts too
    ns = tmp_path / "ns.yaml"
    ns.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": "shop", "labels": {"istio.io/dataplane-mode": "ambient"}}}))
    assert Workload.from_pod(str(plain), config_paths=[str(ns)]).sidecar.ambient
    # opted out: sidecar rules by default; --mode ambient gives no rules and says so
    out = _pod(tmp_path, labels={"istio.io/dataplane-mode": "none"}, ns_labels={"istio.io/dataplane-mode": "ambient"})
    assert Workload.from_pod(str(out)).sidecar.owner == "sidecar"
    forced = Workload.from_pod(str(out), mode="ambient")
    assert forced.ambient is None and any(n.startswith("no ambient rules") for n in forced.notes)
    assert forced.trace(_ep(4, REMOTE[4], 80)).decision.verdict is Verdict.BYPASSED
    # the agent's settings: DNS capture off
    amb = _pod(tmp_path, labels={"istio.io/dataplane-mode": "ambient"})
    assert Workload.from_pod(str(amb)).trace(_ep(4, REMOTE[4], 53), proto="udp").decision.verdict \
        is Verdict.CAPTURED_DNS
    off = Workload.from_pod(str(amb), ambient_settings=["RedirectDNS=false"])
    assert off.trace(_ep(4, REMOTE[4], 53), proto="udp").decision.verdict is Verdict.BYPASSED
    assert not off.sidecar.dns


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_pod_overrides_ingress_and_virtual_interfaces(tmp_path: Path, backend: str) -> None:
    status = json.dumps([{"interface": "net1", "ips": ["10.10.0.5"]}])
    pod = _pod(tmp_path, labels={"istio.io/dataplane-mode": "ambient"},
               annotations={"ambient.istio.io/bypass-inbound-capture": "true",
                            "istio.io/reroute-virtual-interfaces": " net1 ,, ",
                            "k8s.v1.cni.cncf.io/network-status": status})
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--pod", str(pod), "--backend", backend, "--from",
                        PEER[4], "--dst", f"{POD[4]}:8080", "--format", "json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verdict"] == "bypassed"  # ingress mode: inbound not captured
    r = subprocess.run([sys.executable, "-m", "netsim", "trace", "--pod", str(pod), "--backend", backend, "--from",
                        "10.10.0.1", "--in-iface", "net1", "--dst", f"{POD[4]}:8080", "--format", "json"],
                       capture_output=True, text=True)
    j = json.loads(r.stdout)
    assert j["verdict"] == "captured-outbound" and j["listener"] == {"address": "10.10.0.5", "port": 15001,
                                                                     "owner": "ztunnel"}


def test_tproxy_inbound_releases_capture_hbone_too() -> None:
    """1.21-1.24 captured inbound with TPROXY in mangle (spec §11), 15008 included: still captured-inbound."""
    w = Workload.from_pod(str(SHOP), istio_version="1.22", pod_ips=[POD[4]])
    for port, listener in ((8080, 15006), (15008, 15008)):
        f = w.trace(_ep(4, POD[4], port), from_=PEER[4])
        assert f.decision.verdict is Verdict.CAPTURED_INBOUND and f.decision.decided_by is not None
        assert f.decision.listener is not None and f.decision.listener.port == listener
        assert "TPROXY" in f.decision.decided_by.rule
    probe = w.trace(_ep(4, POD[4], 8080), from_=_config("default")["HostProbeSNATAddress"])  # type: ignore[arg-type]
    assert probe.decision.verdict is Verdict.BYPASSED and probe.decision.decided_by is not None
    assert probe.decision.decided_by.table == "mangle"


def test_cli_ambient_config_needs_a_pod_in_ambient_mode(tmp_path: Path) -> None:
    cases = ((["--rules", _k("iptables", "default.iptables-save")], "--ambient-config sets the node agent"),
             (["--pod", str(_pod(tmp_path))], "the pod is traced in sidecar mode"))
    for args, message in cases:
        r = subprocess.run([sys.executable, "-m", "netsim", "trace", *args, "--ambient-config", "RedirectDNS=false",
                            "--dst", "10.96.0.10:53"], capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_ipv6_policy_route_only_with_enable_ipv6(tmp_path: Path) -> None:
    """§7: the IPv6 ip rule comes with EnableIPv6 only. The nft backend's family-free rules still mark an IPv6
    connection of ztunnel's 0x111 and restore it on the app's reply (§10 last row), but with no IPv6 rule that
    reply leaves through eth0; IPv4's still returns through table 100."""
    from netsim.workload.packets import follow_up

    pod = _pod(tmp_path, labels={"istio.io/dataplane-mode": "ambient"})
    outcomes = {}
    for setting in ("EnableIPv6=true", "EnableIPv6=false"):
        w = Workload.from_pod(str(pod), backend="nft", ambient_settings=[setting])
        for version in (4, 6):
            packet, who = w.packet(_ep(version, POD[version], 8080), src=PEER[version], as_="ztunnel")
            fu = follow_up(w, packet, who, w.netns(), reply=True)
            assert fu.entry is not None and fu.entry.mark & 0xFFF == AMBIENT_CONNMARK and fu.second is not None
            outcomes[setting, version] = fu.second.hops[0].trace.outcome
    assert outcomes["EnableIPv6=true", 6] is Outcome.DELIVERED and outcomes["EnableIPv6=false", 6] is Outcome.SENT
    assert outcomes["EnableIPv6=true", 4] is outcomes["EnableIPv6=false", 4] is Outcome.DELIVERED


@pytest.mark.parametrize(("extra", "backend"), [([], "iptables"), (["--ambient-config", "NativeNftables=true"], "nft"),
                                                (["--ambient-config", "NativeNftables=true", "--backend", "iptables"],
                                                 "iptables")])
def test_cli_native_nftables_setting_chooses_the_backend_unless_backend_is_given(extra: list[str],
                                                                                 backend: str) -> None:
    """The node agent's NativeNftables setting writes nft rules; --backend, when given, overrides it."""
    code, out = _cli("--pod", str(SHOP), "--pod-ip", POD[4], "--dst", _ep(4, REMOTE[4], 80), "--format", "json",
                     *extra)
    assert code == 0, out
    hop = json.loads(out)["hops"][0]
    assert {s["backend"] for s in hop["steps"] if s.get("backend")} == {"nft" if backend == "nft" else "iptables-nft"}
