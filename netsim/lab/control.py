"""``up`` and ``down`` of a lab: the plan of what to create (pure), and carrying it out through a Runner.

Owns: :class:`LabSpec` (everything a lab is built from, already compiled: addresses, restore texts,
route commands, the DNS agent's inputs), :func:`up_plan` (the ordered steps, each naming the resource
it creates so it is recorded *before* it exists), :func:`up` (idempotent: the same inputs twice change
nothing; a crashed or damaged lab is torn down and rebuilt; any failure tears down what was made),
:func:`down` (idempotent: derived from the record, ``state.cleanup``) and :func:`health`.

Never does: compile a pod (``netsim.lab.inputs``), talk to netlink or spawn anything itself (the runner
does), or touch the host namespace: the pod and the "node" namespace are both new, joined by a veth pair
created between them, and ``/etc/netns/<pod>/`` is written only for a namespace this lab made.

Topology (the defaults)::

    node ns "<name>-node"                          pod ns "<name>"
    lo     10.96.0.10/32 (cluster DNS stand-in)    lo   (::6/128 when IPv6; TPROXY table 133 when used)
    vpod0  10.244.0.1/24  <----- veth ----->       eth0 10.244.0.5/24, default via 10.244.0.1
    (Services' ClusterIPs and the cluster DNS are reached through the node side.)

An ambient pod (``LabSpec.ambient``) gets istio-cni's in-pod rules and §7's policy routes instead, and stand-ins
for ztunnel's sockets (spec/istio-ambient-capture.md §8): 15001 outbound, 15006 plaintext inbound (connecting to
the app from the client's address), 15008 HBONE, and the DNS agent on 15053, every socket with SO_MARK 0x539 and
uid 0 / gid 1337 as ztunnel's (SO_MARK and IP_TRANSPARENT need root's capabilities); the node side also holds the
probe SNAT addresses, so kubelet's probes can be sent from them.

Processes: every one starts as root (so it can import netsim from any installation root can run, e.g. a
virtualenv in a mode-700 home) and drops its privileges itself once its sockets are bound: the DNS agent and
the 15001 relay to the proxy's uid/gid (the kernel's owner match must see them as the proxy), the 15006 relay
likewise (uid 0 / gid 1337 under TPROXY, as Envoy), the cluster DNS stand-in (node side, port 53) to nobody.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Any

from netsim.errors import LabError
from netsim.lab import state as st
from netsim.lab.probe import SPORT_HI, SPORT_LO
from netsim.lab.runner import (
    AddrAdd,
    Address,
    Command,
    Exec,
    Interface,
    LinkUp,
    Listening,
    MakeDir,
    NetnsAdd,
    NetnsInode,
    Outcome,
    ProcessAlive,
    Restore,
    RouteAdd,
    RuleAdd,
    Runner,
    Spawn,
    VethAdd,
    WriteFile,
)
from netsim.netfilter.model import Family
from netsim.workload.identity import envoy_uid

ETC_NETNS = Path("/etc/netns")  # ``ip netns exec N`` bind-mounts /etc/netns/N/* over /etc/*
POD_IF, NODE_IF = "eth0", "vpod0"
# How long ``up`` waits for the agent and the listeners to bind before calling the lab broken.
READY_TIMEOUT_SECONDS = 15.0
NOBODY = 65534  # the cluster DNS stand-in's uid/gid once port 53 is bound


def node_name(name: str) -> str:
    return f"{name}-node"


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsAgent:
    """How to start the DNS agent: its Services/ServiceEntries, the pod's namespace, upstream override."""

    configs: tuple[Path, ...] = ()
    namespace: str = "default"
    upstreams: tuple[str, ...] = ()  # host:port; empty: the pod's resolv.conf nameservers (the agent's default)
    argv_prefix: tuple[str, ...] = (sys.executable, "-m", "netsim", "dns", "serve")
    digests: tuple[str, ...] = ()  # sha256 of each config file's content, so an edit makes new inputs


