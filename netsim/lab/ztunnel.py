"""The lab's ambient side: an ambient pod's lab spec, and the probes ``lab verify`` adds for it.

Owns: :func:`ambient_spec` (istio-cni's in-pod rules and §7's policy routes as ``netsim.capture.ambient`` compiled
them for the pod, ztunnel's stand-ins, the kubelet-probe SNAT addresses on the node side) and :func:`table_probes`
(one probe per row of spec/istio-ambient-capture.md §10 that a lab can send: the app's TCP out, to itself and to
loopback, ztunnel's own marked traffic, the app's UDP and TCP DNS, a new connection marked 0x111, ztunnel's
connection to the app from the client's address, inbound plaintext, HBONE to 15008, kubelet's probe from the SNAT
address).
Never does: compile or decide anything itself (the workload holds the compiled rules and the mode decision), or
run anything.
"""

from __future__ import annotations

from ipaddress import ip_address, ip_interface
from typing import TYPE_CHECKING, Any

from netsim.errors import LabError
from netsim.netfilter.model import Family

if TYPE_CHECKING:
    from netsim.lab.control import DnsAgent, LabSpec
    from netsim.lab.runner import Address, Interface
    from netsim.lab.verify import Probe
    from netsim.workload.model import Workload

APP_PORT = 8080  # an app port the table's probes use (nothing need listen there: the first packet is compared)
OTHER_UDP = 5000


def ambient_spec(w: Workload, pod_file: str, *, name: str, pod_ips: tuple[Interface, ...],
                 cluster_dns: tuple[Address, ...], agent: DnsAgent, app_uid: int, notes: tuple[str, ...]) -> LabSpec:
    """The lab of an ambient pod's workload (``Workload.from_ambient_pod``): its compiled rules per family as
    ``iptables-restore --noflush`` text, the policy routes, ztunnel's ports, uid/gid and mark."""
    from netsim.capture import ambient as a
    from netsim.capture.dryrun import render_restore
    from netsim.lab.control import LabSpec
    from netsim.lab.inputs import node_interface, route_command
    from netsim.workload.identity import ZTUNNEL_GID, ZTUNNEL_UID

    compiled = w.ambient
    if compiled is None:
        why = next((n for n in w.notes if n.startswith("no ambient rules")), "no ambient rules")
        raise LabError(f"{pod_file}: no capture to run: {why}")
    if compiled.backend == "nft":
        raise LabError(f"{pod_file}: the ambient lab loads the agent's iptables rules; NativeNftables=true is not "
                       "supported there yet (give --ambient-config NativeNftables=false)")
    config = compiled.config
    by_family = {f: [r for r in compiled.rules if r.family is f] for f in Family}
    v6 = any(i.version == 6 for i in pod_ips)
    snat: list[Address] = [ip_address(config.host_probe_snat_address)]
    if v6 and config.enable_ipv6:
        snat.append(ip_address(config.host_probe_v6_snat_address))
    return LabSpec(
        name=name,
        pod_ips=pod_ips,
        node_ips=tuple(node_interface(i) for i in pod_ips),
        cluster_dns=cluster_dns,
        search=(f"{agent.namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"),
        rules_v4=render_restore(by_family[Family.IPV4]),
        rules_v6=render_restore(by_family[Family.IPV6]) if config.enable_ipv6 else None,
        pod_routes=tuple(route_command(name, r) for r in compiled.routes),
        proxy_uid=ZTUNNEL_UID,
        proxy_gid=ZTUNNEL_GID,
        app_uid=app_uid,
        proxy_port=a.ZTUNNEL_OUTBOUND,
        inbound_port=a.ZTUNNEL_INBOUND,
        dns_port=a.ZTUNNEL_DNS,
        hbone_port=a.ZTUNNEL_HBONE,
        mark=a.MARK,
        ambient=True,
        node_addrs=tuple(snat),
        dns=agent,
        pod=w.pod.name if w.pod is not None else name,
        notes=(*notes, *w.notes),
    )


def table_probes(info: dict[str, Any], version: int) -> list[Probe]:
    """The §10 rows as probes of one family (source port 0: the caller gives each its own)."""
    from netsim.capture.ambient import CONN, MARK
    from netsim.lab.verify import Probe
    from netsim.workload.identity import ZTUNNEL_GID, ZTUNNEL_UID

    pod = next((str(ip_interface(i).ip) for i in info["pod_ips"] if ip_interface(i).version == version), None)
    node = next((str(ip_interface(i).ip) for i in info["node_ips"] if ip_interface(i).version == version), None)
    if pod is None or node is None:
        return []
    remote = next((a for a in info.get("cluster_dns", []) if ip_address(a).version == version), node)
    snat = next((a for a in info.get("node_addrs", []) if ip_address(a).version == version), None)
    lo = "127.0.0.1" if version == 4 else "::1"
    app = {"uid": int(info.get("app_uid", 1000)), "gid": int(info.get("app_uid", 1000))}
    zt = {"uid": ZTUNNEL_UID, "gid": ZTUNNEL_GID, "mark": MARK}

    def p(proto: str, src: str, dst: str, dport: int, **kw: Any) -> Probe:
        return Probe(proto=proto, src=src, sport=0, dst=dst, dport=dport, **kw)

    out = [
        p("tcp", pod, remote, 80, **app),  # app → remote TCP: ztunnel outbound 15001
        p("tcp", pod, pod, APP_PORT, **app),  # app → its own address, via lo: not captured
        p("tcp", lo, lo, 80, **app),  # app → loopback
        p("tcp", pod, remote, 80, **zt),  # ztunnel's own TCP (mark 0x539)
        p("udp", pod, remote, 53, **zt),  # ztunnel's upstream DNS: conntrack zone 1
        p("tcp", pod, remote, 53, **zt),
        p("udp", pod, remote, 53, **app),  # the app's DNS: 15053
        p("tcp", pod, remote, 53, **app),
        p("tcp", pod, remote, 80, uid=0, gid=0, mark=CONN),  # new TCP marked 0x111: accepted, table 100 (local)
        p("tcp", node, pod, APP_PORT, transparent=True, **zt),  # ztunnel → app from the client: connmark 0x111
        p("udp", pod, remote, OTHER_UDP, **app),  # other UDP: not captured
        p("tcp", node, pod, APP_PORT, inbound=True),  # remote → pod: 15006
        p("tcp", node, pod, 15008, inbound=True),  # HBONE: ztunnel's listener, no rule
        p("udp", node, pod, OTHER_UDP, inbound=True),
    ]
    if snat is not None:
        out += [p("tcp", snat, pod, APP_PORT, inbound=True),  # kubelet's probe from the SNAT address
                p("tcp", pod, snat, 80, **app)]  # the app's TCP to the SNAT address
    return out


__all__ = ["ambient_spec", "table_probes"]
