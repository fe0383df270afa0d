"""netsim.capture: CaptureConfig → the rules Istio's sidecar capture generator writes, exactly.

Owns: the iptables plan in Istio's emission order (``iptables``), Istio's dry-run text (``dryrun``),
the nftables transaction (``nft``), TPROXY/IPv6 route commands and cleanup commands as data.
Never does: IO. Options are turned into a CaptureConfig by ``netsim.spec.options``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netsim.lazy import lazy_exports

if TYPE_CHECKING:
    from netsim.capture.compiled import Compiled, compile_config
    from netsim.capture.config import WILDCARD, CaptureConfig, CidrList, InterceptionMode
    from netsim.capture.dryrun import dry_run, render_dry_run, render_restore
    from netsim.capture.iptables import (
        PlannedRule,
        RouteCommand,
        build,
        cleanup_commands,
        dns_capture_effective,
        plan,
        route_commands,
    )
    from netsim.capture.nft import render_nft

# loaded on first use (PEP 562): spec.resolve needs only ``config``, a trace no nft or dry-run renderer
__getattr__ = lazy_exports(__name__, {
    "netsim.capture.compiled": ("Compiled", "compile_config"),
    "netsim.capture.config": ("WILDCARD", "CaptureConfig", "CidrList", "InterceptionMode"),
    "netsim.capture.dryrun": ("dry_run", "render_dry_run", "render_restore"),
    "netsim.capture.iptables": ("PlannedRule", "RouteCommand", "build", "cleanup_commands", "dns_capture_effective",
                                "plan", "route_commands"),
    "netsim.capture.nft": ("render_nft",),
})

__all__ = [
    "WILDCARD",
    "CaptureConfig",
    "CidrList",
    "Compiled",
    "InterceptionMode",
    "PlannedRule",
    "RouteCommand",
    "build",
    "cleanup_commands",
    "compile_config",
    "dns_capture_effective",
    "dry_run",
    "plan",
    "render_dry_run",
    "render_nft",
    "render_restore",
    "route_commands",
]
