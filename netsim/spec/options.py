"""istio-iptables option values → CaptureConfig: the one place where Istio's option strings are parsed.

Owns: how each value is read (spec/istio-iptables.md §2 "Parsing rules that matter") and the checks
Istio makes before generating anything (§1 step 3, §4 step 0). Never does: IO, reading
``/etc/resolv.conf`` or the pod's addresses, or stricter validation than Istio's (a port ``70000``
is passed through, as Istio passes it to iptables; refusing it is the job of the flag and
annotation readers).

Keys of the mapping given to :func:`config_from_options`:

- the keys of ``netsim.spec.flags.OPTIONS``: istio-iptables long option names without dashes
  (``istio-inbound-ports``, ``proxy-uid``, ...);
- the inputs without a flag: ``ISTIO_OUTBOUND_OWNER_GROUPS``, ``ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE``,
  ``ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`` (environment variables) and ``ENABLE_INBOUND_IPV6``,
  ``DNS_SERVERS_V4``, ``DNS_SERVERS_V6``, ``HOST_IP`` (derived by the CLI from the pod).

Istio's precedence (default → env vars in order → flag) is applied before the values reach this
function, by ``netsim.spec.flags`` (``env_settings``, ``flag_settings``, ``layer``).

Values are written as Istio receives them: strings (lists comma-separated), booleans (or their
``strconv.ParseBool`` spellings), and for the DNS server lists either a list or a comma string.
This is the format of the conformance cases' ``config:`` mapping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface, ip_address, ip_interface

from netsim.capture.config import WILDCARD, CaptureConfig, CidrList, InterceptionMode
from netsim.errors import SpecError
from netsim.spec.flags import DERIVED_KEYS, OPTIONS_BY_KEY, split_list
from netsim.spec.flags import parse_bool as flags_parse_bool

# Istio's validation.go: all included owner groups become one rule of N "-m owner ! --gid-owner" matches,
# and common kernels/distributions allow 128..1200 matches per rule, so Istio caps the list at 64.
MAX_OWNER_GROUPS_INCLUDE = 64

# The value before any flag or env var (spec §2 "CLI default"); what CaptureConfig's defaults encode.
# ``proxy-uid`` empty means "look up ENVOY_USER, else 1337" (this module does no IO: 1337);
# ``proxy-gid`` empty means "the proxy-uid string".
_STRING_OPTIONS: dict[str, str] = {
    "envoy-port": "proxy_port",
    "inbound-capture-port": "inbound_capture_port",
    "inbound-tunnel-port": "inbound_tunnel_port",
    "istio-inbound-tproxy-mark": "tproxy_mark",
    "istio-inbound-tproxy-route-table": "tproxy_route_table",
}
_LIST_OPTIONS: dict[str, str] = {
    "istio-local-exclude-ports": "inbound_ports_exclude",
    "istio-exclude-interfaces": "exclude_interfaces",
    "istio-outbound-ports": "outbound_ports",
    "istio-local-outbound-ports-exclude": "outbound_ports_exclude",
    "kube-virt-interfaces": "kube_virt_interfaces",
}
_BOOL_OPTIONS: dict[str, str] = {
    "redirect-dns": "redirect_dns",
    "capture-all-dns": "capture_all_dns",
    "drop-invalid": "drop_invalid",
    "dual-stack": "dual_stack",
    "native-nftables": "native_nftables",
    "ENABLE_INBOUND_IPV6": "enable_ipv6",
    "ISTIO_META_DNS_CONNTRACK_ZONE": "dns_conntrack_zone",
}
# The old script's switches: on when non-empty (bash ``[ -n "$X" ]``, history §2.2, §4.4).
_NON_EMPTY_OPTIONS: dict[str, str] = {
    "DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK": "disable_loopback_redirect",
    "DNS_CAPTURE": "dns_capture",
}
# Every name the mapping may hold: the option table's keys, the inputs the CLI derives from the pod,
# and two that istio-iptables reads but that never reach the generator.
OPTION_NAMES: frozenset[str] = frozenset({*OPTIONS_BY_KEY, *DERIVED_KEYS, "HOST_IP", "log_output_level"})

_PREFIX_LEN = re.compile(r"0|[1-9][0-9]{0,2}")


def parse_bool(option: str, value: object) -> bool:
    """A boolean option value: a bool, or one of Go ``strconv.ParseBool``'s spellings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return flags_parse_bool(value)
        except SpecError:
            pass
    raise SpecError(f"{option}: {value!r}: expected a boolean (true or false)")


