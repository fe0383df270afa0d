"""Pure parts of the lab without root: the compiler glue, verify's probe generation and monitor parsing,
the listeners' SO_ORIGINAL_DST decoding, and the CLI's error lines."""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import sys
from ipaddress import IPv4Interface, IPv6Interface, ip_network
from pathlib import Path

import pytest
from lab_helpers import EXAMPLE, REPO, run_cli, run_root_fixture  # noqa: F401  (the run_root fixture)

from netsim.capture.config import CaptureConfig, InterceptionMode
from netsim.capture.iptables import RouteCommand, route_commands
from netsim.errors import LabError
from netsim.lab import runner as runner_mod
from netsim.lab.inputs import lab_spec, node_interface, route_command
from netsim.lab.kerneltrace import (
    handle_positions,
    kernel_view,
    monitor_noise,
    parse_monitor,
    parse_nft_monitor,
)
from netsim.lab.listeners import endpoint, parse_original_dst
from netsim.lab.runner import AddrAdd, RouteAdd, RuleAdd
from netsim.lab.verify import (
    SPORT_HI,
    SPORT_LO,
    Probe,
    ProbeResult,
    Report,
    conntrack_ports,
    lab_families,
    listeners_from_ss,
    make_probes,
)
from netsim.netfilter.model import Family

# --- inputs -------------------------------------------------------------------------------------------


def test_the_example_pod_compiles_to_dns_capture_with_the_lab_addresses() -> None:
    spec = lab_spec(str(EXAMPLE / "pod.yaml"), services=[str(EXAMPLE / "services.yaml")])
    assert spec.name == "web"
    assert spec.pod_ips == (IPv4Interface("10.244.0.5/24"),) and spec.node_ips == (IPv4Interface("10.244.0.1/24"),)
    # Istio's restore text, tokens as it writes them (the kernel normalises them on load)
    assert "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053" in spec.rules_v4
    assert spec.rules_v6 is None and spec.pod_routes == ()
    assert spec.dns is not None and spec.dns.configs == ((EXAMPLE / "services.yaml").resolve(),)
    assert spec.resolv_conf().startswith("nameserver 10.96.0.10\nsearch default.svc.cluster.local ")


def test_the_same_files_give_the_same_digest_and_an_edit_a_new_one(tmp_path: Path) -> None:
    svc = tmp_path / "s.yaml"
    svc.write_text((EXAMPLE / "services.yaml").read_text())
    first = lab_spec(str(EXAMPLE / "pod.yaml"), services=[str(svc)]).digest
    assert lab_spec(str(EXAMPLE / "pod.yaml"), services=[str(svc)]).digest == first
    svc.write_text(svc.read_text().replace("se.example.com", "se2.example.com"))
    assert lab_spec(str(EXAMPLE / "pod.yaml"), services=[str(svc)]).digest != first


def test_tproxy_and_ipv6_route_commands_become_typed_netlink_commands() -> None:
    config = CaptureConfig(mode=InterceptionMode.TPROXY, inbound_ports=("*",), enable_ipv6=True)
    got = [route_command("p", rc) for rc in route_commands(config)]
    assert got == [
        AddrAdd(netns="p", ifname="lo", address=IPv6Interface("::6/128"), ignore_exists=True),
        RuleAdd(netns="p", family=Family.IPV4, fwmark=1337, table=133),
        RuleAdd(netns="p", family=Family.IPV6, fwmark=1337, table=133),
        RouteAdd(netns="p", dst=ip_network("0.0.0.0/0"), dev="lo", table=133, local=True, ignore_exists=True),
        RouteAdd(netns="p", dst=ip_network("::/0"), dev="lo", table=133, local=True, ignore_exists=True),
    ]


def test_an_unknown_route_command_is_refused() -> None:
    with pytest.raises(LabError, match="route command the lab cannot apply: ip link set eth0 down"):
        route_command("p", RouteCommand(("ip", "link", "set", "eth0", "down")))


def test_node_address_is_the_first_other_host_of_the_pod_subnet() -> None:
    assert node_interface(IPv4Interface("10.244.0.5/24")) == IPv4Interface("10.244.0.1/24")
    assert node_interface(IPv4Interface("10.244.0.1/24")) == IPv4Interface("10.244.0.2/24")
    assert node_interface(IPv6Interface("fd00:244::5/64")) == IPv6Interface("fd00:244::1/64")


