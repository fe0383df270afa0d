"""A sidecar pod enrolled in ambient: every difference in capture its owner will see (``netsim migrate``).

Owns: the probes both modes are traced with (the matrix's rows: the usual ports, the ports and addresses
the pod's capture annotations name, DNS, kubelet probes, the proxy's uid), the two matrices, and the
findings, each with a stable ``check`` code, a severity and the spec section or Istio issue behind it. A
finding about traffic is read off the two traces of one row, so the findings and the matrices cannot
disagree; a finding about an input (an annotation or proxyMetadata key ambient ignores, the interception
mode, DNS capture) is read off the two compiled configurations.
Never does: print, read files, or trace by itself: both workloads come from ``netsim.workload`` (the
sidecar's compiled by ``netsim.capture``, ztunnel's by ``netsim.capture.ambient``) and trace themselves.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netsim.capture.ambient import DEFAULT_SNAT_V4, ZTUNNEL_HBONE
from netsim.workload.identity import OTHER_PORTS, PROXY_GID, PROXY_UID

if TYPE_CHECKING:
    from netsim.capture.ambient import AmbientCompiled
    from netsim.capture.config import CaptureConfig
    from netsim.workload.hops import Followed
    from netsim.workload.model import Workload

SPEC = "spec/istio-ambient-capture.md"
SIDECAR_SPEC = "spec/istio-iptables.md"
# per address family: "somewhere else" for outbound rows (a Service VIP), a peer pod, kubelet's node address (in
# sidecar mode probes come from there), and a DNS server that is not in the pod's resolv.conf
REMOTE = {4: "10.96.0.20", 6: "fd00:96::20"}
PEER = {4: "10.1.2.3", 6: "fd00:1::3"}
NODE = {4: "10.244.0.1", 6: "fd00:10:244::1"}
OTHER_RESOLVER = {4: "8.8.8.8", 6: "2001:4860:4860::8888"}
# pilot-agent's and Envoy's own ports (excluded inbound by the injector), ztunnel's HBONE port, the proxy's uid
# and gid, and the agent's default probe SNAT address: their homes' values
SIDECAR_PORTS = OTHER_PORTS
HBONE = ZTUNNEL_HBONE

# annotation (or proxyMetadata key) → (what it did for the sidecar, the spec section that says so)
BEFORE: dict[str, str] = {
    "traffic.sidecar.istio.io/excludeOutboundPorts": "outbound TCP and UDP to these ports bypass the sidecar",
    "traffic.sidecar.istio.io/includeOutboundPorts": "outbound TCP to these ports is captured whatever the "
                                                     "destination",
    "traffic.sidecar.istio.io/excludeInboundPorts": "inbound TCP to these ports bypasses the sidecar",
    "traffic.sidecar.istio.io/includeInboundPorts": "only inbound TCP to these ports is captured",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": "outbound traffic to these ranges bypasses the sidecar",
    "traffic.sidecar.istio.io/includeOutboundIPRanges": "only outbound traffic to these ranges is captured",
    "traffic.sidecar.istio.io/excludeInterfaces": "traffic through these interfaces is never captured",
    "traffic.sidecar.istio.io/kubevirtInterfaces": "TCP arriving on these interfaces is captured as outbound",
    "sidecar.istio.io/interceptionMode": "the sidecar's inbound interception mode",
    "status.sidecar.istio.io/port": "the status port is excluded from inbound capture",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    """One row: a connection's first packet, asked of both modes. ``peer``: the destination (outbound) or the
    source (inbound); ``ambient_peer``: another source in ambient (kubelet's probe arrives SNATed); ``uid``:
    the sending socket's (None: the app's); ``origin``: the annotation or setting the row exists for."""

    direction: str
    proto: str
    peer: str
    port: int
    why: str
    origin: str = ""
    kind: str = "traffic"  # traffic | dns | probe | uid | hbone | sidecar-port
    ambient_peer: str = ""
    uid: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cell:
    """One mode's answer for a probe (rendered from the trace's Decision)."""

    verdict: str
    listener: int | None
    owner: str
    decided_by: str
    reason: str

    @property
    def captured(self) -> bool:
        return self.verdict.startswith("captured")

    @property
    def text(self) -> str:
        where = f" {self.listener}" if self.listener is not None else ""
        return f"{self.verdict}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "listener": self.listener, "owner": self.owner,
                "decided_by": self.decided_by, "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    probe: Probe
    sidecar: Cell
    ambient: Cell


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrateFinding:
    check: str
    severity: str  # warning: traffic or behaviour changes; info: nothing changes but the reason
    message: str
    before: str
    after: str
    ref: str

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "severity": self.severity, "message": self.message, "before": self.before,
                "after": self.after, "ref": self.ref}


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    pod: str
    rows: tuple[Row, ...]
    findings: tuple[MigrateFinding, ...]
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        def side(mode: str) -> list[dict[str, Any]]:
            return [{"direction": r.probe.direction, "proto": r.probe.proto,
                     "peer": (r.probe.ambient_peer or r.probe.peer) if mode == "ambient" else r.probe.peer,
                     "port": r.probe.port, "why": r.probe.why, **getattr(r, mode).to_json()} for r in self.rows]

        return {"pod": self.pod, "findings": [f.to_json() for f in self.findings],
                "matrix": {"sidecar": side("sidecar"), "ambient": side("ambient")}, "notes": list(self.notes)}


# ------------------------------------------------------------------------------------------------ probes


def _host_in(cidr: str, family: int) -> str | None:
    try:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return None
    if net.version != family:
        return None
    return str(net.network_address + 1) if net.num_addresses > 2 else str(net.network_address)


class Origins:
    """Which sidecar input (an annotation, or ``proxyMetadata.KEY``) set an istio-iptables option, from the
    resolution's findings (the record ``--explain`` prints): ``of(option, value)`` prefers the input whose
    value names ``value``."""

    def __init__(self, findings: Sequence[Any]) -> None:
        self._by: dict[str, list[tuple[str, str]]] = {}
        for f in findings:
            if f.used and f.option:
                self._by.setdefault(f.option, []).append((f.key, f.value))

    def of(self, option: str, value: str = "") -> str:
        found = self._by.get(option, [])
        for key, text in found:
            if value and value in [v.strip() for v in text.replace("\n", ",").split(",")]:
                return key
        return found[0][0] if found else ""


def _label(origin: str, option: str, value: str) -> str:
    name = origin.rsplit("/", 1)[-1].removeprefix("proxyMetadata.") if origin else f"-{option}"
    return f"{name} {value}"


def probes(config: CaptureConfig | None, origins: Origins, app_ports: Sequence[int], cluster_dns: str, *,
           family: int = 4, snat: str = DEFAULT_SNAT_V4) -> tuple[Probe, ...]:
    """The rows of both matrices for a pod whose sidecar capture is ``config`` (its ports and ranges, each row
    named after the input that set it), in the pod's address ``family`` (``cluster_dns``: its resolv.conf's
    nameserver; ``snat``: ambient's probe source of that family)."""
    remote, peer_, node = REMOTE[family], PEER[family], NODE[family]
    out: list[Probe] = []
    seen: set[tuple[str, str, str, int, int | None]] = set()

    def add(p: Probe) -> None:
        key = (p.direction, p.proto, p.peer, p.port, p.uid)
        if key not in seen:
            seen.add(key)
            out.append(p)

    def port_rows(direction: str, option: str, ports: Sequence[str]) -> None:
        for port in ports:
            if port.isdigit() and not (direction == "inbound" and int(port) in SIDECAR_PORTS):
                o = origins.of(option, port)
                add(Probe(direction=direction, proto="tcp", peer=remote if direction == "outbound" else peer_,
                          port=int(port), why=_label(o, option, port), origin=o))

    def range_rows(option: str, cidrs: Sequence[Any]) -> None:
        for cidr in cidrs:
            host = _host_in(str(cidr.network), family)
            if host is not None:
                o = origins.of(option, str(cidr))
                add(Probe(direction="outbound", proto="tcp", peer=host, port=80, why=_label(o, option, str(cidr)),
                          origin=o))

    if config is not None:
        port_rows("outbound", "istio-local-outbound-ports-exclude", config.outbound_ports_exclude)
        port_rows("outbound", "istio-outbound-ports", config.outbound_ports)
        excl, incl = config.outbound_cidrs_exclude, config.outbound_cidrs
        range_rows("istio-service-exclude-cidr", excl.v4 if family == 4 else excl.v6)
        if not incl.wildcard:
            range_rows("istio-service-cidr", incl.v4 if family == 4 else incl.v6)
        port_rows("inbound", "istio-local-exclude-ports", config.inbound_ports_exclude)
        if config.inbound_ports != ("*",):
            port_rows("inbound", "istio-inbound-ports", config.inbound_ports)
    for port in (80, 443):
        add(Probe(direction="outbound", proto="tcp", peer=remote, port=port, why="outbound TCP"))
    add(Probe(direction="outbound", proto="udp", peer=remote, port=8125, why="outbound UDP (not DNS)"))
    add(Probe(direction="outbound", proto="tcp", peer=remote, port=80, why=f"the proxy's uid {PROXY_UID}",
              kind="uid", uid=PROXY_UID))
    add(Probe(direction="outbound", proto="udp", peer=cluster_dns, port=53, why="DNS to the cluster DNS", kind="dns"))
    add(Probe(direction="outbound", proto="tcp", peer=cluster_dns, port=53, why="DNS over TCP", kind="dns"))
    add(Probe(direction="outbound", proto="udp", peer=OTHER_RESOLVER[family], port=53, why="DNS to another resolver",
              kind="dns"))
    for port in sorted(set(app_ports)) or [80]:
        add(Probe(direction="inbound", proto="tcp", peer=peer_, port=port, why="inbound to the app"))
        add(Probe(direction="inbound", proto="tcp", peer=node, port=port, why="kubelet's probe", kind="probe",
                  ambient_peer=snat))
    add(Probe(direction="inbound", proto="tcp", peer=peer_, port=HBONE, why="HBONE", kind="hbone"))
    for port in SIDECAR_PORTS:
        add(Probe(direction="inbound", proto="tcp", peer=peer_, port=port, why="the sidecar's own port",
                  kind="sidecar-port"))
    return tuple(out)


