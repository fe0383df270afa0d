"""An inferred CaptureConfig → istio-iptables' options and the pod annotations that produce them.

Owns: :func:`options_of` (the inverse of ``netsim.spec.options.config_from_options``: long option names
without dashes, and the env/derived names of the inputs without a flag, exactly the conformance YAMLs'
``config`` keys), :func:`annotations_of` (what the sidecar injector, or the istio-cni plugin, reads to
pass those values: spec/istio-iptables.md §13) and :func:`cni_signature` (how the CNI plugin's defaults
show in the rules, §13.2). Never does: read rules or files.
"""

from __future__ import annotations

import json

from netsim.capture.config import WILDCARD, CaptureConfig, CidrList, InterceptionMode
from netsim.spec.pod import (
    ANN_EXCLUDE_CIDR,
    ANN_EXCLUDE_IFACES,
    ANN_EXCLUDE_IN,
    ANN_EXCLUDE_OUT_PORTS,
    ANN_INCLUDE_CIDR,
    ANN_INCLUDE_IN,
    ANN_INCLUDE_OUT_PORTS,
    ANN_KUBEVIRT,
    ANN_MODE,
    ANN_PROXY_CONFIG,
    ANN_REROUTE,
    ANN_STATUS_PORT,
)
from netsim.spec.releases import BY_KEY, release_text
from netsim.spec.versions import ANNOTATIONS_SINCE, profile_for

Release = tuple[int, ...]
STATUS_PORT = "15020"  # the injector's default status port (values.global.proxy.statusPort, §13.1)
CNI_EXCLUDES = ("15020", "15021", "15090")  # what the CNI plugin appends to -d, in its order (§13.2)


def _cidrs(cidrs: CidrList) -> str:
    if cidrs.wildcard:
        return WILDCARD
    return ",".join(str(c) for c in (*cidrs.v4, *cidrs.v6))


def options_of(config: CaptureConfig, release: Release | None = None) -> dict[str, object]:
    """Every input of ``config`` that shapes the rules, under istio-iptables' names (lists as comma strings,
    booleans as booleans, DNS servers as lists), so that ``config_from_options`` gives ``config`` back.

    With ``release``, only the inputs that release had (as a flag or an environment variable,
    ``netsim.spec.releases``): ``netsim compile --istio-version`` refuses a flag its release did not have."""
    everything: dict[str, object] = {
        "envoy-port": config.proxy_port,
        "inbound-capture-port": config.inbound_capture_port,
        "inbound-tunnel-port": config.inbound_tunnel_port,
        "proxy-uid": ",".join(config.proxy_uid),
        "proxy-gid": ",".join(config.proxy_gid),
        "istio-inbound-interception-mode": config.mode.value,
        "istio-inbound-tproxy-mark": config.tproxy_mark,
        "istio-inbound-ports": ",".join(config.inbound_ports),
        "istio-local-exclude-ports": ",".join(config.inbound_ports_exclude),
        "istio-exclude-interfaces": ",".join(config.exclude_interfaces),
        "istio-service-cidr": _cidrs(config.outbound_cidrs),
        "istio-service-exclude-cidr": _cidrs(config.outbound_cidrs_exclude),
        "istio-outbound-ports": ",".join(config.outbound_ports),
        "istio-local-outbound-ports-exclude": ",".join(config.outbound_ports_exclude),
        "kube-virt-interfaces": ",".join(config.kube_virt_interfaces),
        "redirect-dns": config.redirect_dns,
        "capture-all-dns": config.capture_all_dns,
        "drop-invalid": config.drop_invalid,
        "ISTIO_OUTBOUND_OWNER_GROUPS": config.owner_groups_include,
        "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": config.owner_groups_exclude,
        "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": config.ipv4_loopback_cidr,
        "ENABLE_INBOUND_IPV6": config.enable_ipv6,
        "DNS_SERVERS_V4": list(config.dns_servers_v4),
        "DNS_SERVERS_V6": list(config.dns_servers_v6),
        "DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK": "1" if config.disable_loopback_redirect else "",
        "DNS_CAPTURE": "1" if config.dns_capture else "",
        "ISTIO_META_DNS_CONNTRACK_ZONE": config.dns_conntrack_zone,
    }
    at = release or (1, 10_000)  # None: today
    return {key: value for key, value in everything.items()
            if key not in BY_KEY or BY_KEY[key].flag_in(at) or BY_KEY[key].env_in(at)}


def cni_signature(config: CaptureConfig) -> str | None:
    """Why these rules look written by the istio-cni plugin rather than istio-init, or None.

    The plugin writes the same rules from the same options; only its defaults differ (§13.2): it appends
    ``15020,15021,15090`` to -d (istio-init's template prefixes ``15090,15021,``), excludes outbound port
    15020 when the pod has no annotation for it, and turns on capture-all-dns with DNS capture."""
    excludes = config.inbound_ports_exclude
    if len(excludes) >= 3 and excludes[-3:] == CNI_EXCLUDES:
        return "-d ends with 15020,15021,15090, the istio-cni plugin's appended exclusions (istio-init's " \
               "template starts -d with 15090,15021)"
    if "15020" in config.outbound_ports_exclude and excludes[:2] != ("15090", "15021"):
        return "outbound port 15020 is excluded: the istio-cni plugin's default without an annotation"
    return None


