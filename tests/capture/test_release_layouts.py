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