# ------------------------------------------------------------------------------------------------ tracing


def _cell(f: Followed) -> Cell:
    d = f.decision
    listener = d.listener.port if d.listener is not None else None
    owner = d.listener.owner if d.listener is not None else ""
    by = d.decided_by.ref if d.decided_by is not None else ""
    return Cell(verdict=d.verdict.value, listener=listener, owner=owner, decided_by=by, reason=d.reason)


def _trace(w: Workload, p: Probe, ambient: bool) -> Cell:
    peer = ipaddress.ip_address((p.ambient_peer or p.peer) if ambient else p.peer)
    pod_ip = next(iter(w.addresses))
    if p.direction == "outbound":
        return _cell(w.trace((peer, p.port), proto=p.proto, uid=p.uid))
    return _cell(w.trace((pod_ip, p.port), proto=p.proto, from_=(peer, 40000)))


def compare(sidecar: Workload, ambient: Workload, probes_: Sequence[Probe]) -> tuple[Row, ...]:
    """Each probe traced in both modes."""
    return tuple(Row(probe=p, sidecar=_trace(sidecar, p, False), ambient=_trace(ambient, p, True)) for p in probes_)


# ----------------------------------------------------------------------------------------------- findings

ROW_REFS = {
    "traffic": f"{SPEC} §3 rules 11, 19 (every TCP is captured; nothing in ambient excludes a port or range)",
    "dns": f"{SPEC} §2.1 RedirectDNS, §2.2 ambient.istio.io/dns-capture, §3 rules 13-16",
    "probe": f"{SPEC} §6 (the node SNATs kubelet's probes), §3 rule 9",
    "uid": f"{SPEC} §3 (no owner match: only ztunnel's mark 0x539 is exempt); {SIDECAR_SPEC} §4 steps 9-10",
    "hbone": f"{SPEC} §10 (15008 is ztunnel's HBONE listener, reached without a rule)",
    "sidecar-port": f"{SPEC} §1 (no sidecar: its ports are gone, and nothing excludes them)",
}


