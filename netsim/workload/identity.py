"""The local proxy's identity as the kernel sees it: its ports, its credentials, its socket mark, its bind
addresses, for a sidecar and for ztunnel in an ambient pod.

Owns: :class:`SidecarIdentity` (the capture listeners 15001/15006/15053, the other ports Envoy and
pilot-agent listen on, the uid/gid its sockets carry, the passthrough bind address 127.0.0.6/::6,
TPROXY's mark and route table; for ambient, :meth:`SidecarIdentity.ztunnel`: ztunnel's four sockets, its
mark 0x539, its spoofed client source and the connmark 0x111 policy route, spec/istio-ambient-capture.md
§2.3, §7, §8) and :func:`envoy_uid`, the one home of the injector's rule that
Envoy runs as uid 0 (gid 1337) in TPROXY mode. Every other module (the tracer's hops, the lab's
listeners) reads these values from here instead of writing the numbers again.

Never does: IO, or decide anything about packets (``netsim.workload.hops``) or about Envoy's
listeners and clusters (``netsim.mesh``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netsim.capture.config import CaptureConfig
    from netsim.netfilter.model import Ruleset
    from netsim.netfilter.nft.model import NftRuleset
    from netsim.spec.versions import VersionProfile

# spec/istio-iptables.md §3: istio-iptables' defaults, which the injector passes unchanged
OUTBOUND_PORT = 15001  # -p: Envoy's outbound (virtualOutbound) listener
INBOUND_PORT = 15006  # -z: Envoy's inbound (virtualInbound) listener
TUNNEL_PORT = 15008  # -e: the HBONE inbound tunnel
DNS_PORT = 15053  # pilot-agent's DNS proxy (spec/istio-dns.md)
# Envoy's and pilot-agent's other listeners: merged Prometheus (15020), health (15021), Envoy stats (15090)
OTHER_PORTS = (15020, 15021, 15090)
PROXY_UID = 1337  # the injector's proxy uid and gid (outside OpenShift)
PROXY_GID = 1337
TPROXY_ROUTE_TABLE = 133  # -r
# Envoy binds inbound passthrough connections to these since Istio 1.10 (spec/netfilter.md §1.11)
PASSTHROUGH_V4 = "127.0.0.6"
PASSTHROUGH_V6 = "::6"
PASSTHROUGH_SINCE = (1, 10)
# ztunnel's ports, marks and route table are istio-cni's constants (netsim.capture.ambient, ambient spec §2.3,
# §7); its container runs as uid 0, gid 1337 (Istio's ztunnel chart: runAsUser 0, runAsGroup 1337); no ambient
# rule matches an owner, so only the text shows them.
ZTUNNEL_UID = 0
ZTUNNEL_GID = 1337


def envoy_uid(proxy_uid: int, *, tproxy: bool) -> int:
    """The uid Envoy's sockets carry: the proxy uid, except in TPROXY mode, where the injector runs
    Envoy as uid 0 (gid stays the proxy gid, 1337) so that it may set IP_TRANSPARENT
    (spec/istio-iptables.md §6). The rules' ``--gid-owner 1337`` RETURN is then what exempts it."""
    return 0 if tproxy else proxy_uid


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarIdentity:
    """A local proxy: its capture listeners and how it opens its upstream connections.

    The defaults are Istio's sidecar in REDIRECT mode; :meth:`for_capture` reads a compiled config.
    """

    outbound_port: int = OUTBOUND_PORT
    inbound_port: int = INBOUND_PORT
    dns_port: int = DNS_PORT
    tunnel_port: int = TUNNEL_PORT
    other_ports: tuple[int, ...] = OTHER_PORTS
    uid: int = PROXY_UID
    gid: int = PROXY_GID
    # None models releases before 1.10, which connected from and to 127.0.0.1
    passthrough_v4: str | None = PASSTHROUGH_V4
    passthrough_v6: str | None = PASSTHROUGH_V6
    dns: bool = False  # pilot-agent's DNS proxy listens on dns_port (DNS capture is on)
    tproxy_mark: int | None = None  # TPROXY mode: the mark its rules set and the route table that delivers it
    tproxy_table: int = TPROXY_ROUTE_TABLE
    # who listens: "sidecar" (Envoy and pilot-agent) or "ztunnel" (ambient); the JSON's listener.owner
    owner: str = "sidecar"
    mark: int = 0  # SO_MARK of the proxy's own sockets (ztunnel: 0x539), the mark its packets start with
    # listeners that receive inbound connections addressed to them, no rule needed: the HBONE tunnel port 15008
    # (the sidecar's, which istio-iptables exempts from inbound capture, spec/istio-iptables.md §2 -e, §10;
    # ztunnel's, ambient §10)
    direct_inbound: tuple[int, ...] = ()
    # inbound connections to the app come from the original client's address (IP_TRANSPARENT + IP_FREEBIND,
    # ztunnel's freebind_connect), not from the passthrough address
    spoofs_client: bool = False
    # ip rule fwmark MARK/MASK lookup TABLE with "local default dev lo" (ambient's return path, §7)
    policy_route: tuple[int, int, int] | None = None
    policy_route_v6: bool = True  # the IPv6 ip rule exists too (istio-cni adds it only with EnableIPv6)
    dns_loopback: bool = False  # the DNS proxy listens on 127.0.0.1 / ::1 only (ztunnel), not the wildcard

    @classmethod
    def ztunnel(cls, *, dns: bool = True) -> SidecarIdentity:
        """ztunnel as an ambient pod's namespace sees it (spec/istio-ambient-capture.md §8): listeners 15001
        (outbound), 15006 (plaintext inbound), 15008 (HBONE, reached directly) on the wildcard address with
        IP_TRANSPARENT, the DNS proxy 15053 on loopback (``dns``: the rules redirect to it), every socket
        marked 0x539, inbound connections to the app from the client's own address, and the connmark 0x111
        policy route of §7 that brings the app's replies back to it."""
        from netsim.capture import ambient as a  # the agent's constants, shared with its rules

        return cls(outbound_port=a.ZTUNNEL_OUTBOUND, inbound_port=a.ZTUNNEL_INBOUND, dns_port=a.ZTUNNEL_DNS,
                   tunnel_port=a.ZTUNNEL_HBONE, other_ports=(), uid=ZTUNNEL_UID, gid=ZTUNNEL_GID, passthrough_v4=None,
                   passthrough_v6=None, dns=dns, owner="ztunnel", mark=a.MARK, direct_inbound=(a.ZTUNNEL_HBONE,),
                   spoofs_client=True, policy_route=(a.CONN, a.CONN_MASK, int(a.ROUTE_TABLE)), dns_loopback=True)

    @property
    def ambient(self) -> bool:
        return self.owner == "ztunnel"

    @property
    def name(self) -> str:
        """How a sentence names it: "the sidecar", "ztunnel"."""
        return "ztunnel" if self.ambient else "the sidecar"

    @property
    def possessive(self) -> str:
        return "ztunnel's" if self.ambient else "the sidecar's"

    @property
    def credentials(self) -> str:
        """"uid 1337"; with a socket mark "uid 0, mark 0x539"."""
        return f"uid {self.uid}" + (f", mark {self.mark:#x}" if self.mark else "")

    @property
    def receiving_ports(self) -> tuple[int, ...]:
        """Every port a connection it receives can be delivered to: the capture ports and :attr:`direct_inbound`."""
        return (*self.capture_ports, *self.direct_inbound)

    @property
    def transparent(self) -> bool:
        """TPROXY mode: the inbound listener is an IP_TRANSPARENT socket."""
        return self.tproxy_mark is not None

    @property
    def shared_listener(self) -> bool:
        """One listener for both directions (Istio before 1.3: inbound went to 15001 too, and Envoy told
        the directions apart by the original destination, spec/istio-iptables-history.md §2.1)."""
        return self.inbound_port == self.outbound_port

    @property
    def capture_ports(self) -> tuple[int, int, int]:
        """The ports a captured packet is delivered to: outbound, inbound, DNS."""
        return self.outbound_port, self.inbound_port, self.dns_port

    @property
    def listening_ports(self) -> tuple[int, ...]:
        """Every TCP port the sidecar listens on (Envoy and pilot-agent), whatever the app does."""
        return (self.outbound_port, self.inbound_port, self.tunnel_port, *self.other_ports)

    @property
    def label(self) -> str:
        return f"{self.owner} (uid {self.uid}, gid {self.gid}" + (f", mark {self.mark:#x})" if self.mark else ")")

    @classmethod
    def for_capture(cls, config: CaptureConfig | None, profile: VersionProfile | None = None, *,
                    dns: bool = False) -> SidecarIdentity:
        """The sidecar that ``config``'s rules were written for (None: Istio's defaults), under ``profile``.

        Ports and ids that are not plain numbers (a group name) fall back to Istio's defaults.
        """
        passthrough = profile is None or profile.version >= PASSTHROUGH_SINCE
        pt4, pt6 = (PASSTHROUGH_V4, PASSTHROUGH_V6) if passthrough else (None, None)
        if config is None:
            return cls(passthrough_v4=pt4, passthrough_v6=pt6, dns=dns, direct_inbound=(TUNNEL_PORT,))
        tproxy = config.mode.value == "TPROXY"
        uid = _number(config.proxy_uid[0] if config.proxy_uid else "", PROXY_UID)
        tunnel = _number(config.inbound_tunnel_port, TUNNEL_PORT)
        from netsim.capture.iptables import inbound_listener_port  # the release's own inbound target

        return cls(outbound_port=_number(config.proxy_port, OUTBOUND_PORT),
                   inbound_port=_number(inbound_listener_port(config), INBOUND_PORT),
                   tunnel_port=tunnel, direct_inbound=(tunnel,),
                   uid=envoy_uid(uid, tproxy=tproxy),
                   gid=_number(config.proxy_gid[0] if config.proxy_gid else "", PROXY_GID),
                   dns=dns, tproxy_mark=int(config.tproxy_mark, 0) if tproxy else None,
                   tproxy_table=_number(config.tproxy_route_table, TPROXY_ROUTE_TABLE), passthrough_v4=pt4,
                   passthrough_v6=pt6)


    @classmethod
    def for_rules(cls, rulesets: Iterable[Ruleset], profile: VersionProfile | None = None,
                  nft: Iterable[NftRuleset] = ()) -> SidecarIdentity:
        """The sidecar a dump's rules were written for: Istio's defaults, in TPROXY mode when a rule
        TPROXYs (its ``--on-port`` and ``--tproxy-mark``), with DNS capture when a rule redirects to
        the DNS proxy's port (an iptables REDIRECT, or ``redirect to :PORT`` in the ``nft`` rulesets)."""
        base = cls.for_capture(None, profile)
        mark: int | None = None
        inbound = base.inbound_port
        redirected: dict[str, int] = {}  # ISTIO_REDIRECT / ISTIO_IN_REDIRECT → their REDIRECT port
        dns = False
        for rs in rulesets:
            for table in rs.tables:
                for chain in table.chains:
                    for rule in chain.rules:
                        target = rule.target
                        if target is None:
                            continue
                        if target.name == "TPROXY":
                            port, tmark = target.option("--on-port"), target.option("--tproxy-mark")
                            if port is not None and port.args and port.args[0].isdigit():
                                inbound = int(port.args[0])
                            if tmark is not None and tmark.args:
                                mark = int(tmark.args[0].split("/")[0], 0)
                        to = (target.option("--to-ports") or target.option("--to-port")) \
                            if target.name == "REDIRECT" else None
                        dns = dns or (to is not None and to.args == (str(base.dns_port),))
                        if to is not None and to.args and to.args[0].isdigit() and not rule.matches \
                                and chain.name in ("ISTIO_REDIRECT", "ISTIO_IN_REDIRECT"):
                            redirected[chain.name] = int(to.args[0])
        if not dns and nft:
            from netsim.netfilter.nft.model import Nat

            dns = any(isinstance(e, Nat) and e.kind == "redirect" and e.ports == (base.dns_port, base.dns_port)
                      for n in nft for t in n.tables for c in t.chains for r in c.rules for e in r.exprs)
        # A dump of an old release names its listeners itself: inbound went to 15001 before 1.3.
        base = replace(base, outbound_port=redirected.get("ISTIO_REDIRECT", base.outbound_port),
                       inbound_port=redirected.get("ISTIO_IN_REDIRECT", base.inbound_port))
        if mark is None:
            return replace(base, dns=dns)
        return replace(base, inbound_port=inbound, uid=envoy_uid(base.uid, tproxy=True), dns=dns, tproxy_mark=mark)


def _number(text: str, default: int) -> int:
    return int(text) if text.isdigit() else default


__all__ = ["DNS_PORT", "INBOUND_PORT", "OUTBOUND_PORT", "ZTUNNEL_GID", "ZTUNNEL_UID", "SidecarIdentity", "envoy_uid"]
