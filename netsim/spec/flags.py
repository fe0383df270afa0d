"""istio-iptables' command line: every option, its environment variables, Istio's precedence.

Owns: the option table (spec/istio-iptables.md §2, as data), the validators for what a *user* typed
(flags, environment variables, and the annotation values the injector turns into flags), and the
layering of option sources into one effective value per option, each with where it came from.

Never does: read files, look at the real process environment (the caller passes ``env``), or turn
option strings into a :class:`~netsim.capture.config.CaptureConfig` -- that is
``netsim.spec.options.config_from_options``, the single place Istio's option strings are parsed.

Values stay the strings Istio would receive (``"6000,7000,"`` keeps its trailing comma, CIDRs keep
their host bits), because the generator prints many of them verbatim; validation only *checks*
them, so a typo fails here with the option's name instead of deep inside ``iptables-restore``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface

from netsim.errors import SpecError


class Kind(enum.Enum):
    """How an option's value is checked (and, for env vars, whether Go's own parse can fail)."""

    PORT = "port"
    PORT_LIST = "port list"
    PORT_LIST_OR_ALL = "port list or *"
    ID_LIST = "UID/GID list"
    MODE = "interception mode"
    MARK = "mark"
    ROUTE_TABLE = "route table"
    IFACE_LIST = "interface list"
    CIDR_LIST = "CIDR list"
    CIDR_LIST_OR_ALL = "CIDR list or *"
    BOOL = "boolean"
    DURATION = "duration"
    TEXT = "text"
    BINARY = "legacy|nft"
    GROUPS = "group list or *"
    LOOPBACK_CIDR = "IPv4 loopback CIDR"


# Kinds whose Go parse can fail; istio-iptables then silently keeps the default (spec §1.1).
# For every other kind Go takes any string, so netsim's stricter check raises instead.
GO_TYPED = frozenset({Kind.BOOL, Kind.PORT, Kind.DURATION})


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionSpec:
    """One row of spec §2: an istio-iptables option (``long`` None for env-only inputs)."""

    key: str  # long flag name, or the env var name for env-only inputs
    long: str | None
    short: str | None
    envs: tuple[str, ...]  # read in order; a later one wins (spec §1)
    kind: Kind
    default: str
    help: str
    effect: str = ""  # non-empty: why the option does not change the compiled rules

    @property
    def flag(self) -> str:
        """How a person names it: ``-b/--istio-inbound-ports`` or the env var."""
        if self.long is None:
            return self.key
        return f"-{self.short}/--{self.long}" if self.short else f"--{self.long}"


_NO_EFFECT_RUN = "only changes how istio-iptables runs, not the rules it writes"

OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(key="envoy-port", long="envoy-port", short="p", envs=(), kind=Kind.PORT, default="15001",
               help="outbound capture target port (ISTIO_REDIRECT)"),
    OptionSpec(key="inbound-capture-port", long="inbound-capture-port", short="z",
               envs=("INBOUND_CAPTURE_PORT",), kind=Kind.PORT, default="15006",
               help="inbound capture target port (ISTIO_IN_REDIRECT, TPROXY on-port)"),
    OptionSpec(key="inbound-tunnel-port", long="inbound-tunnel-port", short="e",
               envs=("INBOUND_TUNNEL_PORT",), kind=Kind.PORT, default="15008",
               help="HBONE tunnel port, exempted from inbound capture"),
    OptionSpec(key="proxy-uid", long="proxy-uid", short="u", envs=("PROXY_UID",), kind=Kind.ID_LIST,
               default="", help="comma list of UIDs whose traffic is the proxy's (default 1337)"),
    OptionSpec(key="proxy-gid", long="proxy-gid", short="g", envs=("PROXY_GID",), kind=Kind.ID_LIST,
               default="", help="comma list of GIDs whose traffic is the proxy's (default: the UIDs)"),
    OptionSpec(key="istio-inbound-interception-mode", long="istio-inbound-interception-mode", short="m",
               envs=("ISTIO_INBOUND_INTERCEPTION_MODE",), kind=Kind.MODE, default="",
               help="REDIRECT (default) or TPROXY"),
    OptionSpec(key="istio-inbound-tproxy-mark", long="istio-inbound-tproxy-mark", short="t",
               envs=("ISTIO_INBOUND_TPROXY_MARK",), kind=Kind.MARK, default="1337",
               help="packet/connection mark used by TPROXY mode"),
    OptionSpec(key="istio-inbound-tproxy-route-table", long="istio-inbound-tproxy-route-table", short="r",
               envs=("ISTIO_INBOUND_TPROXY_ROUTE_TABLE",), kind=Kind.ROUTE_TABLE, default="133",
               help="policy routing table for TPROXY"),
    OptionSpec(key="istio-inbound-ports", long="istio-inbound-ports", short="b",
               envs=("ISTIO_INBOUND_PORTS",), kind=Kind.PORT_LIST_OR_ALL, default="",
               help="inbound ports to capture: empty = none, * = all, else a list"),
    OptionSpec(key="istio-local-exclude-ports", long="istio-local-exclude-ports", short="d",
               envs=("ISTIO_LOCAL_EXCLUDE_PORTS",), kind=Kind.PORT_LIST, default="",
               help="inbound ports never captured; only used when -b is *"),
    OptionSpec(key="istio-exclude-interfaces", long="istio-exclude-interfaces", short="c",
               envs=("ISTIO_EXCLUDE_INTERFACES",), kind=Kind.IFACE_LIST, default="",
               help="interfaces whose traffic is never captured"),
    OptionSpec(key="istio-service-cidr", long="istio-service-cidr", short="i",
               envs=("ISTIO_SERVICE_CIDR",), kind=Kind.CIDR_LIST_OR_ALL, default="",
               help="outbound destinations to capture: empty = none, * = all, else CIDRs"),
    OptionSpec(key="istio-service-exclude-cidr", long="istio-service-exclude-cidr", short="x",
               envs=("ISTIO_SERVICE_EXCLUDE_CIDR",), kind=Kind.CIDR_LIST, default="",
               help="outbound destinations never captured"),
    OptionSpec(key="istio-outbound-ports", long="istio-outbound-ports", short="q",
               envs=("ISTIO_OUTBOUND_PORTS",), kind=Kind.PORT_LIST, default="",
               help="outbound TCP ports always captured"),
    OptionSpec(key="istio-local-outbound-ports-exclude", long="istio-local-outbound-ports-exclude", short="o",
               envs=("ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",), kind=Kind.PORT_LIST, default="",
               help="outbound ports (TCP and UDP) never captured"),
    OptionSpec(key="kube-virt-interfaces", long="kube-virt-interfaces", short="k",
               envs=("KUBE_VIRT_INTERFACES",), kind=Kind.IFACE_LIST, default="",
               help="interfaces whose incoming traffic is treated as outbound"),
    OptionSpec(key="redirect-dns", long="redirect-dns", short=None,
               envs=("REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"), kind=Kind.BOOL, default="false",
               help="capture DNS to the agent on 15053"),
    OptionSpec(key="capture-all-dns", long="capture-all-dns", short=None, envs=("CAPTURE_ALL_DNS",),
               kind=Kind.BOOL, default="false", help="with --redirect-dns: capture port 53 to any address"),
    OptionSpec(key="drop-invalid", long="drop-invalid", short=None, envs=("DROP_INVALID", "INVALID_DROP"),
               kind=Kind.BOOL, default="false", help="drop conntrack-INVALID packets"),
    OptionSpec(key="dual-stack", long="dual-stack", short=None, envs=("DUAL_STACK", "ISTIO_DUAL_STACK"),
               kind=Kind.BOOL, default="false", help="IPv6 rules if any pod address is IPv6"),
    OptionSpec(key="dry-run", long="dry-run", short="n", envs=("DRY_RUN",), kind=Kind.BOOL, default="false",
               help="accepted for compatibility", effect="netsim never applies rules; output is the same"),
    OptionSpec(key="skip-rule-apply", long="skip-rule-apply", short=None, envs=("SKIP_RULE_APPLY",),
               kind=Kind.BOOL, default="false", help="generate no rules (as istio-iptables)"),
    OptionSpec(key="run-validation", long="run-validation", short=None, envs=("RUN_VALIDATION",),
               kind=Kind.BOOL, default="false", help="accepted for compatibility", effect=_NO_EFFECT_RUN),
    OptionSpec(key="iptables-probe-port", long="iptables-probe-port", short=None,
               envs=("IPTABLES_PROBE_PORT",), kind=Kind.PORT, default="15002",
               help="accepted for compatibility", effect=_NO_EFFECT_RUN),
    OptionSpec(key="probe-timeout", long="probe-timeout", short=None, envs=("PROBE_TIMEOUT",),
               kind=Kind.DURATION, default="5s", help="accepted for compatibility", effect=_NO_EFFECT_RUN),
    OptionSpec(key="network-namespace", long="network-namespace", short=None, envs=("NETWORK_NAMESPACE",),
               kind=Kind.TEXT, default="", help="accepted for compatibility", effect=_NO_EFFECT_RUN),
    OptionSpec(key="cni-mode", long="cni-mode", short=None, envs=("CNI_MODE",), kind=Kind.BOOL,
               default="false", help="accepted for compatibility", effect=_NO_EFFECT_RUN),
    OptionSpec(key="reconcile", long="reconcile", short=None, envs=("RECONCILE",), kind=Kind.BOOL,
               default="false", help="accepted for compatibility",
               effect="only matters against live rules; netsim compiles for an empty namespace"),
    OptionSpec(key="cleanup-only", long="cleanup-only", short=None, envs=("CLEANUP_ONLY",), kind=Kind.BOOL,
               default="false", help="accepted for compatibility",
               effect="netsim shows the rules a run would create, not cleanup commands"),
    OptionSpec(key="force-apply", long="force-apply", short=None, envs=("FORCE_APPLY",), kind=Kind.BOOL,
               default="false", help="accepted for compatibility",
               effect="only matters against live rules; netsim compiles for an empty namespace"),
    OptionSpec(key="native-nftables", long="native-nftables", short=None, envs=("NATIVE_NFTABLES",),
               kind=Kind.BOOL, default="false", help="use the nftables generator (default --format nft)"),
    OptionSpec(key="force-iptables-binary", long="force-iptables-binary", short=None,
               envs=("FORCE_IPTABLES_BINARY",), kind=Kind.BINARY, default="",
               help="legacy or nft", effect="netsim prints what either backend would save"),
    OptionSpec(key="ISTIO_OUTBOUND_OWNER_GROUPS", long=None, short=None, envs=("ISTIO_OUTBOUND_OWNER_GROUPS",),
               kind=Kind.GROUPS, default="*", help="groups whose outbound traffic is captured"),
    OptionSpec(key="ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", long=None, short=None,
               envs=("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",), kind=Kind.GROUPS, default="",
               help="groups whose outbound traffic is not captured (only with include *)"),
    OptionSpec(key="ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", long=None, short=None,
               envs=("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",), kind=Kind.LOOPBACK_CIDR, default="127.0.0.1/32",
               help="what counts as an IPv4 loopback destination"),
    # Inputs only old releases read (spec/istio-iptables-history.md; netsim.spec.releases says when).
    OptionSpec(key="DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK", long=None, short=None,
               envs=("DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK",), kind=Kind.TEXT, default="",
               help="1.1-1.4 script: non-empty drops the lo → Envoy rule"),
    OptionSpec(key="DNS_CAPTURE", long=None, short=None, envs=("DNS_CAPTURE",), kind=Kind.TEXT, default="",
               help="1.6: non-empty redirects UDP DNS to Envoy's 15013"),
    OptionSpec(key="ISTIO_META_DNS_CONNTRACK_ZONE", long=None, short=None, envs=("ISTIO_META_DNS_CONNTRACK_ZONE",),
               kind=Kind.BOOL, default="false", help="1.10.3-1.10.x: DNS conntrack zones"),
)

OPTIONS_BY_KEY: dict[str, OptionSpec] = {o.key: o for o in OPTIONS}
ENV_TO_KEY: dict[str, str] = {env: o.key for o in OPTIONS for env in o.envs}

# Inputs istio-iptables derives from the running pod; netsim takes them as flags or from the manifest.
DERIVED_KEYS = ("ENABLE_INBOUND_IPV6", "DNS_SERVERS_V4", "DNS_SERVERS_V6")

# Kubernetes' default cluster DNS Service address (kubeadm's --service-cidr 10.96.0.0/12, .10).
DEFAULT_CLUSTER_DNS = "10.96.0.10"
# iptables' owner-group rule takes at most this many groups; istio-iptables rejects more (spec §1.3).
MAX_OWNER_GROUPS = 64
# Linux IFNAMSIZ is 16 including the NUL.
MAX_IFACE_NAME = 15
MAX_U32 = 2**32 - 1

_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_DURATION = re.compile(r"^(0|([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+$")
_DIGITS = re.compile(r"^[0-9]+$")


# --- validators: each returns the value to pass on (usually unchanged) or raises SpecError -------

def parse_port(text: str) -> int:
    """A port number 0-65535 as written (``"80"``); SpecError naming the value otherwise."""
    if not _DIGITS.match(text):
        if re.match(r"^[0-9]+[-:][0-9]*$", text):
            raise SpecError(f'"{text}": Istio takes single ports, not ranges; list them: 80,81,82')
        raise SpecError(f'"{text}": not a port; a port is a whole number from 0 to 65535')
    port = int(text)
    if port > 65535:
        raise SpecError(f'"{text}": port out of range; a port is a whole number from 0 to 65535')
    return port


def split_list(text: str) -> tuple[str, ...]:
    """Istio's ``config.Split``: on commas, dropping empty items, no trimming (spec §2)."""
    return tuple(item for item in text.split(",") if item != "")


