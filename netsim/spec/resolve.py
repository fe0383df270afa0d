"""All option sources → one effective value per istio-iptables option, and the CaptureConfig.

Owns: the order in which sources override each other, the inputs istio-iptables derives from the
running pod (IPv6 on/off from the pod's addresses, DNS servers from resolv.conf), and the
``used``/``why not`` verdict of every capture-related input, as one :class:`Resolution` value
that both ``netsim compile`` and ``--explain`` read.

Precedence, lowest first (the last one that sets an option wins)::

    istio-iptables default → your environment → pod proxyMetadata (istio-init's env)
      → injector args (annotations, or the Istio version's defaults) → your command-line flags

This is Istio's "default → env → flag" with the injector's rendered args as flags: an env var
(yours or the pod's) cannot change an option the injector passes, and what you type wins.

Never does: IO (the caller passes the environment and the already-read pod).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from ipaddress import ip_address
from typing import TYPE_CHECKING

from netsim.capture.config import CURRENT_LAYOUT
from netsim.errors import SpecError
from netsim.spec import flags as F
from netsim.spec.flags import Effective, Ignored, Setting, Source
from netsim.spec.pod import Finding, PodDerivation, PodSource, derive
from netsim.spec.releases import BY_KEY, SCRIPT_UNTIL, release_text
from netsim.spec.versions import VersionProfile, profile_for

if TYPE_CHECKING:
    from netsim.capture.config import CaptureConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class PodNetwork:
    """netsim's own inputs for what istio-iptables reads from the running pod (raw, as typed)."""

    ipv6: bool | None = None  # --ipv6 / --ipv6=false
    pod_ips: tuple[str, ...] = ()  # --pod-ip
    dns_servers_v4: str | None = None  # --dns-servers-v4
    dns_servers_v6: str | None = None  # --dns-servers-v6
    cluster_dns: str | None = None  # --cluster-dns


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """Everything decided about one compile: the config and why each part of it is what it is."""

    profile: VersionProfile
    pod: PodSource | None
    capture: bool
    no_capture_reason: str
    effective: tuple[Effective, ...]  # one per option, table order, then the derived inputs
    findings: tuple[Finding, ...]
    ignored: tuple[Ignored, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    config: CaptureConfig | None
    release: tuple[int, ...] | None = None  # the release whose inputs and layout apply (None: not given)

    def winner(self, key: str) -> Setting:
        for e in self.effective:
            if e.setting.key == key:
                return e.setting
        raise KeyError(key)


def resolve(*, flags: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None,
            net: PodNetwork | None = None, pod: PodSource | None = None,
            profile: VersionProfile | None = None, profile_given: bool = False) -> Resolution:
    """Combine every source into the effective options and the CaptureConfig.

    ``flags``: command-line istio-iptables options by long name, raw; ``env``: the environment
    (only istio-iptables' variables are read); ``net``: netsim's pod-network flags; ``pod``: the
    manifest's pod, if any; ``profile``: the Istio release (default current); ``profile_given``:
    whether the user chose it (then options the release lacks are warned about).

    Raises SpecError naming the flag, env var, annotation or field and the bad value.
    """
    from netsim.spec.options import config_from_options

    flags = dict(flags or {})
    env = env or {}
    net = net or PodNetwork()
    profile = profile or profile_for(None)
    warnings: list[str] = []
    notes: list[str] = []

    layout = _layout(profile) if profile_given else None
    release = profile.release if profile_given else profile_for(None).release  # which inputs exist
    settings: list[Setting] = F.defaults()
    env_layer, ignored = F.env_settings(env)
    env_layer, ignored = _release_env(env_layer, ignored, release, profile.label)
    settings += env_layer
    findings: tuple[Finding, ...] = ()
    cluster_dns, cluster_origin = _cluster_dns(net)
    derivation = None
    if pod is not None:
        derivation = derive(pod, profile, cluster_dns=cluster_dns, cluster_dns_origin=cluster_origin)
        findings = derivation.findings
        warnings += derivation.warnings
        ignored += derivation.ignored_env
        settings += [*derivation.env, *derivation.args]
    flag_layer = F.flag_settings(flags)
    _refuse_missing_flags(flag_layer, release, profile.label)
    settings += flag_layer
    if layout is not None:
        generator = "the istio-iptables.sh script" if layout < SCRIPT_UNTIL else "istio-iptables"
        notes.append(f"{profile.label}: the injector's arguments ({profile.summary}) and the rules follow "
                     f"this release ({generator} {profile.name} layout, spec/istio-iptables-history.md)")
    if profile_given and any(f.key.startswith("initContainers[") for f in findings):
        notes.append("--istio-version only changes the injector's defaults; this pod is already injected and "
                     "its istio-init arguments are used as they are")
    if derivation is not None and not derivation.capture:
        return Resolution(profile=profile, pod=pod, capture=False, no_capture_reason=derivation.no_capture_reason,
                          effective=tuple(Effective(setting=s) for s in settings if s.source is Source.FLAG),
                          findings=findings, ignored=tuple(ignored), warnings=tuple(warnings),
                          notes=tuple(notes), config=None, release=release if profile_given else None)

    eff = F.layer(settings)
    _fill_ids(eff, release)
    _inbound_port_default(eff, release)
    ipv6 = _ipv6(eff, net, pod, notes)
    eff["ENABLE_INBOUND_IPV6"] = ipv6
    for key, value in _dns(eff, net, derivation, cluster_dns, cluster_origin, notes, warnings).items():
        eff[key] = value
    findings = _verdicts(findings, eff)
    notes += _option_notes(eff, pod)

    capture, reason = True, ""
    if F.parse_bool(eff["skip-rule-apply"].setting.value):
        capture, reason = False, f"--skip-rule-apply ({eff['skip-rule-apply'].setting.origin}): " \
                                 "istio-iptables generates no rules"
    config = config_from_options(F.to_options(eff)) if capture else None
    if config is not None and layout is not None:
        config = replace(config, release=layout)
    return Resolution(profile=profile, pod=pod, capture=capture, no_capture_reason=reason,
                      effective=tuple(eff.values()), findings=findings, ignored=tuple(ignored),
                      warnings=tuple(warnings), notes=tuple(notes), config=config,
                      release=release if profile_given else None)


def _layout(profile: VersionProfile) -> tuple[int, int, int] | None:
    """The release layout to emit for ``profile`` (major, minor, patch); None for the current one (1.25 on)."""
    return None if profile.version >= CURRENT_LAYOUT else profile.release


def _refuse_missing_flags(flag_layer: list[Setting], release: tuple[int, ...], label: str) -> None:
    """A flag the release did not have is refused, as the script's getopts and Go's pflag refuse it."""
    for s in flag_layer:
        row = BY_KEY.get(s.key)
        if row is None or row.flag_in(release):
            continue
        spec = F.OPTIONS_BY_KEY[s.key]
        since = "" if row.flag_since is None else f" (added in {release_text(row.flag_since)})"
        who = "its istio-iptables.sh script" if release < SCRIPT_UNTIL else "its istio-iptables"
        raise SpecError(f"option {spec.flag}: {label} has no such option{since}; {who} refuses it")


def _release_env(layer: list[Setting], ignored: list[Ignored], release: tuple[int, ...],
                 label: str) -> tuple[list[Setting], list[Ignored]]:
    """Environment variables the release did not read are ignored, as that release ignored them."""
    kept: list[Setting] = []
    out = list(ignored)
    for s in layer:
        row = BY_KEY.get(s.key)
        if row is None or row.env_in(release):
            kept.append(s)
            continue
        span = "" if row.env_since is None else f" (read from {release_text(row.env_since)}" + (
            f" to before {release_text(row.until)})" if row.until else ")")
        out.append(Ignored(origin=s.origin, value=s.value, reason=f"{label} does not read it{span}"))
    return kept, out


def _inbound_port_default(eff: dict[str, Effective], release: tuple[int, ...]) -> None:
    """Before 1.3 there was no -z: INBOUND_CAPTURE_PORT defaulted to -p, so inbound went to 15001 (§2.1)."""
    port = eff["inbound-capture-port"]
    if release >= (1, 3) or port.setting.source is not Source.DEFAULT:
        return
    proxy = eff["envoy-port"].setting.value
    eff["inbound-capture-port"] = Effective(
        setting=Setting(key="inbound-capture-port", value=proxy, source=Source.DERIVED,
                        origin="no -z before 1.3: INBOUND_CAPTURE_PORT defaults to -p"),
        shadowed=(*port.shadowed, port.setting))


def _cluster_dns(net: PodNetwork) -> tuple[str, str]:
    if net.cluster_dns is None:
        return F.DEFAULT_CLUSTER_DNS, f"cluster DNS default {F.DEFAULT_CLUSTER_DNS} (kube-dns; --cluster-dns)"
    if not F.is_ip(net.cluster_dns):
        raise SpecError(f'option --cluster-dns: "{net.cluster_dns}": not an IP address')
    return net.cluster_dns, f"--cluster-dns {net.cluster_dns}"


def _fill_ids(eff: dict[str, Effective], release: tuple[int, ...]) -> None:
    """istio-iptables' FillConfigFromEnvironment for the proxy UID/GID (spec §1 step 2); up to 1.7 it
    appended root's UID 0 to the looked-up one (history §4.6)."""
    uid = eff["proxy-uid"]
    if uid.setting.value == "":
        root = release < (1, 8)
        eff["proxy-uid"] = Effective(
            setting=Setting(key="proxy-uid", value="1337,0" if root else "1337", source=Source.DERIVED,
                            origin="no -u: istio-iptables uses the UID of user istio-proxy (ENVOY_USER) in its "
                                   "image, 1337" + (", then appends 0 (until 1.7)" if root else "")),
            shadowed=(*uid.shadowed, uid.setting))
    gid = eff["proxy-gid"]
    if gid.setting.value == "":
        eff["proxy-gid"] = Effective(
            setting=Setting(key="proxy-gid", value=eff["proxy-uid"].setting.value, source=Source.DERIVED,
                            origin="no -g: istio-iptables copies the -u value"),
            shadowed=(*gid.shadowed, gid.setting))


def _usable(ip: str) -> bool:
    a = ip_address(ip)
    return not (a.is_loopback or a.is_link_local)


def _ipv6(eff: dict[str, Effective], net: PodNetwork, pod: PodSource | None, notes: list[str]) -> Effective:
    def setting(value: bool, source: Source, origin: str) -> Effective:
        return Effective(setting=Setting(key="ENABLE_INBOUND_IPV6", value="true" if value else "false",
                                         source=source, origin=origin))

    if net.ipv6 is not None:
        return setting(net.ipv6, Source.FLAG, "--ipv6")
    if net.pod_ips:
        for ip in net.pod_ips:
            if not F.is_ip(ip):
                raise SpecError(f'option --pod-ip: "{ip}": not an IP address')
        ips, source, origin = net.pod_ips, Source.FLAG, "--pod-ip"
    elif pod is not None and pod.pod_ips:
        ips, source, origin = pod.pod_ips, Source.POD, "status.podIPs"
    else:
        notes.append("no pod IP known (give --pod-ip or --ipv6, or status.podIPs in the manifest): "
                     "assuming an IPv4 pod (istio-iptables itself fails without an address)")
        return setting(False, Source.DERIVED, "no pod address known: IPv4 assumed")
    usable = [ip for ip in ips if _usable(ip)]
    if not usable:
        raise SpecError(f"{origin}: {','.join(ips)}: no address that is neither loopback nor link-local "
                        "(istio-iptables fails on such a pod)")
    dual = F.parse_bool(eff["dual-stack"].setting.value)
    if dual:
        on = any(ip_address(ip).version == 6 for ip in usable)
        why = "dual-stack: IPv6 rules if any address is IPv6"
    else:
        on = ip_address(usable[0]).version == 6
        why = "the first address decides"
        if not on and any(ip_address(ip).version == 6 for ip in usable[1:]):
            notes.append("the pod also has an IPv6 address but its first address is IPv4: without "
                         "--dual-stack (ISTIO_DUAL_STACK) istio-iptables writes no ip6tables rules")
    return setting(on, source, f"{origin} {','.join(ips)} ({why})")


def _dns(eff: dict[str, Effective], net: PodNetwork, derivation: PodDerivation | None, cluster_dns: str,
         cluster_origin: str,
         notes: list[str], warnings: list[str]) -> dict[str, Effective]:
    """DNS_SERVERS_V4/V6: flags, else (only when Istio reads resolv.conf) the pod's nameservers."""
    out: dict[str, Effective] = {}
    redirect = F.parse_bool(eff["redirect-dns"].setting.value)
    capture_all = F.parse_bool(eff["capture-all-dns"].setting.value)
    reads = redirect and not capture_all
    for key, raw, version in (("DNS_SERVERS_V4", net.dns_servers_v4, 4), ("DNS_SERVERS_V6", net.dns_servers_v6, 6)):
        if raw is not None:
            try:
                F.parse_dns_servers(raw, version)
            except SpecError as e:
                raise e.at(f"option --dns-servers-v{version}") from None
            out[key] = Effective(setting=Setting(key=key, value=raw, source=Source.FLAG,
                                                 origin=f"--dns-servers-v{version}"))
    if not reads:
        for key in ("DNS_SERVERS_V4", "DNS_SERVERS_V6"):
            out.setdefault(key, Effective(setting=Setting(
                key=key, value="", source=Source.DERIVED,
                origin="not read: resolv.conf is only read with --redirect-dns and without --capture-all-dns")))
        return out
    servers: tuple[str, ...]
    if derivation is not None:
        servers, origin, source = derivation.dns_servers, derivation.dns_origin, Source.POD
    else:
        servers, origin, source = (cluster_dns,), cluster_origin, Source.DERIVED
    for key, version in (("DNS_SERVERS_V4", 4), ("DNS_SERVERS_V6", 6)):
        if key in out:
            continue
        mine = [s for s in servers if ip_address(s).version == version]
        out[key] = Effective(setting=Setting(key=key, value=",".join(mine), source=source,
                                             origin=f"resolv.conf nameservers from {origin}"))
    if not out["DNS_SERVERS_V4"].setting.value and not out["DNS_SERVERS_V6"].setting.value:
        warnings.append("--redirect-dns is on but there are no resolvers and no --capture-all-dns: DNS capture "
                        "is off (istio-iptables only warns)")
    return out


def _verdicts(findings: tuple[Finding, ...], eff: dict[str, Effective]) -> tuple[Finding, ...]:
    """Mark a used finding unused when a later source overrode it, or when -b makes -d moot."""
    out = []
    inbound = eff["istio-inbound-ports"].setting.value
    for f in findings:
        if f.used and f.option in eff:
            win = eff[f.option].setting
            if win.source is Source.FLAG:
                f = replace(f, used=False, reason=f"overridden by {win.origin} {win.value!r}")
            elif f.key.startswith("proxyMetadata.") and win.origin != f"proxyMetadata {f.key.split('.', 1)[1]}":
                f = replace(f, used=False, reason=f"overridden by {win.origin} ({win.value!r})")
            elif f.option == "istio-local-exclude-ports" and inbound != "*":
                f = replace(f, used=False,
                            reason=f"passed in -d, but -d is ignored unless includeInboundPorts is * "
                                   f"(it is {inbound!r})")
        out.append(f)
    return tuple(out)


def _option_notes(eff: dict[str, Effective], pod: PodSource | None) -> list[str]:
    notes = []
    for spec in F.OPTIONS:
        e = eff.get(spec.key)
        if e is not None and spec.effect and e.setting.source is not Source.DEFAULT \
                and e.setting.value != spec.default:
            notes.append(f"{spec.flag} ({e.setting.origin}): {spec.effect}")
    if pod is None:
        if eff["istio-service-cidr"].setting.value == "" and eff["istio-outbound-ports"].setting.value == "":
            notes.append("no -i: istio-iptables captures no outbound traffic (the injector passes -i '*')")
        if eff["istio-inbound-ports"].setting.value == "":
            notes.append("no -b: istio-iptables captures no inbound traffic (the injector passes -b '*')")
    if eff["istio-inbound-interception-mode"].setting.value == "TPROXY":
        notes.append("TPROXY: the injector runs Envoy as UID 0 / GID 1337, so the GID 1337 rules are the ones "
                     "that match Envoy's traffic")
    return notes


__all__ = ["PodNetwork", "Resolution", "resolve"]
