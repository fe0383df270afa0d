"""Istio ambient mode's capture: the istio-cni node agent's config and a pod's overrides → the rules it
writes into the pod's namespace, the kubelet-probe rules of the node, and the pod's policy routes, exactly
(spec/istio-ambient-capture.md).

Owns: :class:`AmbientConfig` (the agent's settings, §2.1, with a real agent's defaults per release),
:class:`PodOverrides` (§2.2), the in-pod iptables plan (§3, both families) and nftables rules (§4), the
node's probe rules (§6), the policy-routing commands (§7), every release's layout (§11: 1.21 on, the
TPROXY inbound mode of 1.21–1.24 included), Istio's golden text for both backends and the nft set
definitions the node holds. Rules are the sidecar compiler's values (``iptables.PlannedRule``,
``nft.NftRule``, ``iptables.RouteCommand``) so that one renderer serves both (``dryrun.render_restore``,
``nft.render_transaction``, ``netsim.netfilter.render``).
Never does: IO, read options or annotations (``netsim.spec.ambient`` does), trace packets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from netsim.capture.iptables import PlannedRule, RouteCommand, payloads
from netsim.netfilter.matches import DEFAULT_NAMES
from netsim.netfilter.model import Family, RestorePayload, Ruleset

if TYPE_CHECKING:
    from netsim.capture.nft import NftRule  # loaded with the nft backend only: an iptables compile never needs it

# Fixed values (§2.3).
INPOD_MARK = "0x539/0xfff"  # ztunnel's socket mark 1337, as the iptables rules write it
CONN_MARK = "0x111/0xfff"  # the "tproxy" connection mark of connections ztunnel opened into the pod
MARK, MARK_MASK, CONN, CONN_MASK = 0x539, 0xFFF, 0x111, 0xFFF
ROUTE_TABLE = "100"
RULE_PRIORITY = "32764"
ZTUNNEL_OUTBOUND = 15001
ZTUNNEL_INBOUND = 15006  # plaintext inbound
ZTUNNEL_HBONE = 15008
ZTUNNEL_DNS = 15053
ZTUNNEL_PORTS = (ZTUNNEL_OUTBOUND, ZTUNNEL_INBOUND, ZTUNNEL_HBONE, ZTUNNEL_DNS)
PRERT, OUTPUT, POSTRT = "ISTIO_PRERT", "ISTIO_OUTPUT", "ISTIO_POSTRT"
PROBE_SET = "istio-inpod-probes"
PROBE_SETS = {Family.IPV4: "istio-inpod-probes-v4", Family.IPV6: "istio-inpod-probes-v6"}
PROBE_SET_COMMENT = "UUID of the pods that are part of ambient mesh"  # sic (§6.2)
NFT_NAT, NFT_MANGLE, NFT_RAW = "istio-ambient-nat", "istio-ambient-mangle", "istio-ambient-raw"
LOOPBACK = {Family.IPV4: "127.0.0.1/32", Family.IPV6: "::1/128"}
DEFAULT_SNAT_V4 = "169.254.7.127"  # HOST_PROBE_SNAT_IP's default (cni/pkg/nodeagent/options.go)
DEFAULT_SNAT_V6 = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff"  # HOST_PROBE_SNAT_IPV6's default

Release = tuple[int, ...]
AMBIENT_FLOOR: tuple[int, int] = (1, 21)  # in-pod capture began here; 1.18–1.20 redirected on the node (§11)
NFT_SINCE: tuple[int, int] = (1, 28)  # the native nftables backend (§11)
NEWEST: tuple[int, int, int] = (1, 30, 3)  # the newest release tag the spec checked; None means "current"
# Every release whose ambient rules (or golden format) differ from the one before it (§11), oldest first.
AMBIENT_LAYOUTS: tuple[tuple[int, int, int], ...] = (
    (1, 21, 0), (1, 23, 0), (1, 23, 1), (1, 24, 0), (1, 25, 0), (1, 26, 0), (1, 27, 0), (1, 28, 0), (1, 28, 1),
    (1, 29, 0))

# nft chains per table in Istio's fixed declaration order, with base-chain specs (§4.1, §6.2).
CHAINS: dict[str, tuple[tuple[str, str | None], ...]] = {
    NFT_NAT: (("prerouting", "type nat hook prerouting priority -100 ;"),
              ("output", "type nat hook output priority -100 ;"),
              ("postrouting", "type nat hook postrouting priority 100 ;"),
              ("istio-prerouting", None), ("istio-output", None)),
    NFT_MANGLE: (("prerouting", "type filter hook prerouting priority -150 ;"),
                 ("output", "type route hook output priority -150 ;"),
                 ("istio-prerouting", None), ("istio-output", None)),
    NFT_RAW: (("prerouting", "type filter hook prerouting priority -300 ;"),
              ("output", "type filter hook output priority -300 ;"),
              ("istio-prerouting", None), ("istio-output", None)),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AmbientConfig:
    """The node agent's settings (``AmbientConfig``, §2.1) plus the release whose rules to write.

    Build it with :func:`agent_defaults` (a real agent's values for the release), then change fields with
    ``dataclasses.replace``. Addresses are kept as the text Istio prints (validated by ``netsim.spec``).
    ``tproxy_redirection``: 1.23.1–1.24's opt-in ``AMBIENT_TPROXY_REDIRECTION`` (always on before 1.23.1).
    ``kubelet_uid``: what the nft backend's ``/proc`` scan finds (kubelet runs as root on real nodes).
    """

    enable_ipv6: bool = True  # EnableIPv6 (AMBIENT_IPV6, Helm ambient.ipv6)
    redirect_dns: bool = True  # RedirectDNS (AMBIENT_DNS_CAPTURE, Helm ambient.dnsCapture)
    host_probe_snat_address: str = DEFAULT_SNAT_V4  # HostProbeSNATAddress (HOST_PROBE_SNAT_IP)
    host_probe_v6_snat_address: str = DEFAULT_SNAT_V6  # HostProbeV6SNATAddress (HOST_PROBE_SNAT_IPV6)
    native_nftables: bool = False  # NATIVE_NFTABLES (Helm global.nativeNftables, 1.28 on)
    tproxy_redirection: bool = False
    kubelet_uid: int = 0
    release: Release | None = None  # (major, minor[, patch]); None = the current layout


@dataclass(frozen=True, slots=True, kw_only=True)
class PodOverrides:
    """A pod's overrides (``PodLevelOverrides``, §2.2), already parsed from its annotations.

    ``dns_capture``: None = unset (the agent's RedirectDNS decides), True/False = the annotation.
    ``virtual_interfaces``: trimmed, empty items dropped, order kept (``netsim.spec.ambient`` parses them).
    """

    ingress_mode: bool = False  # ambient.istio.io/bypass-inbound-capture
    dns_capture: bool | None = None  # ambient.istio.io/dns-capture
    virtual_interfaces: tuple[str, ...] = ()  # istio.io/reroute-virtual-interfaces


def layout(config: AmbientConfig) -> tuple[int, int, int]:
    """The release as (major, minor, patch), a missing patch .0, None the newest."""
    rel = config.release
    if rel is None:
        return NEWEST
    return (rel[0], rel[1], rel[2] if len(rel) > 2 else 0)


def agent_defaults(release: Release | None = None) -> AmbientConfig:
    """What a node agent of ``release`` runs with when nothing is set (§2.1, §11): IPv6 on from 1.23 (the
    Helm value ``ambient.ipv6``, default true, came then), DNS capture on from 1.25, the product's SNAT
    addresses, iptables unless ``global.nativeNftables``."""
    rel = layout(AmbientConfig(release=release))
    return AmbientConfig(enable_ipv6=rel >= (1, 23), redirect_dns=rel >= (1, 25), release=release)


def tproxy_inbound(config: AmbientConfig) -> bool:
    """Whether inbound is captured by TPROXY in mangle (1.21.0–1.23.0 always; 1.23.1–1.24 opt-in) rather
    than REDIRECT in nat (§11)."""
    rel = layout(config)
    return rel < (1, 23, 1) or (rel < (1, 25) and config.tproxy_redirection)


INGRESS_SINCE, VIFS_SINCE, POD_DNS_SINCE = (1, 24), (1, 25), (1, 26)  # when the agent began reading each override


def ingress_mode(config: AmbientConfig, pod: PodOverrides) -> bool:
    """Whether ingress mode is in effect: the pod's ``bypass-inbound-capture``, read from 1.24 (§2.2, §11)."""
    return pod.ingress_mode and layout(config) >= INGRESS_SINCE


def dns_by_pod(config: AmbientConfig, pod: PodOverrides) -> bool:
    """Whether the pod's ``ambient.istio.io/dns-capture`` decides DNS capture: set, and read (1.26 on, §2.2)."""
    return pod.dns_capture is not None and layout(config) >= POD_DNS_SINCE


def dns_effective(config: AmbientConfig, pod: PodOverrides) -> bool:
    """Effective DNS capture (§2.2): the pod's annotation when set (1.26 on), else RedirectDNS."""
    if pod.dns_capture is not None and dns_by_pod(config, pod):
        return pod.dns_capture
    return config.redirect_dns


def ignored_overrides(config: AmbientConfig, pod: PodOverrides) -> tuple[str, ...]:
    """The pod's overrides this release did not read (§11), each as a sentence."""
    rel, out = layout(config), []
    if pod.ingress_mode and not ingress_mode(config, pod):
        out.append("ambient.istio.io/bypass-inbound-capture is ignored before 1.24 (ingress mode came in 1.24)")
    if pod.virtual_interfaces and rel < VIFS_SINCE:
        out.append("istio.io/reroute-virtual-interfaces is ignored by the ambient agent before 1.25")
    if pod.dns_capture is not None and not dns_by_pod(config, pod):
        out.append("ambient.istio.io/dns-capture is ignored before 1.26 (per-pod DNS capture came in 1.26)")
    return tuple(out)


class _Rules:
    """Collects planned rules per family in emission order."""

    def __init__(self, families: tuple[Family, ...]) -> None:
        self.families = families
        self.rules: list[PlannedRule] = []

    def add(self, table: str, chain: str, *args: str | dict[Family, str], why: str,
            only: Family | None = None, position: int | None = None) -> None:
        for family in self.families:
            if only is not None and family is not only:
                continue
            tokens = tuple(a if isinstance(a, str) else a[family] for a in args)
            self.rules.append(PlannedRule(family=family, table=table, chain=chain, args=tokens, position=position,
                                          why=why))


def _snat(config: AmbientConfig, *, per_family: bool = True) -> dict[Family, str]:
    v6 = config.host_probe_v6_snat_address if per_family else config.host_probe_snat_address
    return {Family.IPV4: config.host_probe_snat_address, Family.IPV6: v6}


def inpod_rules(config: AmbientConfig, pod: PodOverrides = PodOverrides()) -> tuple[PlannedRule, ...]:
    """The in-pod iptables rules (§3 ``AppendInpodRules``), IPv4 then — with EnableIPv6 — IPv6 in each
    step, in emission order, for ``config``'s release (§11)."""
    rel = layout(config)
    r = _Rules((Family.IPV4, Family.IPV6) if config.enable_ipv6 else (Family.IPV4,))
    dns = dns_effective(config, pod)
    new_dns = rel >= (1, 24)  # TCP DNS, the mark exclusion on UDP and the CT zones came in 1.24 (§11)
    ingress = ingress_mode(config, pod)
    tproxy = tproxy_inbound(config)
    vifs = pod.virtual_interfaces if rel >= VIFS_SINCE else ()
    # before 1.23 the in-pod IPv6 rules carried the IPv4 probe address (§11)
    snat = _snat(config, per_family=rel >= (1, 23))
    lo = LOOPBACK

    r.add("mangle", "PREROUTING", "-j", PRERT, why="every arriving packet passes ztunnel's mangle rules (§3 rule 1)")
    r.add("mangle", "OUTPUT", "-j", OUTPUT, why="every local packet passes the connmark restore (§3 rule 2)")
    r.add("nat", "OUTPUT", "-j", OUTPUT, why="every local packet's first one is judged in nat ISTIO_OUTPUT (rule 3)")
    if dns and new_dns:
        r.add("raw", "PREROUTING", "-j", PRERT, why="DNS replies get their conntrack zone in raw (§3 rule 4)")
        r.add("raw", "OUTPUT", "-j", OUTPUT, why="ztunnel's DNS queries get their conntrack zone in raw (rule 5)")
    if not tproxy:
        r.add("nat", "PREROUTING", "-j", PRERT, why="arriving connections are judged in nat ISTIO_PRERT (rule 6)")
    for nic in vifs:
        r.add("nat", PRERT, "-i", nic, "-p", "tcp", "-j", "REDIRECT", "--to-ports", str(ZTUNNEL_OUTBOUND),
              why=f"TCP arriving on virtual interface {nic} is treated as outbound: ztunnel :15001 (§3 rule 7)")
        r.add("nat", PRERT, "-i", nic, "-p", "tcp", "-j", "RETURN",
              why=f"…and nothing else in ISTIO_PRERT applies to {nic} (§3 rule 7)")
    # The 1.24–1.28 ingress mode dropped the connmark rule too (a bug: HBONE inbound timed out; fixed 1.29).
    if not (ingress and rel < (1, 29)):
        r.add("mangle", PRERT, "-m", "mark", "--mark", INPOD_MARK, "-j", "CONNMARK", "--set-xmark", CONN_MARK,
              why="ztunnel (mark 0x539) → app: the connection gets mark 0x111 so the app's replies route back "
              "to ztunnel via table 100 (§3 rule 8, §10)")
    if tproxy:
        if not ingress:
            _tproxy_inbound(r, snat)
    elif not ingress:
        r.add("nat", PRERT, "-s", snat, "-p", "tcp", "-m", "tcp", "-j", "ACCEPT",
              why="kubelet probes (SNATed on the node to the probe address) go straight to the app (§3 rule 9)")
    r.add("nat", OUTPUT, "-d", snat, "-p", "tcp", "-m", "tcp", "-j", "ACCEPT",
          why="the app's TCP to the probe address is not captured (§3 rule 10)")
    if not tproxy and not ingress:
        r.add("nat", PRERT, "!", "-d", lo, "-p", "tcp", "!", "--dport", str(ZTUNNEL_HBONE), "-m", "mark", "!",
              "--mark", INPOD_MARK, "-j", "REDIRECT", "--to-ports", str(ZTUNNEL_INBOUND),
              why="remote → pod TCP (not HBONE 15008, not ztunnel's own) → ztunnel plaintext inbound :15006 "
              "(§3 rule 11)")
    r.add("mangle", OUTPUT, "-m", "connmark", "--mark", CONN_MARK, "-j", "CONNMARK", "--restore-mark", "--nfmask",
          "0xffffffff", "--ctmask", "0xffffffff",
          why="the app's replies on ztunnel's connections get mark 0x111 back: routed to lo (§3 rule 12, §7)")
    if dns and new_dns:
        r.add("nat", OUTPUT, "!", "-o", "lo", "-p", "udp", "-m", "mark", "!", "--mark", INPOD_MARK, "-m", "udp",
              "--dport", "53", "-j", "REDIRECT", "--to-port", str(ZTUNNEL_DNS),
              why="app → any DNS server over UDP (not via lo) → ztunnel's DNS proxy :15053 (§3 rule 13)")
        r.add("nat", OUTPUT, "!", "-d", lo, "-p", "tcp", "--dport", "53", "-m", "mark", "!", "--mark", INPOD_MARK,
              "-j", "REDIRECT", "--to-ports", str(ZTUNNEL_DNS),
              why="app → any non-loopback DNS server over TCP → ztunnel's DNS proxy :15053 (§3 rule 14)")
        r.add("raw", OUTPUT, "-p", "udp", "-m", "mark", "--mark", INPOD_MARK, "-m", "udp", "--dport", "53", "-j",
              "CT", "--zone", "1", why="ztunnel's upstream DNS queries: conntrack zone 1 (§3 rule 15)")
        r.add("raw", PRERT, "-p", "udp", "-m", "mark", "!", "--mark", INPOD_MARK, "-m", "udp", "--sport", "53",
              "-j", "CT", "--zone", "1", why="replies from upstream DNS servers: conntrack zone 1 (§3 rule 16)")
    elif dns:
        r.add("nat", OUTPUT, "!", "-o", "lo", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "REDIRECT",
              "--to-port", str(ZTUNNEL_DNS),
              why="app → any DNS server over UDP (not via lo) → ztunnel :15053; UDP only, no mark test before "
              "1.24 (§11)")
    r.add("nat", OUTPUT, "-p", "tcp", "-m", "mark", "--mark", CONN_MARK, "-j", "ACCEPT",
          why="new TCP marked 0x111 is not captured (§3 rule 17)")
    r.add("nat", OUTPUT, "!", "-d", lo, "-o", "lo", "-j", "ACCEPT",
          why="traffic to a local non-loopback address (the pod's own IP, via lo) is not captured (§3 rule 18)")
    r.add("nat", OUTPUT, "!", "-d", lo, "-p", "tcp", "-m", "mark", "!", "--mark", INPOD_MARK, "-j", "REDIRECT",
          "--to-ports", str(ZTUNNEL_OUTBOUND),
          why="app → any other TCP destination → ztunnel outbound :15001 (§3 rule 19)")
    return tuple(r.rules)


def _tproxy_inbound(r: _Rules, snat: dict[Family, str]) -> None:
    """1.21–1.24's mangle TPROXY inbound (§11; the 1.24.0 ``tproxy`` goldens)."""
    lo = LOOPBACK
    r.add("mangle", PRERT, "-s", snat, "-p", "tcp", "-m", "tcp", "-j", "ACCEPT",
          why="kubelet probes (SNATed on the node to the probe address) go straight to the app (§11, TPROXY)")
    r.add("mangle", PRERT, "!", "-d", lo, "-p", "tcp", "-i", "lo", "-j", "ACCEPT",
          why="local traffic to the pod's own address (via lo) is not captured (§11, TPROXY)")
    r.add("mangle", PRERT, "-p", "tcp", "-m", "tcp", "--dport", str(ZTUNNEL_HBONE), "-m", "mark", "!", "--mark",
          INPOD_MARK, "-j", "TPROXY", "--on-port", str(ZTUNNEL_HBONE), "--tproxy-mark", CONN_MARK,
          why="remote → pod:15008 → ztunnel's HBONE listener, marked 0x111 (§11, TPROXY)")
    r.add("mangle", PRERT, "-p", "tcp", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT",
          why="packets of accepted connections are not diverted again (§11, TPROXY)")
    r.add("mangle", PRERT, "!", "-d", lo, "-p", "tcp", "-m", "mark", "!", "--mark", INPOD_MARK, "-j", "TPROXY",
          "--on-port", str(ZTUNNEL_INBOUND), "--tproxy-mark", CONN_MARK,
          why="remote → pod TCP → ztunnel plaintext inbound :15006 by TPROXY, marked 0x111 (§11)")


def node_rules(config: AmbientConfig) -> tuple[PlannedRule, ...]:
    """The node namespace's kubelet-probe SNAT (§6.1 ``AppendHostRules``), per family."""
    rel = layout(config)
    r = _Rules((Family.IPV4, Family.IPV6) if config.enable_ipv6 else (Family.IPV4,))
    r.add("nat", "POSTROUTING", "-j", POSTRT, position=1 if rel >= (1, 27) else None,
          why="every packet leaving the node passes ISTIO_POSTRT (§6.1 h1; inserted first since 1.27)")
    head = ("-m", "owner", "--socket-exists", "-p", "tcp", "-m", "set", "--match-set")
    if rel < (1, 23):  # one set, one address, the same rule text in both families (§11)
        r.add("nat", POSTRT, *head, PROBE_SET, "dst", "-j", "SNAT", "--to-source", config.host_probe_snat_address,
              why="kubelet's probes to an enrolled pod leave from the probe SNAT address (§6.1, before 1.23)")
        return tuple(r.rules)
    for family, addr in ((Family.IPV4, config.host_probe_snat_address),
                         (Family.IPV6, config.host_probe_v6_snat_address)):
        r.add("nat", POSTRT, *head, PROBE_SETS[family], "dst", "-j", "SNAT", "--to-source", addr, only=family,
              why=f"a node process's TCP to an enrolled pod (set {PROBE_SETS[family]}) leaves from {addr}: "
              "kubelet probes are told apart in the pod (§6.1 h2/h3)")
    return tuple(r.rules)


class _Nft:
    def __init__(self, ipv6: bool) -> None:
        self.ipv6 = ipv6
        self.rules: list[NftRule] = []

    def add(self, table: str, chain: str, *parts: str, why: str, v6: bool = False) -> None:
        from netsim.capture.nft import NftRule

        if v6 and not self.ipv6:
            return
        self.rules.append(NftRule(table=table, chain=chain, rule=" ".join(parts), why=why))


def inpod_nft_rules(config: AmbientConfig, pod: PodOverrides = PodOverrides()) -> tuple[NftRule, ...]:
    """The in-pod nftables rules (§4), in emission order; IPv6-only rules only with EnableIPv6 (1.28.0
    emitted them regardless, fixed in 1.28.1)."""
    rel = layout(config)
    _need_nft(rel)
    p = _Nft(config.enable_ipv6 or rel < (1, 28, 1))
    dns = dns_effective(config, pod)
    ingress = ingress_mode(config, pod)  # nft came in 1.28: the annotation is always read
    s4, s6 = config.host_probe_snat_address, config.host_probe_v6_snat_address
    not_mark = "mark and 0xfff != 0x539"
    p.add(NFT_NAT, "output", "jump istio-output", why="every local packet is judged in istio-output (§4 n1)")
    p.add(NFT_NAT, "prerouting", "jump istio-prerouting", why="arriving connections: istio-prerouting (§4 n2)")
    for nic in pod.virtual_interfaces:
        p.add(NFT_NAT, "istio-prerouting", f"iifname {nic} meta l4proto tcp counter redirect to :{ZTUNNEL_OUTBOUND}",
              why=f"TCP arriving on virtual interface {nic} → ztunnel outbound :15001 (§4 n3)")
        p.add(NFT_NAT, "istio-prerouting", f"iifname {nic} meta l4proto tcp counter return",
              why=f"…and nothing else applies to {nic} (§4 n3)")
    if not ingress:
        p.add(NFT_NAT, "istio-prerouting", f"meta l4proto tcp ip saddr {s4} counter accept",
              why="kubelet probes from the probe address go straight to the app (§4 n4)")
        p.add(NFT_NAT, "istio-prerouting", f"meta l4proto tcp ip6 saddr {s6} counter accept", v6=True,
              why="kubelet probes from the IPv6 probe address go straight to the app (§4 n4)")
    p.add(NFT_NAT, "istio-output", f"meta l4proto tcp ip daddr {s4} counter accept",
          why="the app's TCP to the probe address is not captured (§4 n5)")
    p.add(NFT_NAT, "istio-output", f"meta l4proto tcp ip6 daddr {s6} counter accept", v6=True,
          why="the app's TCP to the IPv6 probe address is not captured (§4 n5)")
    if not ingress:
        # the IPv4 rule's double space is Istio's (a fragment ending in a space, §4)
        p.add(NFT_NAT, "istio-prerouting", f"ip daddr != 127.0.0.1/32 tcp dport != {ZTUNNEL_HBONE} mark and 0xfff "
              f" != 0x539 counter redirect to :{ZTUNNEL_INBOUND}",
              why="remote → pod TCP (not 15008, not ztunnel's) → ztunnel plaintext inbound :15006 (§4 n6)")
        p.add(NFT_NAT, "istio-prerouting", f"ip6 daddr != ::1/128 tcp dport != {ZTUNNEL_HBONE} {not_mark} counter "
              f"redirect to :{ZTUNNEL_INBOUND}", v6=True,
              why="remote → pod TCP over IPv6 → ztunnel plaintext inbound :15006 (§4 n6)")
    if dns:
        p.add(NFT_NAT, "istio-output", f"oifname != lo {not_mark} udp dport 53 counter redirect to :{ZTUNNEL_DNS}",
              why="app → any DNS server over UDP (not via lo; both families) → ztunnel :15053 (§4 n7)")
        p.add(NFT_NAT, "istio-output", f"ip daddr != 127.0.0.1/32 tcp dport 53 {not_mark} counter redirect to "
              f":{ZTUNNEL_DNS}", why="app → non-loopback DNS server over TCP → ztunnel :15053 (§4 n7)")
        p.add(NFT_NAT, "istio-output", f"ip6 daddr != ::1/128 tcp dport 53 {not_mark} counter redirect to "
              f":{ZTUNNEL_DNS}", v6=True, why="the same over IPv6 (§4 n7)")
    p.add(NFT_NAT, "istio-output", "meta l4proto tcp mark and 0xfff == 0x111 counter accept",
          why="new TCP marked 0x111 is not captured (§4 n8)")
    p.add(NFT_NAT, "istio-output", "oifname lo ip daddr != 127.0.0.1/32 counter accept",
          why="traffic to a local non-loopback address (via lo) is not captured (§4 n9)")
    p.add(NFT_NAT, "istio-output", "oifname lo ip6 daddr != ::1/128 counter accept", v6=True,
          why="the same over IPv6 (§4 n9)")
    p.add(NFT_NAT, "istio-output", f"meta l4proto tcp ip daddr != 127.0.0.1/32 {not_mark} counter redirect to "
          f":{ZTUNNEL_OUTBOUND}", why="app → any other TCP destination → ztunnel outbound :15001 (§4 n10)")
    p.add(NFT_NAT, "istio-output", f"meta l4proto tcp ip6 daddr != ::1/128 {not_mark} counter redirect to "
          f":{ZTUNNEL_OUTBOUND}", v6=True, why="the same over IPv6 (§4 n10)")
    p.add(NFT_MANGLE, "prerouting", "jump istio-prerouting", why="every arriving packet (§4 m1)")
    p.add(NFT_MANGLE, "output", "jump istio-output", why="every local packet (§4 m2)")
    if not (ingress and rel < (1, 29)):
        p.add(NFT_MANGLE, "istio-prerouting", "meta mark & 0xfff == 0x539 counter ct mark set ct mark & 0xfffff000 | "
              " 0x111", why="ztunnel → app: connection mark 0x111 for the return route (§4 m3, §10)")
    p.add(NFT_MANGLE, "istio-output", "ct mark and 0xfff == 0x111 counter meta mark set ct mark",
          why="the app's replies on ztunnel's connections get mark 0x111: routed to lo (§4 m4, §7)")
    if dns:
        p.add(NFT_RAW, "prerouting", "jump istio-prerouting", why="DNS replies' conntrack zone (§4 r1)")
        p.add(NFT_RAW, "output", "jump istio-output", why="ztunnel's DNS queries' conntrack zone (§4 r2)")
        p.add(NFT_RAW, "istio-output", "udp dport 53 meta mark and 0xfff == 0x539 counter ct zone set 1",
              why="ztunnel's upstream DNS queries: conntrack zone 1 (§4 r3)")
        p.add(NFT_RAW, "istio-prerouting", "udp sport 53 meta mark and 0xfff != 0x539 counter ct zone set 1",
              why="replies from upstream DNS servers: conntrack zone 1 (§4 r4)")
    return tuple(p.rules)


def node_nft_rules(config: AmbientConfig) -> tuple[NftRule, ...]:
    """The node's kubelet-probe SNAT with the nft backend (§6.2): kubelet's UID instead of --socket-exists."""
    _need_nft(layout(config))
    p = _Nft(config.enable_ipv6)
    uid = config.kubelet_uid
    p.add(NFT_NAT, "postrouting", f"meta l4proto tcp skuid {uid} ip daddr @{PROBE_SETS[Family.IPV4]} counter snat to "
          f"{config.host_probe_snat_address}", why="kubelet's TCP to an enrolled pod leaves from the probe address "
          "(§6.2)")
    p.add(NFT_NAT, "postrouting", f"meta l4proto tcp skuid {uid} ip6 daddr @{PROBE_SETS[Family.IPV6]} counter snat "
          f"to {config.host_probe_v6_snat_address}", v6=True, why="the same over IPv6 (§6.2)")
    return tuple(p.rules)


def node_nft_sets(config: AmbientConfig) -> str:
    """The node's probe sets as ``nft -f`` text (the agent creates them apart from the rule transaction,
    §6.2; a rule naming a missing set cannot load)."""
    families = (Family.IPV4, Family.IPV6) if config.enable_ipv6 else (Family.IPV4,)
    kinds = {Family.IPV4: "ipv4_addr", Family.IPV6: "ipv6_addr"}
    return f"add table inet {NFT_NAT}\n" + "".join(
        f'add set inet {NFT_NAT} {PROBE_SETS[f]} {{ type {kinds[f]} ; comment "{PROBE_SET_COMMENT}" ; }}\n'
        for f in families)


def _need_nft(rel: tuple[int, int, int]) -> None:
    if rel < NFT_SINCE:
        raise ValueError(f"ambient's native nftables backend came in 1.28 (release {'.'.join(map(str, rel))})")


def route_commands(config: AmbientConfig) -> tuple[RouteCommand, ...]:
    """The in-pod policy routing (§7), as ``ip`` argv, in the order the agent applies them (iptables:
    before the rules; nft: after): table 100's local routes, then the fwmark rule, per family."""
    families = (("-4", "0.0.0.0/0"), ("-6", "::/0")) if config.enable_ipv6 else (("-4", "0.0.0.0/0"),)
    cmds = [RouteCommand(("ip", fam, "route", "replace", "local", dst, "dev", "lo", "scope", "host", "table",
                          ROUTE_TABLE), False,
                         f"table {ROUTE_TABLE} delivers every destination locally, via lo (§7; IPv6 only when the "
                         "pod's lo has IPv6)")
            for fam, dst in families]
    cmds += [RouteCommand(("ip", fam, "rule", "add", "fwmark", CONN_MARK, "lookup", ROUTE_TABLE, "pref",
                           RULE_PRIORITY), True,
                          f"packets marked 0x111 (the app's replies to ztunnel) use table {ROUTE_TABLE} (§7)")
             for fam, _ in families]
    return tuple(cmds)


def render_golden(config: AmbientConfig, rules: tuple[PlannedRule, ...]) -> str:
    """Istio's iptables golden text for ``rules`` (§3.2): from 1.25 the state check's two save commands,
    then the IPv4 restore input, then (IPv6 on) the IPv6 one, joined with newlines, no trailing newline.
    Before 1.24 Istio's tests recorded single iptables commands: ValueError."""
    from netsim.capture.dryrun import render_restore

    rel = layout(config)
    if rel < (1, 24):
        raise ValueError("before 1.24 Istio's ambient goldens were single iptables commands, not restore input")
    lines = ["iptables-save", "ip6tables-save"] if rel >= (1, 25) else []
    for family in (Family.IPV4, Family.IPV6):
        lines += render_restore([r for r in rules if r.family is family]).splitlines()
    return "\n".join(lines)


def render_nft(rules: tuple[NftRule, ...]) -> str:
    """Istio's nftables transaction for ``rules`` (§4.1; the nft golden format)."""
    from netsim.capture.nft import render_transaction

    return render_transaction(rules, CHAINS)


@dataclass(frozen=True, slots=True, kw_only=True)
class AmbientCompiled:
    """What the agent writes for one pod (or, ``node``, into the node namespace) with one config.

    ``rules``: the iptables plan; ``nft_rules``: the nftables rules when ``native_nftables``; ``routes``: the
    in-pod policy routing (none for the node); ``notes``: overrides this release ignored.
    """

    config: AmbientConfig
    pod: PodOverrides
    node: bool
    rules: tuple[PlannedRule, ...]
    nft_rules: tuple[NftRule, ...]
    routes: tuple[RouteCommand, ...]
    notes: tuple[str, ...]

    @property
    def backend(self) -> str:
        return "nft" if self.config.native_nftables else "iptables"

    @property
    def dns(self) -> bool:
        return not self.node and dns_effective(self.config, self.pod)

    def payloads(self) -> tuple[RestorePayload, RestorePayload | None]:
        """The per-family ``iptables-restore --noflush`` inputs (IPv6 None when EnableIPv6 is off).
        RulesetError when iptables would refuse a rule (before 1.23, an IPv4 address in an IPv6 rule)."""
        return payloads(self.rules, ipv6=self.config.enable_ipv6, names=DEFAULT_NAMES)

    def rulesets(self, payloads: tuple[RestorePayload, RestorePayload | None] | None = None
                 ) -> tuple[Ruleset, Ruleset | None]:
        """What the kernel holds after loading :meth:`payloads` (``payloads``, when the caller has them
        already) into an empty namespace."""
        from netsim.netfilter.parse import apply_payload

        v4, v6 = payloads if payloads is not None else self.payloads()
        return apply_payload(v4), apply_payload(v6) if v6 is not None else None

    def golden(self) -> str:
        """Istio's golden text of this backend (iptables: :func:`render_golden`; nft: the transaction)."""
        return render_nft(self.nft_rules) if self.config.native_nftables else render_golden(self.config, self.rules)

    def nft_text(self) -> str:
        """The nft transaction (``nft -f`` input); for the node, preceded by its probe sets' definitions."""
        return (node_nft_sets(self.config) if self.node else "") + render_nft(self.nft_rules)

    def nft_listing(self) -> str:
        """What ``nft list ruleset`` prints after :meth:`nft_text` is loaded into an empty namespace."""
        from netsim.netfilter.nft import parse_nft
        from netsim.netfilter.nft.listing import render_listing

        return render_listing(parse_nft(self.nft_text()), {name: PROBE_SET_COMMENT for name in PROBE_SETS.values()})


def compile_ambient(config: AmbientConfig, pod: PodOverrides = PodOverrides(), *,
                    node: bool = False) -> AmbientCompiled:
    """Compile ``config`` for one pod (or ``node``); ValueError when the release has no ambient capture
    (before 1.21) or no nftables backend (before 1.28) and ``native_nftables`` asks for it."""
    rel = layout(config)
    if rel < (*AMBIENT_FLOOR, 0):
        raise ValueError("ambient mode captured in the pod from 1.21 (1.18–1.20 redirected on the node, "
                         "which netsim does not model)")
    if config.tproxy_redirection and not (1, 23, 1) <= rel < (1, 25):
        raise ValueError("TPROXY inbound redirection is an option of 1.23.1–1.24 only (removed in 1.25; "
                         "always on before 1.23.1)")
    notes = () if node else ignored_overrides(config, pod)
    if node:
        rules = node_rules(config)
        nft = node_nft_rules(config) if config.native_nftables else ()
        routes: tuple[RouteCommand, ...] = ()
    else:
        rules = inpod_rules(config, pod)
        nft = inpod_nft_rules(config, pod) if config.native_nftables else ()
        routes = route_commands(config)
    return AmbientCompiled(config=config, pod=pod, node=node, rules=rules, nft_rules=nft, routes=routes, notes=notes)


__all__ = [
    "AMBIENT_FLOOR",
    "AMBIENT_LAYOUTS",
    "CHAINS",
    "CONN_MARK",
    "DEFAULT_SNAT_V4",
    "DEFAULT_SNAT_V6",
    "INPOD_MARK",
    "NFT_SINCE",
    "PROBE_SETS",
    "ZTUNNEL_DNS",
    "ZTUNNEL_HBONE",
    "ZTUNNEL_INBOUND",
    "ZTUNNEL_OUTBOUND",
    "ZTUNNEL_PORTS",
    "AmbientCompiled",
    "AmbientConfig",
    "PodOverrides",
    "agent_defaults",
    "compile_ambient",
    "dns_by_pod",
    "dns_effective",
    "ignored_overrides",
    "ingress_mode",
    "inpod_nft_rules",
    "inpod_rules",
    "layout",
    "node_nft_rules",
    "node_nft_sets",
    "node_rules",
    "render_golden",
    "render_nft",
    "route_commands",
    "tproxy_inbound",
]
