"""CaptureConfig → the rules istio-iptables writes, in Istio's exact emission order (spec/istio-iptables.md §4).

Owns: which rule goes into which table, chain and family, in which order, spelled exactly as Istio
spells it (``args``, what its dry-run golden shows); the policy-routing and ``::6`` commands TPROXY and
IPv6 need (§1 step 6, §6) as data; the cleanup commands Istio derives from the planned rules (§11).
Never does: IO, running iptables or ip, rendering text (``dryrun.py`` renders Istio's format,
``netsim.netfilter.render`` what ``iptables-save`` prints), or anything for nftables (``nft.py``).

Every emitted rule carries ``why``: the traffic path it handles, the reason, and the spec section.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from netsim.capture.config import CURRENT_LAYOUT, WILDCARD, CaptureConfig, CidrList, InterceptionMode
from netsim.netfilter.matches import DEFAULT_NAMES, Names
from netsim.netfilter.model import BUILTIN_CHAINS, Family, RestorePayload, Rule, RuleOp
from netsim.netfilter.parse import parse_rule_args

# Fixed names and numbers (spec §3).
ISTIO_INBOUND = "ISTIO_INBOUND"
ISTIO_REDIRECT = "ISTIO_REDIRECT"
ISTIO_IN_REDIRECT = "ISTIO_IN_REDIRECT"
ISTIO_OUTPUT = "ISTIO_OUTPUT"
ISTIO_OUTPUT_DNS = "ISTIO_OUTPUT_DNS"
ISTIO_DIVERT = "ISTIO_DIVERT"
ISTIO_TPROXY = "ISTIO_TPROXY"
ISTIO_DROP = "ISTIO_DROP"
AGENT_DNS_PORT = "15053"  # the agent's DNS listener; not configurable in the generator
DNS_PORT = "53"
OUTBOUND_MARK = "1338"  # "Envoy to the local app by pod IP" in TPROXY mode; hard-coded, unlike -t
PASSTHROUGH_SOURCE = {Family.IPV4: "127.0.0.6/32", Family.IPV6: "::6/128"}  # Envoy's inbound passthrough bind
IPV6_LOOPBACK = "::1/128"

BUILTIN = frozenset(chain for chains in BUILTIN_CHAINS.values() for chain in chains)

Release = tuple[int, ...]  # (major, minor[, patch]); a missing patch is .0


class Scope(enum.Enum):
    """Which family's rule list a rule goes to (Istio's AppendRule / AppendRuleV4 / AppendRuleV6)."""

    BOTH = "both"
    V4 = "v4"
    V6 = "v6"


@dataclass(frozen=True, slots=True)
class Versioned:
    """A token that differs by family (Istio's ``AppendVersionedRule``), e.g. the loopback CIDR."""

    v4: str
    v6: str

    def __call__(self, family: Family) -> str:
        return self.v4 if family is Family.IPV4 else self.v6


Token = str | Versioned


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedRule:
    """One rule of one family as Istio emits it, with the reason it exists."""

    family: Family
    table: str
    chain: str
    args: tuple[str, ...]
    position: int | None = None  # None: -A; n: -I chain n
    why: str = ""


@dataclass(frozen=True, slots=True)
class RouteCommand:
    """A command Istio runs over netlink after the rules (spec §1 step 6, §6), written as ``ip`` argv.

    ``ignore_exists``: Istio ignores "file exists" for this one (the address and the routes).
    """

    argv: tuple[str, ...]
    ignore_exists: bool = False
    why: str = ""


class _Plan:
    """Collects rules per family in emission order (only inside :func:`plan`)."""

    def __init__(self, ipv6: bool, *, families: tuple[Family, ...] | None = None) -> None:
        self.families = families or ((Family.IPV4, Family.IPV6) if ipv6 else (Family.IPV4,))
        self.rules: list[PlannedRule] = []

    def add(
        self,
        table: str,
        chain: str,
        *args: Token,
        why: str,
        scope: Scope = Scope.BOTH,
        position: int | None = None,
    ) -> None:
        for family in self.families:
            if (scope is Scope.V4 and family is not Family.IPV4) or (
                scope is Scope.V6 and family is not Family.IPV6
            ):
                continue
            tokens = tuple(t(family) if isinstance(t, Versioned) else t for t in args)
            self.rules.append(
                PlannedRule(family=family, table=table, chain=chain, args=tokens, position=position, why=why)
            )


def dns_capture_effective(config: CaptureConfig) -> bool:
    """Spec §7's table: redirect-dns with neither capture-all nor any resolver is *off* (a warning in Istio)."""
    return config.redirect_dns and (
        config.capture_all_dns or bool(config.dns_servers_v4) or bool(config.dns_servers_v6)
    )


def owner_group_filter(config: CaptureConfig) -> tuple[bool, tuple[str, ...]]:
    """Istio's ``ParseInterceptFilter`` (spec §9): (except_mode, groups).

    Include ``*`` → "all except" the exclude list; anything else, even an empty string → "only these".
    """
    if config.owner_groups_include == WILDCARD:
        return True, _split(config.owner_groups_exclude)
    return False, _split(config.owner_groups_include)


def _split(value: str) -> tuple[str, ...]:
    return tuple(item for item in value.split(",") if item)


def plan(config: CaptureConfig) -> tuple[PlannedRule, ...]:
    """Every rule istio-iptables would emit for ``config``, both families, in emission order (spec §4).

    IPv6 rules exist only when ``config.enable_ipv6``. Raises nothing: ``config`` was validated when it
    was built (``netsim.spec.options``), including Istio's step-0 refusal of ``-x '*'``.
    """
    rel = layout_release(config)
    if rel < (1, 5):
        return _plan_script(config, rel)
    # 1.5–1.11 wrote a separate, nat-only IPv6 list (history §3); 1.12 unified the families (§4.12).
    p = _Plan(config.enable_ipv6 and rel >= (1, 12))
    tproxy = config.mode is InterceptionMode.TPROXY
    # Before 1.25 any --redirect-dns emitted the DNS rule forms, resolvers or not (history §5); 1.6 had only
    # the experimental DNS_CAPTURE, which nothing sets (history §4.4).
    dns = dns_capture_effective(config) if rel >= (1, 25) else config.redirect_dns and rel >= (1, 7)
    # ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR exists from 1.21; earlier releases ignore it (history §4.20).
    lo = Versioned(config.ipv4_loopback_cidr if rel >= (1, 21) else "127.0.0.1/32", IPV6_LOOPBACK)
    pt = Versioned(PASSTHROUGH_SOURCE[Family.IPV4], PASSTHROUGH_SOURCE[Family.IPV6])
    tun = config.inbound_tunnel_port
    mark = config.tproxy_mark

    # Step 1 (§4, §8): traffic entering or leaving an excluded interface is never captured, in or out.
    excluded = config.exclude_interfaces if rel >= (1, 11, 3) else ()  # 1.11.3 (history §4.11)
    for nic in excluded:
        p.add("nat", "PREROUTING", "-i", nic, "-j", "RETURN", why=f"inbound via excluded {nic}: never captured (§8)")
        p.add("nat", "OUTPUT", "-o", nic, "-j", "RETURN", why=f"outbound via excluded {nic}: never captured (§8)")
    if tproxy:
        for nic in excluded:
            p.add("mangle", "PREROUTING", "-i", nic, "-j", "RETURN",
                  why=f"TPROXY inbound lives in mangle: excluded {nic} skips it too (§6, §8)")
            p.add("mangle", "OUTPUT", "-o", nic, "-j", "RETURN",
                  why=f"TPROXY marks live in mangle OUTPUT: excluded {nic} skips them (§6, §8)")

    # Step 2 (§4, §8).
    if rel >= (1, 8):  # before 1.8 these came after the -x RETURNs (history §4.6)
        _kube_virt_returns(p, config)

    # Step 3 (§4): out-of-window packets are dropped rather than answered with a RST.
    if not config.drop_invalid or rel < (1, 12, 9):  # --drop-invalid: 1.12.9 (history §4.13)
        pass
    elif rel < (1, 24):
        p.add("mangle", "PREROUTING", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP",
              why="conntrack-INVALID packets are dropped in place; no ISTIO_DROP chain before 1.24 (history §4.13)")
    else:
        p.add("mangle", "PREROUTING", "-m", "conntrack", "--ctstate", "INVALID", "-j", ISTIO_DROP,
              why="conntrack-INVALID packets (any protocol) go to ISTIO_DROP (§4 step 3)")
        p.add("mangle", ISTIO_DROP, "-j", "DROP", why="drop instead of resetting the connection (§4 step 3)")

    # Step 4 (§4): the skeleton every configuration has.
    if rel >= (1, 7):  # history §4.5
        p.add("nat", ISTIO_INBOUND, "-p", "tcp", "--dport", tun, "-j", "RETURN",
              why=f"HBONE tunnel port {tun} is never redirected inbound (§4 step 4, §10)")
    if dns and (1, 8) <= rel < (1, 9):
        p.add("nat", ISTIO_REDIRECT, "-p", "tcp", "--dport", DNS_PORT, "-j", "REDIRECT", "--to-ports", AGENT_DNS_PORT,
              why=f"captured TCP DNS → the agent on {AGENT_DNS_PORT} (1.8, history §4.6)")
    _redirect_chains(p, config, rel)

    _inbound(p, config, lo, rel)

    # Step 6 (§4): all locally generated traffic (every protocol) goes through ISTIO_OUTPUT.
    if rel >= (1, 25):
        p.add("nat", "OUTPUT", "-j", ISTIO_OUTPUT, why="every outbound packet is judged in ISTIO_OUTPUT (§4 step 6)")
    else:
        p.add("nat", "OUTPUT", "-p", "tcp", "-j", ISTIO_OUTPUT,
              why="outbound TCP is judged in ISTIO_OUTPUT (all protocols only from 1.25, history §5)")

    # Step 7 (§4): excluded outbound ports, before the loopback/self rules.
    for port in config.outbound_ports_exclude:
        p.add("nat", ISTIO_OUTPUT, "-p", "tcp", "--dport", port, "-j", "RETURN",
              why=f"outbound TCP to port {port} is never captured (-o, §4 step 7)")
        if rel >= (1, 25):
            p.add("nat", ISTIO_OUTPUT, "-p", "udp", "--dport", port, "-j", "RETURN",
                  why=f"outbound UDP to port {port} is never captured (-o, §4 step 7)")

    # Step 8 (§4, §4.3): Envoy forwarding inbound traffic to the app binds 127.0.0.6 / ::6.
    p.add("nat", ISTIO_OUTPUT, "-o", "lo", "-s", pt, "-j", "RETURN",
          why="Envoy (inbound passthrough, source 127.0.0.6/::6) → app over lo: not captured (§4 step 8)")

    # Steps 9-10 (§4, §4.3): per proxy UID, then per proxy GID, the same triplet.
    loopback_included = config.outbound_cidrs.has_loopback and rel >= (1, 7)  # history §4.5
    dns_lo = dns and rel >= (1, 9)  # the lo rules' port-53 exceptions came with --redirect-dns (history §4.7)
    for kind, ids in (("--uid-owner", config.proxy_uid), ("--gid-owner", config.proxy_gid)):
        for owner in ids:
            if rel < (1, 18):
                # Before 1.18 the lo redirect did not skip the tunnel port (history §4.18).
                skip53 = ("-p", "tcp", "!", "--dport", DNS_PORT) if dns_lo and kind == "--uid-owner" else ()
                p.add("nat", ISTIO_OUTPUT, "-o", "lo", "!", "-d", lo, *skip53, "-m", "owner", kind, owner,
                      "-j", ISTIO_IN_REDIRECT,
                      why="app → VIP → Envoy out → Envoy in (pod IP over lo) → app: back through inbound "
                      "(no tunnel-port exception before 1.18; DNS on: the UID form skips TCP 53, history §4.7)")
            elif dns and kind == "--uid-owner":
                # The agent (same UID) querying a resolver on a local address must reach it, not 15006.
                p.add("nat", ISTIO_OUTPUT, "-o", "lo", "!", "-d", lo, "-p", "tcp", "-m", "multiport",
                      "!", "--dports", f"{DNS_PORT},{tun}", "-m", "owner", kind, owner, "-j", ISTIO_IN_REDIRECT,
                      why="app → VIP → Envoy out → Envoy in (pod IP over lo) → app: back through inbound; "
                      "DNS on: port 53 skipped so agent → local resolver works (§4 step 9, §7)")
            else:
                p.add("nat", ISTIO_OUTPUT, "-o", "lo", "!", "-d", lo, "-p", "tcp", "!", "--dport", tun,
                      "-m", "owner", kind, owner, "-j", ISTIO_IN_REDIRECT,
                      why="app → VIP → Envoy out → Envoy in (pod IP over lo) → app: back through inbound "
                      "(§4 steps 9-10; the GID form never skips 53)")
            if not loopback_included:
                if dns_lo:
                    p.add("nat", ISTIO_OUTPUT, "-o", "lo", "-p", "tcp", "!", "--dport", DNS_PORT, "-m", "owner",
                          "!", kind, owner, "-j", "RETURN",
                          why="app → app over lo is not captured; TCP 53 and all UDP still reach the DNS "
                          "rules so a resolver on loopback is captured (§4 steps 9-10, §7)")
                else:
                    p.add("nat", ISTIO_OUTPUT, "-o", "lo", "-m", "owner", "!", kind, owner, "-j", "RETURN",
                          why="app → app over lo is not captured (§4 steps 9-10)")
            p.add("nat", ISTIO_OUTPUT, "-m", "owner", kind, owner, "-j", "RETURN",
                  why="the proxy's own traffic (any protocol) is never captured: avoids loops (§4 steps 9-10)")

    # Step 11 (§9): whose outbound traffic is captured at all (owner groups exist from 1.14, history §4.15).
    if rel >= (1, 14):
        _owner_groups(p, config, ISTIO_OUTPUT, ())

    # Step 12 (§7).
    if dns and rel >= (1, 25):
        _dns(p, config)
    elif dns and rel >= (1, 9):
        _dns_tcp_legacy(p, config, rel)

    # Step 13 (§4): Envoy-aware apps and container-to-container calls use localhost.
    p.add("nat", ISTIO_OUTPUT, "-d", lo, "-j", "RETURN", why="app → loopback destination: not captured (§4 step 13)")

    # Step 14 (§4): excluded destinations, each family its own prefixes.
    for cidr in _prefixes(config.outbound_cidrs_exclude, Scope.V4, rel):
        p.add("nat", ISTIO_OUTPUT, "-d", cidr, "-j", "RETURN", scope=Scope.V4,
              why=f"outbound to {cidr} is never captured (-x, §4 step 14)")
    for cidr6 in _prefixes(config.outbound_cidrs_exclude, Scope.V6, rel):
        p.add("nat", ISTIO_OUTPUT, "-d", cidr6, "-j", "RETURN", scope=Scope.V6,
              why=f"outbound to {cidr6} is never captured (-x, §4 step 14)")

    if rel < (1, 8):
        _kube_virt_returns(p, config)

    # Step 15 (§4): ports captured whatever the destination (-q from 1.7, history §4.5).
    for port in config.outbound_ports if rel >= (1, 7) else ():
        p.add("nat", ISTIO_OUTPUT, "-p", "tcp", "--dport", port, "-j", ISTIO_REDIRECT,
              why=f"outbound TCP to port {port} → Envoy, any destination (-q, §4 step 15)")

    # Step 16 (§4, §8): captured destinations, IPv4 then IPv6.
    _outbound_include(p, config, config.outbound_cidrs, Scope.V4, rel)
    _outbound_include(p, config, config.outbound_cidrs, Scope.V6, rel)

    # Before 1.25 the UDP DNS rules came after the include rules, outside ISTIO_OUTPUT_DNS (history §4.22).
    if dns and rel < (1, 25):
        _dns_udp_legacy(p, config, rel)

    if config.dns_capture and (1, 6) <= rel < (1, 7):
        # 1.6's experimental env DNS_CAPTURE: UDP DNS to Envoy's DNS listener, the proxy GIDs exempt (§4.4).
        for gid in config.proxy_gid:
            if gid != "0":
                p.add("nat", "OUTPUT", "-p", "udp", "--dport", DNS_PORT, "-m", "owner", "--gid-owner", gid,
                      "-j", "RETURN", why="the proxy's own DNS queries are not redirected (DNS_CAPTURE, history §4.4)")
        p.add("nat", "OUTPUT", "-p", "udp", "--dport", DNS_PORT, "-j", "REDIRECT", "--to-ports", "15013",
              why="app → any UDP DNS server → Envoy's DNS listener :15013 (DNS_CAPTURE, history §4.4)")

    if tproxy and rel >= (1, 11):
        _tproxy_tail(p, config, lo, mark)
    elif tproxy and rel >= (1, 9):
        _tproxy_tail_connmark(p, mark)
    elif tproxy and rel >= (1, 6):
        p.add("mangle", "OUTPUT", "-p", "tcp", "-s", "127.0.0.1/32", "!", "-d", "127.0.0.1/32", "-j", "MARK",
              "--set-mark", mark, why=f"Envoy → app over lo from 127.0.0.1: mark {mark} (1.6–1.8, history §4.4)")
    if config.enable_ipv6 and rel < (1, 12):
        _v6_nat_only(p, config, rel)
    return tuple(p.rules)


def _plan_script(config: CaptureConfig, rel: Release) -> tuple[PlannedRule, ...]:
    """The 1.0–1.4 shell script's rules (history §2), in the order it ran its commands.

    No 127.0.0.6 passthrough before 1.3, the lo rule not owner-scoped and to ISTIO_REDIRECT before 1.3,
    the SSH port 22 RETURN, the ``-m socket`` DIVERT rule twice per port, TPROXY ``--on-port`` = -p, the
    kube-virt RETURNs after the -x RETURNs, a nat-only IPv6 list (1.1+) and, with IPv6 off, the ip6tables
    filter INPUT lock-down. The cleanup commands it ran first (up to 1.3) add no rule to an empty namespace.
    """
    p = _Plan(False)
    tproxy = config.mode is InterceptionMode.TPROXY
    inbound_port, to = _redirect_ports(config, rel)
    lo4 = "127.0.0.1/32"

    def skeleton(q: _Plan, family: Family) -> None:
        q.add("nat", ISTIO_REDIRECT, "-p", "tcp", "-j", "REDIRECT", to, config.proxy_port,
              why=f"app → anything captured outbound → Envoy :{config.proxy_port} (history §2.1)")
        q.add("nat", ISTIO_IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT", to, inbound_port,
              why=f"client → app captured inbound → Envoy :{inbound_port}; before 1.3 Envoy's one listener "
              "told inbound apart by destination (history §2.1, §2.4)")
        v6 = family is Family.IPV6
        table = "mangle" if tproxy and not v6 else "nat"  # TPROXY is ignored for IPv6 (history §2.2)
        if config.inbound_ports:
            if table == "mangle":
                q.add("mangle", ISTIO_DIVERT, "-j", "MARK", "--set-mark", config.tproxy_mark,
                      why=f"established inbound packets get mark {config.tproxy_mark} (history §2.1)")
                q.add("mangle", ISTIO_DIVERT, "-j", "ACCEPT", why="…and skip the rest of mangle (history §2.1)")
                q.add("mangle", ISTIO_TPROXY, "!", "-d", lo4, "-p", "tcp", "-j", "TPROXY", "--tproxy-mark",
                      f"{config.tproxy_mark}/0xffffffff", "--on-port", config.proxy_port,
                      why="new inbound TCP → Envoy's transparent listener -p (history §2.1)")
            q.add(table, "PREROUTING", "-p", "tcp", "-j", ISTIO_INBOUND, why="inbound TCP → ISTIO_INBOUND (§2.1)")
            if config.inbound_ports == (WILDCARD,):
                for port in ("22", *config.inbound_ports_exclude):
                    q.add(table, ISTIO_INBOUND, "-p", "tcp", "--dport", port, "-j", "RETURN",
                          why=f"inbound port {port} not captured (22: SSH; -d, history §2.1)")
                if table == "mangle":
                    q.add("mangle", ISTIO_INBOUND, "-p", "tcp", "-m", "socket", "-j", ISTIO_DIVERT,
                          why="packets with a local socket (accepted connections) → ISTIO_DIVERT (§2.1)")
                    q.add("mangle", ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_TPROXY, why="new connection → TPROXY")
                elif not v6:  # the IPv6 list never redirects with -b * (history §2.2, until 1.5)
                    q.add("nat", ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_IN_REDIRECT,
                          why="client → app on any other port → Envoy (history §2.1)")
            else:
                for port in config.inbound_ports:
                    if table == "mangle":
                        for _ in range(2):  # the script's bug, kept until 1.5.2 (history §2.1)
                            q.add("mangle", ISTIO_INBOUND, "-p", "tcp", "--dport", port, "-m", "socket", "-j",
                                  ISTIO_DIVERT, why=f"accepted connection to port {port} → ISTIO_DIVERT (§2.1)")
                        q.add("mangle", ISTIO_INBOUND, "-p", "tcp", "--dport", port, "-j", ISTIO_TPROXY,
                              why=f"new connection to port {port} → TPROXY (history §2.1)")
                    else:
                        q.add("nat", ISTIO_INBOUND, "-p", "tcp", "--dport", port, "-j", ISTIO_IN_REDIRECT,
                              why=f"client → app port {port} → Envoy (history §2.1)")
        q.add("nat", "OUTPUT", "-p", "tcp", "-j", ISTIO_OUTPUT, why="outbound TCP → ISTIO_OUTPUT (history §2.1)")
        for port in config.outbound_ports_exclude if rel >= (1, 2) else ():
            q.add("nat", ISTIO_OUTPUT, "-p", "tcp", "--dport", port, "-j", "RETURN",
                  why=f"outbound TCP to port {port} never captured (-o, 1.2, history §2.3)")
        if rel >= (1, 3):
            q.add("nat", ISTIO_OUTPUT, "-o", "lo", "-s", PASSTHROUGH_SOURCE[family], "-j", "RETURN",
                  why="Envoy's inbound passthrough (127.0.0.6/::6) → app over lo: not captured (1.3, §2.4)")
        loopback = lo4 if not v6 else IPV6_LOOPBACK
        if v6 or rel < (1, 1) or not config.disable_loopback_redirect:
            target = ISTIO_IN_REDIRECT if rel >= (1, 3) else ISTIO_REDIRECT
            q.add("nat", ISTIO_OUTPUT, "-o", "lo", "!", "-d", loopback, "-j", target,
                  why="anything to a non-loopback address over lo (the pod's own IP) → Envoy, whoever sends it; "
                  f"{target} (history §2.1, §2.4)")
        for kind, ids in (("--uid-owner", config.proxy_uid), ("--gid-owner", config.proxy_gid)):
            for owner in ids:
                q.add("nat", ISTIO_OUTPUT, "-m", "owner", kind, owner, "-j", "RETURN",
                      why="the proxy's own traffic is never captured (history §2.1)")
        q.add("nat", ISTIO_OUTPUT, "-d", loopback, "-j", "RETURN", why="loopback destination: not captured")

    # IPv4 (history §2.1-§2.5).
    skeleton(p, Family.IPV4)
    for cidr in _script_cidrs(config.outbound_cidrs_exclude, Scope.V4):
        p.add("nat", ISTIO_OUTPUT, "-d", cidr, "-j", "RETURN", why=f"outbound to {cidr} never captured (-x)")
    kube_virt = config.kube_virt_interfaces if rel >= (1, 1) else ()  # -k: 1.1 (history §2.2)
    for nic in kube_virt:
        p.add("nat", "PREROUTING", "-i", nic, "-j", "RETURN", position=1,
              why=f"VM traffic from {nic} skips inbound capture (history §2.2)")
    if config.outbound_cidrs.wildcard:
        p.add("nat", ISTIO_OUTPUT, "-j", ISTIO_REDIRECT, why="app → any other destination → Envoy (-i '*')")
        for nic in kube_virt:
            p.add("nat", "PREROUTING", "-i", nic, "-j", ISTIO_REDIRECT, position=1,
                  why=f"VM behind {nic} → anywhere → Envoy outbound (history §2.2)")
    else:
        prefixes = _script_cidrs(config.outbound_cidrs, Scope.V4)
        for cidr in prefixes:
            for nic in kube_virt:
                p.add("nat", "PREROUTING", "-i", nic, "-d", cidr, "-j", ISTIO_REDIRECT, position=1,
                      why=f"VM behind {nic} → {cidr} → Envoy outbound (history §2.2)")
            p.add("nat", ISTIO_OUTPUT, "-d", cidr, "-j", ISTIO_REDIRECT, why=f"app → {cidr} → Envoy (-i)")
        if prefixes:
            p.add("nat", ISTIO_OUTPUT, "-j", "RETURN", why="everything else leaves uncaptured (-i list)")

    # IPv6: a nat-only list from 1.1 when the pod is IPv6; otherwise (and in 1.0, unless ENABLE_INBOUND_IPV6
    # was set by hand) the filter INPUT lock-down (history §2.1, §2.2).
    if config.enable_ipv6 and rel >= (1, 1):
        q = _Plan(True, families=(Family.IPV6,))
        skeleton(q, Family.IPV6)
        if rel >= (1, 2):  # 1.1 ignored -x and CIDR lists for IPv6 (history §2.2)
            for cidr in _script_cidrs(config.outbound_cidrs_exclude, Scope.V6):
                q.add("nat", ISTIO_OUTPUT, "-d", cidr, "-j", "RETURN", why=f"outbound to {cidr} never captured")
        _include_v6_legacy(q, config, rel)
        p.rules.extend(q.rules)
    elif not config.enable_ipv6:
        q = _Plan(True, families=(Family.IPV6,))
        q.add("filter", "INPUT", "-m", "state", "--state", "ESTABLISHED", "-j", "ACCEPT",
              why="IPv6 off: only replies to the pod's own IPv6 connections are let in (history §2.1)")
        if rel >= (1, 1):
            q.add("filter", "INPUT", "-i", "lo", "-d", "::1", "-j", "ACCEPT", why="IPv6 loopback (1.1, §2.2)")
        q.add("filter", "INPUT", "-j", "REJECT", why="IPv6 off: every other inbound IPv6 packet is rejected (§2.1)")
        p.rules.extend(q.rules)
    return tuple(p.rules)


def _script_cidrs(cidrs: CidrList, scope: Scope) -> list[str]:
    """The script printed list items as written; 1.2 split them by family (history §2.3) — netsim has
    already refused an item that is no CIDR, and 1.0–1.1 had no IPv6 rules to put the others in."""
    return [str(c) for c in (cidrs.v4 if scope is Scope.V4 else cidrs.v6)]


def writes_ip6tables(config: CaptureConfig) -> bool:
    """Whether the release writes any ip6tables rule: IPv6 on, or (up to 1.4) the lock-down with IPv6 off."""
    rel = layout_release(config)
    if rel < (1, 1):
        return not config.enable_ipv6
    return config.enable_ipv6 or rel < (1, 5)


def _redirect_ports(config: CaptureConfig, rel: Release) -> tuple[str, str]:
    """ISTIO_IN_REDIRECT's target and REDIRECT's port option spelling: the inbound port is -z only with
    ``-b *`` until 1.6 (-p before; and no -z at all before 1.3, history §2.4, §4.4); ``--to-port`` until 1.5.3."""
    inbound = config.inbound_capture_port
    if rel < (1, 6) and config.inbound_ports != (WILDCARD,):
        inbound = config.proxy_port
    return inbound, "--to-ports" if rel >= (1, 5, 3) else "--to-port"


def inbound_listener_port(config: CaptureConfig) -> str:
    """The port the release's rules deliver new inbound connections to: ISTIO_IN_REDIRECT's target, or
    TPROXY's ``--on-port`` (-p until 1.9, history §4.7). Before 1.3 (and up to 1.5 with a -b list) that is
    -p itself: Envoy's one listener told inbound from outbound by the original destination (history §2.4)."""
    rel = layout_release(config)
    if config.mode is InterceptionMode.TPROXY and config.inbound_ports:
        return config.inbound_capture_port if rel >= (1, 9) else config.proxy_port
    return _redirect_ports(config, rel)[0]


def _redirect_chains(p: _Plan, config: CaptureConfig, rel: Release) -> None:
    """Step 4 (§4): the two REDIRECT chains, Envoy's outbound and inbound listeners."""
    inbound, to = _redirect_ports(config, rel)
    p.add("nat", ISTIO_REDIRECT, "-p", "tcp", "-j", "REDIRECT", to, config.proxy_port,
          why=f"app → anything captured outbound → Envoy's outbound listener :{config.proxy_port} (§4 step 4)")
    p.add("nat", ISTIO_IN_REDIRECT, "-p", "tcp", "-j", "REDIRECT", to, inbound,
          why=f"client → app captured inbound → Envoy's inbound listener :{inbound} (§4 step 4; before 1.6 "
          "the -p listener unless -b is *, history §2.4)")


def _v6_nat_only(p: _Plan, config: CaptureConfig, rel: Release) -> None:
    """The IPv6 list of 1.5–1.11 (history §3 and the deltas of §4): nat only whatever -m says, no DNS, no
    TPROXY, the loopback-include exception not applied, kube-virt inserts RETURN with ``-i *``."""
    v6 = _Plan(True, families=(Family.IPV6,))
    for nic in config.exclude_interfaces if rel >= (1, 11, 3) else ():
        v6.add("nat", "PREROUTING", "-i", nic, "-j", "RETURN", why=f"inbound via excluded {nic} (history §4.11)")
        v6.add("nat", "OUTPUT", "-o", nic, "-j", "RETURN", why=f"outbound via excluded {nic} (history §4.11)")
    if rel >= (1, 8):
        _kube_virt_returns(v6, config)
    if rel >= (1, 7):
        v6.add("nat", ISTIO_INBOUND, "-p", "tcp", "--dport", config.inbound_tunnel_port, "-j", "RETURN",
               why="HBONE tunnel port never redirected inbound (history §4.5)")
    _redirect_chains(v6, config, rel)
    if config.inbound_ports:
        v6.add("nat", "PREROUTING", "-p", "tcp", "-j", ISTIO_INBOUND, why="inbound TCP (IPv6: nat only, history §3)")
        if config.inbound_ports == (WILDCARD,):
            ports = ("22", *config.inbound_ports_exclude)
            for port in ports:
                v6.add("nat", ISTIO_INBOUND, "-p", "tcp", "--dport", port, "-j", "RETURN",
                       why=f"inbound port {port} not captured (22: SSH, until 1.13; -d)")
            v6.add("nat", ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_IN_REDIRECT,
                   why="client → app on any other port → Envoy inbound (IPv6 from 1.5, history §3)")
        else:
            for port in config.inbound_ports:
                v6.add("nat", ISTIO_INBOUND, "-p", "tcp", "--dport", port, "-j", ISTIO_IN_REDIRECT,
                       why=f"client → app port {port} → Envoy inbound (history §3)")
    v6.add("nat", "OUTPUT", "-p", "tcp", "-j", ISTIO_OUTPUT, why="outbound TCP is judged in ISTIO_OUTPUT (history §3)")
    for port in config.outbound_ports_exclude:
        v6.add("nat", ISTIO_OUTPUT, "-p", "tcp", "--dport", port, "-j", "RETURN",
               why=f"outbound TCP to port {port} never captured (-o)")
    v6.add("nat", ISTIO_OUTPUT, "-o", "lo", "-s", PASSTHROUGH_SOURCE[Family.IPV6], "-j", "RETURN",
           why="Envoy inbound passthrough (::6) → app over lo: not captured (history §3)")
    for kind, ids in (("--uid-owner", config.proxy_uid), ("--gid-owner", config.proxy_gid)):
        for owner in ids:
            v6.add("nat", ISTIO_OUTPUT, "-o", "lo", "!", "-d", IPV6_LOOPBACK, "-m", "owner", kind, owner,
                   "-j", ISTIO_IN_REDIRECT, why="Envoy → pod IP over lo → back through inbound (history §3)")
            v6.add("nat", ISTIO_OUTPUT, "-o", "lo", "-m", "owner", "!", kind, owner, "-j", "RETURN",
                   why="app → app over lo: not captured (history §3)")
            v6.add("nat", ISTIO_OUTPUT, "-m", "owner", kind, owner, "-j", "RETURN",
                   why="the proxy's own traffic is never captured (history §3)")
    v6.add("nat", ISTIO_OUTPUT, "-d", IPV6_LOOPBACK, "-j", "RETURN", why="loopback destination: not captured")
    for cidr in _prefixes(config.outbound_cidrs_exclude, Scope.V6, rel):
        v6.add("nat", ISTIO_OUTPUT, "-d", cidr, "-j", "RETURN", why=f"outbound to {cidr} never captured (-x)")
    if rel >= (1, 9, 6) and not (1, 10) <= rel < (1, 10, 2):  # IPv6 -q: 1.9.6 and 1.10.2 (history §4.8)
        for port in config.outbound_ports:
            v6.add("nat", ISTIO_OUTPUT, "-p", "tcp", "--dport", port, "-j", ISTIO_REDIRECT,
                   why=f"outbound TCP to port {port} → Envoy, any destination (-q, history §4.8)")
    _include_v6_legacy(v6, config, rel)
    p.rules.extend(v6.rules)


def _include_v6_legacy(p: _Plan, config: CaptureConfig, rel: Release) -> None:
    """IPv6 include rules of 1.1–1.11: ``*`` appends the jump, then each kube-virt insert is a RETURN (not a
    redirect, and before 1.2 whatever -i is); a list gets the v4 treatment without the RETURN block (§2.2-§3)."""
    cidrs = config.outbound_cidrs
    if cidrs.wildcard:
        p.add("nat", ISTIO_OUTPUT, "-j", ISTIO_REDIRECT, why="app → any other destination → Envoy outbound (-i '*')")
    elif rel >= (1, 2):
        prefixes = _prefixes(cidrs, Scope.V6, rel)
        for cidr in prefixes:
            for nic in config.kube_virt_interfaces:
                p.add("nat", "PREROUTING", "-i", nic, "-d", cidr, "-j", ISTIO_REDIRECT, position=1,
                      why=f"VM behind {nic} → {cidr} → Envoy outbound")
            p.add("nat", ISTIO_OUTPUT, "-d", cidr, "-j", ISTIO_REDIRECT, why=f"app → {cidr} → Envoy outbound (-i)")
        if prefixes:
            p.add("nat", ISTIO_OUTPUT, "-j", "RETURN", why="everything else leaves uncaptured (include list)")
        return
    for nic in config.kube_virt_interfaces if cidrs.wildcard or rel < (1, 2) else ():
        p.add("nat", "PREROUTING", "-i", nic, "-j", "RETURN", position=1,
              why=f"VM traffic from {nic} skips IPv6 inbound capture (history §2.2)")


def _kube_virt_returns(p: _Plan, config: CaptureConfig) -> None:
    """Step 2 (§4, §8): traffic *arriving* from a VM in the pod is outbound, not inbound; each insert at 1
    reverses the list, and step 16's redirect inserts later land above these (§4.1)."""
    for nic in config.kube_virt_interfaces:
        p.add("nat", "PREROUTING", "-i", nic, "-j", "RETURN", position=1,
              why=f"VM traffic from {nic} skips inbound capture (§8)")


def _tproxy_tail_connmark(p: _Plan, mark: str) -> None:
    """The TPROXY tail of 1.9–1.10 (history §4.7): the connection mark round trip and one insert."""
    p.add("mangle", "PREROUTING", "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "CONNMARK", "--save-mark",
          why=f"Envoy → app packets marked {mark} save it on the connection (history §4.7)")
    p.add("mangle", "OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", mark, "-j", "CONNMARK", "--restore-mark",
          why=f"the app's replies get mark {mark} back: routed to lo, to Envoy (history §4.7)")
    p.add("mangle", ISTIO_INBOUND, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN", position=1,
          why=f"marked {mark}: never re-captured (history §4.7)")


def layout_release(config: CaptureConfig) -> Release:
    """The release whose layout :func:`plan` emits for ``config`` (the current one unless ``config.release``)."""
    return CURRENT_LAYOUT if config.release is None else min(config.release, CURRENT_LAYOUT)


def _prefixes(cidrs: CidrList, scope: Scope, rel: Release) -> list[str]:
    """One family's prefixes as that release printed them: masked to the network before 1.16 (history §4.16)."""
    items = cidrs.v4 if scope is Scope.V4 else cidrs.v6
    return [str(c) if rel >= (1, 16) else str(c.network) for c in items]


def _owner_groups(p: _Plan, config: CaptureConfig, chain: str, udp: tuple[str, ...]) -> None:
    """Istio's owner-group RETURNs (§9) in ``chain``; ``udp``: the leading matches of the pre-1.25 UDP copy."""
    except_mode, groups = owner_group_filter(config)
    if except_mode:
        for group in groups:
            p.add("nat", chain, *udp, "-m", "owner", "--gid-owner", group, "-j", "RETURN",
                  why=f"processes of group {group} are excluded from capture, DNS included (§9)")
    else:
        matches = [t for group in groups for t in ("-m", "owner", "!", "--gid-owner", group)]
        p.add("nat", chain, *udp, *matches, "-j", "RETURN",
              why="only the listed groups' traffic is captured; an empty list returns everything (§9)")


def _inbound(p: _Plan, config: CaptureConfig, lo: Versioned, rel: Release) -> None:
    """Step 5 (§4, §6): inbound capture, in nat (REDIRECT) or mangle (TPROXY); nothing when -b is empty."""
    if not config.inbound_ports:
        return
    tproxy = config.mode is InterceptionMode.TPROXY
    table = "mangle" if tproxy else "nat"
    mark = config.tproxy_mark
    established = ("-m", "socket") if rel < (1, 5, 2) else ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")
    if tproxy:
        p.add("mangle", ISTIO_DIVERT, "-j", "MARK", "--set-mark", mark,
              why=f"established inbound packets get mark {mark} so policy routing delivers them locally (§6)")
        p.add("mangle", ISTIO_DIVERT, "-j", "ACCEPT", why="…and skip the rest of mangle (§6)")
        p.add("mangle", ISTIO_TPROXY, "!", "-d", lo, "-p", "tcp", "-j", "TPROXY", "--tproxy-mark",
              f"{mark}/0xffffffff", "--on-port", config.inbound_capture_port if rel >= (1, 9) else config.proxy_port,
              why="new inbound TCP → Envoy's transparent listener (-z; -p before 1.9, history §4.7), "
              "destination unchanged (§6)")
    p.add(table, "PREROUTING", "-p", "tcp", "-j", ISTIO_INBOUND,
          why="inbound TCP is judged in ISTIO_INBOUND (§4 step 5)")
    if config.inbound_ports == (WILDCARD,):
        if rel < (1, 13):
            p.add(table, ISTIO_INBOUND, "-p", "tcp", "--dport", "22", "-j", "RETURN",
                  why="inbound SSH (port 22) is never captured (-b '*' before 1.13, history §4.14)")
        for port in config.inbound_ports_exclude:
            p.add(table, ISTIO_INBOUND, "-p", "tcp", "--dport", port, "-j", "RETURN",
                  why=f"inbound port {port} excluded (-d, only with -b '*', §4 step 5)")
        if tproxy:
            p.add("mangle", ISTIO_INBOUND, "-p", "tcp", *established, "-j", ISTIO_DIVERT,
                  why="packets of an accepted inbound connection → ISTIO_DIVERT (§6; -m socket until 1.5.2)")
            p.add("mangle", ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_TPROXY,
                  why="a new inbound connection on any port → TPROXY (§6)")
        else:
            p.add("nat", ISTIO_INBOUND, "-p", "tcp", "-j", ISTIO_IN_REDIRECT,
                  why="client → app on any other port → Envoy inbound (§4 step 5)")
        return
    for port in config.inbound_ports:
        if tproxy:
            for _ in range(2 if rel < (1, 5, 2) else 1):  # emitted twice until 1.5.2 (history §2.1, §4.1)
                p.add("mangle", ISTIO_INBOUND, "-p", "tcp", "--dport", port, *established, "-j", ISTIO_DIVERT,
                      why=f"packets of an accepted connection to port {port} → ISTIO_DIVERT (§6)")
            p.add("mangle", ISTIO_INBOUND, "-p", "tcp", "--dport", port, "-j", ISTIO_TPROXY,
                  why=f"a new connection to port {port} → TPROXY (§6)")
        else:
            p.add("nat", ISTIO_INBOUND, "-p", "tcp", "--dport", port, "-j", ISTIO_IN_REDIRECT,
                  why=f"client → app port {port} → Envoy inbound (-b list, §4 step 5)")


def _dns(p: _Plan, config: CaptureConfig) -> None:
    """Step 12 (§7): DNS to the agent on 15053, and conntrack zones that keep the two UDP flows apart."""
    all_dns = config.capture_all_dns
    v4, v6 = config.dns_servers_v4, config.dns_servers_v6
    p.add("raw", "OUTPUT", "-j", ISTIO_OUTPUT_DNS, why="DNS conntrack zones are set in raw, before conntrack (§7)")
    if all_dns or v4:
        p.add("nat", ISTIO_OUTPUT, "-j", ISTIO_OUTPUT_DNS, scope=Scope.V4,
              why="IPv4 DNS capture applies (capture-all or an IPv4 resolver) (§7)")
    if all_dns or v6:
        p.add("nat", ISTIO_OUTPUT, "-j", ISTIO_OUTPUT_DNS, scope=Scope.V6,
              why="IPv6 DNS capture applies (capture-all or an IPv6 resolver) (§7)")
    for proto, to in (("tcp", "--to-ports"), ("udp", "--to-port")):
        if all_dns:
            p.add("nat", ISTIO_OUTPUT_DNS, "-p", proto, "--dport", DNS_PORT, "-j", "REDIRECT", to, AGENT_DNS_PORT,
                  why=f"app → any {proto.upper()} DNS server → the agent on {AGENT_DNS_PORT} (capture-all, §7)")
            continue
        for servers, prefix, scope in ((v4, 32, Scope.V4), (v6, 128, Scope.V6)):
            for server in servers:
                p.add("nat", ISTIO_OUTPUT_DNS, "-p", proto, "--dport", DNS_PORT, "-d", f"{server}/{prefix}",
                      "-j", "REDIRECT", to, AGENT_DNS_PORT, scope=scope,
                      why=f"app → resolver {server} over {proto.upper()} → the agent on {AGENT_DNS_PORT} (§7)")
    # Zones: the first CT target a packet meets wins, so the owner-based ones come first (§7, §15).
    for kind, ids in (("--uid-owner", config.proxy_uid), ("--gid-owner", config.proxy_gid)):
        for owner in ids:
            p.add("raw", ISTIO_OUTPUT_DNS, "-p", "udp", "--dport", DNS_PORT, "-m", "owner", kind, owner,
                  "-j", "CT", "--zone", "1", why="agent → upstream resolver: conntrack zone 1 (§7)")
            p.add("raw", ISTIO_OUTPUT_DNS, "-p", "udp", "--sport", AGENT_DNS_PORT, "-m", "owner", kind, owner,
                  "-j", "CT", "--zone", "2", why="agent's answers → app: conntrack zone 2 (§7)")
    if all_dns:
        p.add("raw", "PREROUTING", "-j", ISTIO_INBOUND, why="resolver replies get their zone in raw ISTIO_INBOUND (§7)")
        p.add("raw", ISTIO_OUTPUT_DNS, "-p", "udp", "--dport", DNS_PORT, "-j", "CT", "--zone", "2",
              why="app → any resolver: conntrack zone 2 (capture-all, §7)")
        p.add("raw", ISTIO_INBOUND, "-p", "udp", "--sport", DNS_PORT, "-j", "CT", "--zone", "1",
              why="any resolver → agent: conntrack zone 1 (capture-all, §7)")
        return
    for scope, servers, bits in ((Scope.V4, v4, "/32"), (Scope.V6, v6, "/128")):
        if servers:
            p.add("raw", "PREROUTING", "-j", ISTIO_INBOUND, scope=scope,
                  why="resolver replies get their zone in raw ISTIO_INBOUND (§7)")
        for server in servers:
            p.add("raw", ISTIO_OUTPUT_DNS, "-p", "udp", "--dport", DNS_PORT, "-d", server + bits, "-j", "CT",
                  "--zone", "2", scope=scope, why=f"app → resolver {server}: conntrack zone 2 (§7)")
            p.add("raw", ISTIO_INBOUND, "-p", "udp", "--sport", DNS_PORT, "-s", server + bits, "-j", "CT",
                  "--zone", "1", scope=scope, why=f"resolver {server} → agent: conntrack zone 1 (§7)")


def _dns_tcp_legacy(p: _Plan, config: CaptureConfig, rel: Release) -> None:
    """Step 12 in 1.9–1.24: TCP DNS redirects straight in nat ISTIO_OUTPUT (history §4.7, §4.10, §5)."""
    if config.capture_all_dns and rel >= (1, 11):
        p.add("nat", ISTIO_OUTPUT, "-p", "tcp", "--dport", DNS_PORT, "-j", "REDIRECT", "--to-ports", AGENT_DNS_PORT,
              why=f"app → any TCP DNS server → the agent on {AGENT_DNS_PORT} (capture-all, history §4.10)")
        return
    for servers, prefix, scope in ((config.dns_servers_v4, 32, Scope.V4), (config.dns_servers_v6, 128, Scope.V6)):
        for server in servers:
            p.add("nat", ISTIO_OUTPUT, "-p", "tcp", "--dport", DNS_PORT, "-d", f"{server}/{prefix}", "-j", "REDIRECT",
                  "--to-ports", AGENT_DNS_PORT, scope=scope,
                  why=f"app → resolver {server} over TCP → the agent on {AGENT_DNS_PORT} (history §4.7)")


def _dns_udp_legacy(p: _Plan, config: CaptureConfig, rel: Release) -> None:
    """The UDP DNS block of 1.12–1.24, after the include rules: in nat/raw OUTPUT, from 1.23 in ISTIO_OUTPUT
    behind ``-p udp`` jumps (history §4.9–§4.22)."""
    chain = ISTIO_OUTPUT if rel >= (1, 23) else "OUTPUT"
    all_dns = config.capture_all_dns and rel >= (1, 11)  # --capture-all-dns: 1.11 (history §4.10)
    if rel >= (1, 23):
        p.add("nat", "OUTPUT", "-p", "udp", "-j", ISTIO_OUTPUT,
              why="outbound UDP is judged in ISTIO_OUTPUT (1.23, history §4.22)")
        p.add("raw", "OUTPUT", "-p", "udp", "-j", ISTIO_OUTPUT,
              why="DNS conntrack zones are set in raw ISTIO_OUTPUT (1.23, history §4.22)")
    udp53 = ("-p", "udp", "--dport", DNS_PORT)
    for kind, ids in (("--uid-owner", config.proxy_uid), ("--gid-owner", config.proxy_gid)):
        for owner in ids:
            p.add("nat", chain, *udp53, "-m", "owner", kind, owner, "-j", "RETURN",
                  why="the proxy's own DNS queries (the agent's upstream) are not redirected (history §4.7)")
    if rel >= (1, 14):
        _owner_groups(p, config, chain, udp53)
    if rel < (1, 9):
        # 1.7–1.8: DNAT to Envoy's 15013 (1.7) or the agent's 15053 (1.8), and SNAT back (history §4.5, §4.6).
        target = AGENT_DNS_PORT if rel >= (1, 8) else "15013"
        p.add("nat", "OUTPUT", *udp53, "-j", "DNAT", "--to-destination", f"127.0.0.1:{target}",
              why=f"app → any UDP DNS server → 127.0.0.1:{target} (history §4.5)")
        p.add("nat", "POSTROUTING", "-p", "udp", "--dport", target, "-j", "SNAT", "--to-source", "127.0.0.1",
              why="the DNATed query leaves from 127.0.0.1 (history §4.5)")
        return
    if all_dns:
        p.add("nat", chain, *udp53, "-j", "REDIRECT", "--to-port", AGENT_DNS_PORT,
              why=f"app → any UDP DNS server → the agent on {AGENT_DNS_PORT} (capture-all, history §4.10)")
    for servers, prefix, scope in ((config.dns_servers_v4, 32, Scope.V4), (config.dns_servers_v6, 128, Scope.V6)):
        for server in () if all_dns else servers:
            p.add("nat", chain, *udp53, "-d", f"{server}/{prefix}", "-j", "REDIRECT", "--to-port", AGENT_DNS_PORT,
                  scope=scope, why=f"app → resolver {server} over UDP → the agent on {AGENT_DNS_PORT} (history §4.7)")
    if rel < (1, 10, 3) or (rel < (1, 11) and not config.dns_conntrack_zone):
        return  # zones: 1.10.3–1.10.x only behind ISTIO_META_DNS_CONNTRACK_ZONE, 1.11 on always (history §4.9)
    for kind, ids in (("--uid-owner", config.proxy_uid), ("--gid-owner", config.proxy_gid)):
        for owner in ids:
            p.add("raw", chain, *udp53, "-m", "owner", kind, owner, "-j", "CT", "--zone", "1",
                  why="agent → upstream resolver: conntrack zone 1 (history §4.9)")
            p.add("raw", chain, "-p", "udp", "--sport", AGENT_DNS_PORT, "-m", "owner", kind, owner,
                  "-j", "CT", "--zone", "2", why="agent's answers → app: conntrack zone 2 (history §4.9)")
    if all_dns:
        p.add("raw", chain, *udp53, "-j", "CT", "--zone", "2", why="app → any resolver: conntrack zone 2 (§4.10)")
        p.add("raw", "PREROUTING", "-p", "udp", "--sport", DNS_PORT, "-j", "CT", "--zone", "1",
              why="any resolver → agent: conntrack zone 1 (capture-all, history §4.10)")
        return
    reply = "-s" if rel >= (1, 20) else "-d"  # the zone-1 rule matched -d until 1.20 (history §4.19)
    for servers, prefix, scope in ((config.dns_servers_v4, 32, Scope.V4), (config.dns_servers_v6, 128, Scope.V6)):
        for server in servers:
            p.add("raw", chain, *udp53, "-d", f"{server}/{prefix}", "-j", "CT", "--zone", "2", scope=scope,
                  why=f"app → resolver {server}: conntrack zone 2 (history §4.9)")
            p.add("raw", "PREROUTING", "-p", "udp", "--sport", DNS_PORT, reply, f"{server}/{prefix}", "-j", "CT",
                  "--zone", "1", scope=scope, why=f"resolver {server} → agent: conntrack zone 1 (history §4.9, §4.19)")


def _outbound_include(p: _Plan, config: CaptureConfig, cidrs: CidrList, scope: Scope, rel: Release) -> None:
    """Step 16 (§4, §8) for one family: ``*`` captures everything left, a list only its prefixes."""
    if cidrs.wildcard:
        p.add("nat", ISTIO_OUTPUT, "-j", ISTIO_REDIRECT, scope=scope,
              why="app → any other destination → Envoy outbound (-i '*', §4 step 16)")
        for nic in config.kube_virt_interfaces:
            p.add("nat", "PREROUTING", "-i", nic, "-j", ISTIO_REDIRECT, scope=scope, position=1,
                  why=f"VM behind {nic} → anywhere → Envoy outbound; lands above the RETURNs (§4.1, §8)")
        return
    prefixes = _prefixes(cidrs, scope, rel)
    for cidr in prefixes:
        for nic in config.kube_virt_interfaces:
            p.add("nat", "PREROUTING", "-i", nic, "-d", cidr, "-j", ISTIO_REDIRECT, scope=scope, position=1,
                  why=f"VM behind {nic} → {cidr} → Envoy outbound (§4 step 16, §8)")
        p.add("nat", ISTIO_OUTPUT, "-d", cidr, "-j", ISTIO_REDIRECT, scope=scope,
              why=f"app → {cidr} → Envoy outbound (-i, §4 step 16)")
    if prefixes and rel < (1, 23):
        p.add("nat", ISTIO_OUTPUT, "-j", "RETURN", scope=scope,
              why="everything else leaves uncaptured (the include list's trailing RETURN, until 1.22, history §4.22)")


def _tproxy_tail(p: _Plan, config: CaptureConfig, lo: Versioned, mark: str) -> None:
    """Step 17 (§4, §6): TPROXY's return path and loop avoidance; emitted whatever -b is."""
    p.add("mangle", "PREROUTING", "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "CONNMARK", "--save-mark",
          why=f"Envoy → app packets (original_src sets mark {mark}) save it on the connection (§6)")
    p.add("mangle", "OUTPUT", "-p", "tcp", "-o", "lo", "-m", "mark", "--mark", mark, "-j", "RETURN",
          why=f"already marked {mark}: Envoy → app, do not mark again (§6)")
    for kind, ids in (("--uid-owner", config.proxy_uid), ("--gid-owner", config.proxy_gid)):
        for owner in ids:
            p.add("mangle", "OUTPUT", "!", "-d", lo, "-p", "tcp", "-o", "lo", "-m", "owner", kind, owner,
                  "-j", "MARK", "--set-mark", OUTBOUND_MARK,
                  why=f"app → VIP → Envoy out → pod IP over lo: mark {OUTBOUND_MARK} so inbound captures it (§6)")
    p.add("mangle", "OUTPUT", "-p", "tcp", "-m", "connmark", "--mark", mark, "-j", "CONNMARK", "--restore-mark",
          why=f"app's replies on Envoy's spoofed connections get mark {mark} back: routed to lo, to Envoy (§6)")
    p.add("mangle", ISTIO_INBOUND, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "RETURN", position=1,
          why=f"marked {mark} (Envoy → app looping through lo): never re-captured (§6)")
    p.add("mangle", ISTIO_INBOUND, "-p", "tcp", "-s", PASSTHROUGH_SOURCE[Family.IPV4], "-i", "lo", "-j", "RETURN",
          position=2, scope=Scope.V4, why="Envoy/agent → app from 127.0.0.6: not captured (§6)")
    p.add("mangle", ISTIO_INBOUND, "-p", "tcp", "-s", PASSTHROUGH_SOURCE[Family.IPV6], "-i", "lo", "-j", "RETURN",
          position=2, scope=Scope.V6, why="Envoy/agent → app from ::6: not captured (§6)")
    p.add("mangle", ISTIO_INBOUND, "-p", "tcp", "-i", "lo", "-m", "mark", "!", "--mark", OUTBOUND_MARK,
          "-j", "RETURN", position=3, why=f"app → app over lo (not marked {OUTBOUND_MARK}): not captured (§6)")


@functools.lru_cache(maxsize=8192)
def _parse(args: tuple[str, ...], family: Family, names: Names) -> Rule:
    # Rules are immutable and most pods share most rules: parse each distinct rule once.
    return parse_rule_args(args, family, names)


def payloads(
    rules: Sequence[PlannedRule], *, ipv6: bool, names: Names = DEFAULT_NAMES
) -> tuple[RestorePayload, RestorePayload | None]:
    """Group planned rules into Istio's per-family ``iptables-restore --noflush`` payloads.

    Each op's ``rule`` is its tokens normalised as the kernel stores them; ``names`` resolves user and
    group names the way iptables does when loading (an unknown name raises RulesetError, as loading
    fails in iptables-restore).
    """

    def payload(family: Family) -> RestorePayload:
        ops = tuple(
            RuleOp(
                table=r.table,
                chain=r.chain,
                args=r.args,
                rule=_parse(r.args, family, names),
                position=r.position,
            )
            for r in rules
            if r.family is family
        )
        return RestorePayload(family=family, ops=ops)

    return payload(Family.IPV4), payload(Family.IPV6) if ipv6 else None


def build(
    config: CaptureConfig, *, names: Names = DEFAULT_NAMES
) -> tuple[RestorePayload, RestorePayload | None]:
    """The IPv4 restore payload and, when IPv6 is on, the IPv6 one, exactly as Istio emits them.

    ``names`` resolves owner-group (and user) names to ids for the ops' normalised ``rule``; without
    it a config naming groups (``ISTIO_OUTBOUND_OWNER_GROUPS=java``) raises RulesetError, exactly as
    iptables-restore fails on a group that does not exist. The dry-run text needs no names
    (``dryrun.render_dry_run`` over :func:`plan`).
    """
    return payloads(plan(config), ipv6=writes_ip6tables(config), names=names)


def route_commands(config: CaptureConfig) -> tuple[RouteCommand, ...]:
    """What Istio configures over netlink after the rules (real runs only; spec §1 step 6, §6).

    IPv6 on: ``::6/128`` on lo, so Envoy can bind the inbound passthrough source. TPROXY with a
    non-empty ``-b``: a policy rule sending mark M to table T, and a local default route in T, per family.
    """
    cmds: list[RouteCommand] = []
    rel = layout_release(config)
    if config.enable_ipv6 and rel >= (1, 3):  # the ::6 address came with the 127.0.0.6 rule (history §2.4)
        cmds.append(RouteCommand(("ip", "-6", "addr", "add", "::6/128", "dev", "lo"), True,
                                 "Envoy binds ::6 for inbound passthrough; IPv6 lo only has ::1/128 (§1 step 6)"))
    if config.mode is InterceptionMode.TPROXY and config.inbound_ports:
        mark, table = config.tproxy_mark, config.tproxy_route_table
        families = ("-4", "-6") if config.enable_ipv6 and rel >= (1, 12) else ("-4",)  # IPv6 TPROXY: 1.12
        for fam in families:
            cmds.append(RouteCommand(("ip", fam, "rule", "add", "fwmark", mark, "lookup", table), False,
                                     f"packets marked {mark} (TPROXY, ISTIO_DIVERT) use table {table} (§6)"))
        for fam in families:
            default = "0.0.0.0/0" if fam == "-4" else "::/0"
            cmds.append(RouteCommand(("ip", fam, "route", "add", "local", default, "dev", "lo", "table", table), True,
                                     f"table {table} delivers everything locally, to Envoy's transparent socket (§6)"))
    return tuple(cmds)


def cleanup_commands(payload: RestorePayload) -> tuple[tuple[str, ...], ...]:
    """The iptables commands Istio runs to undo ``payload`` (its ``BuildCleanupV4/V6``, spec §11).

    Walk the planned rules in reverse; each becomes ``-t T -D chain args`` (an insert loses its
    position), except rules inside an ``ISTIO_*`` chain that do not jump to an ``ISTIO_*`` chain (that
    chain is flushed anyway); then ``-F`` and ``-X`` each non-built-in chain in order of first
    appearance in that reversed walk. Derived from the plan, not from the live state.
    """
    reverse = payload.ops[::-1]
    out: list[tuple[str, ...]] = []
    for op in reverse:
        jumps_to_istio = any(
            tok in ("-j", "--jump") and i + 1 < len(op.args) and op.args[i + 1].startswith("ISTIO_")
            for i, tok in enumerate(op.args)
        )
        if op.chain.startswith("ISTIO_") and not jumps_to_istio:
            continue
        out.append(("-t", op.table, "-D", op.chain, *op.args))
    seen: set[tuple[str, str]] = set()
    for op in reverse:
        key = (op.table, op.chain)
        if key in seen or op.chain in BUILTIN:
            continue
        seen.add(key)
        out.append(("-t", op.table, "-F", op.chain))
        out.append(("-t", op.table, "-X", op.chain))
    return tuple(out)


__all__ = [
    "PlannedRule",
    "RouteCommand",
    "Scope",
    "Versioned",
    "build",
    "cleanup_commands",
    "dns_capture_effective",
    "inbound_listener_port",
    "layout_release",
    "owner_group_filter",
    "payloads",
    "plan",
    "route_commands",
    "writes_ip6tables",
]