def parse_port_list(text: str, *, allow_all: bool = False, strict_items: bool = False) -> tuple[int, ...]:
    """Check a comma list of ports (``*`` alone if ``allow_all``; returns () for it).

    ``strict_items`` follows the injector's annotation check, which rejects empty items and trims
    spaces; flags follow istio-iptables, which drops empty items.
    """
    if allow_all and text.strip() == "*":
        return ()
    if strict_items:
        items = tuple(i.strip() for i in text.strip().split(",")) if text.strip() else ()
        for item in items:
            if item == "":
                raise SpecError(f'"{text}": empty item in port list (the injector rejects it)')
    else:
        items = split_list(text)
    if "*" in items:
        raise SpecError(f'"{text}": * means all ports and must stand alone' if allow_all
                        else f'"{text}": * is not allowed here; list ports')
    return tuple(parse_port(i) for i in items)


def parse_cidr(text: str) -> str:
    """One CIDR as Go's ``netip.ParsePrefix`` takes it: address ``/`` decimal length."""
    _, slash, length = text.partition("/")
    if not slash:
        raise SpecError(f'"{text}": not a CIDR; add a prefix length, e.g. {text}/32'
                        if is_ip(text) else f'"{text}": not a CIDR such as 10.0.0.0/8')
    if not _DIGITS.match(length):
        raise SpecError(f'"{text}": prefix length must be a number, e.g. 10.0.0.0/8')
    from netsim.spec.options import parse_prefix  # Istio's own reading (netip.ParsePrefix)

    try:
        parse_prefix("", text)
    except SpecError:
        raise SpecError(f'"{text}": not a CIDR such as 10.0.0.0/8 or fd00::/8') from None
    return text


