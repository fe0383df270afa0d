"""The ambient compiler (netsim.capture.ambient) against Istio's ambient goldens, read in place, and the
kernel's read-backs of them (offline); plus the release history of spec/istio-ambient-capture.md §11."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from ambient_cases import AMBIENT_DIR, case_id, case_paths, config, golden, is_node, kernel_files, overrides
from conftest import conformance_dir

from netsim.capture.ambient import (
    AmbientConfig,
    PodOverrides,
    agent_defaults,
    compile_ambient,
    dns_effective,
    inpod_nft_rules,
    inpod_rules,
    node_rules,
    render_golden,
    route_commands,
    tproxy_inbound,
)
from netsim.netfilter.model import Family
from netsim.netfilter.render import render_save

CASES = case_paths()


def _compiled(path: Path):  # type: ignore[no-untyped-def]
    return compile_ambient(config(path), overrides(path), node=is_node(path))


def test_the_corpus_is_all_there() -> None:
    conformance_dir("istio-ambient")
    by_dir = {d: len([p for p in CASES if p.parent.name == d]) for d in ("iptables", "nftables", "history")}
    assert by_dir == {"iptables": 14, "nftables": 14, "history": 2}


@pytest.mark.parametrize("path", CASES, ids=[case_id(p) for p in CASES])
def test_every_golden_byte_for_byte(path: Path) -> None:
    assert _compiled(path).golden() == golden(path)


KERNEL_CASES = [(p, k) for p in CASES for k in kernel_files(p)]


@pytest.mark.parametrize(("path", "dump"), KERNEL_CASES, ids=[k.name for _, k in KERNEL_CASES])
def test_rendering_is_the_kernels_read_back(path: Path, dump: Path) -> None:
    """iptables-save / ip6tables-save / nft list ruleset of each golden loaded into a fresh namespace
    (the corpus's kernel/ files) is what netsim renders for the same config."""
    compiled = _compiled(path)
    if dump.suffix == ".nft-list":
        assert compiled.nft_listing() == dump.read_text()
        return
    v4, v6 = compiled.rulesets()
    ruleset = v6 if dump.suffix == ".ip6tables-save" else v4
    assert ruleset is not None
    assert render_save(ruleset) == dump.read_text()


def test_kernel_read_backs_cover_every_in_pod_case() -> None:
    conformance_dir("istio-ambient")
    assert len(KERNEL_CASES) == 18 + 14


# ---------------------------------------------------------------------------------------------- defaults


def test_agent_defaults_are_the_products_not_the_unit_tests() -> None:
    current = agent_defaults()
    assert (current.enable_ipv6, current.redirect_dns, current.native_nftables) == (True, True, False)
    assert current.host_probe_snat_address == "169.254.7.127"
    assert current.host_probe_v6_snat_address == "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"
    assert agent_defaults((1, 24)).redirect_dns is False and agent_defaults((1, 25)).redirect_dns is True
    assert agent_defaults((1, 22)).enable_ipv6 is False and agent_defaults((1, 23)).enable_ipv6 is True


def test_dns_capture_pod_override_wins_from_1_26() -> None:
    on, off = agent_defaults(), dataclasses.replace(agent_defaults(), redirect_dns=False)
    assert dns_effective(off, PodOverrides(dns_capture=True)) and not dns_effective(on, PodOverrides(dns_capture=False))
    assert dns_effective(on, PodOverrides()) and not dns_effective(off, PodOverrides())
    old = dataclasses.replace(on, release=(1, 25))
    assert dns_effective(old, PodOverrides(dns_capture=False))  # 1.25 did not read the annotation
    notes = compile_ambient(old, PodOverrides(dns_capture=False)).notes
    assert notes == ("ambient.istio.io/dns-capture is ignored before 1.26 (per-pod DNS capture came in 1.26)",)


# ----------------------------------------------------------------------------------------------- history


def _text(cfg: AmbientConfig, pod: PodOverrides | None = None, family: Family = Family.IPV4) -> list[str]:
    rules = inpod_rules(cfg, pod or PodOverrides())
    return [" ".join((r.table, r.chain, *r.args)) for r in rules if r.family is family]


def test_ingress_mode_keeps_the_connmark_rule_only_from_1_29() -> None:
    connmark = "mangle ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff"
    for release, kept in (((1, 28), False), ((1, 29), True), (None, True)):
        cfg = dataclasses.replace(agent_defaults(release), native_nftables=release != (1, 24))
        assert (connmark in _text(cfg, PodOverrides(ingress_mode=True))) is kept
        nft = [r.rule for r in inpod_nft_rules(cfg, PodOverrides(ingress_mode=True))]
        assert any("ct mark set" in r for r in nft) is kept
        assert connmark in _text(cfg)


def test_inbound_by_tproxy_before_1_23_1_and_as_1_24s_option() -> None:
    assert tproxy_inbound(agent_defaults((1, 21))) and tproxy_inbound(agent_defaults((1, 23, 0)))
    assert not tproxy_inbound(agent_defaults((1, 23, 1))) and not tproxy_inbound(agent_defaults((1, 24)))
    assert tproxy_inbound(dataclasses.replace(agent_defaults((1, 24, 2)), tproxy_redirection=True))
    with pytest.raises(ValueError, match=r"removed in 1\.25"):
        compile_ambient(dataclasses.replace(agent_defaults((1, 25)), tproxy_redirection=True))
    rules = _text(agent_defaults((1, 21)))
    assert "nat PREROUTING -j ISTIO_PRERT" not in rules
    assert any("TPROXY --on-port 15006" in r for r in rules) and any("TPROXY --on-port 15008" in r for r in rules)


def test_dns_rules_by_release() -> None:
    old = _text(dataclasses.replace(agent_defaults((1, 23, 1)), redirect_dns=True))
    assert [r for r in old if " 53 " in r] == \
        ["nat ISTIO_OUTPUT ! -o lo -p udp -m udp --dport 53 -j REDIRECT --to-port 15053"]
    new = _text(dataclasses.replace(agent_defaults((1, 24)), redirect_dns=True))
    assert sum("--dport 53" in r or "--sport 53" in r for r in new) == 4
    assert "raw PREROUTING -j ISTIO_PRERT" in new


def test_virtual_interfaces_from_1_25() -> None:
    pod = PodOverrides(virtual_interfaces=("v0",))
    assert not any("-i v0" in r for r in _text(agent_defaults((1, 24)), pod))
    assert any("-i v0" in r for r in _text(agent_defaults((1, 25)), pod))
    assert compile_ambient(agent_defaults((1, 24)), pod).notes


def test_ipv6_rules_use_the_v4_probe_address_before_1_23() -> None:
    cfg = dataclasses.replace(agent_defaults((1, 22)), enable_ipv6=True)
    assert any("-s 169.254.7.127" in r for r in _text(cfg, family=Family.IPV6))
    cur = agent_defaults()
    assert any(f"-s {cur.host_probe_v6_snat_address}" in r for r in _text(cur, family=Family.IPV6))


def test_node_rule_is_inserted_first_from_1_27() -> None:
    assert node_rules(agent_defaults((1, 26)))[0].position is None
    assert node_rules(agent_defaults((1, 27)))[0].position == 1
    one_set = node_rules(dataclasses.replace(agent_defaults((1, 22)), enable_ipv6=True))
    assert [r.args[-6] for r in one_set if r.chain == "ISTIO_POSTRT"] == ["istio-inpod-probes"] * 2


def test_nft_1_28_0_wrote_ipv6_rules_with_ipv6_off() -> None:
    off = {"enable_ipv6": False, "native_nftables": True}
    assert any("ip6 " in r.rule for r in inpod_nft_rules(dataclasses.replace(agent_defaults((1, 28, 0)), **off)))
    assert not any("ip6 " in r.rule for r in inpod_nft_rules(dataclasses.replace(agent_defaults((1, 28, 1)), **off)))
    with pytest.raises(ValueError, match=r"1\.28"):
        compile_ambient(dataclasses.replace(agent_defaults((1, 27)), native_nftables=True))


def test_golden_format_by_release() -> None:
    assert render_golden(agent_defaults((1, 25)), inpod_rules(agent_defaults((1, 25)))).startswith(
        "iptables-save\nip6tables-save\n* mangle")
    assert render_golden(agent_defaults((1, 24)), inpod_rules(agent_defaults((1, 24)))).startswith("* mangle")
    with pytest.raises(ValueError, match="single iptables commands"):
        render_golden(agent_defaults((1, 23)), inpod_rules(agent_defaults((1, 23))))


def test_no_ambient_before_1_21() -> None:
    with pytest.raises(ValueError, match=r"1\.21"):
        compile_ambient(agent_defaults((1, 20)))


def test_policy_routes() -> None:
    assert [" ".join(c.argv) for c in route_commands(agent_defaults())] == [
        "ip -4 route replace local 0.0.0.0/0 dev lo scope host table 100",
        "ip -6 route replace local ::/0 dev lo scope host table 100",
        "ip -4 rule add fwmark 0x111/0xfff lookup 100 pref 32764",
        "ip -6 rule add fwmark 0x111/0xfff lookup 100 pref 32764"]
    assert len(route_commands(dataclasses.replace(agent_defaults(), enable_ipv6=False))) == 2
    assert compile_ambient(agent_defaults(), node=True).routes == ()


def test_every_modelled_release_compiles_and_loads() -> None:
    """Each layout of §11, both families, parses as iptables-restore would load it (1.21–1.22 with IPv6 on
    excepted: those wrote an IPv4 address into IPv6 rules, which ip6tables refuses)."""
    from netsim.capture.ambient import AMBIENT_LAYOUTS

    assert AMBIENT_DIR is not None
    for release in (*AMBIENT_LAYOUTS, None):
        cfg = agent_defaults(release)
        for pod in (PodOverrides(), PodOverrides(ingress_mode=True, virtual_interfaces=("v0",), dns_capture=True)):
            v4, v6 = compile_ambient(cfg, pod).rulesets()
            assert v4.table("nat") is not None and (v6 is not None) is cfg.enable_ipv6
            compile_ambient(cfg, node=True).rulesets()


def test_nft_connmark_statement_sets_the_low_bits_to_0x111() -> None:
    """m3's ``ct mark set ct mark & 0xfffff000 | 0x111`` is read as both operations (the tracer sets
    ctmark 0x111 on ztunnel's connection, keeping the high bits), as iptables' --set-xmark 0x111/0xfff does."""
    from ipaddress import ip_address

    from netsim.netfilter.engine import trace
    from netsim.netfilter.nft import compile_nft, parse_nft
    from netsim.netfilter.packet import Conntrack, Netns, Origin, Packet, Proto, Socket

    rs = parse_nft(compile_ambient(dataclasses.replace(agent_defaults(), native_nftables=True)).nft_text())
    ns = Netns.pod("10.0.0.5/24")
    for before in (0, 0xABC00FFF):
        pkt = Packet(family=Family.IPV4, proto=Proto.TCP, src=ip_address("10.0.0.5"), dst=ip_address("10.0.0.5"),
                     sport=40000, dport=8080, origin=Origin.LOCAL, socket=Socket(uid=0, gid=0), mark=0x539,
                     ct=Conntrack(mark=before))
        t = trace(compile_nft(rs, Family.IPV4), pkt, ns)
        assert t.ctmark == (before & 0xFFFFF000) | 0x111