OWNER_GROUP_KEYS = ("proxyMetadata.ISTIO_OUTBOUND_OWNER_GROUPS", "proxyMetadata.ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE")


def cause(r: Row, config: CaptureConfig | None, origins: Origins) -> str:
    """The sidecar input a row's sidecar verdict came from: the input the row exists for; an include list
    that leaves the row's port or address out; the owner-group filter when an owner-group rule (not the proxy's
    own gid) decided it; "" for none."""
    p = r.probe
    if p.origin:
        return p.origin
    if config is not None and not r.sidecar.captured and p.kind == "traffic":
        if p.direction == "inbound" and config.inbound_ports != ("*",) and str(p.port) not in config.inbound_ports:
            return origins.of("istio-inbound-ports")
        incl = config.outbound_cidrs
        if p.direction == "outbound" and not incl.wildcard and not _covered(p.peer, [str(c) for c in (*incl.v4,
                                                                                                       *incl.v6)]):
            return origins.of("istio-service-cidr")
    rule = r.sidecar.decided_by
    if "--gid-owner" in rule and f"--gid-owner {PROXY_GID} " not in rule:  # the owner-group filter (spec §9)
        return origins.of("ISTIO_OUTBOUND_OWNER_GROUPS" if "! --gid-owner" in rule else
                          "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE")
    return ""


