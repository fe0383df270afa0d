"""CaptureConfig → Istio's native nftables transaction (``--native-nftables``; spec/istio-iptables.md §12).

Owns: the nftables rules Istio's nftables backend emits, in its order and spelling (every rule with
``counter``), and the transaction text it hands to ``nft -f``: per used table ``add table`` + ``flush
table``, the chains that have rules in a fixed order, then the rules, with an insert past the end of its
chain turned into an append. Never does: IO, or anything for iptables (``iptables.py``).

The decisions are the iptables backend's (§4); the differences are §12's: one ``inet`` table per
purpose for both families, IPv4 and family-neutral rules always emitted, IPv6-only rules only with
IPv6 on, TCP-only invalid drop, single DNS/raw jumps, and a one-rule TPROXY mark-and-accept.
"""

from __future__ import annotations

from dataclasses import dataclass

from netsim.capture.config import WILDCARD, CaptureConfig, InterceptionMode
from netsim.capture.iptables import (
    AGENT_DNS_PORT,
    DNS_PORT,
    IPV6_LOOPBACK,
    OUTBOUND_MARK,
    PASSTHROUGH_SOURCE,
    dns_capture_effective,
    owner_group_filter,
)
from netsim.netfilter.model import Family

NFT_SINCE = (1, 27)  # the first release with --native-nftables (spec/istio-iptables-history.md §5)


def nft_refusal(release: tuple[int, ...] | None, label: str, option: str) -> str | None:
    """Why ``option`` cannot ask for the nftables rules of ``release`` (``label`` names it), or None: releases
    before 1.27 wrote iptables rules only."""
    if release is not None and tuple(release) < NFT_SINCE:
        return f"{option}: {label} wrote no nftables rules (istio-iptables' nftables backend came in 1.27)"
    return None

NAT = "istio-proxy-nat"
MANGLE = "istio-proxy-mangle"
RAW = "istio-proxy-raw"

