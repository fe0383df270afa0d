"""The option table and the validators for what a user typed (flags, env vars, annotation values)."""

from __future__ import annotations

import pytest

from netsim.errors import SpecError
from netsim.spec import flags as F
from netsim.spec.flags import Source
from netsim.spec.options import OPTION_NAMES, config_from_options


def test_istios_option_parser_takes_every_key_of_the_option_table() -> None:
    assert {o.key for o in F.OPTIONS} <= OPTION_NAMES
    assert set(F.DERIVED_KEYS) <= OPTION_NAMES
    config_from_options({o.key: o.default for o in F.OPTIONS})


@pytest.mark.parametrize("text", ["0", "80", "65535"])
def test_ports_are_whole_numbers_up_to_65535(text: str) -> None:
    assert F.parse_port(text) == int(text)


@pytest.mark.parametrize(("text", "message"), [
    ("70000", '"70000": port out of range; a port is a whole number from 0 to 65535'),
    ("80-", '"80-": Istio takes single ports, not ranges; list them: 80,81,82'),
    ("80:90", '"80:90": Istio takes single ports, not ranges; list them: 80,81,82'),
    ("abc", '"abc": not a port; a port is a whole number from 0 to 65535'),
    (" 80", '" 80": not a port; a port is a whole number from 0 to 65535'),
    ("", '"": not a port; a port is a whole number from 0 to 65535'),
])
def test_bad_port_messages_name_the_value(text: str, message: str) -> None:
    with pytest.raises(SpecError) as e:
        F.parse_port(text)
    assert str(e.value) == message


def test_flag_port_lists_drop_empty_items_like_istio_but_annotations_do_not() -> None:
    assert F.parse_port_list("6000,7000,") == (6000, 7000)
    assert F.parse_port_list(" 80 , 81", strict_items=True) == (80, 81)
    with pytest.raises(SpecError, match="empty item"):
        F.parse_port_list("6000,,7000", strict_items=True)
    assert F.parse_port_list("*", allow_all=True) == ()
    with pytest.raises(SpecError, match="must stand alone"):
        F.parse_port_list("*,80", allow_all=True)


def test_cidrs_need_a_length_and_star_only_where_allowed() -> None:
    assert F.parse_cidr_list("10.1.2.3/8,fd00::/8") == ("10.1.2.3/8", "fd00::/8")
    assert F.parse_cidr_list("*", allow_all=True) == ("*",)
    for bad in ("10.0.0.1", "10.0.0.0/255.0.0.0", "10.0.0.0/08", "300.0.0.0/8", "fd00::/129"):
        with pytest.raises(SpecError, match=r"CIDR|prefix length"):
            F.parse_cidr_list(bad)
    with pytest.raises(SpecError, match="exclude list"):
        F.parse_cidr_list("*")


def test_mode_accepts_exactly_what_istio_treats_as_tproxy_or_redirect() -> None:
    for ok in ("", "REDIRECT", "TPROXY"):
        assert F.parse_mode(ok) == ok
    with pytest.raises(SpecError, match="istio-iptables would silently use REDIRECT"):
        F.parse_mode("Tproxy")


def test_go_booleans() -> None:
    assert all(F.parse_bool(v) for v in ("1", "t", "T", "TRUE", "true", "True"))
    assert not any(F.parse_bool(v) for v in ("0", "f", "F", "FALSE", "false", "False"))
    with pytest.raises(SpecError):
        F.parse_bool("yes")


def test_owner_groups_at_most_64_and_loopback_cidr_checked() -> None:
    assert F.parse_groups("*") == ("*",)
    assert len(F.parse_groups(",".join(str(i) for i in range(64)))) == 64
    with pytest.raises(SpecError, match="at most 64"):
        F.parse_groups(",".join(str(i) for i in range(65)))
    assert F.parse_loopback_cidr("127.0.0.1/8") == "127.0.0.1/8"
    for bad in ("10.0.0.1/32", "127.0.0.1/7", "::1/128"):
        with pytest.raises(SpecError):
            F.parse_loopback_cidr(bad)


def test_env_precedence_primary_then_secondary_and_ignoring_unparsable_typed_values() -> None:
    settings, ignored = F.env_settings({"REDIRECT_DNS": "true", "ISTIO_META_DNS_CAPTURE": "false",
                                        "IPTABLES_PROBE_PORT": "x", "PROBE_TIMEOUT": "soon"})
    eff = F.layer([*F.defaults(), *settings])
    assert eff["redirect-dns"].setting.value == "false"
    assert [s.origin for s in eff["redirect-dns"].shadowed] == [
        "istio-iptables default", "environment variable REDIRECT_DNS"]
    assert [i.origin for i in ignored] == ["environment variable IPTABLES_PROBE_PORT",
                                           "environment variable PROBE_TIMEOUT"]
    assert eff["iptables-probe-port"].setting.source is Source.DEFAULT


def test_env_string_option_with_a_bad_value_raises_naming_the_variable() -> None:
    with pytest.raises(SpecError) as e:
        F.env_settings({"ISTIO_SERVICE_CIDR": "10.0.0.1"})
    assert str(e.value).startswith('environment variable ISTIO_SERVICE_CIDR: "10.0.0.1": not a CIDR')


def test_flag_settings_check_values_and_win() -> None:
    eff = F.layer([*F.defaults(), *F.flag_settings({"istio-inbound-ports": "80,81", "redirect-dns": "1"})])
    assert eff["istio-inbound-ports"].setting.value == "80,81"
    assert eff["redirect-dns"].setting.value == "true"
    with pytest.raises(SpecError, match=r"^option -b/--istio-inbound-ports: "):
        F.flag_settings({"istio-inbound-ports": "x"})


def test_parse_argv_reads_an_istio_init_command_line_like_pflag() -> None:
    argv = ["istio-iptables", "-p", "15001", "-b=*", "-d15090", "--istio-service-cidr", "*", "-x", "",
            "--redirect-dns", "--drop-invalid=false", "--log_output_level", "default:info", "-n"]
    assert F.parse_argv(argv) == [
        ("envoy-port", "15001"), ("istio-inbound-ports", "*"), ("istio-local-exclude-ports", "15090"),
        ("istio-service-cidr", "*"), ("istio-service-exclude-cidr", ""), ("redirect-dns", "true"),
        ("drop-invalid", "false"), ("dry-run", "true")]
    for bad, message in ((["-b"], "'-b': flag needs a value"), (["--nope"], "'--nope': unknown istio-iptables flag"),
                         (["-p", "1", "x"], "'x': istio-iptables takes no positional arguments")):
        with pytest.raises(SpecError) as e:
            F.parse_argv(bad)
        assert str(e.value) == message