def _covered(addr: str, ranges: Sequence[str]) -> bool:
    ip = ipaddress.ip_address(addr)
    for cidr in ranges:
        try:
            if ip in ipaddress.ip_network(cidr, strict=False):
                return True
        except ValueError:
            continue
    return False


def changed(r: Row) -> bool:
    return (r.sidecar.verdict, r.sidecar.listener) != (r.ambient.verdict, r.ambient.listener)


def _row_finding(r: Row, config: CaptureConfig | None, origins: Origins) -> MigrateFinding | None:
    p, s, a = r.probe, r.sidecar, r.ambient
    if not changed(r):
        return None
    if p.kind == "probe":
        what = f"kubelet's probe of port {p.port} (sidecar: from the node, {p.peer}, without the injector's " \
               f"probe rewrite; ambient: from {p.ambient_peer} after the node's SNAT)"
    elif p.direction == "outbound":
        who = f" as uid {p.uid}" if p.uid is not None else ""
        what = f"outbound {p.proto.upper()} to {p.peer}:{p.port}{who} ({p.why})"
    else:
        what = f"inbound {p.proto.upper()} from {p.peer} to port {p.port} ({p.why})"
    before = s.text + (f" ({s.decided_by})" if s.decided_by else "")
    after = a.text + (f" ({a.decided_by})" if a.decided_by else "")
    kinds = {"dns": "dns-query", "probe": "probe-path", "uid": "proxy-uid-exemption", "hbone": "hbone-port",
             "sidecar-port": "sidecar-port-captured"}
    if p.kind in kinds:
        check = kinds[p.kind]
    elif not s.captured and a.captured:
        check = "excluded-now-captured"
    elif s.captured and not a.captured:
        check = "captured-now-bypassed"
    else:
        check = "listener-changed"
    origin = cause(r, config, origins)
    because = f"; {origin.replace('proxyMetadata.', 'proxyMetadata ')} no longer applies" if origin else ""
    severity = "warning" if s.captured != a.captured and p.kind not in ("hbone", "sidecar-port") else "info"
    ref = f"{SPEC} §2.2 ({origin} is not read by istio-cni's ambient agent)" if origin else ROW_REFS.get(
        p.kind, ROW_REFS["traffic"])
    message = f"{what}: {s.text} with the sidecar, {a.text} with ztunnel{because}"
    return MigrateFinding(check=check, severity=severity, message=message, before=before, after=after, ref=ref)


def _short(p: Probe) -> str:
    return f"{p.direction} {p.proto.upper()} {'to' if p.direction == 'outbound' else 'from'} {p.peer}" + (
        f":{p.port}" if p.direction == "outbound" else f" to port {p.port}")


def _input_findings(sidecar: Workload, compiled: AmbientCompiled, rows: Sequence[Row], origins: Origins
                    ) -> list[MigrateFinding]:
    """Each capture input of the sidecar (annotation, proxy.istio.io/config key) that stops applying."""
    out: list[MigrateFinding] = []
    res = sidecar.resolution
    if res is None:
        return out
    for f in res.findings:
        if not f.used:
            continue
        moved = [r for r in rows if changed(r) and cause(r, res.config, origins) == f.key]
        if f.key.startswith("proxyMetadata."):
            name = f.key.split(".", 1)[1]
            check, ref = "proxy-config-ignored", f"{SPEC} §2 (the agent's settings are node-wide, §2.1; per pod only " \
                                                 "§2.2's annotations)"
            what = f"proxy.istio.io/config proxyMetadata {name}={f.value}"
            before = f"read by istio-init ({f.reason})"
        else:
            check = "annotation-ignored"
            ref = f"{SPEC} §2.2 (the only pod annotations istio-cni's ambient agent reads)"
            what = f"annotation {f.key}={f.value}"
            before = BEFORE.get(f.key, f.reason) + f" ({f.reason})"
        if f.key == "istio.io/reroute-virtual-interfaces":
            continue  # read in both modes (§2.2); the virtual-interface rows say what changes
        effect = "; ".join(f"{_short(r.probe)}: {r.sidecar.text} → {r.ambient.text}" for r in moved)
        after = "ignored" + (f": {effect}" if effect else "")
        if f.option == "redirect-dns":
            after += f"; ambient's DNS capture is {'on' if compiled.dns else 'off'} (the agent's RedirectDNS, or " \
                     "the pod's ambient.istio.io/dns-capture)"
        severity = "warning" if moved or f.key in ("traffic.sidecar.istio.io/excludeInterfaces",
                                                     "traffic.sidecar.istio.io/kubevirtInterfaces") else "info"
        if f.key == "traffic.sidecar.istio.io/kubevirtInterfaces":
            after += "; ambient reroutes virtual interfaces named by istio.io/reroute-virtual-interfaces (§2.2)"
        if f.key == "traffic.sidecar.istio.io/excludeInterfaces":
            after += "; traffic through these interfaces is captured like any other"
        out.append(MigrateFinding(check=check, severity=severity, message=f"{what}: ambient ignores it", before=before,
                                  after=after, ref=ref))
    return out