def is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def parse_cidr_list(text: str, *, allow_all: bool = False, strict_items: bool = False) -> tuple[str, ...]:
    """Check a comma list of CIDRs; ``*`` alone means all destinations when ``allow_all``."""
    if text == "*":
        if allow_all:
            return ("*",)
        raise SpecError('"*": not allowed in an exclude list (istio-iptables fails on it)')
    items = text.split(",") if strict_items and text else split_list(text)
    for item in items:
        if item == "*":
            raise SpecError(f'"{text}": * means all destinations and must stand alone')
        if item == "":
            raise SpecError(f'"{text}": empty item in CIDR list (the injector rejects it)')
        parse_cidr(item)
    return tuple(items)


def parse_mode(text: str) -> str:
    """``REDIRECT``/``TPROXY`` (or empty = REDIRECT). Anything else is refused here, although
    istio-iptables would silently treat it as REDIRECT (spec §2)."""
    if text in ("", "REDIRECT", "TPROXY"):
        return text
    hint = " (NONE is the pod annotation for no capture at all)" if text == "NONE" else ""
    return _fail(f'"{text}": unknown interception mode; use REDIRECT or TPROXY{hint} '
                 f"(istio-iptables would silently use REDIRECT)")


def _fail(message: str) -> str:
    raise SpecError(message)


