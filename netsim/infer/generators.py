"""Rules of generators other than istio-iptables: which chains are theirs, and what their shape tells.

Owns: the recognisers of istio-cni's ambient in-pod rules (spec/istio-ambient-capture.md §3), Linkerd's
proxy-init (``PROXY_INIT_REDIRECT``/``PROXY_INIT_OUTPUT``), kube-proxy and kubelet (``KUBE-*``) and
common CNI plugins' chains; each claims its chains and the jumps into them, and reads what its rules
show. netsim compiles none of these (a pod's ambient in-pod rules alone are verified by compiling, in
``ambient.py``; the node's probe rule is read here), so their options are read off the rules, not verified
by a compile, and no release range is given (the notes say so). Never does: read files or render output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from netsim.infer.view import ChainKey, View, target, value, values
from netsim.netfilter.model import Family


@dataclass(slots=True)
class Claim:
    """What one generator wrote: its rules (chain, 1-based position) and what they show."""

    generator: str
    rules: set[tuple[ChainKey, int]] = field(default_factory=set)
    options: dict[str, object] = field(default_factory=dict)
    releases: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)


def _claim(view: View, generator: str, owns: Callable[[str], bool]) -> Claim | None:
    claim = Claim(generator)
    for key, position, tokens in view.all_rules():
        if owns(key[2]) or owns(target(tokens) or ""):
            claim.rules.add((key, position))
    return claim if claim.rules else None


def ambient(view: View, sidecar: bool, claimed: set[tuple[ChainKey, int]]) -> Claim | None:
    """istio-cni's ambient rules this module reads by their shape: the node's ISTIO_POSTRT (the kubelet-probe
    SNAT, ambient §6), and in-pod rules beside a sidecar's (ISTIO_PRERT only; ISTIO_OUTPUT is the sidecar's).
    A pod's in-pod rules alone are verified by compiling (``infer.ambient``) and already ``claimed``."""
    node = view.has_chain("nat", "ISTIO_POSTRT")
    in_pod = any(view.has_chain(t, "ISTIO_PRERT") for t in ("nat", "mangle", "raw"))
    if not in_pod and not node:
        return None
    chains = {"ISTIO_PRERT", "ISTIO_POSTRT"} if sidecar else {"ISTIO_PRERT", "ISTIO_POSTRT", "ISTIO_OUTPUT"}
    claim = _claim(view, "istio-ambient", chains.__contains__)
    if claim is None:
        return None
    claim.rules -= claimed
    if not claim.rules:
        return None
    v4 = Family.IPV4
    if node and not in_pod:
        snat = [value(t, "--to-source") for t in view.rules(v4, "nat", "ISTIO_POSTRT")]
        claim.options = {"HostProbeSNATAddress": next((s for s in snat if s), "")}
        claim.notes.append("the node's kubelet-probe SNAT rule of istio-cni's ambient agent (not a pod's rules; "
                           "read by its shape: `netsim compile --mode ambient --node` prints what the agent writes)")
        return claim
    prert = (*view.rules(v4, "nat", "ISTIO_PRERT"), *view.rules(v4, "mangle", "ISTIO_PRERT"))
    inbound = any(value(t, "--to-ports") == "15006" or value(t, "--on-port") == "15006" for t in prert)
    claim.options = {"TPROXYRedirection": any(target(t) == "TPROXY" for t in prert)}
    claim.notes.append("ambient in-pod rules (ISTIO_PRERT) beside a sidecar's: read by their shape, not verified "
                       "by a compile (the agent skips pods with a sidecar, so one of them is left over)")
    if not inbound:
        claim.notes.append("no inbound redirect to 15006: annotation ambient.istio.io/bypass-inbound-capture")
    return claim


def linkerd(view: View) -> Claim | None:
    """Linkerd's proxy-init: PROXY_INIT_REDIRECT (inbound) and PROXY_INIT_OUTPUT (outbound)."""
    claim = _claim(view, "linkerd", lambda c: c.startswith("PROXY_INIT_"))
    if claim is None:
        return None
    v4 = Family.IPV4
    redirect = view.rules(v4, "nat", "PROXY_INIT_REDIRECT")
    output = view.rules(v4, "nat", "PROXY_INIT_OUTPUT")
    incoming = next((value(t, "--to-ports") for t in redirect if target(t) == "REDIRECT"), None)
    outgoing = next((value(t, "--to-ports") for t in output if target(t) == "REDIRECT"), None)
    uids = [v for t in output for v, neg in values(t, "--uid-owner") if not neg]
    ignored_in = [value(t, "--dports") or value(t, "--dport") for t in redirect if target(t) == "RETURN"]
    ignored_out = [value(t, "--dports") or value(t, "--dport") for t in output
                   if target(t) == "RETURN" and not values(t, "--uid-owner")]
    claim.options = {"incoming-proxy-port": incoming or "", "outgoing-proxy-port": outgoing or "",
                     "proxy-uid": ",".join(dict.fromkeys(uids)),
                     "inbound-ports-to-ignore": ",".join(p for p in ignored_in if p),
                     "outbound-ports-to-ignore": ",".join(p for p in ignored_out if p)}
    claim.notes.append("Linkerd proxy-init rules: options read by their shape under proxy-init's flag names; "
                       "netsim does not compile them, so no release range")
    return claim


# kubelet's own chains sit beside kube-proxy's in every node and hostNetwork dump
_KUBELET = frozenset({"KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-MARK-DROP"})


def kube_proxy(view: View) -> Claim | None:
    claim = _claim(view, "kube-proxy", lambda c: c.startswith("KUBE-"))
    if claim is None:
        return None
    services = sum(1 for _, _, c in view.chains if c.startswith("KUBE-SVC-"))
    endpoints = sum(1 for _, _, c in view.chains if c.startswith("KUBE-SEP-"))
    claim.options = {"proxy-mode": "iptables"}
    claim.notes.append(f"kube-proxy (iptables mode): {services} service chains, {endpoints} endpoint chains; "
                       "a node's or hostNetwork pod's rules, not a sidecar's")
    if any(c in _KUBELET for _, _, c in view.chains):
        claim.notes.append("KUBE-FIREWALL / KUBE-KUBELET-CANARY are kubelet's chains, counted here with kube-proxy's")
    return claim


# Chain prefixes of CNI plugins and node agents, by the tool that writes them.
_OTHER = (("CNI-", "the CNI portmap/bridge plugins"), ("cali-", "Calico"), ("FLANNEL", "Flannel"),
          ("CILIUM_", "Cilium"), ("OLD_CILIUM_", "Cilium"), ("WEAVE", "Weave Net"), ("KUBE-ROUTER", "kube-router"),
          ("AWS-", "the AWS VPC CNI"), ("DOCKER", "Docker"))


def others(view: View) -> Claim | None:
    names: dict[str, None] = {}
    claim = Claim("other")
    for key, position, tokens in view.all_rules():
        for prefix, tool in _OTHER:
            if key[2].startswith(prefix) or (target(tokens) or "").startswith(prefix):
                claim.rules.add((key, position))
                names[tool] = None
    if not claim.rules:
        return None
    claim.notes.append("rules of " + ", ".join(names) + " (recognised by their chain names; not a mesh's capture)")
    return claim


__all__ = ["Claim", "ambient", "kube_proxy", "linkerd", "others"]
