"""istio-iptables option values → CaptureConfig, read as Istio reads them (spec §2), and what Istio rejects."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv6Interface

import pytest
from capture_cases import case_config, case_names

from netsim.capture.config import CaptureConfig, InterceptionMode
from netsim.errors import SpecError
from netsim.spec import flags as F
from netsim.spec.options import config_from_options


def test_every_conformance_config_is_accepted() -> None:
    for name in case_names():
        assert isinstance(case_config(name), CaptureConfig)


def test_lists_split_on_commas_and_drop_empty_items_without_trimming() -> None:
    c = config_from_options({"istio-local-exclude-ports": "6000,7000,", "kube-virt-interfaces": ",eth0, eth1"})
    assert c.inbound_ports_exclude == ("6000", "7000")
    assert c.kube_virt_interfaces == ("eth0", " eth1")


def test_cidrs_keep_host_bits_and_split_by_family() -> None:
    c = config_from_options({"istio-service-cidr": "10.1.2.3/8,2001:DB8::1/32"})
    assert c.outbound_cidrs.v4 == (IPv4Interface("10.1.2.3/8"),)
    assert c.outbound_cidrs.v6 == (IPv6Interface("2001:db8::1/32"),)
    assert str(c.outbound_cidrs.v6[0]) == "2001:db8::1/32"
    assert config_from_options({"istio-service-cidr": "*"}).outbound_cidrs.wildcard


@pytest.mark.parametrize("bad", ["10.0.0.1", "10.0.0.0/33", "10.0.0.0/255.0.0.0", "010.0.0.0/8", "abc/8",
                                 "10.0.0.0/08", "fe80::1%eth0/64", "*,10.0.0.0/8"])
def test_malformed_cidr_is_rejected_naming_option_and_value(bad: str) -> None:
    with pytest.raises(SpecError, match=r"istio-service-cidr: .*not a CIDR"):
        config_from_options({"istio-service-cidr": bad})


def test_excluding_every_destination_is_rejected() -> None:
    with pytest.raises(SpecError, match=r"istio-service-exclude-cidr: '\*'"):
        config_from_options({"istio-service-exclude-cidr": "*"})


def test_more_than_64_owner_groups_is_rejected_but_64_is_fine() -> None:
    groups = ",".join(str(g) for g in range(64))
    assert config_from_options({"ISTIO_OUTBOUND_OWNER_GROUPS": groups}).owner_groups_include == groups
    with pytest.raises(SpecError, match=r"ISTIO_OUTBOUND_OWNER_GROUPS: .*at most 64"):
        config_from_options({"ISTIO_OUTBOUND_OWNER_GROUPS": groups + ",64"})
    # The exclude list has no limit, and the wildcard is not a list.
    config_from_options({"ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": groups + ",64,65"})


@pytest.mark.parametrize("bad", ["10.0.0.1/32", "127.0.0.1/7", "127.0.0.1", "::1/128", "127.0.0.1/33"])
def test_bad_ipv4_loopback_cidr_is_rejected(bad: str) -> None:
    with pytest.raises(SpecError, match="ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"):
        config_from_options({"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": bad})


def test_loopback_cidr_is_kept_verbatim() -> None:
    assert config_from_options({"ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": "127.0.0.1/8"}).ipv4_loopback_cidr == "127.0.0.1/8"


def test_proxy_gid_defaults_to_the_proxy_uid_list() -> None:
    assert config_from_options({"proxy-uid": "1,2"}).proxy_gid == ("1", "2")
    assert config_from_options({"proxy-uid": "1,2", "proxy-gid": ""}).proxy_gid == ("1", "2")
    assert config_from_options({}).proxy_uid == ("1337",)


def test_interception_mode_is_tproxy_only_when_exactly_tproxy() -> None:
    assert config_from_options({"istio-inbound-interception-mode": "TPROXY"}).mode is InterceptionMode.TPROXY
    assert config_from_options({"istio-inbound-interception-mode": "tproxy"}).mode is InterceptionMode.REDIRECT


def test_inbound_ports_wildcard_and_empty() -> None:
    assert config_from_options({"istio-inbound-ports": "*"}).inbound_ports == ("*",)
    assert config_from_options({"istio-inbound-ports": ""}).inbound_ports == ()


def test_dns_servers_are_checked_but_kept_as_written() -> None:
    c = config_from_options({"DNS_SERVERS_V4": ["127.0.0.53"], "DNS_SERVERS_V6": "::127.0.0.53,"})
    assert c.dns_servers_v6 == ("::127.0.0.53",)
    with pytest.raises(SpecError, match="DNS_SERVERS_V4: '::1': not an IPv4 address"):
        config_from_options({"DNS_SERVERS_V4": ["::1"]})
    with pytest.raises(SpecError, match="DNS_SERVERS_V6: 'nope': not an IP address"):
        config_from_options({"DNS_SERVERS_V6": ["nope"]})


def test_booleans_accept_go_spellings_only() -> None:
    assert config_from_options({"redirect-dns": "True", "drop-invalid": "1"}).drop_invalid
    with pytest.raises(SpecError, match="redirect-dns: 'yes'"):
        config_from_options({"redirect-dns": "yes"})


def test_unknown_option_and_force_binary_are_rejected() -> None:
    with pytest.raises(SpecError, match="unknown istio-iptables option 'no-such'"):
        config_from_options({"no-such": "1"})
    with pytest.raises(SpecError, match="force-iptables-binary: 'old'"):
        config_from_options({"force-iptables-binary": "old"})


def test_environment_precedence_later_env_vars_then_flags_win() -> None:
    env = {"REDIRECT_DNS": "false", "ISTIO_META_DNS_CAPTURE": "true", "DROP_INVALID": "maybe",
           "ISTIO_INBOUND_PORTS": "80", "ISTIO_OUTBOUND_OWNER_GROUPS": "java"}
    env_layer, _ = F.env_settings(env)
    merged = F.to_options(F.layer([*env_layer, *F.flag_settings({"istio-inbound-ports": "*"})]))
    assert merged == {"redirect-dns": "true", "istio-inbound-ports": "*", "ISTIO_OUTBOUND_OWNER_GROUPS": "java"}
    assert config_from_options(merged).redirect_dns