def test_a_pod_without_a_sidecar_has_nothing_to_run(tmp_path: Path) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text((EXAMPLE / "pod.yaml").read_text().replace(
        "  annotations:\n", '  annotations:\n    sidecar.istio.io/inject: "false"\n'))
    with pytest.raises(LabError, match=r"pod.yaml: no capture to run: "):
        lab_spec(str(pod))


def test_a_lab_name_must_be_usable_as_a_namespace_name() -> None:
    with pytest.raises(LabError, match='lab name "a/b"'):
        lab_spec(str(EXAMPLE / "pod.yaml"), name="a/b")


# --- verify: probes and the kernel's trace ------------------------------------------------------------

INFO = {"pod_ips": ["10.244.0.5/24"], "node_ips": ["10.244.0.1/24"], "app_uid": 1000, "proxy_uid": 1337,
        "proxy_gid": 1337, "rules_v4": "-A ISTIO_OUTPUT_DNS -d 10.96.0.10/32 -p udp -m udp --dport 53 -j REDIRECT "
                                      "--to-ports 15053\n-A X -d 8.8.8.8/32 -j RETURN\n"}


def test_probes_are_seeded_use_only_lab_addresses_and_avoid_busy_ports() -> None:
    busy = frozenset(range(SPORT_LO, SPORT_LO + 5000))
    a = make_probes(INFO, 60, 7, random.Random(1), avoid=busy)
    b = make_probes(INFO, 60, 7, random.Random(1), avoid=busy)
    assert a == b and len({p.sport for p in a}) == 60
    lab = (ip_network("10.244.0.0/24"), ip_network("10.96.0.0/16"), ip_network("127.0.0.0/8"))
    for p in a:
        assert SPORT_LO + 5000 <= p.sport <= SPORT_HI
        assert not SPORT_LO <= p.dport <= SPORT_HI  # replies never look like probes
        assert any(ip_network(f"{p.dst}/32").subnet_of(n) for n in lab), p  # 8.8.8.8 from the rules is not used
    assert {p.inbound for p in a} == {True, False}
    assert all(p.src == "10.244.0.1" and p.dst == "10.244.0.5" for p in a if p.inbound)


def test_too_many_probes_for_the_free_ports_is_an_error() -> None:
    with pytest.raises(LabError, match="use fewer --probes"):
        make_probes(INFO, 10, 1, avoid=frozenset(range(SPORT_LO, SPORT_HI - 5)))


MONITOR = """\
PACKET: 2 1079c2b9 OUT=eth0 SRC=10.244.0.5 DST=10.96.0.20 LEN=60 SPORT=21000 DPORT=80 SYN
 TRACE: 2 1079c2b9 raw:OUTPUT:rule:0x70:CONTINUE  -4 -t raw -A OUTPUT -p tcp -m tcp --sport 20000:29999 -j TRACE
 TRACE: 2 1079c2b9 nat:ISTIO_OUTPUT:rule:0x9:0xfffffffb  -4 -t nat -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
 TRACE: 2 1079c2b9 nat:OUTPUT:policy:ACCEPT
PACKET: 2 aaaa0001 IN=lo LOOPBACK SRC=10.244.0.5 DST=127.0.0.1 LEN=60 SPORT=21000 DPORT=15001 SYN
 TRACE: 2 aaaa0001 raw:PREROUTING:policy:ACCEPT
PACKET: 2 bbbb0002 IN=lo LOOPBACK SRC=10.244.0.5 DST=127.0.0.1 LEN=52 SPORT=21000 DPORT=15001 ACK
 TRACE: 2 bbbb0002 raw:PREROUTING:policy:ACCEPT
cannot receive from nfnetlink socket: No buffer space available
"""
POSITIONS = {("raw", "OUTPUT", 0x70): 1, ("nat", "ISTIO_OUTPUT", 0x9): 4}


def test_monitor_lines_map_handles_to_positions_and_follow_loopback_reentry() -> None:
    assert parse_monitor(MONITOR, POSITIONS) == {21000: [
        "TRACE: raw:OUTPUT:rule:1:CONTINUE  -A OUTPUT -p tcp -m tcp --sport 20000:29999 -j TRACE",
        "TRACE: nat:ISTIO_OUTPUT:rule:4:0xfffffffb  -A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "TRACE: nat:OUTPUT:policy:ACCEPT",
        "TRACE: raw:PREROUTING:policy:ACCEPT",  # the looped SYN (new trace id, same source port); not the ACK
    ]}


