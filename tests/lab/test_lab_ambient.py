"""The ambient lab without root: what ``lab up`` would load and run for an ambient pod (issue 16, "Lab").

The rules are the ambient compiler's (compared with ``netsim compile``'s Istio-golden output, not re-derived),
the policy routes §7's, the processes ztunnel's stand-ins with the mark ``netsim.capture.ambient`` holds; the mode
is decided as compile and trace decide it; ``verify`` adds a probe per row of spec/istio-ambient-capture.md §10.
"""

from __future__ import annotations

import json
import socket
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_interface
from pathlib import Path

import pytest
from lab_helpers import REPO, run_cli, run_root_fixture  # noqa: F401  (the run_root fixture)

from netsim.capture import ambient as amb
from netsim.errors import LabError, SpecError
from netsim.lab import listeners
from netsim.lab.control import LabSpec, listener_roles, up, up_plan
from netsim.lab.inputs import lab_spec, route_command
from netsim.lab.runner import AddrAdd, RecordingRunner, RouteAdd, RuleAdd
from netsim.lab.verify import make_probes
from netsim.netfilter.model import Family
from netsim.workload.identity import ZTUNNEL_GID, ZTUNNEL_UID

SHOP = REPO / "rules" / "ambient" / "shop.yaml"  # an ambient namespace; the pod still has sidecar annotations
DUAL = """apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop%s}
spec:
  containers: [{name: app, image: web:1, ports: [{containerPort: 8080}]}]
status:
  podIPs: [{ip: 10.244.0.5}, {ip: "fd00:244::5"}]
"""


