"""The lab's nft backend without root: the rules it loads, the plan and record of ``up``, health, verify's
probes and its reading of ``nft monitor trace`` against netsim's ``--format nft-trace``, and the CLI's errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from lab_helpers import REPO, run_cli, run_root_fixture  # noqa: F401  (the run_root fixture)

from netsim.errors import LabError
from netsim.lab import state as st
from netsim.lab.control import LOADED_NFT, NFT_LIST, health, nft_identity, up, up_plan
from netsim.lab.inputs import lab_spec
from netsim.lab.kerneltrace import nft_positions, nft_trace_lines
from netsim.lab.probe import SPORT_HI, SPORT_LO
from netsim.lab.runner import Exec, RecordingRunner, Restore
from netsim.lab.verify import (
    NFT_TRACE_TABLE,
    Probe,
    ProbeResult,
    Report,
    lab_families,
    make_probes,
    netsim_nft_lines,
)

RULES = REPO / "rules"
# The bundled examples with a pod manifest; ``rules/<example>/current.nft`` is ``netsim compile --format nft``
# of it (tests/cli/test_rules_examples.py keeps it so).
EXAMPLES = sorted(p.parent.name for p in RULES.glob("*/pod.yaml"))


@pytest.mark.parametrize("example", EXAMPLES)
def test_an_nft_lab_loads_exactly_what_compile_format_nft_prints(example: str) -> None:
    spec = lab_spec(str(RULES / example / "pod.yaml"), backend="nft")
    assert spec.nft_rules == (RULES / example / "current.nft").read_text()
    assert spec.rules_v4 == "" and spec.rules_v6 is None  # no iptables rules besides


def test_the_backend_is_part_of_the_inputs() -> None:
    pod = str(RULES / "tproxy" / "pod.yaml")
    assert lab_spec(pod, backend="nft").digest != lab_spec(pod).digest


def test_a_release_before_the_nft_backend_is_refused_as_compile_refuses_it() -> None:
    with pytest.raises(LabError, match=r"^--backend nft: Istio 1\.2 wrote no nftables rules"):
        lab_spec(str(RULES / "mtls-503" / "pod.yaml"), istio_version="1.2", backend="nft")
    assert lab_spec(str(RULES / "mtls-503" / "pod.yaml"), istio_version="1.27", backend="nft").nft_rules


def test_an_unknown_backend_is_one_line() -> None:
    with pytest.raises(LabError, match=r'^backend "nftables": use iptables or nft$'):
        lab_spec(str(RULES / "tproxy" / "pod.yaml"), backend="nftables")


def test_the_cli_refuses_a_bad_backend_value_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["lab", "up", "--pod", str(RULES / "tproxy" / "pod.yaml"), "--backend", "ebpf"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "'ebpf' is not one of 'iptables', 'nft'" in err, err


def test_the_plan_loads_nft_f_and_no_iptables() -> None:
    spec = lab_spec(str(RULES / "tproxy" / "pod.yaml"), name="n1", backend="nft")
    actions = [s.action for s in up_plan(spec)]
    assert not any(isinstance(a, Restore) for a in actions)
    assert not any(isinstance(a, Exec) and "iptables" in a.argv[0] for a in actions)
    load = actions.index(Exec(netns="n1", argv=("nft", "-f", "-"), stdin=spec.nft_rules))
    assert actions[load + 1] == Exec(netns="n1", argv=NFT_LIST)  # what the kernel then holds is recorded
    # TPROXY's policy routing comes first, as for the iptables backend
    assert [type(a).__name__ for a in actions[:load]].count("RuleAdd") == 1


LISTED = "table inet istio-proxy-nat {\n\tchain output {\n\t\tcounter packets 7 bytes 420 jump istio-output\n\t}\n}\n"


def test_up_records_the_backend_and_health_sees_the_nft_rules_change(run_root: Path) -> None:
    spec = lab_spec(str(RULES / "tproxy" / "pod.yaml"), name="n2", backend="nft")
    runner = RecordingRunner(outputs={NFT_LIST: LISTED})
    state = up(runner, spec).state
    assert state.backend == "nft" and state.info["backend"] == "nft" and state.info["rules_nft"] == spec.nft_rules
    assert state.info[LOADED_NFT] == nft_identity(LISTED)
    reread = st.load("n2")
    assert reread is not None and reread.backend == "nft"
    # counters move by themselves: not a change
    runner.outputs[NFT_LIST] = LISTED.replace("packets 7 bytes 420", "packets 9 bytes 540")
    assert health(runner, reread) == []
    runner.outputs[NFT_LIST] = LISTED.replace("\t}\n}", "\t\tcounter packets 0 bytes 0 return\n\t}\n}")
    assert health(runner, reread) == ["the nftables rules differ from what up loaded (1 line added)"]


def test_a_record_without_a_backend_is_an_iptables_lab_and_an_unknown_one_an_error() -> None:
    assert st.LabState(name="a", digest="d").backend == "iptables"
    with pytest.raises(LabError, match="unknown backend 'ebpf'"):
        _ = st.LabState(name="a", digest="d", info={"backend": "ebpf"}).backend


def test_an_nft_lab_is_verified_in_every_family_its_pod_has() -> None:
    dual = {"pod_ips": ["10.244.0.5/24", "fd00::5/64"], "rules_v6": None}
    assert lab_families(dual) == (4,)  # iptables: no ip6tables rules, nothing to trace in IPv6
    assert lab_families({**dual, "backend": "nft"}) == (4, 6)  # one inet table holds both


def test_an_nft_labs_probes_are_drawn_from_its_nft_rules() -> None:
    spec = lab_spec(str(RULES / "exclude-5701" / "pod.yaml"), backend="nft")
    assert "tcp dport 5701" in str(spec.nft_rules)
    info = {"pod_ips": ["10.244.0.5/24"], "node_ips": ["10.244.0.1/24"], "backend": "nft",
            "rules_nft": spec.nft_rules}
    with_rules = make_probes(info, 200, seed=1)
    without = make_probes({**info, "rules_nft": ""}, 200, seed=1)
    assert any(p.dport == 5701 for p in with_rules)
    assert not any(p.dport == 5701 for p in without)


# What ``nft -a monitor trace`` printed in an nft lab of rules/tproxy (kernel 6.18, nft 1.0.6) for a connect
# from uid 1000 to 10.96.0.20:80 and a datagram from the node to the pod's 8080, with verify's trace table
# loaded; and the handles ``nft -j -a list ruleset`` gave the rules of the chains they pass.
MONITOR = """\
trace id e51f0042 inet netsim-verify out packet: oif "eth0" ip saddr 10.244.0.5 ip daddr 10.96.0.20 ip dscp cs0 \
ip ecn not-ect ip ttl 64 ip id 27356 ip protocol tcp ip length 60 tcp sport 20123 tcp dport 80 tcp flags == syn \
tcp window 64240
trace id e51f0042 inet netsim-verify out rule tcp sport 20000-29999 tcp flags syn / fin,syn,rst,ack meta nftrace \
set 1 # handle 5 (verdict continue)
trace id e51f0042 inet netsim-verify out policy accept
trace id e51f0042 inet istio-proxy-mangle output packet: oif "eth0" ip saddr 10.244.0.5 ip daddr 10.96.0.20 ip \
dscp cs0 ip ecn not-ect ip ttl 64 ip id 27356 ip protocol tcp ip length 60 tcp sport 20123 tcp dport 80 tcp flags \
== syn tcp window 64240
trace id e51f0042 inet istio-proxy-mangle output policy accept
trace id e51f0042 inet istio-proxy-nat output packet: oif "eth0" ip saddr 10.244.0.5 ip daddr 10.96.0.20 ip dscp \
cs0 ip ecn not-ect ip ttl 64 ip id 27356 ip protocol tcp ip length 60 tcp sport 20123 tcp dport 80 tcp flags == \
syn tcp window 64240
trace id e51f0042 inet istio-proxy-nat output rule counter packets 0 bytes 0 jump istio-output # handle 9 \
(verdict jump istio-output)
trace id e51f0042 inet istio-proxy-nat istio-output rule counter packets 0 bytes 0 jump istio-redirect # handle \
18 (verdict jump istio-redirect)
trace id e51f0042 inet istio-proxy-nat istio-redirect rule meta l4proto tcp counter packets 0 bytes 0 redirect to \
:15001 # handle 7 (verdict accept)
trace id c08ba3e0 inet netsim-verify pre packet: iif "lo" @ll,0,112 0x800 ip saddr 10.244.0.5 ip daddr 127.0.0.1 \
ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27356 ip protocol tcp ip length 60 tcp sport 20123 tcp dport 15001 tcp \
flags == syn tcp window 64240
trace id c08ba3e0 inet netsim-verify pre rule tcp sport 20000-29999 tcp flags syn / fin,syn,rst,ack meta nftrace \
set 1 # handle 3 (verdict continue)
trace id c08ba3e0 inet netsim-verify pre policy accept
trace id c08ba3e0 inet istio-proxy-mangle prerouting packet: iif "lo" @ll,0,112 0x800 ip saddr 10.244.0.5 ip \
daddr 127.0.0.1 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 27356 ip protocol tcp ip length 60 tcp sport 20123 tcp \
dport 15001 tcp flags == syn tcp window 64240
trace id c08ba3e0 inet istio-proxy-mangle prerouting rule meta l4proto tcp counter packets 0 bytes 0 jump \
istio-inbound # handle 9 (verdict jump istio-inbound)
trace id c08ba3e0 inet istio-proxy-mangle istio-inbound rule iifname "lo" meta l4proto tcp meta mark != \
0x0000053a counter packets 0 bytes 0 return # handle 23 (verdict return)
trace id c08ba3e0 inet istio-proxy-mangle prerouting policy accept
trace id 5832fee7 inet netsim-verify pre packet: iif "eth0" ether saddr 3e:3e:21:10:7c:2f ether daddr \
96:e0:c0:7d:cd:c7 ip saddr 10.244.0.1 ip daddr 10.244.0.5 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 29840 ip \
protocol udp ip length 40 udp sport 20124 udp dport 8080 udp length 20 @th,64,96 0x6e657473696d2d70726f6265
trace id 5832fee7 inet netsim-verify pre rule udp sport 20000-29999 meta nftrace set 1 # handle 4 (verdict \
continue)
trace id 5832fee7 inet netsim-verify pre policy accept
trace id 5832fee7 inet istio-proxy-mangle prerouting packet: iif "eth0" ether saddr 3e:3e:21:10:7c:2f ether daddr \
96:e0:c0:7d:cd:c7 ip saddr 10.244.0.1 ip daddr 10.244.0.5 ip dscp cs0 ip ecn not-ect ip ttl 64 ip id 29840 ip \
protocol udp ip length 40 udp sport 20124 udp dport 8080 udp length 20 @th,64,96 0x6e657473696d2d70726f6265
trace id 5832fee7 inet istio-proxy-mangle prerouting policy accept
trace id 0badcafe inet istio-proxy-mangle prerouting packet: iif "eth0" ip saddr 10.244.0.1 ip daddr 10.244.0.5 \
ip protocol tcp tcp sport 40000 tcp dport 80
trace id 0badcafe inet istio-proxy-mangle prerouting policy accept
"""
HANDLES = {("istio-proxy-nat", "output"): [9], ("istio-proxy-nat", "istio-redirect"): [7],
           ("istio-proxy-nat", "istio-output"): [10, 11, 12, 13, 14, 15, 16, 17, 18],
           ("istio-proxy-mangle", "prerouting"): [9, 16],
           ("istio-proxy-mangle", "istio-inbound"): [21, 22, 23, 10, 11, 12, 13, 14, 15]}
LISTING_JSON = json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}, *(
    {"rule": {"family": "inet", "table": t, "chain": c, "handle": h, "expr": []}}
    for (t, c), hs in HANDLES.items() for h in hs)]})


def test_nft_positions_number_each_chains_rules_in_listing_order() -> None:
    pos = nft_positions(LISTING_JSON)
    assert pos[("inet", "istio-proxy-nat", "istio-output", 18)] == 9
    assert pos[("inet", "istio-proxy-mangle", "istio-inbound", 23)] == 3
    with pytest.raises(LabError, match="cannot read nft -j output"):
        nft_positions("not json")


def test_the_monitor_is_read_into_nft_trace_lines_per_probe() -> None:
    got = nft_trace_lines(MONITOR, nft_positions(LISTING_JSON), sports=(SPORT_LO, SPORT_HI),
                          skip_table=NFT_TRACE_TABLE)
    assert set(got) == {20123, 20124}  # sport 40000 is no probe's
    tcp = got[20123]
    assert not any(NFT_TRACE_TABLE in ln for ln in tcp)  # verify's own table is left out
    assert tcp[0] == ('trace id ID inet istio-proxy-mangle output packet: oif "eth0" ip saddr 10.244.0.5 '
                      "ip daddr 10.96.0.20 ip protocol tcp tcp sport 20123 tcp dport 80")
    assert ("trace id ID inet istio-proxy-nat istio-output rule counter packets 0 bytes 0 jump istio-redirect "
            "# handle 9 (verdict jump istio-redirect)") in tcp  # handle 18 is the chain's 9th rule
    assert len(tcp) == 10 and len(got[20124]) == 2


LAB_INFO = {"pod_ips": ["10.244.0.5/24"], "node_ips": ["10.244.0.1/24"], "tproxy_port": 15006,
            "fwmark_routes": [(1337, 133)]}
SOCKETS = [("tcp", None, 15001), ("tcp", None, 15006), ("udp", "127.0.0.1", 15053)]
PROBES = [Probe(proto="tcp", src="10.244.0.5", sport=20123, dst="10.96.0.20", dport=80, uid=1000, gid=1000),
          Probe(proto="udp", src="10.244.0.1", sport=20124, dst="10.244.0.5", dport=8080, inbound=True)]


def test_netsims_nft_trace_of_the_same_rules_equals_the_kernels_lines() -> None:
    kernel = nft_trace_lines(MONITOR, nft_positions(LISTING_JSON), sports=(SPORT_LO, SPORT_HI),
                             skip_table=NFT_TRACE_TABLE)
    ours = netsim_nft_lines((RULES / "tproxy" / "current.nft").read_text(), LAB_INFO, SOCKETS, PROBES)
    assert [list(o) for o in ours] == [kernel[p.sport] for p in PROBES]
    # and a probe netsim traces differently (uid 1337: the proxy's own, not redirected) does not compare equal
    other = netsim_nft_lines((RULES / "tproxy" / "current.nft").read_text(), LAB_INFO, SOCKETS,
                             [replace(PROBES[0], uid=1337)])
    assert list(other[0]) != kernel[20123]


def test_an_nft_report_names_nft_monitor_trace_and_its_backend() -> None:
    line = ("trace id ID inet istio-proxy-mangle prerouting policy accept",)
    report = Report("n", 1, (ProbeResult(PROBES[1], line, line),), backend="nft")
    assert report.lines()[0].endswith(": IPv4 1/1 (nft monitor trace)")
    assert report.to_json()["backend"] == "nft" and report.to_json()["agreed"] is True