def test_monitor_with_packets_keeps_the_probe_packet_lines_reduced_to_the_rules_view() -> None:
    lines = parse_monitor(MONITOR, POSITIONS, packets=True)[21000]
    assert lines[0] == "PACKET: OUT=eth0 SRC=10.244.0.5 DST=10.96.0.20 SPORT=21000 DPORT=80"
    assert lines[4] == "PACKET: IN=lo LOOPBACK SRC=10.244.0.5 DST=127.0.0.1 SPORT=21000 DPORT=15001"
    assert [ln for ln in lines if not ln.startswith("PACKET:")] == parse_monitor(MONITOR, POSITIONS)[21000]
    assert monitor_noise(MONITOR) == ["cannot receive from nfnetlink socket: No buffer space available"]


def test_kernel_view_keeps_whole_lines_for_ipv4_and_event_heads_for_ipv6() -> None:
    lines = ["TRACE: nat:OUTPUT:rule:1:ACCEPT  -A OUTPUT -j ACCEPT", "TRACE: nat:OUTPUT:policy:ACCEPT"]
    assert kernel_view(lines, 4) == lines
    assert kernel_view(lines, 6) == ["TRACE: nat:OUTPUT:rule:1:ACCEPT", "TRACE: nat:OUTPUT:policy:ACCEPT"]


def test_nft_json_gives_rule_positions_and_existing_base_chains() -> None:
    doc = {"nftables": [
        {"metainfo": {}},
        {"chain": {"family": "ip", "table": "nat", "name": "OUTPUT", "hook": "output"}},
        {"chain": {"family": "ip", "table": "nat", "name": "ISTIO_OUTPUT"}},
        {"chain": {"family": "ip6", "table": "nat", "name": "PREROUTING", "hook": "prerouting"}},
        {"rule": {"family": "ip", "table": "nat", "chain": "ISTIO_OUTPUT", "handle": 12}},
        {"rule": {"family": "ip", "table": "nat", "chain": "ISTIO_OUTPUT", "handle": 9}},
        {"rule": {"family": "ip6", "table": "nat", "chain": "ISTIO_OUTPUT", "handle": 3}},
    ]}
    positions, bases = handle_positions(json.dumps(doc))
    assert positions == {("nat", "ISTIO_OUTPUT", 12): 1, ("nat", "ISTIO_OUTPUT", 9): 2}
    assert bases == {("nat", "OUTPUT")}


def test_conntrack_ports_in_the_probe_range() -> None:
    line = ("ipv4 2 tcp 6 66 TIME_WAIT src=10.244.0.5 dst=10.96.1.2 sport=26352 dport=5783 src=127.0.0.1 "
            "dst=10.244.0.5 sport=15001 dport=26352 [ASSURED] mark=0 zone=0 use=2\n")
    assert conntrack_ports(line) == {26352}


def test_listening_sockets_from_ss() -> None:
    ss = ("tcp   LISTEN 0 128   0.0.0.0:15001  0.0.0.0:*\nudp   UNCONN 0 0   127.0.0.1:15053  0.0.0.0:*\n"
          "tcp   LISTEN 0 128   [::]:15001  [::]:*\n")
    assert listeners_from_ss(ss) == [("tcp", None, 15001), ("udp", "127.0.0.1", 15053)]


def test_the_report_prints_differences_as_a_diff_and_counts() -> None:
    p = Probe(proto="tcp", src="10.244.0.5", sport=21000, dst="10.96.0.20", dport=80, uid=1000, gid=1000)
    same = ProbeResult(p, ("TRACE: a",), ("TRACE: a",))
    differ = ProbeResult(p, ("TRACE: a",), ("TRACE: b",))
    assert Report("x", 1, (same,)).lines()[-1] == "agreement: 1/1 probes"
    assert Report("x", 1, (same,)).lines()[0].endswith("IPv4 1/1 (xtables-monitor --trace)")
    lines = Report("x", 1, (same, differ), (p,)).lines()
    assert "DIFFER: tcp 10.244.0.5:21000 -> 10.96.0.20:80 (uid 1000 gid 1000)" in lines
    assert "    -TRACE: a" in lines and "    +TRACE: b" in lines
    assert lines[-1] == "agreement: 1/2 probes (1 differ); 1 could not be sent"


# --- listeners ----------------------------------------------------------------------------------------