def search_path(namespace: str) -> tuple[str, ...]:
    """A pod's resolv.conf search list under Kubernetes' ClusterFirst DNS policy: its namespace's Services, all
    Services, the cluster domain."""
    return (f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local")


@dataclass(frozen=True, slots=True, kw_only=True)
class LabSpec:
    """Everything one lab is built from. ``rules_v4``/``rules_v6`` are ``iptables-restore --noflush`` text;
    ``nft_rules``, when given, is Istio's native nftables transaction (``nft -f``), loaded instead of them."""

    name: str
    pod_ips: tuple[Interface, ...] = (IPv4Interface("10.244.0.5/24"),)
    node_ips: tuple[Interface, ...] = (IPv4Interface("10.244.0.1/24"),)
    cluster_dns: tuple[Address, ...] = (IPv4Address("10.96.0.10"),)
    search: tuple[str, ...] = search_path("default")
    rules_v4: str = ""
    rules_v6: str | None = None
    nft_rules: str | None = None
    pod_routes: tuple[Command, ...] = ()  # capture's route commands (spec §1 step 6, §6), in the pod ns
    proxy_uid: int = 1337
    proxy_gid: int = 1337
    app_uid: int = 1000
    proxy_port: int = 15001
    inbound_port: int = 15006
    dns_port: int = 15053
    tproxy: bool = False
    dns: DnsAgent = field(default_factory=DnsAgent)
    listener_argv: tuple[str, ...] = (sys.executable, "-m", "netsim.lab.listeners")
    cluster_dns_argv: tuple[str, ...] = (sys.executable, "-m", "netsim.lab.clusterdns")
    pod: str = ""  # the manifest's pod (or workload) name, for ``lab list``
    notes: tuple[str, ...] = ()  # what ``up`` should tell the user about how its inputs were read
    # ambient mode: ztunnel's stand-ins instead of the sidecar's relays (their SO_MARK ``mark``, HBONE's port),
    # and addresses the node side holds besides its veth's (the kubelet-probe SNAT addresses, on its lo)
    ambient: bool = False
    mark: int = 0
    hbone_port: int = 0
    node_addrs: tuple[Address, ...] = ()
    marked_argv: tuple[str, ...] = (sys.executable, "-m", "netsim.lab.marked")

    @property
    def node(self) -> str:
        return node_name(self.name)

    @property
    def digest(self) -> str:
        """Identity of the inputs (not of the interpreter path): the same pod and files give the same digest."""
        basis = replace(self, listener_argv=(), cluster_dns_argv=(), marked_argv=(), notes=(),
                        dns=replace(self.dns, argv_prefix=()))
        return hashlib.sha256(repr(basis).encode()).hexdigest()[:16]

    def resolv_conf(self) -> str:
        lines = [f"nameserver {a}" for a in self.cluster_dns]
        if self.search:
            lines.append("search " + " ".join(self.search))
        lines.append("options ndots:5")  # kubelet's ClusterFirst default
        return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Step:
    """One thing to do; ``records`` are written to the state before it is done."""

    action: Command | Restore
    records: tuple[st.Resource, ...] = ()
    role: str = ""  # for Spawn: which process this is


def _first_of(ips: tuple[Interface, ...], version: int) -> Interface | None:
    return next((i for i in ips if i.version == version), None)


NO_SERVICES = "# netsim lab: no --services given; the agent knows no names and forwards every query\n" \
              "apiVersion: v1\nkind: List\nitems: []\n"


def no_services_file(name: str) -> Path:
    """The empty Services file the agent is given when ``up`` had no ``--services`` (it needs one)."""
    return st.run_dir(name) / "no-services.yaml"


@dataclass(frozen=True, slots=True)
class Role:
    """One long-running process of a lab: where it runs, what it listens on (``up`` waits for that)."""

    role: str
    argv: tuple[str, ...]
    netns: str
    port: int
    udp: bool = False


def _hostport(a: Address, port: int) -> str:
    return f"[{a}]:{port}" if a.version == 6 else f"{a}:{port}"


def listener_roles(spec: LabSpec) -> tuple[Role, ...]:
    """Each process ``up`` starts: the DNS agent, the two relays (one before 1.3, whose rules sent both
    directions to 15001), the cluster DNS stand-in.

    All start as root and drop to the proxy uid/gid themselves (module docstring), so their own dials are not
    captured again (ISTIO_OUTPUT's owner RETURN); in TPROXY mode the injector runs Envoy as uid 0 / gid 1337
    (spec §6, ``netsim.workload.identity.envoy_uid``), and so does the 15006 relay, which needs IP_TRANSPARENT.
    """
    ipv6 = any(i.version == 6 for i in spec.pod_ips)
    listen = [f"127.0.0.1:{spec.dns_port}"] + ([f"[::1]:{spec.dns_port}"] if ipv6 else [])
    configs = spec.dns.configs or (no_services_file(spec.name),)
    prefix = spec.dns.argv_prefix
    if spec.ambient:  # ztunnel's DNS proxy: every socket marked, or its upstream queries come back to 15053
        prefix = (*spec.marked_argv, "--mark", hex(spec.mark), *_module_argv(prefix))
    argv = [*prefix, "--namespace", spec.dns.namespace]
    for cfg in configs:
        argv += ["--config", str(cfg)]
    for addr in listen:
        argv += ["--listen", addr]
    upstreams = spec.dns.upstreams or tuple(_hostport(a, 53) for a in spec.cluster_dns)
    for up in upstreams:
        argv += ["--upstream", up]
    argv += ["--user", str(spec.proxy_uid), "--group", str(spec.proxy_gid)]
    out = [Role("dns", tuple(argv), spec.name, spec.dns_port, udp=True)]
    if spec.ambient:
        out += _ztunnel_roles(spec, ipv6)
    relays = [] if spec.ambient else [("outbound", spec.proxy_port, "original"), ("inbound", spec.inbound_port, "app")]
    if spec.proxy_port == spec.inbound_port:  # before 1.3: one listener, told apart by the original destination
        relays = [("inbound", spec.proxy_port, "by-destination")]
    for role, port, upstream in relays:
        transparent = spec.tproxy and role == "inbound"
        argv = [*spec.listener_argv, "--port", str(port), "--dial", upstream]
        if upstream == "by-destination":
            argv += [arg for a in spec.pod_ips for arg in ("--local", str(a.ip))]
        if ipv6:
            argv.append("--ipv6")
        if transparent:
            argv.append("--transparent")
        argv += ["--user", str(envoy_uid(spec.proxy_uid, tproxy=transparent)), "--group", str(spec.proxy_gid),
                 "--probe-sports", f"{SPORT_LO}-{SPORT_HI}"]
        out.append(Role(f"listener-{port}", tuple(argv), spec.name, port))
    argv = [*spec.cluster_dns_argv, "--namespace", spec.dns.namespace, "--user", str(NOBODY), "--group", str(NOBODY)]
    for cfg in configs:
        argv += ["--config", str(cfg)]
    for a in spec.cluster_dns:
        argv += ["--listen", str(a)]
    out.append(Role("cluster-dns", tuple(argv), spec.node, 53, udp=True))
    return tuple(out)


def _module_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    """``(python, "-m", "netsim", "dns", "serve")`` → ``("netsim", "dns", "serve")``, what ``netsim.lab.marked``
    runs."""
    return argv[argv.index("-m") + 1:] if "-m" in argv else argv


def _ztunnel_roles(spec: LabSpec, ipv6: bool) -> list[Role]:
    """ztunnel's three TCP listeners in the pod (§8): outbound to the original destination, plaintext inbound to
    the app from the client's address, HBONE accepted and closed; every socket marked, uid 0 / gid 1337."""
    out = []
    for port, dial in ((spec.proxy_port, "original"), (spec.inbound_port, "spoof"), (spec.hbone_port, "none")):
        argv = [*spec.listener_argv, "--port", str(port), "--dial", dial, "--ztunnel", "--mark", hex(spec.mark),
                *(["--ipv6"] if ipv6 else []), "--user", str(spec.proxy_uid), "--group", str(spec.proxy_gid),
                "--probe-sports", f"{SPORT_LO}-{SPORT_HI}"]
        out.append(Role(f"listener-{port}", tuple(argv), spec.name, port))
    return out


def _host_interface(a: Address) -> Interface:
    return IPv4Interface(f"{a}/32") if a.version == 4 else IPv6Interface(f"{a}/128")


def up_plan(spec: LabSpec) -> tuple[Step, ...]:
    """The steps of ``up`` in order. Pure: a function of ``spec`` and the run directory's path."""
    pod, node = spec.name, spec.node
    run = st.run_dir(pod)
    steps: list[Step] = [
        Step(NetnsAdd(node), (st.Namespace(node),)),
        Step(NetnsAdd(pod), (st.Namespace(pod),)),
        Step(LinkUp(node, "lo")),
        Step(LinkUp(pod, "lo")),
        Step(VethAdd(netns=node, ifname=NODE_IF, peer_netns=pod, peer_ifname=POD_IF),
             (st.Link(node, NODE_IF), st.Link(pod, POD_IF))),
    ]
    steps += [Step(AddrAdd(netns=node, ifname=NODE_IF, address=a)) for a in spec.node_ips]
    steps += [Step(AddrAdd(netns=node, ifname="lo", address=_host_interface(a)))
              for a in (*spec.cluster_dns, *spec.node_addrs)]
    steps += [Step(AddrAdd(netns=pod, ifname=POD_IF, address=a)) for a in spec.pod_ips]
    steps += [Step(LinkUp(node, NODE_IF)), Step(LinkUp(pod, POD_IF))]
    for version, default in ((4, IPv4Network("0.0.0.0/0")), (6, IPv6Network("::/0"))):
        gw = _first_of(spec.node_ips, version)
        if gw is not None and _first_of(spec.pod_ips, version) is not None:
            steps.append(Step(RouteAdd(netns=pod, dst=default, gateway=gw.ip, dev=POD_IF)))
    steps += [Step(c) for c in spec.pod_routes]
    etc = ETC_NETNS / pod
    steps += [
        Step(MakeDir(etc), (st.File(str(etc)),)),
        Step(WriteFile(etc / "resolv.conf", spec.resolv_conf()), (st.File(str(etc / "resolv.conf")),)),
    ]
    if spec.nft_rules is not None:  # the nft backend: its inet tables hold both families' rules
        steps += [Step(Exec(netns=pod, argv=("nft", "-f", "-"), stdin=spec.nft_rules)),
                  Step(Exec(netns=pod, argv=NFT_LIST), role=LOADED_NFT)]
    else:
        steps += [Step(Restore(pod, Family.IPV4, spec.rules_v4)),
                  Step(Exec(netns=pod, argv=(Family.IPV4.save_command,)), role=LOADED_RULES[Family.IPV4])]
    if spec.rules_v6 is not None and spec.nft_rules is None:
        steps.append(Step(Restore(pod, Family.IPV6, spec.rules_v6)))
        steps.append(Step(Exec(netns=pod, argv=(Family.IPV6.save_command,)), role=LOADED_RULES[Family.IPV6]))
    if not spec.dns.configs:
        empty = no_services_file(pod)
        steps.append(Step(WriteFile(empty, NO_SERVICES), (st.File(str(empty)),)))
    for r in listener_roles(spec):
        log = run / f"{r.role}.log"
        steps.append(Step(Spawn(netns=r.netns, argv=r.argv, log=log), (st.File(str(log)),), role=r.role))
    return tuple(steps)


# info keys under which ``up`` keeps what the kernel held right after the restore (``status`` compares)
LOADED_RULES = {Family.IPV4: "loaded_v4", Family.IPV6: "loaded_v6"}
LOADED_NFT = "loaded_nft"  # the same for an nft lab: ``nft list ruleset``
NFT_LIST = ("nft", "list", "ruleset")
_COUNTERS = re.compile(r"\[\d+:\d+\]")
_NFT_COUNTERS = re.compile(r"\bcounter packets \d+ bytes \d+")


def rules_identity(save_output: str) -> str:
    """``iptables-save`` output without what changes by itself: comments (dates) and packet counters."""
    lines = (_COUNTERS.sub("", ln).strip() for ln in save_output.splitlines() if not ln.startswith("#"))
    return "\n".join(" ".join(ln.split()) for ln in lines if ln) + "\n"


def nft_identity(listing: str) -> str:
    """``nft list ruleset`` output without what changes by itself: the counters' values."""
    lines = (_NFT_COUNTERS.sub("counter", ln).strip() for ln in listing.splitlines())
    return "\n".join(" ".join(ln.split()) for ln in lines if ln) + "\n"


def _execute(runner: Runner, state: st.LabState, steps: tuple[Step, ...]) -> st.LabState:
    for step in steps:
        for rec in step.records:
            state = state.adding(rec)
        if step.records:
            st.save(state)
        if isinstance(step.action, Restore):
            runner.restore(step.action.netns, step.action.family, step.action.text)
            continue
        outcome: Outcome = runner.run(step.action)
        if isinstance(step.action, Exec) and step.role in (*LOADED_RULES.values(), LOADED_NFT):
            identity = nft_identity if step.role == LOADED_NFT else rules_identity
            state = replace(state, info={**state.info, step.role: identity(outcome.stdout)})
            st.save(state)
        elif isinstance(step.action, NetnsAdd):
            state = state.replacing(st.Namespace(step.action.name), st.Namespace(step.action.name, outcome.inode))
            st.save(state)
        elif isinstance(step.action, Spawn):
            assert outcome.pid is not None and outcome.start_time is not None
            state = state.adding(st.Process(step.role, outcome.pid, outcome.start_time, step.action.netns,
                                            str(step.action.log)))
            st.save(state)
    return state


def _wait_ready(runner: Runner, spec: LabSpec, state: st.LabState) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    procs = {p.role: p for p in state.of(st.Process)}
    for r in listener_roles(spec):
        while not runner.run(Listening(r.netns, r.port, r.udp)).truth:
            proc = procs[r.role]
            if not runner.run(ProcessAlive(proc.pid, proc.start_time)).truth:
                raise LabError(f"{r.role} exited during start-up: {_last_line(Path(proc.log))}")
            if time.monotonic() > deadline:
                raise LabError(f"{r.role} did not listen on port {r.port} within {READY_TIMEOUT_SECONDS:g}s: "
                               f"see {proc.log}")
            time.sleep(0.05)


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return f"no log at {path}"
    return lines[-1] if lines else f"nothing in {path}"


def health(runner: Runner, state: st.LabState, saved: dict[Family, str] | None = None) -> list[str]:
    """What is wrong with a recorded lab (empty: every namespace and process is still there, and the pod's
    rules are those ``up`` loaded). ``saved``: each family's ``iptables-save`` output if the caller has it
    already (else it is read here)."""
    problems: list[str] = []
    gone = False
    for ns in state.of(st.Namespace):
        inode = runner.run(NetnsInode(ns.name)).inode
        if inode is None:
            problems.append(f"namespace {ns.name} is gone")
            gone = True
        elif ns.inode is not None and inode != ns.inode:
            problems.append(f"namespace {ns.name} was replaced by another one")
            gone = True
    for proc in state.of(st.Process):
        if not runner.run(ProcessAlive(proc.pid, proc.start_time)).truth:
            problems.append(f"{proc.role} (pid {proc.pid}) is not running")
    if not state.complete:
        problems.append("start-up did not finish")
    for family, key in LOADED_RULES.items():
        loaded = state.info.get(key)
        if loaded is None or gone or not state.complete:
            continue
        now = (saved or {}).get(family)
        if now is None:
            now = runner.run(Exec(netns=state.name, argv=(family.save_command,))).stdout
        diff = rules_diff(str(loaded), rules_identity(now))
        if diff:
            problems.append(f"the IPv{family.value} rules differ from what up loaded ({diff})")
    loaded_nft = state.info.get(LOADED_NFT)
    if loaded_nft is not None and not gone and state.complete:
        now = nft_identity(runner.run(Exec(netns=state.name, argv=NFT_LIST)).stdout)
        if diff := rules_diff(str(loaded_nft), now):
            problems.append(f"the nftables rules differ from what up loaded ({diff})")
    return problems


def rules_diff(loaded: str, now: str) -> str:
    """"2 rules added, 1 removed" between two :func:`rules_identity` texts ("" when equal)."""
    if loaded == now:
        return ""
    a, b = loaded.splitlines(), now.splitlines()
    added = sum(1 for ln in b if ln not in a)
    removed = sum(1 for ln in a if ln not in b)
    parts = [f"{added} line{'s' * (added != 1)} added"] if added else []
    parts += [f"{removed} line{'s' * (removed != 1)} removed"] if removed else []
    return ", ".join(parts) or "same lines in another order"


def _info(spec: LabSpec) -> dict[str, Any]:
    return {
        "pod": spec.pod,
        "namespace": spec.dns.namespace,
        "created": time.time(),
        "cluster_dns": [str(a) for a in spec.cluster_dns],
        "pod_netns": spec.name,
        "node_netns": spec.node,
        "pod_ips": [str(i) for i in spec.pod_ips],
        "node_ips": [str(i) for i in spec.node_ips],
        "rules_v4": spec.rules_v4,
        "rules_v6": spec.rules_v6,
        "backend": "nft" if spec.nft_rules is not None else "iptables",
        "rules_nft": spec.nft_rules,
        "app_uid": spec.app_uid,
        "proxy_uid": spec.proxy_uid,
        "proxy_gid": spec.proxy_gid,
        "ports": {"outbound": spec.proxy_port, "inbound": spec.inbound_port, "dns": spec.dns_port,
                  **({"hbone": spec.hbone_port} if spec.ambient else {})},
        "mode": "ambient" if spec.ambient else "sidecar",
        "mark": spec.mark,
        "node_addrs": [str(a) for a in spec.node_addrs],
        "tproxy_port": spec.inbound_port if spec.tproxy else 0,
        "fwmark_routes": sorted({(c.fwmark, c.table) if c.fwmask is None else (c.fwmark, c.table, c.fwmask)
                                 for c in spec.pod_routes if isinstance(c, RuleAdd) and c.family is Family.IPV4}),
        "transparent_ports": [spec.proxy_port, spec.inbound_port, spec.hbone_port] if spec.ambient else [],
    }


@dataclass(frozen=True, slots=True)
class UpResult:
    state: st.LabState
    changed: bool
    note: str = ""


def _check_names_free(runner: Runner, spec: LabSpec) -> None:
    for ns in (spec.name, spec.node):
        if runner.run(NetnsInode(ns)).inode is not None:
            raise LabError(f"network namespace {ns} already exists and netsim lab did not create it "
                           f"(no record in {st.run_dir(spec.name)}); choose another --name")
    if (ETC_NETNS / spec.name).exists():
        raise LabError(f"{ETC_NETNS / spec.name} already exists and netsim lab did not create it; "
                       "choose another --name")


def up(runner: Runner, spec: LabSpec) -> UpResult:
    """Bring the lab up. The same inputs again change nothing; different inputs for a running lab are an
    error; a lab left half-built or damaged (crash, killed processes) is torn down and rebuilt.
    On any failure everything made so far is removed before the error is raised."""
    with st.locked():
        return _up(runner, spec)


def _up(runner: Runner, spec: LabSpec) -> UpResult:
    digest = spec.digest
    note = ""
    existing = st.load(spec.name)
    if existing is not None:
        problems = health(runner, existing)
        if not problems:
            if existing.digest == digest:
                return UpResult(existing, changed=False)
            raise LabError(f"lab {spec.name} is up from other inputs; run `netsim lab down {spec.name}` first")
        note = f"rebuilt lab {spec.name}: " + "; ".join(problems)
        _down(runner, spec.name)
    _check_names_free(runner, spec)
    state = st.LabState(name=spec.name, digest=digest, info=_info(spec))
    st.save(state)
    try:
        state = _execute(runner, state, up_plan(spec))
        _wait_ready(runner, spec, state)
    except BaseException as failure:
        try:
            _down(runner, spec.name)
        except LabError as cleanup_error:
            raise LabError(f"{failure}; and cleaning up failed: {cleanup_error}") from None
        raise
    state = replace(state, complete=True)
    st.save(state)
    return UpResult(state, changed=True, note=note)


def down(runner: Runner, name: str) -> bool:
    """Remove everything the record of lab ``name`` says was made; False if there is no such lab.

    Every cleanup command runs even when one fails (the rest is still removed); the record is kept,
    so ``down`` can be run again, until all of them succeeded.
    """
    with st.locked():
        return _down(runner, name)


def _down(runner: Runner, name: str) -> bool:
    state = st.load(name)
    if state is None:
        return False
    errors: list[str] = []
    for command in st.cleanup(state):
        try:
            runner.run(command)
        except LabError as e:
            errors.append(str(e))
    if errors:
        raise LabError(f"lab {name}: " + "; ".join(errors) + f" (record kept in {st.run_dir(name)})")
    st.forget(name)
    return True


def exec_argv(state: st.LabState, argv: tuple[str, ...], uid: int | None) -> Exec:
    """The Exec for ``lab exec``: in the pod namespace, as ``uid`` (default the app's uid), gid = uid."""
    u = int(state.info.get("app_uid", 1000)) if uid is None else uid
    return Exec(netns=state.name, argv=argv, uid=u, gid=u, check=False)


__all__ = [
    "ETC_NETNS",
    "NODE_IF",
    "POD_IF",
    "DnsAgent",
    "LabSpec",
    "Role",
    "Step",
    "UpResult",
    "down",
    "exec_argv",
    "health",
    "listener_roles",
    "nft_identity",
    "node_name",
    "rules_diff",
    "rules_identity",
    "up",
    "up_plan",
]
