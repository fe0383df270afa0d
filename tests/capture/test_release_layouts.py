"""Release layouts the history goldens do not exercise, checked against spec/istio-iptables-history.md."""

from __future__ import annotations

from dataclasses import replace

from netsim.capture.config import CaptureConfig
from netsim.capture.iptables import plan
from netsim.spec.options import config_from_options


def nat_output(config: CaptureConfig, release: tuple[int, ...] | None) -> list[str]:
    return [" ".join(r.args) for r in plan(replace(config, release=release))
            if r.table == "nat" and r.chain == "ISTIO_OUTPUT"]


def test_include_list_masked_before_1_16_and_trailing_return_until_1_22() -> None:
    config = config_from_options({"istio-service-cidr": "10.1.2.3/8"})
    assert nat_output(config, (1, 15))[-2:] == ["-d 10.0.0.0/8 -j ISTIO_REDIRECT", "-j RETURN"]  # §4.16, §4.22
    assert nat_output(config, (1, 22))[-2:] == ["-d 10.1.2.3/8 -j ISTIO_REDIRECT", "-j RETURN"]
    assert nat_output(config, (1, 23))[-1] == "-d 10.1.2.3/8 -j ISTIO_REDIRECT"
    assert nat_output(config, None)[-1] == "-d 10.1.2.3/8 -j ISTIO_REDIRECT"


def test_loopback_cidr_and_owner_groups_ignored_by_releases_without_them() -> None:
    config = config_from_options({"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/8",
                                  "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": "5001"})
    old, new = nat_output(config, (1, 13)), nat_output(config, (1, 21))
    assert "-d 127.0.0.1/32 -j RETURN" in old and "-m owner --gid-owner 5001 -j RETURN" not in old
    assert "-d 127.0.0.1/8 -j RETURN" in new and "-m owner --gid-owner 5001 -j RETURN" in new


def test_capture_all_dns_before_1_25_redirects_in_nat_output() -> None:
    config = config_from_options({"redirect-dns": True, "capture-all-dns": True})
    rules = [(r.table, r.chain, " ".join(r.args)) for r in plan(replace(config, release=(1, 22)))]
    assert ("nat", "ISTIO_OUTPUT", "-p tcp --dport 53 -j REDIRECT --to-ports 15053") in rules  # §4.10
    assert ("nat", "OUTPUT", "-p udp --dport 53 -j REDIRECT --to-port 15053") in rules
    assert ("raw", "PREROUTING", "-p udp --sport 53 -j CT --zone 1") in rules
    assert not any("ISTIO_OUTPUT_DNS" in r for rule in rules for r in rule)


def test_udp_outbound_port_exclusion_only_with_the_all_protocol_jump() -> None:
    config = config_from_options({"istio-local-outbound-ports-exclude": "7000"})
    assert "-p udp --dport 7000 -j RETURN" not in nat_output(config, (1, 24))
    assert "-p udp --dport 7000 -j RETURN" in nat_output(config, None)


def test_go_era_before_1_12_tproxy_and_skeleton() -> None:
    config = config_from_options({"istio-inbound-interception-mode": "TPROXY", "istio-inbound-ports": "*",
                                  "kube-virt-interfaces": "vm0", "istio-exclude-interfaces": "eth9"})

    def rules(release: tuple[int, ...]) -> list[tuple[str, str, str]]:
        return [(r.table, r.chain, " ".join(r.args)) for r in plan(replace(config, release=release))]

    r16, r19, r111 = rules((1, 6)), rules((1, 9)), rules((1, 11, 3))
    tproxy = "! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port"
    assert ("mangle", "ISTIO_TPROXY", f"{tproxy} 15001") in r16  # on-port P until 1.8 (history §4.7)
    assert ("mangle", "ISTIO_TPROXY", f"{tproxy} 15006") in r19
    assert ("mangle", "OUTPUT", "-p tcp -s 127.0.0.1/32 ! -d 127.0.0.1/32 -j MARK --set-mark 1337") in r16
    assert ("mangle", "OUTPUT", "-p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark") in r19
    assert not any("1338" in rule for _, _, rule in r19) and any("1338" in rule for _, _, rule in r111)
    assert not any("15008" in rule for _, _, rule in r16) and ("nat", "ISTIO_INBOUND",
                                                              "-p tcp --dport 15008 -j RETURN") in r19
    assert not any("eth9" in rule for _, _, rule in r19) and ("nat", "OUTPUT", "-o eth9 -j RETURN") in r111
    # kube-virt RETURN: after the -x RETURNs before 1.8, first of all from 1.8 (history §4.6)
    assert r16.index(("nat", "PREROUTING", "-i vm0 -j RETURN")) > r16.index(
        ("nat", "ISTIO_OUTPUT", "-d 127.0.0.1/32 -j RETURN"))
    assert r19.index(("nat", "PREROUTING", "-i vm0 -j RETURN")) < r19.index(
        ("nat", "ISTIO_REDIRECT", "-p tcp -j REDIRECT --to-ports 15001"))


def rules_of(config: CaptureConfig, release: tuple[int, ...]) -> list[tuple[int, str, str, str]]:
    return [(r.family.value, r.table, r.chain, " ".join(r.args)) for r in plan(replace(config, release=release))]


