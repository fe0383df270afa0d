"""netsim.mesh: what the sidecar does with a captured connection (spec/istio-mesh-hops.md).

Owns the public API of ``netsim.mesh`` (re-exported below): typed mesh objects, the per-proxy
listener/cluster index, :func:`hop`, the release profiles and ``netsim diagnose``'s checks.
Never does: run a proxy, talk to a cluster, or import click (the commands live in
:mod:`netsim.mesh.cli`, loaded lazily by ``netsim.cli``).
"""

from netsim.mesh.build import Cluster, FilterChain, Listener, ProxyIndex, build_index
from netsim.mesh.hop import Hop, hop
from netsim.mesh.model import (
    Connection,
    Direction,
    MeshConfig,
    MeshObjects,
    MeshService,
    PodInfo,
    Protocol,
    Proxy,
    Send,
    Verdict,
)
from netsim.mesh.objects import convert, parse_mesh_config, parse_text
from netsim.mesh.proxy import make_proxy, proxy_for_workload
from netsim.mesh.versions import MeshProfile, mesh_profile

__all__ = [
    "Cluster",
    "Connection",
    "Direction",
    "FilterChain",
    "Hop",
    "Listener",
    "MeshConfig",
    "MeshObjects",
    "MeshProfile",
    "MeshService",
    "PodInfo",
    "Protocol",
    "Proxy",
    "ProxyIndex",
    "Send",
    "Verdict",
    "build_index",
    "convert",
    "hop",
    "make_proxy",
    "mesh_profile",
    "parse_mesh_config",
    "parse_text",
    "proxy_for_workload",
]