def test_so_original_dst_sockaddrs_are_decoded() -> None:
    v4 = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 80) + socket.inet_aton("10.96.0.20") + bytes(8)
    assert parse_original_dst(socket.AF_INET, v4) == ("10.96.0.20", 80)
    v6 = (struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 8080) + bytes(4)
          + socket.inet_pton(socket.AF_INET6, "fd00::5") + bytes(4))
    assert parse_original_dst(socket.AF_INET6, v6) == ("fd00::5", 8080)
    assert endpoint(("fd00::5", 8080)) == "[fd00::5]:8080" and endpoint(("10.0.0.1", 1)) == "10.0.0.1:1"


# --- CLI ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["up", "exec", "status", "verify", "down"])
def test_every_subcommand_has_help(sub: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["lab", sub, "--help"], capsys)
    assert code == 0 and f"Usage: netsim lab {sub}" in out


def test_not_root_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(runner_mod.os, "geteuid", lambda: 1000)
    code, _, err = run_cli(["lab", "up", "--pod", str(EXAMPLE / "pod.yaml")], capsys)
    assert (code, err) == (2, "Error: the lab needs root (network namespaces, iptables): run it with sudo\n")


def test_iptables_missing_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(runner_mod.os, "geteuid", lambda: 0)
    monkeypatch.setattr(runner_mod.shutil, "which", lambda tool: None if "iptables" in tool else f"/bin/{tool}")
    code, _, err = run_cli(["lab", "down", "x"], capsys)
    assert (code, err) == (2, "Error: iptables-restore not found: install the iptables package\n")


def test_unknown_lab_names(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           run_root: Path) -> None:
    monkeypatch.setattr(runner_mod, "check_host", lambda: None)
    code, out, _ = run_cli(["lab", "down", "nope"], capsys)
    assert (code, out) == (0, "no lab named nope; nothing to do\n")
    code, _, err = run_cli(["lab", "status", "nope"], capsys)
    assert (code, err) == (2, f"Error: no lab named nope (nothing recorded in {run_root / 'nope'})\n")


def test_importing_the_lab_cli_does_not_load_pyroute2() -> None:
    code = "import sys, netsim.cli, netsim.lab.cli, netsim.lab.control; print('pyroute2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_up_takes_several_services_files_after_one_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str], run_root: Path) -> None:
    from netsim.lab import control

    seen: list[control.LabSpec] = []
    monkeypatch.setattr(runner_mod, "check_host", lambda: None)
    monkeypatch.setattr(control, "up", lambda runner, spec: seen.append(spec) or control.UpResult(
        control.st.LabState(name=spec.name, digest=""), changed=False))
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for f in (a, b):
        f.write_text((EXAMPLE / "services.yaml").read_text())
    code, out, _ = run_cli(["lab", "up", "--pod", str(EXAMPLE / "pod.yaml"), "--services", str(a), str(b),
                            "--name", "two"], capsys)
    assert code == 0 and out == "lab two is already up; nothing changed\n"
    assert seen[0].dns is not None and seen[0].dns.configs == (a.resolve(), b.resolve())
    code, _, err = run_cli(["lab", "up", "--pod", str(EXAMPLE / "pod.yaml"), str(a)], capsys)
    assert code == 2 and "Services files go after --services" in err


def test_verify_in_a_family_the_lab_lacks_is_a_one_line_error_before_anything_runs() -> None:
    from netsim.lab.runner import RecordingRunner
    from netsim.lab.state import LabState
    from netsim.lab.verify import verify

    v4 = LabState(name="v4", digest="", info={"pod_ips": ["10.244.0.5/24"], "node_netns": "v4-node"})
    r = RecordingRunner()
    with pytest.raises(LabError, match=r"^lab v4 cannot be verified in IPv6 \(it has: IPv4\)$"):
        verify(r, v4, probes=5, seed=1, families=(6,))
    no_rules = LabState(name="x", digest="", info={"pod_ips": ["fd00::5/64"], "rules_v6": None})
    with pytest.raises(LabError, match=r"^lab x cannot be verified in any family \(it has: none\)$"):
        verify(r, no_rules, probes=5, seed=1)
    assert r.log == []


