"""Text renderers: a hop for people, and the tables ``istioctl proxy-config listeners|clusters`` prints.

Owns: :func:`render_hop`, :func:`listeners_table` / :func:`listeners_json`,
:func:`clusters_table` / :func:`clusters_json`.
Never does: decide anything; every value comes from a :class:`~netsim.mesh.build.ProxyIndex` or a
:class:`~netsim.mesh.hop.Hop`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netsim.mesh.build import Cluster, FilterChain, Listener, ProxyIndex
from netsim.mesh.hop import Hop
from netsim.mesh.versions import MeshProfile


def render_hop(h: Hop, profile: MeshProfile) -> str:
    rows = [("listener", h.listener), ("filter chain", h.filter_chain or (h.filter_chain_match and
                                                                         f"(unnamed) {h.filter_chain_match}")),
            ("route config", h.route_config), ("virtual host", h.virtual_host), ("route", h.route),
            ("cluster", h.cluster and f"{h.cluster} ({h.cluster_type})"), ("upstream TLS", h.upstream_tls),
            ("verdict", h.verdict.value)]
    lines = [f"{profile.label}, {h.direction}:"]
    lines += [f"  {k:<13} {v}" for k, v in rows if v]
    lines += [f"  note: {n}" for n in h.notes]
    lines.append("")
    lines.append(h.reason)
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]
    out = []
    for r in (header, *rows):
        out.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return "\n".join(out)


def _chains(ln: Listener) -> list[FilterChain]:
    return [*ln.chains, *((ln.default_chain,) if ln.default_chain is not None else ())]


def _listener_rows(index: ProxyIndex) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    for ln in index.listeners():
        for c in _chains(ln):
            match = c.match_text()
            if c is ln.default_chain and c.match_all:
                match = "ALL"
            rows.append((ln.address, str(ln.port), match, c.destination_text()))
    rows.append(("0.0.0.0", "15021", "ALL", "Inline Route: /healthz/ready*"))
    rows.append(("0.0.0.0", "15090", "ALL", "Inline Route: /stats/prometheus*"))
    rows.sort(key=lambda r: (int(r[1]), r[0] != "0.0.0.0", r[0]))
    return rows


def _listener_type(ln: Listener) -> str:
    chains = _chains(ln)
    http = any(c.is_http for c in chains)
    tcp = any(not c.is_http for c in chains)
    return "HTTP+TCP" if http and tcp else "HTTP" if http else "TCP"


def listeners_table(index: ProxyIndex) -> str:
    """``istioctl proxy-config listeners <pod>`` as that release's istioctl prints it.

    Before 1.8: ADDRESS, PORT, TYPE (one row per listener); 1.8-1.19: ADDRESS, PORT, MATCH,
    DESTINATION (one row per filter chain); 1.20+: the same with ADDRESSES.
    """
    if index.profile.version < (1, 8, 0):
        rows = [(ln.address, str(ln.port), _listener_type(ln)) for ln in index.listeners()]
        vin = index.virtual_inbound
        if vin is not None:  # these releases also listed one podIP_port inbound listener per declared port
            ports: dict[int, set[bool]] = {}
            for c in vin.chains:
                if c.dst_port is not None and c.name and c.name.startswith("0.0.0.0_"):
                    ports.setdefault(c.dst_port, set()).add(c.is_http)
            for port, kinds in ports.items():
                typ = "HTTP+TCP" if len(kinds) == 2 else "HTTP" if True in kinds else "TCP"
                rows.append((index.proxy.ip, str(port), typ))
        rows.sort(key=lambda r: (int(r[1]), r[0] != "0.0.0.0", r[0]))
        return _table(("ADDRESS", "PORT", "TYPE"), rows)
    head = "ADDRESSES" if index.profile.listeners_addresses_column else "ADDRESS"
    return _table((head, "PORT", "MATCH", "DESTINATION"), _listener_rows(index))


def listeners_json(index: ProxyIndex) -> list[dict[str, Any]]:
    out = []
    for ln in index.listeners():
        out.append({"name": ln.name, "address": ln.address, "port": ln.port, "origins": list(ln.origins),
                    "filter_chains": [{"name": c.name, "match": c.match_text(), "destination": c.destination_text(),
                                       "default": c is ln.default_chain, "origin": c.origin}
                                      for c in _chains(ln)]})
    return out


def _cluster_row(c: Cluster) -> tuple[str, str, str, str, str, str]:
    if c.direction == "inbound" and c.name.endswith("||"):
        return ("", str(c.port), "-", "inbound", c.type, "")
    if not c.direction:
        return (c.name, "-", "-", "-", c.type, "")
    return (c.fqdn, str(c.port), c.subset or "-", c.direction, c.type, c.destination_rule)


def clusters_table(index: ProxyIndex) -> str:
    """``istioctl proxy-config clusters <pod>``: SERVICE FQDN, PORT, SUBSET, DIRECTION, TYPE, and
    DESTINATION RULE from 1.10 on."""
    rows = [_cluster_row(c) for c in index.clusters.values()]
    rows += [("agent", "-", "-", "-", "STATIC", ""), ("prometheus_stats", "-", "-", "-", "STATIC", ""),
             ("sds-grpc", "-", "-", "-", "STATIC", ""), ("xds-grpc", "-", "-", "-", "STATIC", "")]
    rows.sort(key=lambda r: (r[0], int(r[1]) if r[1].isdigit() else -1, r[2]))
    head = ("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE")
    if index.profile.version < (1, 10, 0):
        return _table(head[:5], [r[:5] for r in rows])
    return _table(head, rows)


def clusters_json(index: ProxyIndex) -> list[dict[str, Any]]:
    return [{"name": c.name, "type": c.type, "direction": c.direction, "fqdn": c.fqdn, "port": c.port,
             "subset": c.subset, "destination_rule": c.destination_rule, "upstream_tls": c.tls,
             "upstream_tls_reason": c.tls_reason, "target": c.target,
             "endpoints": [e.address for e in c.endpoints]} for c in index.clusters.values()]


__all__ = ["clusters_json", "clusters_table", "listeners_json", "listeners_table", "render_hop"]