def dual(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "dual.yaml"
    path.write_text(DUAL % extra)
    return str(path)


def compile_golden(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = run_cli(["compile", *args, "--format", "istio-dry-run"], capsys)
    assert code == 0, err
    return out


def test_an_ambient_namespace_gives_the_compilers_rules_and_routes(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    pod = dual(tmp_path)
    spec = lab_spec(pod)
    assert spec.ambient and spec.mark == amb.MARK == 0x539
    assert any("ambient mode: namespace shop's label istio.io/dataplane-mode=ambient" in n for n in spec.notes)
    # what up restores is what `netsim compile` prints in Istio's golden format: the save lines, then v4, then v6
    golden = compile_golden("--pod", pod, capsys=capsys)
    assert spec.rules_v6 is not None
    assert "iptables-save\nip6tables-save\n" + spec.rules_v4 + spec.rules_v6 == golden + "\n"
    rules = [c for c in spec.pod_routes if isinstance(c, RuleAdd)]
    assert {(r.family, r.fwmark, r.fwmask, r.table, r.priority) for r in rules} == {
        (f, amb.CONN, amb.CONN_MASK, int(amb.ROUTE_TABLE), 32764) for f in Family}
    routes = [c for c in spec.pod_routes if isinstance(c, RouteAdd)]
    assert {(r.dst, r.dev, r.table, r.local) for r in routes} == {
        (IPv4Network("0.0.0.0/0"), "lo", 100, True), (IPv6Network("::/0"), "lo", 100, True)}
    # the kubelet-probe SNAT addresses, on the node side's lo (verify sends kubelet's probes from them)
    assert spec.node_addrs == (ip_address(amb.DEFAULT_SNAT_V4), ip_address(amb.DEFAULT_SNAT_V6))
    plan = [s.action for s in up_plan(spec)]
    assert AddrAdd(netns=spec.node, ifname="lo", address=ip_interface(f"{amb.DEFAULT_SNAT_V4}/32")) in plan


def test_ztunnels_stand_ins_carry_its_mark_and_ids_and_no_sidecar_relay_runs(tmp_path: Path) -> None:
    spec = lab_spec(dual(tmp_path))
    roles = {r.role: r for r in listener_roles(spec)}
    assert set(roles) == {"dns", "listener-15001", "listener-15006", "listener-15008", "cluster-dns"}
    dials = {}
    for port in amb.ZTUNNEL_OUTBOUND, amb.ZTUNNEL_INBOUND, amb.ZTUNNEL_HBONE:
        argv = roles[f"listener-{port}"].argv
        assert "--ztunnel" in argv and int(argv[argv.index("--mark") + 1], 0) == amb.MARK
        assert (argv[argv.index("--user") + 1], argv[argv.index("--group") + 1]) == (str(ZTUNNEL_UID), str(ZTUNNEL_GID))
        assert "--ipv6" in argv
        dials[port] = argv[argv.index("--dial") + 1]
    assert dials == {15001: "original", 15006: "spoof", 15008: "none"}
    dns = roles["dns"].argv
    # ztunnel's DNS proxy: every socket of the agent marked, or its upstream query would come back to 15053
    assert dns[1:5] == ("-m", "netsim.lab.marked", "--mark", hex(amb.MARK))
    assert dns[5:8] == ("netsim", "dns", "serve") and "--listen" in dns and "[::1]:15053" in dns


def test_the_mode_is_decided_as_compile_and_trace_decide_it(tmp_path: Path) -> None:
    assert lab_spec(str(SHOP)).ambient  # the Namespace object in the same file
    sidecar = lab_spec(str(SHOP), mode="sidecar")
    assert not sidecar.ambient and "--dport 5432 -j RETURN" in sidecar.rules_v4  # the annotations apply there
    pod = tmp_path / "pod.yaml"
    pod.write_text(DUAL.split("---\n")[1] % "")
    assert not lab_spec(str(pod)).ambient  # no Namespace object: sidecar
    ns = tmp_path / "ns.yaml"
    ns.write_text(DUAL.split("---\n")[0])
    assert lab_spec(str(pod), config_paths=[str(ns)]).ambient  # ... given with --config
    assert lab_spec(str(pod), mode="ambient").ambient
    opted = dual(tmp_path, ", labels: {istio.io/dataplane-mode: none}")
    spec = lab_spec(opted)
    assert not spec.ambient and any("opts it out of ambient" in n for n in spec.notes)
    with pytest.raises(LabError, match="no capture to run: no ambient rules: the pod's label"):
        lab_spec(opted, mode="ambient")


def test_agent_settings_reach_the_lab_and_bad_ones_are_one_line_errors(tmp_path: Path) -> None:
    pod = dual(tmp_path)
    spec = lab_spec(pod, ambient_settings=["EnableIPv6=false,HostProbeSNATAddress=169.254.9.9"])
    assert spec.rules_v6 is None and "-s 169.254.9.9 " in spec.rules_v4
    assert {c.family for c in spec.pod_routes if isinstance(c, RuleAdd)} == {Family.IPV4}
    assert spec.node_addrs == (ip_address("169.254.9.9"),)
    with pytest.raises(SpecError, match="unknown setting"):
        lab_spec(pod, ambient_settings=["Nope=1"])
    with pytest.raises(SpecError, match="the pod runs in sidecar mode"):
        lab_spec(pod, mode="sidecar", ambient_settings=["EnableIPv6=false"])
    # the native nftables backend: the agent's inet tables as `netsim compile` prints them, no iptables text
    nft = lab_spec(pod, ambient_settings=["NativeNftables=true"])
    assert nft.nft_rules is not None and nft.rules_v4 == "" and nft.rules_v6 is None
    assert "add table inet istio-ambient-nat" in nft.nft_rules and "redirect to :15001" in nft.nft_rules
    assert lab_spec(pod, backend="nft").nft_rules == nft.nft_rules


def test_ambient_route_commands_become_typed_netlink_commands() -> None:
    cmds = [route_command("p", c) for c in amb.route_commands(amb.agent_defaults())]
    assert RuleAdd(netns="p", family=Family.IPV6, fwmark=0x111, table=100, fwmask=0xFFF, priority=32764) in cmds
    assert RouteAdd(netns="p", dst=IPv4Network("0.0.0.0/0"), dev="lo", table=100, local=True,
                    ignore_exists=True) in cmds


def test_up_records_the_mode_and_status_shows_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str], run_root: Path) -> None:
    from netsim.lab import cli as lab_cli

    r = RecordingRunner()
    spec = lab_spec(dual(tmp_path), name="amb-units")
    state = up(r, spec).state
    assert state.info["mode"] == "ambient" and state.info["mark"] == amb.MARK
    assert state.info["ports"]["hbone"] == amb.ZTUNNEL_HBONE
    assert [tuple(r) for r in state.info["fwmark_routes"]] == [(0x111, 100, 0xFFF)]
    monkeypatch.setattr(lab_cli, "_runner", lambda: r)
    code, out, _ = run_cli(["lab", "status", "amb-units"], capsys)
    assert code == 0
    assert ("mode ambient: ztunnel stand-ins on 15001, 15006, 15008, DNS 15053 (mark 0x539); policy routes "
            "fwmark 0x111/0xfff lookup 100") in out.splitlines()
    code, out, _ = run_cli(["lab", "status", "amb-units", "--format", "json"], capsys)
    assert json.loads(out)["info"]["mode"] == "ambient"
    code, out, _ = run_cli(["lab", "down", "amb-units"], capsys)
    assert code == 0 and not r.processes and not r.namespaces


def test_a_sidecar_lab_says_so() -> None:
    spec = LabSpec(name="s", rules_v4="*nat\nCOMMIT\n")
    assert not spec.ambient and {r.role for r in listener_roles(spec)} >= {"listener-15001", "listener-15006"}


def test_verify_adds_a_probe_per_row_of_the_ambient_table(tmp_path: Path, run_root: Path) -> None:
    spec = lab_spec(dual(tmp_path), name="amb-probes")
    info = up(RecordingRunner(), spec).state.info
    for version, snat in ((4, amb.DEFAULT_SNAT_V4), (6, amb.DEFAULT_SNAT_V6)):
        probes = make_probes(info, 10, seed=3, version=version)
        assert len(probes) > 10 and len({p.sport for p in probes}) == len(probes)
        pod = next(str(p.dst) for p in probes if p.inbound)
        marked = [p for p in probes if p.mark == amb.MARK]
        assert {(p.proto, p.dport) for p in marked} >= {("tcp", 80), ("udp", 53), ("tcp", 53)}
        assert any(p.transparent and p.dst == pod and not p.inbound for p in marked)  # ztunnel → app, spoofed
        assert any(p.mark == amb.CONN for p in probes)  # a new connection marked 0x111
        assert any(p.inbound and p.src == snat and p.dst == pod for p in probes)  # kubelet's probe
        assert any(p.inbound and p.dport == amb.ZTUNNEL_HBONE for p in probes)
        # the probes a socket of the lab answers: their first reply is compared too (ztunnel's spoofed connection
        # to its HBONE listener, whose SYN-ACK takes the connmark 0x111 path, among them)
        answered = [p for p in probes if p.answered]
        assert any(p.transparent and p.dport == amb.ZTUNNEL_HBONE for p in answered)
        assert all(p.dport in (80, 53, amb.ZTUNNEL_HBONE, 8080) for p in answered) and not any(p.reply for p in probes)
    sidecar = dict(info, mode="sidecar")
    assert len(make_probes(sidecar, 10, seed=3, version=4)) == 10


def test_a_reply_is_read_off_the_monitor_by_the_probes_source_port() -> None:
    from netsim.lab.kerneltrace import parse_monitor
    from netsim.lab.verify import Probe
    from netsim.lab.ztunnel import as_first_packets, turned_back

    text = ("PACKET: 2 a1 OUT=eth0 SRC=10.244.0.5 DST=10.244.0.1 LEN=60 SPORT=15008 DPORT=20001 SYN ACK URGP=0\n"
            " TRACE: 2 a1 raw:OUTPUT:rule:0x2:CONTINUE  -4 -t raw -A OUTPUT -p tcp -j TRACE\n")
    assert parse_monitor(text, {}) == {}  # a first packet's reader skips a SYN-ACK
    got = turned_back(parse_monitor(as_first_packets(text), {("raw", "OUTPUT", 2): 1}, packets=True))
    assert got == {20001: ["PACKET: OUT=eth0 SRC=10.244.0.5 DST=10.244.0.1 SPORT=15008 DPORT=20001",
                           "TRACE: raw:OUTPUT:rule:1:CONTINUE  -A OUTPUT -p tcp -j TRACE"]}
    assert Probe(proto="tcp", src="10.244.0.1", sport=1, dst="10.244.0.5", dport=2, reply=True).describe() \
        .startswith("reply to tcp 10.244.0.1:1")


def test_the_ztunnel_listener_falls_back_to_its_own_address_when_nothing_was_natted() -> None:
    server = listeners.listen(socket.AF_INET, 0, False)
    try:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        with client, conn:
            with pytest.raises(OSError):
                listeners.original_dst(conn, False)  # no conntrack NAT entry
            assert listeners.original_dst(conn, False, fallback=True) == ("127.0.0.1", port)
    finally:
        server.close()