def _mode_findings(sidecar: Workload, compiled: AmbientCompiled) -> list[MigrateFinding]:
    from netsim.capture.ambient import dns_by_pod, tproxy_inbound

    out: list[MigrateFinding] = []
    res = sidecar.resolution
    config = res.config if res is not None else None
    if config is not None:
        mode = config.mode.value
        seen = "the client's address" if mode == "TPROXY" else "127.0.0.6 / ::6 (Envoy's passthrough bind) as " \
            "the source of inbound connections"
        amb = "TPROXY in mangle" if tproxy_inbound(compiled.config) else "REDIRECT in nat to 15006 (15008 direct)"
        out.append(MigrateFinding(
            check="interception-mode", severity="warning" if mode == "REDIRECT" else "info",
            message=f"inbound interception: the sidecar's {mode} → ztunnel's {amb}; ztunnel connects to the app "
                    "from the client's own address (IP_TRANSPARENT), so the app sees the real client",
            before=f"{mode}: the app sees {seen}", after=f"{amb}: the app sees the client's address",
            ref=f"{SPEC} §8, §10; {SIDECAR_SPEC} §6"))
        from netsim.capture.iptables import dns_capture_effective

        before_dns = dns_capture_effective(config)
        servers = ", ".join((*config.dns_servers_v4, *config.dns_servers_v6)) or "none"
        after_dns = compiled.dns
        b = f"on: UDP and TCP port 53 to the pod's nameservers ({servers}) → the agent on 15053" if before_dns \
            else "off: DNS goes to the nameservers directly"
        why = "the pod's ambient.istio.io/dns-capture" if dns_by_pod(compiled.config, compiled.pod) else \
            "the agent's RedirectDNS (Helm ambient.dnsCapture)"
        a = f"on ({why}): UDP port 53 to any server not via lo, TCP port 53 to any non-loopback address → ztunnel " \
            "on 15053" if after_dns else f"off ({why})"
        out.append(MigrateFinding(
            check="dns-capture", severity="warning" if before_dns != after_dns else "info",
            message=_dns_message(before_dns, after_dns),
            before=b, after=a, ref=f"{SPEC} §2.1, §2.2, §3 rules 13-16; {SIDECAR_SPEC} §7"))
    return out


def _dns_message(before: bool, after: bool) -> str:
    if before != after:
        return f"DNS capture turns {'on' if after else 'off'}"
    if after:
        return "DNS capture stays on; ambient captures queries to every server, not only the pod's nameservers"
    return "DNS capture stays off"


def migrate(sidecar: Workload, ambient: Workload, compiled: AmbientCompiled, *, cluster_dns: str = "10.96.0.10"
            ) -> Migration:
    """Every capture difference between ``sidecar`` (the pod as it runs now) and ``ambient`` (the same pod
    enrolled, compiled as ``compiled``)."""
    family = next(iter(sidecar.addresses)).version
    config = sidecar.resolution.config if sidecar.resolution is not None else None
    origins = Origins(sidecar.resolution.findings if sidecar.resolution is not None else ())
    servers = (config.dns_servers_v4 if family == 4 else config.dns_servers_v6) if config is not None else ()
    dns = servers[0] if servers else cluster_dns if family == 4 else "fd00:96::a"
    snat = compiled.config.host_probe_snat_address if family == 4 else compiled.config.host_probe_v6_snat_address
    rows = compare(sidecar, ambient, probes(config, origins, sidecar.app_ports, dns, family=family, snat=snat))
    findings = [*_input_findings(sidecar, compiled, rows, origins), *_mode_findings(sidecar, compiled)]
    findings += [f for f in (_row_finding(r, config, origins) for r in rows) if f is not None]
    notes = [*compiled.notes]
    return Migration(pod=sidecar.ref or sidecar.source, rows=rows, findings=tuple(findings), notes=tuple(notes))
