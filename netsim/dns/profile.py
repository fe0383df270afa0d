"""Istio-version profiles for the DNS agent and istiod's name table (spec/istio-dns.md section 12).

Owns: the table of behaviour changes by release and :func:`profile_for_version`, which turns an
``--istio-version`` into the switches the table builder, the lookup builder and the server take.
``None`` (no version given) and ``current`` mean Istio HEAD.

Never does: implement the behaviours themselves (they live in ``table``, ``resolve``, ``server`` and
``resolvconf``), or IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from netsim.dns.allocate import Generation, generation_for_version, parse_version
from netsim.istio_version import CURRENT

# feature → first release with today's behaviour (spec 12). "after 1.30" is taken as 1.31.
CHANGES: dict[str, tuple[int, int, int]] = {
    "se_trailing_dot": (1, 13, 0),  # ServiceEntry hosts with a trailing dot resolve (dot no longer doubled)
    "merge_same_host": (1, 18, 0),  # several services with one hostname merge their IPs (before: first wins)
    "bind_both_families": (1, 23, 0),  # localhost binds 127.0.0.1 and ::1 when resolv.conf has both families
    "unhealthy_excluded": (1, 24, 0),  # unhealthy endpoints no longer listed for headless services
    "shuffle_upstreams": (1, 25, 0),  # upstream order shuffled per query (before: resolv.conf order)
    "skip_s0_cname": (1, 27, 0),  # no search-domain CNAME for names already ending in the first search domain
    "all_pod_ips": (1, 29, 0),  # all addresses of multi-IP pods listed for headless services
    "all_ports": (1, 31, 0),  # headless endpoints gathered from every port (2026-07-30, after 1.30)
}


@dataclass(frozen=True, slots=True)
class Profile:
    """The switches one Istio release implies; every field True/HEAD by default."""

    version: str | None = None
    generation: Generation = Generation.V2
    se_trailing_dot: bool = True
    merge_same_host: bool = True
    bind_both_families: bool = True
    unhealthy_excluded: bool = True
    shuffle_upstreams: bool = True
    skip_s0_cname: bool = True
    all_pod_ips: bool = True
    all_ports: bool = True
    single_auto_vip: bool = False  # before 1.23.1: one auto VIP per proxy (IPv4 preferred)
    ip_autoallocate: bool = True  # PILOT_ENABLE_IP_AUTOALLOCATE default (on from 1.25)


def profile_for_version(version: str | None, generation: Generation | None = None) -> Profile:
    """The profile of ``version`` (HEAD when None); ``generation`` overrides its allocator."""
    if version is None or (v := parse_version(version)) == CURRENT:
        return Profile(generation=generation or Generation.V2)
    gen = generation or generation_for_version(version)
    switches = {name: v >= first for name, first in CHANGES.items()}
    return Profile(version=version, generation=gen, single_auto_vip=v < (1, 23, 1) and gen is not Generation.V2,
                   ip_autoallocate=gen is Generation.V2, **switches)


__all__ = ["CHANGES", "Profile", "profile_for_version"]
