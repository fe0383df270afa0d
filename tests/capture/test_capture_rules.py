"""The spec's tricky points (spec/istio-iptables.md §16) that no conformance golden covers."""

from __future__ import annotations

from netsim.capture.config import CaptureConfig
from netsim.capture.dryrun import dry_run, render_restore
from netsim.capture.iptables import build, cleanup_commands, dns_capture_effective, plan, route_commands
from netsim.capture.nft import nft_rules, render_nft, render_nft_cleanup
from netsim.netfilter.model import Family
from netsim.netfilter.parse import apply_payload
from netsim.netfilter.render import render_rule
from netsim.spec.options import config_from_options


def cfg(**options: object) -> CaptureConfig:
    return config_from_options(options)


def lines(config: CaptureConfig, family: Family = Family.IPV4, table: str | None = None) -> list[str]:
    """The rule lines of one family's payload, as Istio writes them."""
    out = []
    for r in plan(config):
        if r.family is family and (table is None or r.table == table):
            head = f"-A {r.chain}" if r.position is None else f"-I {r.chain} {r.position}"
            out.append(" ".join([head, *r.args]))
    return out


def chain_rules(config: CaptureConfig, table: str, chain: str, family: Family = Family.IPV4) -> list[str]:
    """A chain's final rules, as iptables-save prints them, after loading into an empty namespace."""
    v4, v6 = build(config)
    payload = v4 if family is Family.IPV4 else v6
    assert payload is not None
    t = apply_payload(payload).table(table)
    assert t is not None
    c = t.chain(chain)
    assert c is not None
    return [render_rule(chain, r) for r in c.rules]


# ---------------------------------------------------------------- DNS (§7)


def test_redirect_dns_without_resolvers_or_capture_all_is_off() -> None:
    config = cfg(**{"redirect-dns": True})
    assert not dns_capture_effective(config)
    assert not any("53" in line for line in lines(config))
    assert dry_run(config) == dry_run(cfg())


def test_capture_all_dns_redirects_port_53_to_any_address_in_both_families() -> None:
    config = cfg(**{"redirect-dns": True, "capture-all-dns": True, "ENABLE_INBOUND_IPV6": True,
                    "istio-service-cidr": "*"})
    for family in (Family.IPV4, Family.IPV6):
        nat = lines(config, family, "nat")
        dns_jump = nat.index("-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS")
        assert nat[dns_jump + 1:dns_jump + 3] == [
            "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053",
        ]
        # UID rule skips 53, the GID rule does not; non-proxy lo RETURN is TCP-only and skips 53.
        assert ("-A ISTIO_OUTPUT -o lo ! -d {} -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337"
                " -j ISTIO_IN_REDIRECT").format("127.0.0.1/32" if family is Family.IPV4 else "::1/128") in nat
        assert "-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner 1337 -j RETURN" in nat
        assert lines(config, family, "raw") == [
            "-A OUTPUT -j ISTIO_OUTPUT_DNS",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1",
            "-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 1337 -j CT --zone 1",
            "-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2",
            "-A PREROUTING -j ISTIO_INBOUND",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2",
            "-A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1",
        ]


def test_capture_all_dns_in_nftables() -> None:
    config = cfg(**{"redirect-dns": True, "capture-all-dns": True})
    text = render_nft(config)
    dns = "add rule inet istio-proxy-nat istio-output-dns"
    assert f"{dns} meta l4proto tcp tcp dport 53 counter redirect to :15053\n" in text
    assert f"{dns} udp dport 53 counter redirect to :15053\n" in text
    assert "add rule inet istio-proxy-raw istio-inbound udp sport 53 counter ct zone set 1\n" in text
    assert text.count("jump istio-output-dns") == 2  # raw output and one family-neutral nat jump (§12)


def test_resolver_of_one_family_jumps_only_in_that_family_but_raw_output_jumps_in_both() -> None:
    config = cfg(**{"redirect-dns": True, "DNS_SERVERS_V4": ["10.96.0.10"], "ENABLE_INBOUND_IPV6": True})
    assert "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS" in lines(config, Family.IPV4)
    v6 = lines(config, Family.IPV6)
    assert "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS" not in v6
    assert "-A OUTPUT -j ISTIO_OUTPUT_DNS" in v6
    assert "-A PREROUTING -j ISTIO_INBOUND" not in v6


# ---------------------------------------------------------------- owner groups (§9)


def test_empty_owner_group_include_returns_all_outbound_traffic_before_dns() -> None:
    config = cfg(ISTIO_OUTBOUND_OWNER_GROUPS="", **{"redirect-dns": True, "DNS_SERVERS_V4": "10.96.0.10",
                                                    "istio-service-cidr": "*"})
    nat = lines(config, table="nat")
    catch_all = nat.index("-A ISTIO_OUTPUT -j RETURN")
    assert nat[catch_all - 1] == "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN"
    assert nat[catch_all + 1] == "-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS"
    assert "add rule inet istio-proxy-nat istio-output counter return\n" in render_nft(config)


