"""``netsim.netfilter``'s public names: the tracer is re-exported, and importing the package stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys

import netsim.netfilter as nf


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert nf.__all__ == sorted(nf.__all__)
    for name in nf.__all__:
        assert getattr(nf, name) is not None, name


def test_tracer_names_are_the_defining_modules_objects() -> None:
    from netsim.netfilter import engine, packet
    from netsim.netfilter import trace as trace_fn

    assert trace_fn is engine.trace and nf.trace is engine.trace  # the function, not the trace submodule
    assert nf.compile_ruleset is engine.compile_ruleset
    assert nf.Packet is packet.Packet and nf.Netns is packet.Netns
    from netsim.netfilter.trace import Step  # the submodule's own names still import as before

    assert nf.Step is Step


def test_a_trace_through_the_package_names() -> None:
    from ipaddress import ip_address

    ruleset = nf.parse_ruleset("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -m owner --uid-owner 1337 -j RETURN\n"
                               "-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n", nf.Family.IPV4)
    netns = nf.Netns(interfaces=(nf.Interface.of("lo", "127.0.0.1/8"), nf.Interface.of("eth0", "10.0.0.2/24")),
                     default_iface="eth0", other_ports_listen=True)
    packet = nf.Packet(family=nf.Family.IPV4, proto=nf.Proto.TCP, src=ip_address("10.0.0.2"),
                       dst=ip_address("10.0.0.9"), sport=40000, dport=80, socket=nf.Socket(uid=1000, gid=1000))
    t = nf.trace(nf.compile_ruleset(ruleset), packet, netns)
    assert t.outcome is nf.Outcome.DELIVERED and t.local_port == 15001


def _loaded_after(code: str) -> dict[str, bool]:
    probe = ("import sys, json\n" + code + "\nprint(json.dumps({m: m in sys.modules for m in "
             "('netsim.netfilter.engine', 'netsim.workload', 'netsim.mesh', 'yaml', 'dnslib', "
             "'scapy', 'pyroute2')}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded: dict[str, bool] = json.loads(out)
    return loaded


def test_import_loads_neither_the_engine_nor_anything_heavy() -> None:
    assert not any(_loaded_after("import netsim.netfilter").values())


def test_engine_imported_first_does_not_turn_trace_into_the_module() -> None:
    code = ("import netsim.netfilter.engine, netsim.netfilter.render_trace, netsim.netfilter.dump\n"
            "from netsim.netfilter import trace\nassert trace is netsim.netfilter.engine.trace, trace")
    assert _loaded_after(code)["netsim.netfilter.engine"]