# Per table, the chains Istio declares, in its fixed order, with the base-chain spec where there is one.
CHAINS: dict[str, tuple[tuple[str, str | None], ...]] = {
    NAT: (
        ("prerouting", "type nat hook prerouting priority -100 ;"),
        ("output", "type nat hook output priority -100 ;"),
        ("istio-inbound", None),
        ("istio-redirect", None),
        ("istio-in-redirect", None),
        ("istio-output", None),
        ("istio-output-dns", None),
    ),
    MANGLE: (
        ("prerouting", "type filter hook prerouting priority -150 ;"),
        ("output", "type route hook output priority -150 ;"),
        ("istio-divert", None),
        ("istio-tproxy", None),
        ("istio-inbound", None),
        ("istio-drop", None),
    ),
    RAW: (
        ("prerouting", "type filter hook prerouting priority -300 ;"),
        ("output", "type filter hook output priority -300 ;"),
        ("istio-inbound", None),
        ("istio-output-dns", None),
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class NftRule:
    """One rule as Istio's nftables builder records it: ``index`` is nft's 0-based insert position."""

    table: str
    chain: str
    rule: str
    index: int | None = None
    why: str = ""


class _Plan:
    def __init__(self, ipv6: bool) -> None:
        self.ipv6 = ipv6
        self.rules: list[NftRule] = []

    def add(self, table: str, chain: str, *parts: str, why: str, index: int | None = None, v6: bool = False) -> None:
        """``v6``: an IPv6-only rule (Istio's ``*V6RuleIfSupported``), dropped unless IPv6 is on."""
        if v6 and not self.ipv6:
            return
        self.rules.append(NftRule(table=table, chain=chain, rule=" ".join(parts), index=index, why=why))


def nft_rules(config: CaptureConfig) -> tuple[NftRule, ...]:
    """Every nftables rule Istio would emit for ``config``, in emission order (§12, mirroring §4)."""
    p = _Plan(config.enable_ipv6)
    tproxy = config.mode is InterceptionMode.TPROXY
    dns = dns_capture_effective(config)
    lo4 = config.ipv4_loopback_cidr
    tun = config.inbound_tunnel_port
    mark = config.tproxy_mark
    pt4, pt6 = PASSTHROUGH_SOURCE[Family.IPV4], PASSTHROUGH_SOURCE[Family.IPV6]

    # Excluded interfaces (§8), then kube virt interfaces (inserted at the head, §4 step 2).
    for nic in config.exclude_interfaces:
        p.add(NAT, "prerouting", "iifname", nic, "counter", "return", why=f"inbound via excluded {nic} (§8)")
        p.add(NAT, "output", "oifname", nic, "counter", "return", why=f"outbound via excluded {nic} (§8)")
    if tproxy:
        for nic in config.exclude_interfaces:
            p.add(MANGLE, "prerouting", "iifname", nic, "counter", "return", why=f"TPROXY: excluded {nic} (§6, §8)")
            p.add(MANGLE, "output", "oifname", nic, "counter", "return", why=f"TPROXY: excluded {nic} (§6, §8)")
    for nic in config.kube_virt_interfaces:
        p.add(NAT, "prerouting", "iifname", nic, "counter", "return", index=0,
              why=f"VM traffic from {nic} skips inbound capture (§8)")

    if config.drop_invalid:
        p.add(MANGLE, "prerouting", "meta l4proto tcp", "ct state", "invalid", "counter", "jump", "istio-drop",
              why="conntrack-invalid TCP → istio-drop (TCP only in nftables, §12)")
        p.add(MANGLE, "istio-drop", "counter", "drop", why="drop instead of resetting the connection (§4 step 3)")

    p.add(NAT, "istio-inbound", "meta l4proto tcp", "tcp dport", tun, "counter", "return",
          why=f"HBONE tunnel port {tun} is never redirected inbound (§10)")
    p.add(NAT, "istio-redirect", "meta l4proto tcp", "counter", "redirect to", f":{config.proxy_port}",
          why="captured outbound → Envoy's outbound listener (§4 step 4)")
    p.add(NAT, "istio-in-redirect", "meta l4proto tcp", "counter", "redirect to", f":{config.inbound_capture_port}",
          why="captured inbound → Envoy's inbound listener (§4 step 4)")

    _inbound(p, config, lo4, mark)

    p.add(NAT, "output", "counter", "jump", "istio-output", why="every outbound packet is judged in istio-output")
    for port in config.outbound_ports_exclude:
        p.add(NAT, "istio-output", "tcp dport", port, "counter", "return", why=f"outbound TCP port {port} excluded")
        p.add(NAT, "istio-output", "udp dport", port, "counter", "return", why=f"outbound UDP port {port} excluded")
    p.add(NAT, "istio-output", "oifname", "lo", "ip saddr", pt4, "counter", "return",
          why="Envoy inbound passthrough (127.0.0.6) → app: not captured (§4 step 8)")
    p.add(NAT, "istio-output", "oifname", "lo", "ip6 saddr", pt6, "counter", "return", v6=True,
          why="Envoy inbound passthrough (::6) → app: not captured (§4 step 8)")

    loopback_included = config.outbound_cidrs.has_loopback
    for key, ids in (("skuid", config.proxy_uid), ("skgid", config.proxy_gid)):
        for owner in ids:
            ports = f"{{ {DNS_PORT}, {tun} }}" if dns and key == "skuid" else tun
            for family, (daddr, lo) in enumerate((("ip daddr", lo4), ("ip6 daddr", IPV6_LOOPBACK))):
                p.add(NAT, "istio-output", "oifname", "lo", "meta l4proto tcp", daddr, "!=", lo, "tcp dport", "!=",
                      ports, key, owner, "counter", "jump", "istio-in-redirect", v6=family == 1,
                      why="app → VIP → Envoy out → Envoy in (pod IP over lo) → app (§4 steps 9-10)")
            if not loopback_included:
                if dns:
                    p.add(NAT, "istio-output", "oifname", "lo", "meta l4proto tcp", "tcp dport", "!=", DNS_PORT, key,
                          "!=", owner, "counter", "return",
                          why="app → app over lo not captured, DNS excepted (§4 steps 9-10, §7)")
                else:
                    p.add(NAT, "istio-output", "oifname", "lo", key, "!=", owner, "counter", "return",
                          why="app → app over lo is not captured (§4 steps 9-10)")
            p.add(NAT, "istio-output", key, owner, "counter", "return", why="the proxy's own traffic: never captured")

    except_mode, groups = owner_group_filter(config)
    if except_mode:
        for group in groups:
            p.add(NAT, "istio-output", "skgid", group, "counter", "return", why=f"group {group} excluded (§9)")
    else:
        matches = [t for group in groups for t in ("skgid", "!=", group)]
        p.add(NAT, "istio-output", *matches, "counter", "return", why="only the listed groups are captured (§9)")

    if dns:
        _dns(p, config)

    p.add(NAT, "istio-output", "ip daddr", lo4, "counter", "return", why="app → loopback: not captured (§4 step 13)")
    p.add(NAT, "istio-output", "ip6 daddr", IPV6_LOOPBACK, "counter", "return", v6=True,
          why="app → ::1: not captured (§4 step 13)")
    for cidr in config.outbound_cidrs_exclude.v4:
        p.add(NAT, "istio-output", "ip daddr", str(cidr), "counter", "return", why=f"{cidr} excluded (-x)")
    for cidr6 in config.outbound_cidrs_exclude.v6:
        p.add(NAT, "istio-output", "ip6 daddr", str(cidr6), "counter", "return", v6=True, why=f"{cidr6} excluded (-x)")
    for port in config.outbound_ports:
        p.add(NAT, "istio-output", "tcp dport", port, "counter", "jump", "istio-redirect",
              why=f"outbound TCP port {port} captured whatever the destination (-q)")

    include = config.outbound_cidrs
    if include.wildcard:
        # One family-neutral rule: it also captures IPv6 when IPv6 detection is off (§12).
        p.add(NAT, "istio-output", "counter", "jump", "istio-redirect", why="app → anywhere else → Envoy (-i '*')")
        for nic in config.kube_virt_interfaces:
            p.add(NAT, "prerouting", "iifname", nic, "counter", "jump", "istio-redirect", index=0,
                  why=f"VM behind {nic} → anywhere → Envoy outbound (§8)")
    else:
        for daddr, cidrs, v6 in (("ip daddr", include.v4, False), ("ip6 daddr", include.v6, True)):
            for c in cidrs:
                for nic in config.kube_virt_interfaces:
                    p.add(NAT, "prerouting", "iifname", nic, daddr, str(c), "counter", "jump", "istio-redirect",
                          index=0, v6=v6, why=f"VM behind {nic} → {c} → Envoy outbound (§8)")
                p.add(NAT, "istio-output", daddr, str(c), "counter", "jump", "istio-redirect", v6=v6,
                      why=f"app → {c} → Envoy outbound (-i)")

    if tproxy:
        _tproxy_tail(p, config, lo4, mark)
    return tuple(p.rules)


def _inbound(p: _Plan, config: CaptureConfig, lo4: str, mark: str) -> None:
    if not config.inbound_ports:
        return
    wildcard = config.inbound_ports == (WILDCARD,)
    if config.mode is InterceptionMode.TPROXY:
        p.add(MANGLE, "istio-divert", "counter", "meta mark set", mark, why=f"established inbound: mark {mark} (§6)")
        p.add(MANGLE, "istio-divert", "counter", "accept", why="…and accept (§6)")
        for daddr, lo, family, v6 in (("ip daddr", lo4, "ip", False), ("ip6 daddr", IPV6_LOOPBACK, "ip6", True)):
            p.add(MANGLE, "istio-tproxy", "meta l4proto tcp", daddr, "!=", lo, f"tproxy {family} to",
                  f":{config.inbound_capture_port}", "meta mark set", mark, "counter", "accept", v6=v6,
                  why="new inbound TCP → Envoy's transparent listener, marked and accepted in one rule (§12)")
        p.add(MANGLE, "prerouting", "meta l4proto tcp", "counter", "jump", "istio-inbound", why="inbound TCP (§6)")
        if wildcard:
            for port in config.inbound_ports_exclude:
                p.add(MANGLE, "istio-inbound", "meta l4proto tcp", "tcp dport", port, "counter", "return",
                      why=f"inbound port {port} excluded (-d)")
            p.add(MANGLE, "istio-inbound", "meta l4proto tcp", "ct state", "related,established", "counter",
                  "jump", "istio-divert", why="accepted connection → istio-divert (§6)")
            p.add(MANGLE, "istio-inbound", "meta l4proto tcp", "counter", "jump", "istio-tproxy",
                  why="new connection → TPROXY (§6)")
            return
        for port in config.inbound_ports:
            p.add(MANGLE, "istio-inbound", "meta l4proto tcp", "ct state", "related,established", "tcp dport", port,
                  "counter", "jump", "istio-divert", why=f"accepted connection to {port} → istio-divert (§6)")
            p.add(MANGLE, "istio-inbound", "meta l4proto tcp", "tcp dport", port, "counter", "jump", "istio-tproxy",
                  why=f"new connection to {port} → TPROXY (§6)")
        return
    p.add(NAT, "prerouting", "meta l4proto tcp", "counter", "jump", "istio-inbound", why="inbound TCP (§4 step 5)")
    if wildcard:
        for port in config.inbound_ports_exclude:
            p.add(NAT, "istio-inbound", "meta l4proto tcp", "tcp dport", port, "counter", "return",
                  why=f"inbound port {port} excluded (-d)")
        p.add(NAT, "istio-inbound", "meta l4proto tcp", "counter", "jump", "istio-in-redirect",
              why="client → app on any other port → Envoy inbound")
        return
    for port in config.inbound_ports:
        p.add(NAT, "istio-inbound", "meta l4proto tcp", "tcp dport", port, "counter", "jump", "istio-in-redirect",
              why=f"client → app port {port} → Envoy inbound")


def _dns(p: _Plan, config: CaptureConfig) -> None:
    all_dns, v4, v6 = config.capture_all_dns, config.dns_servers_v4, config.dns_servers_v6
    to = f":{AGENT_DNS_PORT}"
    p.add(RAW, "output", "counter", "jump", "istio-output-dns", why="DNS conntrack zones are set in raw (§7)")
    if all_dns or v4 or v6:
        p.add(NAT, "istio-output", "counter", "jump", "istio-output-dns", why="one DNS jump for both families (§12)")
    for proto in ("tcp", "udp"):
        if all_dns:
            l4 = ("meta l4proto tcp",) if proto == "tcp" else ()
            p.add(NAT, "istio-output-dns", *l4, f"{proto} dport", DNS_PORT, "counter", "redirect", "to", to,
                  why=f"any {proto.upper()} DNS → the agent (capture-all, §7)")
            continue
        for server in v4:
            p.add(NAT, "istio-output-dns", "ip daddr", f"{server}/32", f"{proto} dport", DNS_PORT, "counter",
                  "redirect", "to", to, why=f"{proto.upper()} DNS to {server} → the agent (§7)")
        for server in v6:
            p.add(NAT, "istio-output-dns", "ip6 daddr", f"{server}/128", f"{proto} dport", DNS_PORT, "counter",
                  "redirect", "to", to, v6=True, why=f"{proto.upper()} DNS to {server} → the agent (§7)")
    for key, ids in (("skuid", config.proxy_uid), ("skgid", config.proxy_gid)):
        for owner in ids:
            p.add(RAW, "istio-output-dns", "udp dport", DNS_PORT, "meta", key, owner, "counter", "ct", "zone", "set",
                  "1", why="agent → upstream resolver: zone 1 (§7)")
            p.add(RAW, "istio-output-dns", "udp sport", AGENT_DNS_PORT, "meta", key, owner, "counter", "ct", "zone",
                  "set", "2", why="agent → app answers: zone 2 (§7)")
    if all_dns:
        p.add(RAW, "prerouting", "counter", "jump", "istio-inbound", why="resolver replies get zone 1 (§7)")
        p.add(RAW, "istio-output-dns", "udp dport", DNS_PORT, "counter", "ct", "zone", "set", "2",
              why="app → any resolver: zone 2 (§7)")
        p.add(RAW, "istio-inbound", "udp sport", DNS_PORT, "counter", "ct", "zone", "set", "1",
              why="any resolver → agent: zone 1 (§7)")
        return
    if v4 or v6:
        p.add(RAW, "prerouting", "counter", "jump", "istio-inbound", why="resolver replies get zone 1 (§7)")
    for family, servers, bits, v6only in (("ip", v4, "/32", False), ("ip6", v6, "/128", True)):
        for server in servers:
            p.add(RAW, "istio-output-dns", "udp dport", DNS_PORT, f"{family} daddr", server + bits, "counter", "ct",
                  "zone", "set", "2", v6=v6only, why=f"app → resolver {server}: zone 2 (§7)")
            p.add(RAW, "istio-inbound", "udp sport", DNS_PORT, f"{family} saddr", server + bits, "counter", "ct",
                  "zone", "set", "1", v6=v6only, why=f"resolver {server} → agent: zone 1 (§7)")


def _tproxy_tail(p: _Plan, config: CaptureConfig, lo4: str, mark: str) -> None:
    p.add(MANGLE, "prerouting", "meta l4proto tcp", "mark", mark, "counter", "ct mark set mark",
          why=f"Envoy → app (mark {mark}) saved on the connection (§6)")
    p.add(MANGLE, "output", "oifname", "lo", "meta l4proto tcp", "mark", mark, "counter", "return",
          why=f"already marked {mark}: do not mark again (§6)")
    for key, ids in (("skuid", config.proxy_uid), ("skgid", config.proxy_gid)):
        for owner in ids:
            for daddr, lo, v6 in (("ip daddr", lo4, False), ("ip6 daddr", IPV6_LOOPBACK, True)):
                p.add(MANGLE, "output", "oifname", "lo", "meta l4proto tcp", daddr, "!=", lo, key, owner, "counter",
                      "meta mark set", OUTBOUND_MARK, v6=v6,
                      why=f"Envoy → pod IP over lo: mark {OUTBOUND_MARK} so inbound captures it (§6)")
    p.add(MANGLE, "output", "meta l4proto tcp", "ct", "mark", mark, "counter", "meta mark set", "ct", "mark",
          why=f"replies on Envoy's spoofed connections get mark {mark} back (§6)")
    p.add(MANGLE, "istio-inbound", "meta l4proto tcp", "mark", mark, "counter", "return", index=0,
          why=f"marked {mark}: never re-captured (§6)")
    p.add(MANGLE, "istio-inbound", "iifname", "lo", "meta l4proto tcp", "ip saddr", PASSTHROUGH_SOURCE[Family.IPV4],
          "counter", "return", index=1, why="Envoy → app from 127.0.0.6: not captured (§6)")
    p.add(MANGLE, "istio-inbound", "iifname", "lo", "meta l4proto tcp", "ip6 saddr", PASSTHROUGH_SOURCE[Family.IPV6],
          "counter", "return", index=1, v6=True, why="Envoy → app from ::6: not captured (§6)")
    p.add(MANGLE, "istio-inbound", "iifname", "lo", "meta l4proto tcp", "mark", "!=", OUTBOUND_MARK, "counter",
          "return", index=2, why=f"app → app over lo (not marked {OUTBOUND_MARK}): not captured (§6)")


def render_transaction(rules: tuple[NftRule, ...],
                       chains_of: dict[str, tuple[tuple[str, str | None], ...]] | None = None) -> str:
    """The knftables transaction text for ``rules`` (valid ``nft -f`` input), one operation a line.
    ``chains_of``: per table, its chains in declaration order with their base-chain specs (default: the
    sidecar's :data:`CHAINS`; ambient passes its own, ``ambient.CHAINS``)."""
    lines: list[str] = []
    for table, chains in (CHAINS if chains_of is None else chains_of).items():
        mine = [r for r in rules if r.table == table]
        used = {r.chain for r in mine}
        if not used:
            continue  # tables without rules are not touched at all (§12)
        lines += [f"add table inet {table}", f"flush table inet {table}"]
        # a chain only jumped to is declared too (ambient's ingress mode: an empty istio-prerouting)
        targets = {r.rule.rsplit(" ", 1)[1] for r in mine if r.rule.rsplit(" ", 2)[-2:-1] == ["jump"]}
        for chain, spec in chains:
            if chain in used or chain in targets:
                lines.append(f"add chain inet {table} {chain}" + (f" {{ {spec} }}" if spec else ""))
        count: dict[str, int] = {}
        for r in mine:
            n = count.get(r.chain, 0)
            # nft cannot insert into an empty chain or at/after its end: Istio appends instead (§12).
            if r.index is None or r.index >= n:
                lines.append(f"add rule inet {table} {r.chain} {r.rule}")
            else:
                lines.append(f"insert rule inet {table} {r.chain} index {r.index} {r.rule}")
            count[r.chain] = n + 1
    return "".join(line + "\n" for line in lines)


def render_nft(config: CaptureConfig) -> str:
    """Istio's nftables transaction for ``config``, byte-identical to its ``*.nftables.golden`` files."""
    return render_transaction(nft_rules(config))


def render_nft_cleanup() -> str:
    """Istio's ``--cleanup-only`` transaction: add, then delete, each of the three tables."""
    return "".join(f"add table inet {t}\ndelete table inet {t}\n" for t in CHAINS)


__all__ = ["CHAINS", "NFT_SINCE", "NftRule", "nft_refusal", "nft_rules", "render_nft", "render_nft_cleanup",
           "render_transaction"]