def test_owner_group_exclude_is_ignored_unless_include_is_wildcard() -> None:
    config = cfg(ISTIO_OUTBOUND_OWNER_GROUPS="10,20", ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE="30")
    nat = lines(config)
    assert "-A ISTIO_OUTPUT -m owner ! --gid-owner 10 -m owner ! --gid-owner 20 -j RETURN" in nat
    assert not any("30" in line for line in nat)


# ---------------------------------------------------------------- interfaces and inserts (§4.1, §8)


def test_virt_interface_redirects_land_above_their_returns_with_wildcard_include() -> None:
    config = cfg(**{"kube-virt-interfaces": "eth1,eth2", "istio-service-cidr": "*",
                    "istio-exclude-interfaces": "X", "istio-inbound-ports": "*"})
    assert chain_rules(config, "nat", "PREROUTING") == [
        "-A PREROUTING -i eth2 -j ISTIO_REDIRECT",
        "-A PREROUTING -i eth1 -j ISTIO_REDIRECT",
        "-A PREROUTING -i eth2 -j RETURN",
        "-A PREROUTING -i eth1 -j RETURN",
        "-A PREROUTING -i X -j RETURN",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
    ]


def test_virt_interfaces_with_wildcard_include_and_ipv6_insert_in_both_families() -> None:
    config = cfg(**{"kube-virt-interfaces": "eth1", "istio-service-cidr": "*", "ENABLE_INBOUND_IPV6": True})
    for family in (Family.IPV4, Family.IPV6):
        assert chain_rules(config, "nat", "PREROUTING", family) == [
            "-A PREROUTING -i eth1 -j ISTIO_REDIRECT",
            "-A PREROUTING -i eth1 -j RETURN",
        ]


def test_cidr_include_is_split_by_family() -> None:
    config = cfg(**{"istio-service-cidr": "10.0.0.0/8,fd00::/8", "ENABLE_INBOUND_IPV6": True})
    assert "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT" in lines(config, Family.IPV4)
    assert "-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT" in lines(config, Family.IPV6)
    assert not any("fd00" in line for line in lines(config, Family.IPV4))


def test_cidr_host_bits_are_kept_verbatim_and_masked_by_the_kernel() -> None:
    config = cfg(**{"istio-service-cidr": "10.1.2.3/8"})
    assert "-A ISTIO_OUTPUT -d 10.1.2.3/8 -j ISTIO_REDIRECT" in lines(config)
    assert "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT" in chain_rules(config, "nat", "ISTIO_OUTPUT")


def test_exclude_ports_only_apply_with_wildcard_inbound() -> None:
    listed = cfg(**{"istio-inbound-ports": "80", "istio-local-exclude-ports": "15090"})
    assert not any("15090" in line for line in lines(listed))
    wildcard = cfg(**{"istio-inbound-ports": "*", "istio-local-exclude-ports": "15090,"})
    assert "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN" in lines(wildcard)


# ---------------------------------------------------------------- TPROXY (§6)


def test_tproxy_with_empty_inbound_ports_has_only_the_mark_plumbing() -> None:
    config = cfg(**{"istio-inbound-interception-mode": "TPROXY", "istio-inbound-ports": ""})
    mangle = lines(config, table="mangle")
    assert not any(chain in line for line in mangle for chain in ("ISTIO_DIVERT", "ISTIO_TPROXY"))
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" not in mangle
    assert mangle[-3:] == [
        "-I ISTIO_INBOUND 1 -p tcp -m mark --mark 1337 -j RETURN",
        "-I ISTIO_INBOUND 2 -p tcp -s 127.0.0.6/32 -i lo -j RETURN",
        "-I ISTIO_INBOUND 3 -p tcp -i lo -m mark ! --mark 1338 -j RETURN",
    ]
    # The inserts still load (position = length + 1 is legal) into a chain nobody jumps to.
    assert len(chain_rules(config, "mangle", "ISTIO_INBOUND")) == 3
    assert route_commands(config) == ()  # policy routing only when -b is non-empty


def test_tproxy_routes_and_ipv6_address() -> None:
    config = cfg(**{"istio-inbound-interception-mode": "TPROXY", "istio-inbound-ports": "*",
                    "istio-inbound-tproxy-mark": "7", "istio-inbound-tproxy-route-table": "99",
                    "ENABLE_INBOUND_IPV6": True})
    assert [c.argv for c in route_commands(config)] == [
        ("ip", "-6", "addr", "add", "::6/128", "dev", "lo"),
        ("ip", "-4", "rule", "add", "fwmark", "7", "lookup", "99"),
        ("ip", "-6", "rule", "add", "fwmark", "7", "lookup", "99"),
        ("ip", "-4", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "99"),
        ("ip", "-6", "route", "add", "local", "::/0", "dev", "lo", "table", "99"),
    ]
    assert route_commands(cfg(**{"istio-inbound-ports": "*"})) == ()