def test_ipv6_outbound_ports_from_1_9_6_and_1_10_2() -> None:
    """History §4.8: the v6 ``-q`` rule was backported to 1.9.6 and 1.10.2; 1.10.0–1.10.1 lack it."""
    config = config_from_options({"istio-outbound-ports": "8080", "ENABLE_INBOUND_IPV6": True})
    rule = (6, "nat", "ISTIO_OUTPUT", "-p tcp --dport 8080 -j ISTIO_REDIRECT")
    present = {r: rule in rules_of(config, r) for r in [(1, 9, 5), (1, 9, 6), (1, 10, 0), (1, 10, 1), (1, 10, 2)]}
    assert present == {(1, 9, 5): False, (1, 9, 6): True, (1, 10, 0): False, (1, 10, 1): False, (1, 10, 2): True}
    assert (4, "nat", "ISTIO_OUTPUT", "-p tcp --dport 8080 -j ISTIO_REDIRECT") in rules_of(config, (1, 9, 5))


def test_patch_level_drop_invalid_and_exclude_interfaces() -> None:
    config = config_from_options({"drop-invalid": True, "istio-exclude-interfaces": "eth9"})
    drop = (4, "mangle", "PREROUTING", "-m conntrack --ctstate INVALID -j DROP")
    assert drop not in rules_of(config, (1, 12, 8)) and drop in rules_of(config, (1, 12, 9))  # §4.13
    excluded = (4, "nat", "PREROUTING", "-i eth9 -j RETURN")
    assert excluded not in rules_of(config, (1, 11, 2)) and excluded in rules_of(config, (1, 11, 3))  # §4.11


def test_script_era_1_0_inbound_goes_to_the_outbound_listener() -> None:
    """History §2.1: 1.0 had no -z (INBOUND_CAPTURE_PORT defaulted to -p), the SSH RETURN, no 127.0.0.6
    rule, the lo rule to ISTIO_REDIRECT for everyone, and the IPv6 lock-down without the lo rule."""
    config = config_from_options({"istio-inbound-ports": "*", "istio-service-cidr": "*", "proxy-uid": "1337",
                                  "inbound-capture-port": "15001", "kube-virt-interfaces": "vm0"})
    r10 = rules_of(config, (1, 0))
    assert (4, "nat", "ISTIO_IN_REDIRECT", "-p tcp -j REDIRECT --to-port 15001") in r10
    assert (4, "nat", "ISTIO_INBOUND", "-p tcp --dport 22 -j RETURN") in r10
    assert (4, "nat", "ISTIO_OUTPUT", "-o lo ! -d 127.0.0.1/32 -j ISTIO_REDIRECT") in r10
    assert not any("127.0.0.6" in r[3] or "vm0" in r[3] for r in r10)  # -k: 1.1
    assert [r for r in r10 if r[0] == 6] == [(6, "filter", "INPUT", "-m state --state ESTABLISHED -j ACCEPT"),
                                             (6, "filter", "INPUT", "-j REJECT")]
    r11 = rules_of(config, (1, 1))
    assert (6, "filter", "INPUT", "-i lo -d ::1 -j ACCEPT") in r11 and (4, "nat", "PREROUTING",
                                                                        "-i vm0 -j ISTIO_REDIRECT") in r11
    # 1.0 with ENABLE_INBOUND_IPV6 set by hand: no ip6tables command at all; 1.1: the nat-only list
    on = replace(config, enable_ipv6=True)
    assert not [r for r in rules_of(on, (1, 0)) if r[0] == 6]
    v6 = [r for r in rules_of(on, (1, 1)) if r[0] == 6]
    assert {r[1] for r in v6} == {"nat"} and (6, "nat", "ISTIO_INBOUND", "-p tcp -j ISTIO_IN_REDIRECT") not in v6


def test_script_disable_redirection_on_local_loopback_1_1_to_1_4() -> None:
    config = config_from_options({"istio-service-cidr": "*", "DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK": "1"})
    lo_rule = (4, "nat", "ISTIO_OUTPUT", "-o lo ! -d 127.0.0.1/32 -j ISTIO_IN_REDIRECT")
    assert lo_rule not in rules_of(config, (1, 4))
    assert lo_rule in rules_of(replace(config, disable_loopback_redirect=False), (1, 4))
    assert (4, "nat", "ISTIO_OUTPUT", "-o lo ! -d 127.0.0.1/32 -j ISTIO_REDIRECT") in rules_of(config, (1, 0))


def test_1_5_tproxy_socket_match_until_1_5_2_and_to_port_until_1_5_3() -> None:
    config = config_from_options({"istio-inbound-interception-mode": "TPROXY", "istio-inbound-ports": "80"})
    divert = [r for r in rules_of(config, (1, 5, 1)) if r[2] == "ISTIO_INBOUND" and "ISTIO_DIVERT" in r[3]]
    assert divert == [(4, "mangle", "ISTIO_INBOUND", "-p tcp --dport 80 -m socket -j ISTIO_DIVERT")] * 2
    divert = [r for r in rules_of(config, (1, 5, 2)) if r[2] == "ISTIO_INBOUND" and "ISTIO_DIVERT" in r[3]]
    assert divert == [(4, "mangle", "ISTIO_INBOUND",
                       "-p tcp --dport 80 -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT")]
    assert (4, "nat", "ISTIO_REDIRECT", "-p tcp -j REDIRECT --to-port 15001") in rules_of(config, (1, 5, 2))
    assert (4, "nat", "ISTIO_REDIRECT", "-p tcp -j REDIRECT --to-ports 15001") in rules_of(config, (1, 5, 3))