def parse_prefix(option: str, text: str) -> IPv4Interface | IPv6Interface:
    """One CIDR as Go's ``netip.ParsePrefix`` reads it: ``address/length``, host bits kept.

    Raises SpecError for a bare address, a netmask instead of a length, a zone, or a bad address.
    """
    addr, slash, length = text.partition("/")
    bad = SpecError(f"{option}: {text!r}: not a CIDR (expected e.g. 10.0.0.0/8 or 2001:db8::/32)")
    if not slash or not _PREFIX_LEN.fullmatch(length) or "%" in addr:
        raise bad
    try:
        prefix = ip_interface(text)
    except ValueError:
        raise bad from None
    if int(length) > prefix.max_prefixlen:
        raise bad
    return prefix


def parse_cidr_list(option: str, value: str) -> CidrList:
    """``-i``/``-x``: ``*`` for everything, else CIDRs sorted into an IPv4 and an IPv6 list (spec §2)."""
    if value == WILDCARD:
        return CidrList(wildcard=True)
    v4: list[IPv4Interface] = []
    v6: list[IPv6Interface] = []
    for item in split_list(value):
        prefix = parse_prefix(option, item)
        if isinstance(prefix, IPv4Interface):
            v4.append(prefix)
        else:
            v6.append(prefix)
    return CidrList(v4=tuple(v4), v6=tuple(v6))


