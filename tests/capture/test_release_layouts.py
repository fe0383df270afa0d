"""Release layouts the history goldens do not exercise, checked against spec/istio-iptables-history.md."""

from __future__ import annotations

from dataclasses import replace

from netsim.capture.config import CaptureConfig
from netsim.capture.iptables import plan
from netsim.spec.options import config_from_options


def nat_output(config: CaptureConfig, release: tuple[int, int] | None) -> list[str]:
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
