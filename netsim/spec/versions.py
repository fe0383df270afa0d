"""Istio-version profiles: the sidecar injector's defaults where they changed, and what exists when.

Owns: one :class:`VersionProfile` per range of releases whose injector derives istio-iptables
arguments differently (spec/istio-iptables.md §13.1 and §14), and the table of which annotation,
proxyMetadata key and flag first appeared in which release.

Never does: lay out rules. A profile changes the arguments the injector would have passed (notably
``-b`` before 1.3 and the ``-d`` prefix before 1.6); its :attr:`VersionProfile.release` picks the
generator's layout (``netsim.capture.iptables``) in ``netsim.spec.resolve``. Releases marked
``estimated`` are not stated by the spec's history table; they are netsim's best reading and are
labelled so wherever they are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from netsim import istio_version

Version = tuple[int, int]

# The current injector (spec §13.1, Istio master 2026-08-22); it sorts after every numbered release.
CURRENT: Version = (istio_version.CURRENT.major, istio_version.CURRENT.minor)
CONTAINER_PORTS = "containerPorts"  # marker: -b defaults to the pod's declared containerPorts


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionProfile:
    """The injector behaviour of one range of Istio releases."""

    name: str  # "current", "1.2", ...
    version: Version
    inbound_ports_default: str  # "*" or CONTAINER_PORTS
    exclude_prefix: str  # prepended to -d by the template: "", "15090,", "15090,15021,"
    status_port: str  # default status port appended to -d ("" = none)
    summary: str
    patch: int = 0  # the patch release given (1.12.9 → 9); layouts change at some patches (history §4)

    @property
    def release(self) -> tuple[int, int, int]:
        """(major, minor, patch): what the rule layout is chosen by."""
        return (*self.version, self.patch)

    def has(self, since: Version) -> bool:
        return self.version >= since

    @property
    def label(self) -> str:
        return "Istio (current)" if self.version == CURRENT else f"Istio {self.name}"


@dataclass(frozen=True, slots=True)
class Since:
    """The first release that has a feature; ``estimated`` when spec §14 does not say."""

    version: Version
    estimated: bool = False

    @property
    def text(self) -> str:
        return f"{self.version[0]}.{self.version[1]}" + (" (estimated)" if self.estimated else "")


# Annotations the injector reads for istio-init (spec §13.1), with their first release.
ANNOTATIONS_SINCE: dict[str, Since] = {
    "sidecar.istio.io/interceptionMode": Since((1, 0)),
    "traffic.sidecar.istio.io/includeOutboundIPRanges": Since((1, 0)),
    "traffic.sidecar.istio.io/excludeOutboundIPRanges": Since((1, 0)),
    "traffic.sidecar.istio.io/includeInboundPorts": Since((1, 0)),
    "traffic.sidecar.istio.io/excludeInboundPorts": Since((1, 0)),
    "status.sidecar.istio.io/port": Since((1, 1)),  # spec §14: 1.1-1.2 -d = status port + annotation
    "traffic.sidecar.istio.io/kubevirtInterfaces": Since((1, 1), estimated=True),
    "traffic.sidecar.istio.io/excludeOutboundPorts": Since((1, 3), estimated=True),
    "proxy.istio.io/config": Since((1, 6), estimated=True),
    "traffic.sidecar.istio.io/includeOutboundPorts": Since((1, 7)),  # spec §14: -q in 1.7
    "traffic.sidecar.istio.io/excludeInterfaces": Since((1, 12)),  # spec §14: -c in 1.12
    "istio.io/reroute-virtual-interfaces": Since((1, 20), estimated=True),
}

# proxyMetadata keys (istio-init env vars) that change the rules, with their first release.
METADATA_SINCE: dict[str, Since] = {
    "ISTIO_META_DNS_CAPTURE": Since((1, 8)),
    "REDIRECT_DNS": Since((1, 9)),
    "CAPTURE_ALL_DNS": Since((1, 11)),
    "DROP_INVALID": Since((1, 13)),
    "INVALID_DROP": Since((1, 13)),
    "ISTIO_OUTBOUND_OWNER_GROUPS": Since((1, 14)),
    "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": Since((1, 14)),
    "DUAL_STACK": Since((1, 16), estimated=True),
    "ISTIO_DUAL_STACK": Since((1, 16), estimated=True),
    "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": Since((1, 21)),
}

# istio-iptables options (long names) and their first release (spec §14); absent = always there.
OPTIONS_SINCE: dict[str, Since] = {
    "inbound-tunnel-port": Since((1, 7)),
    "istio-outbound-ports": Since((1, 7)),
    "redirect-dns": Since((1, 9)),
    "capture-all-dns": Since((1, 11)),
    "istio-exclude-interfaces": Since((1, 12)),
    "drop-invalid": Since((1, 13)),
    "ISTIO_OUTBOUND_OWNER_GROUPS": Since((1, 14)),
    "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE": Since((1, 14)),
    "dual-stack": Since((1, 16), estimated=True),
    "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR": Since((1, 21)),
    "reconcile": Since((1, 24)),
    "cleanup-only": Since((1, 24)),
    "force-apply": Since((1, 24)),
}

_PROFILES: tuple[VersionProfile, ...] = (
    VersionProfile(name="1.0", version=(1, 0), inbound_ports_default=CONTAINER_PORTS, exclude_prefix="",
                   status_port="",
                   summary="-b = every containerPort of every container; -d = excludeInboundPorts only"),
    VersionProfile(name="1.1", version=(1, 1), inbound_ports_default=CONTAINER_PORTS, exclude_prefix="",
                   status_port="15020",
                   summary="-b = every containerPort of every container (an undeclared port is not "
                           "captured); -d = excludeInboundPorts + status port 15020"),
    VersionProfile(name="1.3", version=(1, 3), inbound_ports_default="*", exclude_prefix="",
                   status_port="15020", summary="-b * (capture all inbound ports); -d = excludes + 15020"),
    VersionProfile(name="1.5", version=(1, 5), inbound_ports_default="*", exclude_prefix="15090,",
                   status_port="15020", summary="-b *; -d 15090,<excludes + 15020>"),
    VersionProfile(name="1.6", version=(1, 6), inbound_ports_default="*", exclude_prefix="15090,15021,",
                   status_port="15020", summary="-b *; -d 15090,15021,<excludes + 15020>"),
    VersionProfile(name="current", version=CURRENT, inbound_ports_default="*",
                   exclude_prefix="15090,15021,", status_port="15020",
                   summary="-b *; -d 15090,15021,<excludes + 15020> (since 1.6)"),
)

def parse_version(text: str) -> Version:
    """``1.2``, ``1.2.6``, ``v1.24.0-beta.1`` → (major, minor); ``current``/``latest`` → CURRENT.

    Raises SpecError (``"2.0": not an Istio version ...``, also for an empty text).
    """
    v = istio_version.parse_istio_version(text)
    return (v.major, v.minor)


def profile_for(text: str | None) -> VersionProfile:
    """The profile in force for Istio release ``text`` (None: the current injector)."""
    full = istio_version.CURRENT if text is None else istio_version.parse_istio_version(text)
    version = (full.major, full.minor)
    chosen = _PROFILES[0]
    for p in _PROFILES:
        if version >= p.version:
            chosen = p
    if version == CURRENT:
        return chosen
    name = f"{version[0]}.{version[1]}" + (f".{full.patch}" if full.patch else "")
    return VersionProfile(name=name, version=version, inbound_ports_default=chosen.inbound_ports_default,
                          exclude_prefix=chosen.exclude_prefix, status_port=chosen.status_port,
                          summary=chosen.summary, patch=full.patch)


__all__ = [
    "ANNOTATIONS_SINCE",
    "CONTAINER_PORTS",
    "CURRENT",
    "METADATA_SINCE",
    "OPTIONS_SINCE",
    "Since",
    "VersionProfile",
    "parse_version",
    "profile_for",
]
