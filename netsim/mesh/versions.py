"""Istio-version profiles for the mesh hop (spec/istio-mesh-hops.md section 5, the history table).

Owns: :class:`MeshProfile`, one value per release holding every behaviour switch the hop depends on,
and :func:`mesh_profile` which maps ``--istio-version`` text to it.

Never does: change anything the history table does not list. Releases between rows take the
behaviour of the row before them.
"""

from __future__ import annotations

from dataclasses import dataclass

from netsim.istio_version import CURRENT, IstioVersion, parse_istio_version

Version = IstioVersion


def parse_version(text: str | None) -> Version:
    """``1.5`` → (1, 5, 0); ``1.6.6`` → (1, 6, 6); ``current``, empty or None → CURRENT. Raises SpecError."""
    return parse_istio_version(text if text and text.strip() else None, option="--istio-version")


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshProfile:
    """What one Istio release does after capture. Each field names its history-table row."""

    name: str
    version: Version
    inbound_via_15001: bool  # 1.0-1.2: inbound redirected to 15001, podIP_port inbound listeners
    outbound_sniffing: bool  # 1.3+: unnamed ports are auto (sniffed) outbound
    inbound_sniffing: bool  # 1.5+
    headless_pod_listeners_tcp: bool  # 1.3+
    headless_pod_listeners_auto: bool  # 1.8+
    pod_ip_blackhole: bool  # 1.3-1.5: proxy IP/32 → BlackHoleCluster on wildcard listeners
    auto_mtls_default: bool  # 1.5+ (default profile)
    orig_dst_forced_mtls: bool  # 1.5.0-1.6.5: ORIGINAL_DST clusters get unconditional mTLS
    orig_dst_no_auto_mtls: bool  # 1.6.6-1.9: auto mTLS skipped for ORIGINAL_DST
    inbound_passthrough: bool  # 1.10+: inbound|port|| ORIGINAL_DST from 127.0.0.6
    externalname_alias: bool  # 1.21+: ExternalName is an alias (no listener, no cluster)
    peer_authentication: bool  # 1.5+: PeerAuthentication API (MeshPolicy/Policy before)
    autoalloc: bool  # 1.7+: ServiceEntry auto-allocation exists
    listeners_addresses_column: bool  # istioctl prints ADDRESSES (1.20+) rather than ADDRESS

    @property
    def label(self) -> str:
        return "Istio (current)" if self.version == CURRENT else f"Istio {self.name}"

    @property
    def dns_version(self) -> str | None:
        """The version text ``netsim.dns`` understands (None: current)."""
        return None if self.version == CURRENT else ".".join(map(str, self.version))


def mesh_profile(text: str | None = None) -> MeshProfile:
    """The profile of release ``text`` (None or ``current``: Istio 1.30 / master)."""
    v = parse_version(text)
    name = "current" if v == CURRENT else (f"{v[0]}.{v[1]}" + (f".{v[2]}" if v[2] else ""))
    return MeshProfile(
        name=name,
        version=v,
        inbound_via_15001=v < (1, 3, 0),
        outbound_sniffing=v >= (1, 3, 0),
        inbound_sniffing=v >= (1, 5, 0),
        headless_pod_listeners_tcp=v >= (1, 3, 0),
        headless_pod_listeners_auto=v >= (1, 8, 0),
        pod_ip_blackhole=(1, 3, 0) <= v < (1, 6, 0),
        auto_mtls_default=v >= (1, 5, 0),
        orig_dst_forced_mtls=(1, 5, 0) <= v < (1, 6, 6),
        orig_dst_no_auto_mtls=(1, 6, 6) <= v < (1, 10, 0),
        inbound_passthrough=v >= (1, 10, 0),
        externalname_alias=v >= (1, 21, 0),
        peer_authentication=v >= (1, 5, 0),
        autoalloc=v >= (1, 7, 0),
        listeners_addresses_column=v >= (1, 20, 0),
    )


__all__ = ["CURRENT", "MeshProfile", "Version", "mesh_profile", "parse_version"]