def annotations_of(config: CaptureConfig, release: Release | None, *, cni: bool) -> tuple[dict[str, str], list[str]]:
    """The pod annotations that make the injector (``cni``: the CNI plugin) pass ``config``'s options at
    ``release`` (None: today), and notes on what no annotation sets (mesh config, the pod's addresses and
    resolv.conf, the proxy container's securityContext)."""
    ann: dict[str, str] = {}
    notes: list[str] = []
    version = release or (1, 10_000)
    profile = profile_for(None if release is None else release_text(release))

    def has(name: str) -> bool:
        return version >= ANNOTATIONS_SINCE[name].version

    if config.mode is InterceptionMode.TPROXY:
        ann[ANN_MODE] = "TPROXY"
    if config.outbound_cidrs != CidrList(wildcard=True):
        ann[ANN_INCLUDE_CIDR] = _cidrs(config.outbound_cidrs)
    if not config.outbound_cidrs_exclude.empty:
        ann[ANN_EXCLUDE_CIDR] = _cidrs(config.outbound_cidrs_exclude)
    if config.inbound_ports != (WILDCARD,):
        ann[ANN_INCLUDE_IN] = ",".join(config.inbound_ports)
        if not config.inbound_ports:
            notes.append("no inbound capture at all: -b is empty (an empty includeInboundPorts annotation)")
    else:
        _exclude_inbound(config.inbound_ports_exclude, profile.exclude_prefix, cni, ann, notes)
    if config.outbound_ports:
        ann[ANN_INCLUDE_OUT_PORTS] = ",".join(config.outbound_ports)
    out_excluded = [p for p in config.outbound_ports_exclude if not (cni and p == STATUS_PORT)]
    if out_excluded:
        ann[ANN_EXCLUDE_OUT_PORTS] = ",".join(out_excluded)
    if config.kube_virt_interfaces:
        ann[ANN_REROUTE if has(ANN_REROUTE) else ANN_KUBEVIRT] = ",".join(config.kube_virt_interfaces)
    if config.exclude_interfaces:
        ann[ANN_EXCLUDE_IFACES] = ",".join(config.exclude_interfaces)
    metadata: dict[str, str] = {}
    if config.redirect_dns:
        metadata["ISTIO_META_DNS_CAPTURE"] = "true"
    if config.capture_all_dns and not cni:
        metadata["CAPTURE_ALL_DNS"] = "true"
    if config.drop_invalid:
        metadata["INVALID_DROP"] = "true"
    if config.owner_groups_include != WILDCARD:
        metadata["ISTIO_OUTBOUND_OWNER_GROUPS"] = config.owner_groups_include
    if config.owner_groups_exclude:
        metadata["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"] = config.owner_groups_exclude
    if config.ipv4_loopback_cidr != "127.0.0.1/32":
        metadata["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"] = config.ipv4_loopback_cidr
    if metadata:
        ann[ANN_PROXY_CONFIG] = json.dumps({"proxyMetadata": metadata}, sort_keys=True)
    if (config.proxy_port, config.inbound_capture_port) != ("15001", "15006"):
        notes.append(f"envoy-port {config.proxy_port} / inbound-capture-port {config.inbound_capture_port}: "
                     "set by mesh config (proxyListenPort, proxyInboundListenPort), not by an annotation")
    if config.proxy_uid != ("1337",) or config.proxy_gid != config.proxy_uid:
        notes.append(f"proxy uid {','.join(config.proxy_uid)} / gid {','.join(config.proxy_gid)}: the istio-proxy "
                     "container's securityContext (runAsUser, runAsGroup), not an annotation")
    if config.dns_servers_v4 or config.dns_servers_v6:
        notes.append("DNS servers " + ", ".join((*config.dns_servers_v4, *config.dns_servers_v6))
                     + ": istio-iptables read them from the pod's /etc/resolv.conf")
    if config.enable_ipv6:
        notes.append("IPv6 rules: the pod had an IPv6 address (istio-iptables detects it)")
    return ann, notes


def _exclude_inbound(excludes: tuple[str, ...], prefix: str, cni: bool, ann: dict[str, str],
                     notes: list[str]) -> None:
    """-d → excludeInboundPorts (and the status port), undoing the injector's (or the CNI's) additions."""
    items = list(excludes)
    if cni:
        rest = [p for p in items if p not in CNI_EXCLUDES] if items[-3:] == list(CNI_EXCLUDES) else items
        if rest:
            ann[ANN_EXCLUDE_IN] = ",".join(rest)
        return
    fixed = [p for p in prefix.split(",") if p]
    if items[:len(fixed)] != fixed:
        notes.append(f"-d {','.join(items) or '(empty)'} does not start with the injector's "
                     f"{prefix.rstrip(',') or '(nothing)'}: istio-iptables was run by hand or by another tool")
        if items:
            ann[ANN_EXCLUDE_IN] = ",".join(items)
        return
    rest = items[len(fixed):]
    if rest and rest[-1] == STATUS_PORT:
        rest = rest[:-1]
    elif STATUS_PORT not in rest:
        ann[ANN_STATUS_PORT] = "0"
        notes.append("the status port 15020 is not excluded inbound: status port 0 (or a status port of "
                     "another number listed in excludeInboundPorts)")
    if rest:
        ann[ANN_EXCLUDE_IN] = ",".join(rest)


__all__ = ["CNI_EXCLUDES", "annotations_of", "cni_signature", "options_of"]
