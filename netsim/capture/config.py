"""CaptureConfig: every input of Istio's capture generator, as one immutable value.

The field set mirrors istio-iptables' ``Config`` (spec/istio-iptables.md §2). Values that Istio passes
into rules verbatim (ports, UIDs, GIDs, interface and group names) stay strings here so that the
generator reproduces Istio byte for byte; validation of what a *user* typed happens at the edges
(``netsim.spec``), which refuse e.g. port ``70000`` before a config is ever built.
CIDRs are parsed (Istio fails on a bad one) but keep their host bits, as Istio prints them.
DNS server addresses stay strings too: Istio appends ``/32`` or ``/128`` to the text it holds, and its
unit tests hold e.g. ``::127.0.0.53`` (which a canonical re-print would turn into ``::7f00:35``).

Options are turned into a CaptureConfig in exactly one place, ``netsim.spec.options``; this module never
parses strings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv6Interface

WILDCARD = "*"


class InterceptionMode(enum.Enum):
    """Inbound interception mode; Istio treats anything but exactly ``TPROXY`` as REDIRECT."""

    REDIRECT = "REDIRECT"
    TPROXY = "TPROXY"


@dataclass(frozen=True, slots=True)
class CidrList:
    """An include/exclude CIDR list: ``*`` (all destinations) or prefixes split by family."""

    wildcard: bool = False
    v4: tuple[IPv4Interface, ...] = ()
    v6: tuple[IPv6Interface, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.wildcard or self.v4 or self.v6)

    @property
    def has_loopback(self) -> bool:
        """True if any prefix's *address* is a loopback address (Istio's ``HasLoopBackIP``, spec §2)."""
        return any(c.ip.is_loopback for c in self.v4) or any(c.ip.is_loopback for c in self.v6)


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureConfig:
    """The generator's full input. Defaults are istio-iptables' CLI defaults (not the unit tests')."""

    proxy_port: str = "15001"  # -p --envoy-port
    inbound_capture_port: str = "15006"  # -z; before 1.3 env INBOUND_CAPTURE_PORT, default -p (spec.resolve)
    inbound_tunnel_port: str = "15008"  # -e
    proxy_uid: tuple[str, ...] = ("1337",)  # -u
    proxy_gid: tuple[str, ...] = ("1337",)  # -g
    mode: InterceptionMode = InterceptionMode.REDIRECT  # -m
    tproxy_mark: str = "1337"  # -t
    tproxy_route_table: str = "133"  # -r
    inbound_ports: tuple[str, ...] = ()  # -b: () none, ("*",) all, else the list
    inbound_ports_exclude: tuple[str, ...] = ()  # -d, only used when -b is *
    exclude_interfaces: tuple[str, ...] = ()  # -c
    outbound_cidrs: CidrList = field(default_factory=CidrList)  # -i
    outbound_cidrs_exclude: CidrList = field(default_factory=CidrList)  # -x (never wildcard)
    outbound_ports: tuple[str, ...] = ()  # -q
    outbound_ports_exclude: tuple[str, ...] = ()  # -o
    kube_virt_interfaces: tuple[str, ...] = ()  # -k
    redirect_dns: bool = False
    capture_all_dns: bool = False
    drop_invalid: bool = False
    dual_stack: bool = False
    owner_groups_include: str = WILDCARD  # ISTIO_OUTBOUND_OWNER_GROUPS, raw: "*", a list, or "" (see spec §9)
    owner_groups_exclude: str = ""  # ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE, raw
    ipv4_loopback_cidr: str = "127.0.0.1/32"  # ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR, used verbatim
    enable_ipv6: bool = False  # derived from the pod's addresses
    dns_servers_v4: tuple[str, ...] = ()  # derived from resolv.conf; validated IPv4 text, used verbatim
    dns_servers_v6: tuple[str, ...] = ()  # validated IPv6 text, used verbatim
    native_nftables: bool = False
    # Inputs only older releases had (spec/istio-iptables-history.md); every later release ignores them.
    dns_capture: bool = False  # env DNS_CAPTURE, 1.6.x only: UDP 53 → Envoy's 15013 (history §4.4)
    dns_conntrack_zone: bool = False  # env ISTIO_META_DNS_CONNTRACK_ZONE, 1.10.3–1.10.x (history §4.9)
    disable_loopback_redirect: bool = False  # env DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK, 1.1–1.4 (§2.2)
    # The istio-iptables release whose rule layout to emit: (major, minor) or (major, minor, patch), a
    # missing patch meaning .0; None = the current layout (1.25 on). Every release from LAYOUT_FLOOR on is
    # modelled (spec/istio-iptables-history.md), patch-level changes included.
    release: tuple[int, ...] | None = None


# The oldest release whose layout ``netsim.capture.iptables.plan`` reproduces (the 1.0 script).
LAYOUT_FLOOR: tuple[int, int] = (1, 0)
# The first release of the current layout (spec/istio-iptables.md), unchanged through today (history §5).
CURRENT_LAYOUT: tuple[int, int] = (1, 25)
# The patch releases whose rules differ from their minor's .0 (spec/istio-iptables-history.md §0: 1.5.2 TPROXY
# conntrack match, 1.5.3 --to-ports, 1.9.6 and 1.10.2 IPv6 -q, 1.10.3 DNS conntrack zones, 1.11.3
# exclude-interfaces, 1.12.9 --drop-invalid); ``netsim.capture.iptables.plan`` tests for exactly these.
LAYOUT_PATCHES: tuple[tuple[int, int, int], ...] = ((1, 5, 2), (1, 5, 3), (1, 9, 6), (1, 10, 2), (1, 10, 3),
                                                    (1, 11, 3), (1, 12, 9))


def layout_releases() -> tuple[tuple[int, int, int], ...]:
    """Every release whose layout may differ from the one before it, oldest first: each minor's .0 from
    ``LAYOUT_FLOOR`` and the patches of ``LAYOUT_PATCHES``; the last (``CURRENT_LAYOUT``) stands for itself
    and every later release."""
    minors = [(1, minor, 0) for minor in range(LAYOUT_FLOOR[1], CURRENT_LAYOUT[1] + 1)]
    return tuple(sorted(minors + [p for p in LAYOUT_PATCHES if p >= LAYOUT_FLOOR]))


__all__ = ["CURRENT_LAYOUT", "LAYOUT_FLOOR", "LAYOUT_PATCHES", "WILDCARD", "CaptureConfig", "CidrList",
           "InterceptionMode", "layout_releases"]