def _string(option: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SpecError(f"{option}: {value!r}: expected a string")
    return str(value)


def _dns_servers(option: str, value: object, family: int) -> tuple[str, ...]:
    items: Iterable[object]
    if isinstance(value, str):
        items = split_list(value)
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise SpecError(f"{option}: {value!r}: expected a list of IP addresses")
    servers: list[str] = []
    for item in items:
        text = _string(option, item)
        try:
            addr = ip_address(text)
        except ValueError:
            raise SpecError(f"{option}: {text!r}: not an IP address") from None
        want = IPv4Address if family == 4 else IPv6Address
        if not isinstance(addr, want):
            raise SpecError(f"{option}: {text!r}: not an IPv{family} address")
        servers.append(text)
    return tuple(servers)


def _check_loopback_cidr(option: str, value: str) -> None:
    # Istio's ValidateIPv4LoopbackCidr: an IPv4 loopback address with a length of 8..32.
    prefix = parse_prefix(option, value)
    if not isinstance(prefix, IPv4Interface) or not prefix.ip.is_loopback:
        raise SpecError(f"{option}: {value!r}: expected an IPv4 loopback CIDR such as 127.0.0.1/32")
    if not 8 <= prefix.network.prefixlen <= 32:
        raise SpecError(f"{option}: {value!r}: the prefix length must be between 8 and 32")


def config_from_options(options: Mapping[str, object]) -> CaptureConfig:
    """Build the generator's input from istio-iptables option values, as Istio reads them.

    ``options`` maps option names (see the module docstring) to values as written; options that are
    absent take istio-iptables' CLI defaults (CaptureConfig's defaults), except that an absent or
    empty ``proxy-gid`` copies ``proxy-uid`` and an empty ``proxy-uid`` means ``1337``, as
    ``FillConfigFromEnvironment`` does (without the user lookup).

    Istio's own quirks are kept: list items are split on ``,`` with empty items dropped but not
    trimmed or validated; the interception mode is TPROXY only when exactly ``TPROXY``; CIDRs keep
    their host bits; owner groups are kept raw (their meaning is decided by the generator, spec §9).

    Raises SpecError (naming the option and the value) for an unknown option name, a value of the
    wrong type, and what Istio rejects: a malformed CIDR in ``-i``/``-x``, ``-x '*'``, more than
    64 included owner groups, a bad IPv4 loopback CIDR, a ``force-iptables-binary`` other than
    ``legacy``/``nft``, and DNS server addresses that are not IP addresses of their family.
    """
    fields: dict[str, object] = {}
    for option, value in options.items():
        if option not in OPTION_NAMES:
            raise SpecError(f"unknown istio-iptables option {option!r}")
        if option in _STRING_OPTIONS:
            fields[_STRING_OPTIONS[option]] = _string(option, value)
        elif option in _LIST_OPTIONS:
            fields[_LIST_OPTIONS[option]] = split_list(_string(option, value))
        elif option in _BOOL_OPTIONS:
            fields[_BOOL_OPTIONS[option]] = parse_bool(option, value)
        elif option in _NON_EMPTY_OPTIONS:
            fields[_NON_EMPTY_OPTIONS[option]] = value not in ("", False, None)

    def raw(option: str, default: str) -> str:
        return _string(option, options[option]) if option in options else default

    uid = raw("proxy-uid", "") or "1337"
    gid = raw("proxy-gid", "") or uid
    fields["proxy_uid"] = split_list(uid)
    fields["proxy_gid"] = split_list(gid)

    mode = raw("istio-inbound-interception-mode", "")
    fields["mode"] = InterceptionMode.TPROXY if mode == "TPROXY" else InterceptionMode.REDIRECT

    inbound = raw("istio-inbound-ports", "")
    fields["inbound_ports"] = (WILDCARD,) if inbound == WILDCARD else split_list(inbound)

    fields["outbound_cidrs"] = parse_cidr_list("istio-service-cidr", raw("istio-service-cidr", ""))
    exclude = raw("istio-service-exclude-cidr", "")
    if exclude == WILDCARD:
        raise SpecError("istio-service-exclude-cidr: '*': excluding every destination is not allowed")
    fields["outbound_cidrs_exclude"] = parse_cidr_list("istio-service-exclude-cidr", exclude)

    binary = raw("force-iptables-binary", "")
    if binary not in ("", "legacy", "nft"):
        raise SpecError(f"force-iptables-binary: {binary!r}: expected legacy or nft")

    include = raw("ISTIO_OUTBOUND_OWNER_GROUPS", WILDCARD)
    if include != WILDCARD and len(split_list(include)) > MAX_OWNER_GROUPS_INCLUDE:
        raise SpecError(
            f"ISTIO_OUTBOUND_OWNER_GROUPS: {include!r}: at most {MAX_OWNER_GROUPS_INCLUDE} groups, "
            f"got {len(split_list(include))}"
        )
    fields["owner_groups_include"] = include
    fields["owner_groups_exclude"] = raw("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "")

    loopback = raw("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1/32")
    _check_loopback_cidr("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", loopback)
    fields["ipv4_loopback_cidr"] = loopback

    if "DNS_SERVERS_V4" in options:
        fields["dns_servers_v4"] = _dns_servers("DNS_SERVERS_V4", options["DNS_SERVERS_V4"], 4)
    if "DNS_SERVERS_V6" in options:
        fields["dns_servers_v6"] = _dns_servers("DNS_SERVERS_V6", options["DNS_SERVERS_V6"], 6)

    return CaptureConfig(**fields)  # type: ignore[arg-type]


__all__ = [
    "MAX_OWNER_GROUPS_INCLUDE",
    "OPTION_NAMES",
    "config_from_options",
    "parse_bool",
    "parse_cidr_list",
    "parse_prefix",
]