def test_lab_families_follow_the_pod_addresses_and_the_v6_rules() -> None:
    assert lab_families({"pod_ips": ["10.244.0.5/24"]}) == (4,)
    assert lab_families({"pod_ips": ["10.244.0.5/24", "fd00::5/64"], "rules_v6": "*nat\nCOMMIT\n"}) == (4, 6)
    assert lab_families({"pod_ips": ["fd00::5/64"], "rules_v6": "*nat\nCOMMIT\n"}) == (6,)


def test_ipv6_probes_use_the_pod_subnet_and_loopback_only() -> None:
    info = {**INFO, "pod_ips": ["10.244.0.5/24", "fd00:10:244::5/64"], "node_ips": ["10.244.0.1/24",
            "fd00:10:244::1/64"], "rules_v6": "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN\n"}
    probes = make_probes(info, 60, 3, random.Random(2), version=6)
    lab = (ip_network("fd00:10:244::/64"), ip_network("::1/128"), ip_network("::6/128"))
    assert all(p.version == 6 and any(ip_network(f"{p.dst}/128").subnet_of(n) for n in lab) for p in probes)
    assert probes[0].wire()["family"] == 6 and "[" in probes[0].describe()


NFT_MONITOR = """\
trace id b110fb81 ip6 raw OUTPUT packet: oif "eth0" ip6 saddr fd00:10:244::5 ip6 daddr fd00:10:244::9 tcp sport 21000 \
tcp dport 80 tcp flags == syn tcp window 64800
trace id b110fb81 ip6 raw OUTPUT rule tcp flags syn / fin,syn,rst,ack tcp sport 20000-29999 meta nftrace set 1 \
# handle 11 (verdict continue)
trace id b110fb81 ip6 raw OUTPUT policy accept
trace id b110fb81 ip6 nat ISTIO_OUTPUT rule counter packets 0 bytes 0 jump ISTIO_REDIRECT # handle 18 (verdict jump \
ISTIO_REDIRECT)
trace id b110fb81 ip6 mangle ISTIO_INBOUND rule iifname "lo" counter packets 0 bytes 0 return # handle 22 (verdict \
return)
trace id 0bf7c6f5 ip6 raw PREROUTING packet: iif "lo" ip6 saddr fd00:10:244::5 tcp sport 21000 tcp dport 15001 tcp \
flags == ack
trace id 0bf7c6f5 ip6 raw PREROUTING policy accept
"""


def test_nft_monitor_events_become_xtables_trace_heads() -> None:
    text = NFT_MONITOR.replace("\\\n", "")
    positions = {("raw", "OUTPUT", 11): 1, ("nat", "ISTIO_OUTPUT", 18): 9, ("mangle", "ISTIO_INBOUND", 22): 2}
    assert parse_nft_monitor(text, positions) == {21000: [
        "TRACE: raw:OUTPUT:rule:1:CONTINUE",
        "TRACE: raw:OUTPUT:policy:ACCEPT",
        "TRACE: nat:ISTIO_OUTPUT:rule:9:JUMP:ISTIO_REDIRECT",
        "TRACE: mangle:ISTIO_INBOUND:rule:2:0xfffffffb",  # the engine prints RETURN as xtables-monitor does
    ]}  # the ACK's trace id is not a probe's


def test_ipv6_listening_sockets_from_ss() -> None:
    ss = ("tcp LISTEN 0 128 [::]:15006 [::]:*\nudp UNCONN 0 0 [::1]:15053 [::]:*\n"
          "tcp LISTEN 0 128 0.0.0.0:15001 0.0.0.0:*\n")
    assert listeners_from_ss(ss, 6) == [("tcp", None, 15006), ("udp", "::1", 15053)]


def test_a_probe_is_the_packet_netsim_traces() -> None:
    from ipaddress import ip_address

    from netsim.netfilter.packet import Origin, Proto, Socket

    out = Probe(proto="udp", src="fd00::5", sport=21000, dst="fd00::9", dport=53, uid=1337, gid=1000).packet()
    assert (out.family, out.proto, out.src, out.dport) == (Family.IPV6, Proto.UDP, ip_address("fd00::5"), 53)
    assert (out.origin, out.in_iface, out.socket) == (Origin.LOCAL, None, Socket(uid=1337, gid=1000))
    inbound = Probe(proto="tcp", src="10.244.0.1", sport=21001, dst="10.244.0.5", dport=8080, inbound=True).packet()
    assert (inbound.family, inbound.origin, inbound.in_iface, inbound.socket) == (
        Family.IPV4, Origin.ARRIVING, "eth0", None)