def parse_id_list(text: str) -> tuple[int, ...]:
    """A comma list of numeric UIDs or GIDs."""
    ids = []
    for item in split_list(text):
        if not _DIGITS.match(item) or int(item) >= MAX_U32:
            raise SpecError(f'"{item}": not a numeric UID/GID (0 to {MAX_U32 - 1})')
        ids.append(int(item))
    return tuple(ids)


def parse_u32(text: str, what: str, *, minimum: int = 0) -> int:
    if not _DIGITS.match(text) or not minimum <= int(text) <= MAX_U32:
        raise SpecError(f'"{text}": {what} must be a decimal number from {minimum} to {MAX_U32}')
    return int(text)


def parse_iface_list(text: str) -> tuple[str, ...]:
    """A comma list of interface names (iptables' ``+`` wildcard allowed)."""
    names = split_list(text)
    for name in names:
        if len(name) > MAX_IFACE_NAME or any(c.isspace() or c in "/:" for c in name):
            raise SpecError(f'"{name}": not an interface name (at most {MAX_IFACE_NAME} characters, '
                            "no spaces, '/' or ':')")
    return tuple(names)


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise SpecError(f'"{text}": not a boolean; use true or false')


def parse_groups(text: str) -> tuple[str, ...]:
    """Owner groups: ``*``, or a comma list of group names or GIDs (at most 64)."""
    if text == "*":
        return ("*",)
    groups = split_list(text)
    if len(groups) > MAX_OWNER_GROUPS:
        raise SpecError(f"{len(groups)} groups: istio-iptables accepts at most {MAX_OWNER_GROUPS}")
    for g in groups:
        if any(c.isspace() for c in g):
            raise SpecError(f'"{g}": not a group name or GID')
    return tuple(groups)


