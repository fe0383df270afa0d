"""Which istio-iptables inputs each release had, and under which names (spec/istio-iptables-history.md §2, §7).

Owns: one :class:`ReleaseOption` per netsim option key: the release its flag and its environment
variable first appeared in (and the release that dropped it, for the inputs only old releases had),
the 1.0–1.4 script's own variable (what its "Variables:" dump prints) and the Go ``Config`` field or
package variable of 1.5 on (what the conformance YAMLs record). The names map one to one onto netsim's
option keys (``netsim.spec.flags.OPTIONS``), which are istio-iptables' long option names.

Never does: decide values (``netsim.spec.resolve``) or lay out rules (``netsim.capture.iptables``).
"""

from __future__ import annotations

from dataclasses import dataclass

Release = tuple[int, ...]
SCRIPT_UNTIL: Release = (1, 5)  # 1.0–1.4 ran the shell script; the Go binary from 1.5.0 (history §1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseOption:
    """How one input was spelled over the releases. ``flag_since`` None: never a flag (env only)."""

    key: str
    flag_since: Release | None = (1, 0)
    env_since: Release | None = (1, 0)  # None: no environment variable in any release netsim models
    until: Release | None = None  # the first release without it (None: still there)
    script_var: str = ""  # the 1.0–1.4 script's variable
    go_names: tuple[str, ...] = ()  # Go Config fields / package variables (1.5 on)

    def flag_in(self, release: Release) -> bool:
        return self.flag_since is not None and self.flag_since <= release and not self._gone(release)

    def env_in(self, release: Release) -> bool:
        return self.env_since is not None and self.env_since <= release and not self._gone(release)

    def _gone(self, release: Release) -> bool:
        return self.until is not None and release >= self.until


def _r(key: str, flag: Release | None = (1, 0), env: Release | None = (1, 0), *, until: Release | None = None,
       var: str = "", go: tuple[str, ...] = ()) -> ReleaseOption:
    return ReleaseOption(key=key, flag_since=flag, env_since=env, until=until, script_var=var, go_names=go)