def test_up_options_namespace_upstream_app_uid_reach_the_lab() -> None:
    spec = lab_spec(str(EXAMPLE / "pod.yaml"), namespace="shop", upstreams=["192.0.2.53:53"], app_uid=2000)
    assert spec.search == ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local")
    assert "search shop.svc.cluster.local svc.cluster.local cluster.local\n" in spec.resolv_conf()
    assert (spec.dns.namespace, spec.dns.upstreams, spec.app_uid) == ("shop", ("192.0.2.53:53",), 2000)


def test_up_istio_version_compiles_with_that_releases_injector_defaults() -> None:
    old = lab_spec(str(EXAMPLE / "pod.yaml"), istio_version="1.2").rules_v4
    now = lab_spec(str(EXAMPLE / "pod.yaml")).rules_v4
    # 1.2: inbound capture of the containerPorts only (-b = containerPorts), and no DNS capture
    assert "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT" in old and "ISTIO_OUTPUT_DNS" not in old
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" in now and "ISTIO_OUTPUT_DNS" in now


@pytest.mark.parametrize(("tool", "package"), [("ip", "iproute2"), ("setpriv", "util-linux"),
                                               ("iptables-save", "iptables")])
def test_each_missing_tool_names_its_package(tool: str, package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_mod.os, "geteuid", lambda: 0)
    monkeypatch.setattr(runner_mod.shutil, "which", lambda t: None if t == tool else f"/bin/{t}")
    with pytest.raises(LabError, match=rf"^{tool} not found: install the {package} package$"):
        runner_mod.check_host()


def test_verify_names_a_missing_monitor_and_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from netsim.lab import verify as verify_mod
    from netsim.lab.runner import RecordingRunner
    from netsim.lab.state import LabState

    monkeypatch.setattr(verify_mod.shutil, "which", lambda t: None if t == "nft" else f"/bin/{t}")
    r = RecordingRunner()
    with pytest.raises(LabError, match=r"^lab verify needs nft: install the nftables package$"):
        verify_mod.verify(r, LabState(name="x", digest="", info=INFO), probes=5, seed=1)
    assert r.log == []


def test_output_that_is_not_nfts_json_is_one_line() -> None:
    with pytest.raises(LabError, match=r"^cannot read nft -j output: "):
        handle_positions("Error: Could not process rule")


def test_the_verbose_report_prints_the_agreeing_traces_too() -> None:
    p = Probe(proto="udp", src="10.244.0.5", sport=21000, dst="10.96.0.10", dport=53, uid=1337, gid=1337)
    lines = Report("x", 1, (ProbeResult(p, ("TRACE: a",), ("TRACE: a",)),)).lines(verbose=True)
    assert lines[1:] == ["agree: udp 10.244.0.5:21000 -> 10.96.0.10:53 (uid 1337 gid 1337)", "    TRACE: a",
                         "agreement: 1/1 probes"]
    assert Report("x", 1, (ProbeResult(p, ("TRACE: a",), ("TRACE: a",)),)).lines()[1:] == ["agreement: 1/1 probes"]


@pytest.mark.parametrize(("flags", "families", "agreed", "code"), [
    ([], (), True, 0), (["--family", "6"], (6,), True, 0), (["--family", "4", "-v"], (4,), False, 1)])
def test_verify_cli_passes_family_seed_and_probes_and_exits_1_on_a_difference(
        flags: list[str], families: tuple[int, ...], agreed: bool, code: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], run_root: Path) -> None:
    from netsim.lab import state as st
    from netsim.lab import verify as verify_mod

    st.save(st.LabState(name="v", digest=""))
    monkeypatch.setattr(runner_mod, "check_host", lambda: None)
    calls: list[tuple[int, int | None, tuple[int, ...]]] = []
    p = Probe(proto="tcp", src="10.244.0.5", sport=21000, dst="10.96.0.20", dport=80)

    def fake(runner: object, state: st.LabState, *, probes: int, seed: int | None,
             families: tuple[int, ...], progress: object) -> Report:
        calls.append((probes, seed, families))
        return Report(state.name, seed or 0, (ProbeResult(p, ("TRACE: a",), ("TRACE: a" if agreed else "TRACE: b",)),))

    monkeypatch.setattr(verify_mod, "verify", fake)
    got, out, _ = run_cli(["lab", "verify", "v", "--probes", "7", "--seed", "3", *flags], capsys)
    assert (got, calls) == (code, [(7, 3, families)])
    assert out.splitlines()[-1] == ("agreement: 1/1 probes" if agreed else "agreement: 0/1 probes (1 differ)")
    assert ("DIFFER: tcp" in out) is not agreed