def parse_loopback_cidr(text: str) -> str:
    """The IPv4 loopback CIDR: an IPv4 loopback address with a /8../32 prefix (spec §1.3)."""
    parse_cidr(text)
    iface = ip_interface(text)
    if iface.version != 4 or not iface.ip.is_loopback or not 8 <= iface.network.prefixlen <= 32:
        raise SpecError(f'"{text}": must be an IPv4 loopback address with prefix /8 to /32, e.g. 127.0.0.1/32')
    return text


def parse_dns_servers(text: str, version: int) -> tuple[IPv4Address | IPv6Address, ...]:
    """A comma list of IPv4 (``version`` 4) or IPv6 resolver addresses."""
    out: list[IPv4Address | IPv6Address] = []
    for item in split_list(text):
        try:
            addr = ip_address(item)
        except ValueError:
            raise SpecError(f'"{item}": not an IP address') from None
        if addr.version != version:
            raise SpecError(f'"{item}": not an IPv{version} address')
        out.append(addr)
    return tuple(out)


_CHECKS = {
    Kind.PORT: lambda v: parse_port(v),
    Kind.PORT_LIST: lambda v: parse_port_list(v),
    Kind.PORT_LIST_OR_ALL: lambda v: parse_port_list(v, allow_all=True),
    Kind.ID_LIST: parse_id_list,
    Kind.MODE: parse_mode,
    Kind.MARK: lambda v: parse_u32(v, "a mark"),
    Kind.ROUTE_TABLE: lambda v: parse_u32(v, "a route table", minimum=1),
    Kind.IFACE_LIST: parse_iface_list,
    Kind.CIDR_LIST: lambda v: parse_cidr_list(v),
    Kind.CIDR_LIST_OR_ALL: lambda v: parse_cidr_list(v, allow_all=True),
    Kind.BOOL: parse_bool,
    Kind.DURATION: lambda v: v if _DURATION.match(v) else _fail(f'"{v}": not a duration such as 5s'),
    Kind.TEXT: lambda v: v,
    Kind.BINARY: lambda v: v if v in ("", "legacy", "nft") else _fail(f'"{v}": must be legacy or nft'),
    Kind.GROUPS: parse_groups,
    Kind.LOOPBACK_CIDR: parse_loopback_cidr,
}