def test_anything_but_exact_tproxy_is_redirect() -> None:
    for mode in ("tproxy", "REDIRECT", "", "TPROXY "):
        config = cfg(**{"istio-inbound-interception-mode": mode, "istio-inbound-ports": "*"})
        assert lines(config, table="mangle") == []
        assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" in lines(config)


def test_tproxy_mark_is_configurable_but_1338_is_fixed() -> None:
    config = cfg(**{"istio-inbound-interception-mode": "TPROXY", "istio-inbound-ports": "80",
                    "istio-inbound-tproxy-mark": "4242"})
    mangle = lines(config, table="mangle")
    assert "-A ISTIO_DIVERT -j MARK --set-mark 4242" in mangle
    assert "-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338" in mangle


# ---------------------------------------------------------------- the rest of §16


def test_every_config_has_the_skeleton_chains() -> None:
    text = render_restore([r for r in plan(cfg()) if r.family is Family.IPV4])
    for chain in ("ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT"):
        assert f"-N {chain}\n" in text
    assert "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN\n" in text


def test_loopback_include_drops_the_app_to_app_return_rules_in_both_families() -> None:
    config = cfg(**{"istio-service-cidr": "::1/128", "ENABLE_INBOUND_IPV6": True})
    for family in (Family.IPV4, Family.IPV6):
        assert not any("! --uid-owner" in line or "! --gid-owner" in line for line in lines(config, family))


def test_ipv4_rules_stay_in_nftables_without_ipv6_and_ipv6_only_rules_go() -> None:
    config = cfg(**{"istio-service-cidr": "fd00::/8"})
    text = render_nft(config)
    assert "ip6" not in text
    assert "ip daddr 127.0.0.1/32 counter return" in text


def test_nft_insert_past_the_end_becomes_an_append() -> None:
    config = cfg(**{"kube-virt-interfaces": "a,b"})
    assert [r.index for r in nft_rules(config) if r.chain == "prerouting"] == [0, 0]
    text = render_nft(config)
    assert "add rule inet istio-proxy-nat prerouting iifname a counter return\n" in text
    assert "insert rule inet istio-proxy-nat prerouting index 0 iifname b counter return\n" in text


def test_nft_cleanup_adds_then_deletes_every_table() -> None:
    assert render_nft_cleanup().splitlines()[:2] == [
        "add table inet istio-proxy-nat",
        "delete table inet istio-proxy-nat",
    ]


def test_cleanup_is_derived_from_the_planned_rules_in_reverse() -> None:
    config = cfg(**{"istio-inbound-interception-mode": "TPROXY", "istio-inbound-ports": "*",
                    "istio-exclude-interfaces": "X"})
    v4, _ = build(config)
    cmds = cleanup_commands(v4)
    # Last rule first; ISTIO_* chain contents are skipped unless they jump to an ISTIO_* chain.
    assert cmds[0] == ("-t", "mangle", "-D", "OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", "1337",
                       "-j", "CONNMARK", "--restore-mark")
    assert ("-t", "mangle", "-D", "ISTIO_INBOUND", "-p", "tcp", "-j", "ISTIO_TPROXY") in cmds
    assert ("-t", "mangle", "-D", "PREROUTING", "-i", "X", "-j", "RETURN") in cmds
    assert not any(c[2] == "-D" and c[3] == "ISTIO_DIVERT" for c in cmds)
    flushes = [c for c in cmds if c[2] in ("-F", "-X")]
    assert flushes[:2] == [("-t", "mangle", "-F", "ISTIO_INBOUND"), ("-t", "mangle", "-X", "ISTIO_INBOUND")]
    assert {(c[1], c[3]) for c in flushes} == {
        ("mangle", "ISTIO_INBOUND"), ("mangle", "ISTIO_TPROXY"), ("mangle", "ISTIO_DIVERT"),
        ("nat", "ISTIO_OUTPUT"), ("nat", "ISTIO_IN_REDIRECT"), ("nat", "ISTIO_REDIRECT"), ("nat", "ISTIO_INBOUND"),
    }


def test_public_api_is_exported() -> None:
    import netsim.capture as capture

    for name in capture.__all__:
        assert getattr(capture, name) is not None
    assert {"CaptureConfig", "build", "render_dry_run", "render_nft", "compile_config"} <= set(capture.__all__)
