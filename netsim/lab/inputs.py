"""A pod manifest (and Services/ServiceEntries) → the :class:`~netsim.lab.control.LabSpec` a lab is built from.

Owns: the lab's choices around the compiler — the pod's addresses (``status.podIPs``, else 10.244.0.5)
and the node side's (the first other host of the pod's subnet), the cluster DNS address written to the
namespace's resolv.conf (``spec.dnsConfig.nameservers``, else 10.96.0.10), turning the compiler's route
commands (``ip`` argv) into typed netlink commands, and the DNS agent's inputs.
Never does: decide a rule (``netsim.spec`` + ``netsim.capture`` do, exactly as for ``netsim compile``), or IO
beyond reading the given files. The environment is not consulted: a lab is a function of its files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from ipaddress import ip_address, ip_interface, ip_network
from pathlib import Path

from netsim.capture.iptables import RouteCommand
from netsim.errors import LabError
from netsim.lab.control import DnsAgent, LabSpec, search_path
from netsim.lab.runner import AddrAdd, Command, Interface, RouteAdd, RuleAdd
from netsim.lab.state import BACKENDS
from netsim.netfilter.model import Family
from netsim.reader import read_bytes

DEFAULT_POD_IP = "10.244.0.5"
DEFAULT_CLUSTER_DNS = "10.96.0.10"
PREFIX = {4: 24, 6: 64}  # the pod subnet the lab gives the veth (a node's pod CIDR is a /24 in kind/kubeadm)
MAX_NAME = 40  # a namespace name is a file name; keep `ip netns` output readable


def pod_interface(ip: str) -> Interface:
    addr = ip_address(ip)
    return ip_interface(f"{addr}/{PREFIX[addr.version]}")


def node_interface(pod: Interface) -> Interface:
    """The first host of the pod's subnet that is not the pod (10.244.0.5/24 → 10.244.0.1/24)."""
    for host in pod.network.hosts():
        if host != pod.ip:
            return ip_interface(f"{host}/{pod.network.prefixlen}")
    raise LabError(f"pod address {pod}: no room for a node address in its /{pod.network.prefixlen}")


def route_command(pod_netns: str, rc: RouteCommand) -> Command:
    """The compiler's ``ip`` argv (spec istio-iptables.md §1 step 6, §6) as the typed command it means."""
    a = rc.argv
    match a:
        case ("ip", "-6" | "-4", "addr", "add", address, "dev", dev):
            return AddrAdd(netns=pod_netns, ifname=dev, address=ip_interface(address), ignore_exists=rc.ignore_exists)
        case ("ip", "-4" | "-6" as fam, "rule", "add", "fwmark", mark, "lookup", table):
            return RuleAdd(netns=pod_netns, family=Family.IPV4 if fam == "-4" else Family.IPV6,
                           fwmark=int(mark, 0), table=int(table))
        case ("ip", "-4" | "-6", "route", "add", "local", dst, "dev", dev, "table", table):
            return RouteAdd(netns=pod_netns, dst=ip_network(dst), dev=dev, table=int(table), local=True,
                            ignore_exists=rc.ignore_exists)
        # ambient (spec/istio-ambient-capture.md §7): ``replace`` into a fresh table is an add, and a local
        # route's scope is host
        case ("ip", "-4" | "-6", "route", "replace", "local", dst, "dev", dev, "scope", "host", "table", table):
            return RouteAdd(netns=pod_netns, dst=ip_network(dst), dev=dev, table=int(table), local=True,
                            ignore_exists=True)
        case ("ip", "-4" | "-6" as fam, "rule", "add", "fwmark", mark, "lookup", table, "pref", pref):
            value, _, mask = mark.partition("/")
            return RuleAdd(netns=pod_netns, family=Family.IPV4 if fam == "-4" else Family.IPV6,
                           fwmark=int(value, 0), table=int(table), fwmask=int(mask, 0) if mask else None,
                           priority=int(pref))
    raise LabError(f"route command the lab cannot apply: {' '.join(a)}")


def _digest(path: Path) -> str:
    return hashlib.sha256(read_bytes(path)).hexdigest()[:16]