_GO_ONLY: Release = (1, 5)
OPTIONS_BY_RELEASE: tuple[ReleaseOption, ...] = (
    _r("envoy-port", var="PROXY_PORT", go=("ProxyPort",)),
    _r("inbound-capture-port", flag=(1, 3), var="INBOUND_CAPTURE_PORT", go=("InboundCapturePort",)),
    _r("inbound-tunnel-port", flag=(1, 7), env=(1, 7), go=("InboundTunnelPort",)),
    _r("proxy-uid", env=_GO_ONLY, var="PROXY_UID", go=("ProxyUID",)),
    _r("proxy-gid", env=_GO_ONLY, var="PROXY_GID", go=("ProxyGID",)),
    _r("istio-inbound-interception-mode", var="INBOUND_INTERCEPTION_MODE", go=("InboundInterceptionMode",)),
    _r("istio-inbound-tproxy-mark", flag=_GO_ONLY, var="INBOUND_TPROXY_MARK", go=("InboundTProxyMark",)),
    _r("istio-inbound-tproxy-route-table", flag=_GO_ONLY, var="INBOUND_TPROXY_ROUTE_TABLE",
       go=("InboundTProxyRouteTable",)),
    _r("istio-inbound-ports", var="INBOUND_PORTS_INCLUDE", go=("InboundPortsInclude",)),
    _r("istio-local-exclude-ports", var="INBOUND_PORTS_EXCLUDE", go=("InboundPortsExclude",)),
    _r("istio-exclude-interfaces", flag=(1, 11, 3), env=(1, 11, 3), go=("ExcludeInterfaces",)),
    _r("istio-service-cidr", var="OUTBOUND_IP_RANGES_INCLUDE", go=("OutboundIPRangesInclude",)),
    _r("istio-service-exclude-cidr", var="OUTBOUND_IP_RANGES_EXCLUDE", go=("OutboundIPRangesExclude",)),
    _r("istio-outbound-ports", flag=(1, 7), env=(1, 7), go=("OutboundPortsInclude",)),
    _r("istio-local-outbound-ports-exclude", flag=(1, 2), env=(1, 2), var="OUTBOUND_PORTS_EXCLUDE",
       go=("OutboundPortsExclude",)),
    _r("kube-virt-interfaces", flag=(1, 1), env=_GO_ONLY, var="KUBEVIRT_INTERFACES", go=("KubevirtInterfaces",)),
    # 1.7–1.8 switched DNS capture on by environment only (ISTIO_META_DNS_CAPTURE; the tests' package
    # variables dnsCaptureByEnvoy/dnsCaptureByAgent), the flag came in 1.9 (history §4.5-§4.7).
    _r("redirect-dns", flag=(1, 9), env=(1, 7), go=("RedirectDNS", "dnsCaptureByEnvoy", "dnsCaptureByAgent")),
    _r("capture-all-dns", flag=(1, 11), env=(1, 11), go=("CaptureAllDNS",)),
    _r("drop-invalid", flag=(1, 12, 9), env=(1, 12, 9), go=("DropInvalid",)),
    _r("dual-stack", flag=(1, 20), env=(1, 19), go=("DualStack",)),
    _r("dry-run", flag=_GO_ONLY, env=_GO_ONLY, go=("DryRun",)),
    _r("skip-rule-apply", flag=_GO_ONLY, env=_GO_ONLY, go=("SkipRuleApply",)),
    _r("run-validation", flag=_GO_ONLY, env=_GO_ONLY, go=("RunValidation",)),
    _r("iptables-probe-port", flag=_GO_ONLY, env=_GO_ONLY, go=("IptablesProbePort",)),
    _r("probe-timeout", flag=_GO_ONLY, env=_GO_ONLY, go=("ProbeTimeout",)),
    _r("network-namespace", flag=(1, 11), env=(1, 11), go=("NetworkNamespace",)),
    _r("cni-mode", flag=(1, 11), env=(1, 11), go=("CNIMode",)),
    _r("reconcile", flag=(1, 24), env=(1, 24), go=("Reconcile",)),
    _r("cleanup-only", flag=(1, 24), env=(1, 24), go=("CleanupOnly",)),
    _r("force-apply", flag=(1, 24), env=(1, 24), go=("ForceApply",)),
    _r("native-nftables", flag=(1, 27), env=(1, 27), go=("NativeNftables",)),
    _r("force-iptables-binary", flag=(1, 28), env=(1, 28), go=("ForceIptablesBinary",)),
    _r("ISTIO_OUTBOUND_OWNER_GROUPS", flag=None, env=(1, 14), go=("OwnerGroupsInclude",)),
    _r("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", flag=None, env=(1, 14), go=("OwnerGroupsExclude",)),
    _r("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", flag=None, env=(1, 21), go=("HostIPv4LoopbackCidr",)),
    _r("DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK", flag=None, env=(1, 1), until=(1, 5),
       var="DISABLE_REDIRECTION_ON_LOCAL_LOOPBACK"),
    _r("DNS_CAPTURE", flag=None, env=(1, 6), until=(1, 7)),
    _r("ISTIO_META_DNS_CONNTRACK_ZONE", flag=None, env=(1, 10, 3), until=(1, 11), go=("useConntrackZoneDNS",)),
    # Derived from the pod (netsim's --ipv6/--pod-ip, --dns-servers-v4/6).
    _r("ENABLE_INBOUND_IPV6", flag=None, var="ENABLE_INBOUND_IPV6", go=("EnableInboundIPv6", "EnableIPv6")),
    _r("DNS_SERVERS_V4", flag=None, env=(1, 9), go=("DNSServersV4",)),
    _r("DNS_SERVERS_V6", flag=None, env=(1, 12), go=("DNSServersV6",)),
)
BY_KEY: dict[str, ReleaseOption] = {o.key: o for o in OPTIONS_BY_RELEASE}
# The Go config field (or test package variable) → netsim's option key, one to one per name.
GO_NAME_TO_KEY: dict[str, str] = {name: o.key for o in OPTIONS_BY_RELEASE for name in o.go_names}
SCRIPT_VAR_TO_KEY: dict[str, str] = {o.script_var: o.key for o in OPTIONS_BY_RELEASE if o.script_var}


def release_text(release: Release) -> str:
    return ".".join(str(n) for n in release)


__all__ = ["BY_KEY", "GO_NAME_TO_KEY", "OPTIONS_BY_RELEASE", "SCRIPT_UNTIL", "SCRIPT_VAR_TO_KEY", "ReleaseOption",
           "release_text"]
