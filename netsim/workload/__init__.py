"""netsim.workload: one workload in the mesh, built once, and the front door from pod to verdict.

Owns: :class:`Workload` (the pod, its addresses and uids, the release, the capture options with
their provenance, the compiled rules, the sidecar's identity, the network-namespace model and the
default packet; ``model.py``), the packets after a connection's first (the conntrack entry, the
reply, a follow-up, a capture file's packets; ``packets.py``), :class:`SidecarIdentity`
(``identity.py``), the sidecar's hops
(``hops.py``: :func:`follow`, :func:`capture_matrix`) and the verdict computed from them
(``verdict.py``: :class:`Decision`, :class:`Verdict`). Layer 4 of docs/design.md: it imports
``netfilter``, ``spec`` and ``capture``, never ``mesh``, ``lab`` or a command module.

Example::

    from netsim.workload import Workload
    w = Workload.from_pod("rules/mtls-503/pod.yaml", istio_version="1.2")
    result = w.trace("10.244.0.5:80", from_="10.1.2.3")
    result.decision.verdict, result.decision.decided_by, result.summary

Importing the package is cheap: its names load on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsim.lazy import lazy_exports

if TYPE_CHECKING:
    from netsim.workload.hops import (
        APP_SPORT,
        EnvoyHop,
        Followed,
        KernelHop,
        MatrixRow,
        Upstream,
        capture_matrix,
        follow,
    )
    from netsim.workload.identity import SidecarIdentity, envoy_uid
    from netsim.workload.model import DEFAULT_POD_IP, MATRIX_PORTS, Workload, parse_addresses, parse_endpoint
    from netsim.workload.packets import (
        CapturedPacket,
        FollowUp,
        conntrack_entry,
        follow_up,
        reply_to,
        trace_capture,
        with_entry,
    )
    from netsim.workload.verdict import DecidedBy, Decision, ListenerRef, Verdict

__getattr__ = lazy_exports(__name__, {
    "netsim.workload.hops": ("APP_SPORT", "EnvoyHop", "Followed", "KernelHop", "MatrixRow", "Upstream",
                             "capture_matrix", "follow"),
    "netsim.workload.verdict": ("DecidedBy", "Decision", "ListenerRef", "Verdict"),
    "netsim.workload.identity": ("SidecarIdentity", "envoy_uid"),
    "netsim.workload.model": ("DEFAULT_POD_IP", "MATRIX_PORTS", "Workload", "parse_addresses", "parse_endpoint"),
    "netsim.workload.packets": ("CapturedPacket", "FollowUp", "conntrack_entry", "follow_up", "reply_to",
                                "trace_capture", "with_entry"),
})


__all__ = [  # noqa: RUF022 (plain sort order, as tests/workload pins it)
    "APP_SPORT",
    "CapturedPacket",
    "DEFAULT_POD_IP",
    "DecidedBy",
    "Decision",
    "EnvoyHop",
    "FollowUp",
    "Followed",
    "KernelHop",
    "ListenerRef",
    "MATRIX_PORTS",
    "MatrixRow",
    "SidecarIdentity",
    "Upstream",
    "Verdict",
    "Workload",
    "capture_matrix",
    "conntrack_entry",
    "envoy_uid",
    "follow",
    "follow_up",
    "parse_addresses",
    "parse_endpoint",
    "reply_to",
    "trace_capture",
    "with_entry",
]