def check_value(key: str, value: str) -> str:
    """Check ``value`` for option ``key``; return the string Istio would receive.

    Booleans come back normalised to ``true``/``false``. Raises SpecError (without location; the
    caller adds the flag, env var or annotation name).
    """
    spec = OPTIONS_BY_KEY[key]
    result = _CHECKS[spec.kind](value)
    if spec.kind is Kind.BOOL:
        return "true" if result else "false"
    return value


# --- sources and layering ----------------------------------------------------------------------

class Source(enum.Enum):
    """Where an effective value came from, lowest precedence first."""

    DEFAULT = "istio-iptables default"
    PROFILE = "injector default"
    ENV = "environment"
    PROXY_METADATA = "proxyMetadata (proxy.istio.io/config)"
    ANNOTATION = "annotation"
    POD = "pod spec"
    DERIVED = "derived"
    FLAG = "command line"


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    """One candidate value of one option: ``value`` as Istio receives it, from ``source``;
    ``origin`` names the exact flag/env var/annotation/field (``"env PROXY_UID"``)."""

    key: str
    value: str
    source: Source
    origin: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Effective:
    """The value that won for one option, and the candidates it beat (lowest first)."""

    setting: Setting
    shadowed: tuple[Setting, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignored:
    """An input that was read but not used, and why (e.g. an unparsable env value, as Istio)."""

    origin: str
    value: str
    reason: str


def defaults() -> list[Setting]:
    """istio-iptables' own CLI defaults for every option (spec §2 "CLI default")."""
    return list(_DEFAULTS)


_DEFAULTS = tuple(Setting(key=o.key, value=o.default, source=Source.DEFAULT, origin="istio-iptables default")
                  for o in OPTIONS)


def env_settings(env: Mapping[str, str], *, source: Source = Source.ENV,
                 origin_prefix: str = "environment variable") -> tuple[list[Setting], list[Ignored]]:
    """The settings an environment provides, in Istio's order: per option, primary env var then
    secondary (later wins). Values Go cannot parse for a typed option (bools, the probe port,
    the timeout) are ignored as istio-iptables ignores them; other values are checked and a bad
    one raises SpecError naming the variable.
    """
    out: list[Setting] = []
    ignored: list[Ignored] = []
    for spec in OPTIONS:
        for name in spec.envs:
            if name not in env:
                continue
            raw = env[name]
            try:
                value = check_value(spec.key, raw)
            except SpecError as e:
                if spec.kind in GO_TYPED:
                    ignored.append(Ignored(origin=f"{origin_prefix} {name}", value=raw,
                                           reason=f"{e.message}; ignored, as istio-iptables ignores it"))
                    continue
                raise e.at(f"{origin_prefix} {name}") from None
            out.append(Setting(key=spec.key, value=value, source=source, origin=f"{origin_prefix} {name}"))
    return out, ignored


def flag_settings(flags: Mapping[str, str]) -> list[Setting]:
    """Settings from command-line flags (``{long name: raw value}``), checked."""
    out = []
    for key, raw in flags.items():
        spec = OPTIONS_BY_KEY.get(key)
        if spec is None:
            raise SpecError(f"unknown istio-iptables option {key!r}")
        try:
            value = check_value(key, raw)
        except SpecError as e:
            raise e.at(f"option {spec.flag}") from None
        out.append(Setting(key=key, value=value, source=Source.FLAG, origin=f"--{spec.long}"))
    return out


def layer(settings: Iterable[Setting]) -> dict[str, Effective]:
    """Fold settings given lowest precedence first: the last one per option wins."""
    result: dict[str, Effective] = {}
    for s in settings:
        prev = result.get(s.key)
        if prev is None:
            result[s.key] = Effective(setting=s)
        else:
            result[s.key] = Effective(setting=s, shadowed=(*prev.shadowed, prev.setting))
    return result


_SHORT_TO_KEY = {o.short: o.key for o in OPTIONS if o.short}
_LONG_TO_KEY = {o.long: o.key for o in OPTIONS if o.long}
# Flags istio-iptables accepts that do not feed the generator (its logging flags).
_IGNORED_LONG = frozenset({"log_output_level", "log_as_json", "log_caller", "log_stacktrace_level",
                           "log_target", "log_rotate", "log_rotate_max_age", "log_rotate_max_backups",
                           "log_rotate_max_size"})


def parse_argv(argv: Iterable[str]) -> list[tuple[str, str]]:
    """An istio-iptables command line (as in an injected istio-init container) → ``(key, raw value)``
    pairs in order, read as Go's pflag reads it: ``--name value``, ``--name=value``, ``-b value``,
    ``-bvalue``, ``-b=value``; a boolean flag alone means true. A leading ``istio-iptables`` (the
    program name) is skipped. Raises SpecError for an unknown flag or a missing value."""
    tokens = list(argv)
    if tokens and not tokens[0].startswith("-"):
        tokens = tokens[1:]
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            if name in _IGNORED_LONG:
                if not eq and name != "log_as_json" and i < len(tokens):
                    i += 1
                continue
            key = _LONG_TO_KEY.get(name)
        elif token.startswith("-") and len(token) > 1:
            name, value = token[1], token[2:]
            eq = "=" if value else ""
            value = value[1:] if value.startswith("=") else value
            key = _SHORT_TO_KEY.get(name)
        else:
            raise SpecError(f"{token!r}: istio-iptables takes no positional arguments")
        if key is None:
            raise SpecError(f"{token!r}: unknown istio-iptables flag")
        if not eq:
            if OPTIONS_BY_KEY[key].kind is Kind.BOOL:
                value = "true"
            elif i < len(tokens):
                value = tokens[i]
                i += 1
            else:
                raise SpecError(f"{token!r}: flag needs a value")
        out.append((key, value))
    return out


def to_options(effective: Mapping[str, Effective]) -> dict[str, str]:
    """The options mapping ``config_from_options`` takes: long names / env names → strings."""
    return {key: eff.setting.value for key, eff in effective.items()}


__all__ = [
    "DEFAULT_CLUSTER_DNS",
    "DERIVED_KEYS",
    "ENV_TO_KEY",
    "OPTIONS",
    "OPTIONS_BY_KEY",
    "Effective",
    "Ignored",
    "Kind",
    "OptionSpec",
    "Setting",
    "Source",
    "check_value",
    "defaults",
    "env_settings",
    "flag_settings",
    "is_ip",
    "layer",
    "parse_argv",
    "parse_bool",
    "parse_cidr",
    "parse_cidr_list",
    "parse_dns_servers",
    "parse_id_list",
    "parse_iface_list",
    "parse_mode",
    "parse_port",
    "parse_port_list",
    "split_list",
    "to_options",
]