def lab_spec(pod_file: str, *, name: str | None = None, services: Sequence[str] = (),
             upstreams: Sequence[str] = (), namespace: str | None = None, app_uid: int = 1000,
             istio_version: str | None = None, backend: str = "iptables", mode: str | None = None,
             ambient_settings: Sequence[str] = (), config_paths: Sequence[str] = ()) -> LabSpec:
    """Compile ``pod_file`` as ``netsim compile --pod`` does and lay out the lab around it.

    Sidecar or ambient as ``compile`` and ``trace`` decide it (``Workload.from_pod``: ``mode``, the pod's and its
    namespace's ``istio.io/dataplane-mode`` label, a Namespace object in the pod's file, ``config_paths`` or
    ``services``; ``ambient_settings`` the node agent's ``--ambient-config``): an ambient pod's lab loads
    istio-cni's in-pod rules and §7's policy routes and runs ztunnel's stand-ins (``control.LabSpec.ambient``).

    The pod's Kubernetes namespace is the manifest's ``metadata.namespace`` (``default`` when it names none);
    an explicit ``namespace`` wins, with a note in ``LabSpec.notes`` when it overrides the manifest's.
    ``backend`` ``nft``: Istio's native nftables rules (``netsim compile --backend nft``) instead of iptables.

    Raises NetsimError (one line, naming file and field) when the pod does not compile, and LabError when
    it compiles to no capture at all (nothing for a lab to show).
    """
    from netsim.capture.config import InterceptionMode
    from netsim.capture.dryrun import render_restore
    from netsim.errors import RulesetError, SpecError
    from netsim.k8s import expand_paths
    from netsim.netfilter.matches import Names
    from netsim.spec.pod import load_pod_with_objects
    from netsim.spec.versions import profile_for
    from netsim.workload.model import Workload

    if backend not in BACKENDS:
        raise LabError(f'backend "{backend}": use {" or ".join(BACKENDS)}')
    pod, file_objects = load_pod_with_objects(pod_file)
    notes: tuple[str, ...] = ()
    if namespace is None:
        namespace = pod.namespace
    elif namespace != pod.namespace:
        notes = (f"namespace {namespace} (from --namespace; {pod_file} says {pod.namespace})",)
    pod_ips = tuple(pod_interface(ip) for ip in (pod.pod_ips or (DEFAULT_POD_IP,)))
    dns = tuple(ip_address(a) for a in (pod.dns_nameservers or (DEFAULT_CLUSTER_DNS,)))
    lab_name = name or pod.name
    if not lab_name or len(lab_name) > MAX_NAME or not all(c.isalnum() or c in "-_" for c in lab_name):
        raise LabError(f'lab name "{lab_name}": use 1-{MAX_NAME} letters, digits, "-" or "_" (give --name)')
    service_paths = tuple(p.resolve() for p in expand_paths(services))
    agent = DnsAgent(configs=service_paths, namespace=namespace, upstreams=tuple(upstreams),
                     digests=tuple(_digest(p) for p in service_paths))
    if mode != "sidecar":  # enrolled in ambient? decided as compile and trace decide it
        from netsim.lab.ztunnel import ambient_spec
        from netsim.spec.ambient import decide_mode, namespace_labels

        objects = file_objects
        paths = (*config_paths, *map(str, service_paths))
        if paths:
            from netsim.k8s import read_objects

            objects = (*objects, *(dict(o.body) for o in read_objects(paths).objects))
        decision = decide_mode(pod, namespace_labels(objects), mode)
        if decision.ambient:
            w = Workload.from_ambient_pod(pod, istio_version=istio_version, pod_ips=tuple(i.ip for i in pod_ips),
                                          settings=ambient_settings, reason=decision.reason,
                                          opted_out=decision.opted_out, backend="nft" if backend == "nft" else None)
            return ambient_spec(w, pod_file, name=lab_name, pod_ips=pod_ips, cluster_dns=dns, agent=agent,
                                app_uid=app_uid, notes=notes)
        if decision.opted_out:
            notes = (*notes, f"sidecar capture: {decision.reason}")
        if ambient_settings:
            raise SpecError(f"option --ambient-config: the pod runs in sidecar mode ({decision.reason}); "
                            "add --mode ambient")
    elif ambient_settings:
        raise SpecError("option --ambient-config: the pod runs in sidecar mode (--mode sidecar)")
    try:  # the rules load on this machine: owner-group names resolve against its groups
        w = Workload.from_pod_source(pod, profile_for(istio_version), profile_given=istio_version is not None,
                                     pod_ips=tuple(i.ip for i in pod_ips), cluster_dns=str(dns[0]),
                                     names=Names(system=True))
    except RulesetError as e:
        raise e.at(pod_file) from None
    res, compiled = w.resolution, w.compiled
    if res is None or res.config is None or compiled is None:
        raise LabError(f"{pod_file}: no capture to run: {res.no_capture_reason if res is not None else ''}")
    config = res.config
    nft_rules = None
    if backend == "nft":
        from dataclasses import replace

        from netsim.capture.nft import nft_refusal, render_nft

        refused = nft_refusal(res.release, res.profile.label, "--backend nft")
        if refused:
            raise LabError(f"{refused}; leave out --backend nft")
        nft_rules = render_nft(replace(config, native_nftables=True))
    return LabSpec(
        name=lab_name,
        pod_ips=pod_ips,
        node_ips=tuple(node_interface(i) for i in pod_ips),
        cluster_dns=dns,
        search=search_path(namespace),
        rules_v4="" if nft_rules is not None else render_restore(compiled.v4),
        rules_v6=render_restore(compiled.v6) if compiled.v6 is not None and nft_rules is None else None,
        nft_rules=nft_rules,
        pod_routes=tuple(route_command(lab_name, r) for r in compiled.routes),
        proxy_uid=int(config.proxy_uid[0]),
        proxy_gid=int(config.proxy_gid[0]),
        app_uid=app_uid,
        proxy_port=int(config.proxy_port),
        inbound_port=int(config.inbound_capture_port),
        tproxy=config.mode is InterceptionMode.TPROXY,
        dns=agent,
        pod=pod.name,
        notes=notes,
    )


__all__ = ["DEFAULT_CLUSTER_DNS", "DEFAULT_POD_IP", "lab_spec", "node_interface", "pod_interface", "route_command"]