def test_status_prints_health_processes_counted_rules_and_the_last_connections(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], run_root: Path) -> None:
    from netsim.lab import cli as lab_cli
    from netsim.lab.control import LabSpec, up
    from netsim.lab.runner import RecordingRunner

    r = RecordingRunner(outputs={("iptables-save", "-c"): "*nat\n[3:180] -A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n",
                                 ("iptables-save",): "*nat\n-A OUTPUT -j ISTIO_OUTPUT\nCOMMIT\n"})
    up(r, LabSpec(name="s1", rules_v4="*nat\nCOMMIT\n"))
    monkeypatch.setattr(lab_cli, "_runner", lambda: r)
    log = run_root / "s1" / "listener-15001.log"
    records: list[dict[str, object]] = [{"event": "listening"}]
    for i in range(12):
        conn = {"conn": i, "peer": f"10.244.0.5:{40000 + i}", "original_dst": "10.96.0.20:80"}
        records.append({**conn, "time": f"t{i}", "stage": "accept"})
        if i != 11:  # the last one is still dialing
            records.append({**conn, "time": f"d{i}", "stage": "dial", "result": "relayed"})
    probe = {"conn": 99, "peer": "10.244.0.5:21000", "original_dst": "10.96.0.20:80", "probe": True}
    records += [{**probe, "stage": "accept", "time": "p"}, {**probe, "stage": "dial", "result": "relayed"}]
    log.write_text("".join(json.dumps(x) + "\n" for x in records) + "not json\n")
    code, out, _ = run_cli(["lab", "status", "s1"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0] == "lab s1: healthy"
    assert lines[1] == "pod netns s1 10.244.0.5/24; node netns s1-node 10.244.0.1/24"
    assert f"process listener-15001: pid 1004, log {log}" in lines
    assert lines[lines.index("--- ipv4 rules [packets:bytes]") + 2] == "[3:180] -A OUTPUT -j ISTIO_OUTPUT"
    header = "--- listener-15001: last 10 connections (1 lab verify probes not shown)"
    recent = lines[lines.index(header) + 1:][:10]
    assert recent[0] == "t2 10.244.0.5:40002 -> 10.96.0.20:80: accepted; d2 relayed"
    assert recent[-1] == "t11 10.244.0.5:40011 -> 10.96.0.20:80: accepted; dialing"
    code, out, _ = run_cli(["lab", "status", "s1", "--format", "json"], capsys)
    status = json.loads(out)
    assert status["healthy"] and status["rules"]["ipv4"].startswith("*nat\n[3:180]")
    conns = status["connections"]["listener-15001"]
    assert [c["time"] for c in conns] == [f"t{i}" for i in range(2, 12)]
    assert conns[0]["dial"] == {"time": "d2", "result": "relayed"} and "dial" not in conns[-1]
    assert status["probe_connections"] == {"listener-15001": 1, "listener-15006": 0}
    assert "rules_v4" not in status["info"] and "loaded_v4" not in status["info"]
    r.outputs[("iptables-save", "-c")] = "*nat\nCOMMIT\n"  # the rule is gone: unhealthy, exit 1
    code, out, _ = run_cli(["lab", "status", "s1"], capsys)
    assert code == 1 and out.splitlines()[0] == "lab s1: the IPv4 rules differ from what up loaded (1 line removed)"
    r.crash()
    code, out, _ = run_cli(["lab", "status", "s1"], capsys)
    assert code == 1
    assert out.splitlines()[0].startswith("lab s1: dns (pid 1003) is not running; listener-15001 (pid 1004) is not "
                                          "running; listener-15006 (pid 1005) is not running; cluster-dns (pid 1006)")


def test_the_same_seed_repeats_the_probes_on_fresh_source_ports() -> None:
    from dataclasses import replace

    a = make_probes(INFO, 40, 11, random.Random(1))
    b = make_probes(INFO, 40, 11, random.Random(2))
    assert [p.sport for p in a] != [p.sport for p in b]  # not the conntrack entries the last run left
    assert [replace(p, sport=0) for p in a] == [replace(p, sport=0) for p in b]
    assert "(seed 11)" in Report("x", 11, ()).lines()[0]
