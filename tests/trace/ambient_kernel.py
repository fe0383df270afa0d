"""The ambient kernel read-backs both ambient kernel differentials load (first packets:
``test_ambient_kernel_differential.py``; replies: ``test_ambient_reply_kernel_differential.py``), read in place
from ../shared/conformance/istio-ambient, and the in-pod cases' probe SNAT addresses."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import CONFORMANCE

from netsim.netfilter import Family

AMBIENT = CONFORMANCE / "istio-ambient"
KERNEL = AMBIENT / "kernel"


def case_config(case: str) -> dict[str, object]:
    """The ``config`` of the iptables conformance case ``case`` (its YAML)."""
    return dict(yaml.safe_load((AMBIENT / "iptables" / f"{case}.yaml").read_text())["config"])


def snat_address(family: Family) -> str:
    """The kubelet probes' SNAT address of ``family`` in the in-pod cases' test config (both addresses are in
    every in-pod golden of the IPv6 form)."""
    return str(case_config("default_ipv6")["HostProbeSNATAddress" if family is Family.IPV4
                                          else "HostProbeV6SNATAddress"])


def iptables_cases() -> list[tuple[str, Path]]:
    """(name, path) of every iptables read-back, IPv4 then IPv6."""
    ipt = KERNEL / "iptables"
    return [(p.name, p) for p in sorted(ipt.glob("*.iptables-save")) + sorted(ipt.glob("*.ip6tables-save"))]


def nft_cases() -> list[tuple[str, Path]]:
    """(name, path) of every nft read-back of a pod's rules (hostprobe*: the node's rules, a postrouting SNAT for
    kubelet's uid, not a pod's)."""
    return [(p.name, p) for p in sorted((KERNEL / "nftables").glob("*.nft-list")) if not p.name.startswith("hostprobe")]
